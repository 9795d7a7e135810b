//! One chat turn is one trace with spans from gateway, chat-core and
//! agent-worker, each running as its own `chat` process exporting over OTLP
//! to a receiver in this test (gRPC for two of them, HTTP/protobuf for the
//! third), continuing the `traceparent` the client sent, over REST and over
//! the WebSocket; and the services write their access log lines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use axum::response::IntoResponse as _;
use futures::{SinkExt as _, StreamExt as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "traces-test-secret-0123456789abcdef";
const PASSWORD: &str = "correct horse battery";
/// How long spans and log lines may take to arrive.
const PATIENCE: Duration = Duration::from_secs(30);

/// A turn sent with a trace context and a request id.
struct Turn {
    trace_id: &'static str,
    client_span_id: &'static str,
    request_id: &'static str,
}

impl Turn {
    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.client_span_id)
    }
}

const REST_TURN: Turn = Turn {
    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    client_span_id: "00f067aa0ba902b7",
    request_id: "trace-test-rest",
};

const WS_TURN: Turn = Turn {
    trace_id: "0af7651916cd43dd8448eb211c80319c",
    client_span_id: "b7ad6b7169203331",
    request_id: "trace-test-ws",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_turn_is_one_trace_across_the_three_services() -> anyhow::Result<()> {
    // Arrange: a receiver, the three services exporting to it, a user and a session.
    let mut receiver = Receiver::start().await?;
    let mut stack = Stack::spawn(&receiver).await?;
    let token = stack.user().await?;
    let session_id = stack.session(&token).await?;

    // Act: one turn over REST, one over the WebSocket, each sent with a
    // `traceparent` and a request id.
    let rest_run = stack.post_message(&token, &session_id, &REST_TURN).await?;
    let ws_run = stack.socket_turn(&token, &session_id, &WS_TURN).await?;

    // Assert: each turn's trace has, from each service, a span carrying the
    // session, run and request ids (a socket's turn span in the gateway
    // cannot know its run yet); the gateway's continues the client's.
    for (turn, run_id) in [(&REST_TURN, &rest_run), (&WS_TURN, &ws_run)] {
        let all = [
            ("session_id", session_id.as_str()),
            ("run_id", run_id.as_str()),
            ("request_id", turn.request_id),
        ];
        let expected = |service: &str| {
            let over_socket = std::ptr::eq(turn, &WS_TURN) && service == "gateway";
            all.iter()
                .copied()
                .filter(|(k, _)| !(over_socket && *k == "run_id"))
                .collect::<Vec<_>>()
        };
        let trace = receiver.trace(turn.trace_id, &expected).await;
        for service in SERVICES {
            assert!(
                has_span(&trace, service, &expected(service)),
                "no {service} span with {:?} in trace {}; spans seen: {}",
                expected(service),
                turn.trace_id,
                describe(&trace)
            );
        }
        assert!(
            trace
                .iter()
                .any(|span| span.service == "gateway" && span.parent_span_id == turn.client_span_id),
            "a gateway span continues the client's span; spans seen: {}",
            describe(&trace)
        );
    }

    // Assert: the access lines, without query strings.
    let post = stack
        .gateway
        .log_line(|line| {
            line["target"] == "access"
                && line["route"] == "/api/v1/sessions/{id}/messages"
                && line["request_id"] == REST_TURN.request_id
        })
        .await?;
    assert_eq!(
        (post["method"].as_str(), post["status"].as_u64()),
        (Some("POST"), Some(200)),
        "{post}"
    );
    assert!(post["latency_ms"].as_f64().is_some(), "{post}");
    let socket = stack
        .gateway
        .log_line(|line| line["target"] == "access" && line["message"] == "websocket closed")
        .await?;
    assert_eq!(socket["request_id"], WS_TURN.request_id, "{socket}");
    assert_eq!(socket["close_code"], 1000, "{socket}");
    assert_eq!(socket["closed_by"], "client", "{socket}");
    assert!(socket["frames_in"].as_u64() >= Some(2), "{socket}");
    assert!(socket["frames_out"].as_u64() >= Some(3), "{socket}");
    assert!(socket["duration_ms"].as_f64().is_some(), "{socket}");
    let call = stack
        .core
        .log_line(|line| {
            line["target"] == "access"
                && line["rpc"] == "chat.v1.ChatService/SendMessage"
                && line["request_id"] == REST_TURN.request_id
        })
        .await?;
    assert_eq!(call["code"], "OK", "{call}");
    assert!(
        !stack.gateway.seen.iter().any(|line| line.contains(&token)),
        "the gateway logged the token of the socket's query string"
    );
    Ok(())
}

const SERVICES: [&str; 3] = ["gateway", "chat-core", "agent-worker"];

fn has_span(trace: &[Span], service: &str, attributes: &[(&str, &str)]) -> bool {
    trace
        .iter()
        .any(|span| span.service == service && attributes.iter().all(|(k, v)| span.attribute(k) == Some(*v)))
}

/// The span names of a trace, by service.
fn describe(trace: &[Span]) -> String {
    let seen: BTreeMap<&str, BTreeSet<&str>> = trace.iter().fold(BTreeMap::new(), |mut seen, span| {
        seen.entry(span.service.as_str())
            .or_default()
            .insert(span.name.as_str());
        seen
    });
    format!("{seen:?}")
}

// === the services ===

/// The three services, each its own process.
struct Stack {
    _worker: Service,
    core: Service,
    gateway: Service,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Stack {
    async fn spawn(receiver: &Receiver) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let worker = Service::spawn(
            "agent-worker",
            &["--jwt-secret", SECRET],
            &receiver.http_endpoint(),
            "http/protobuf",
        )?;
        let database = format!("sqlite://{}?mode=rwc", data.path().join("chat.db").display());
        let worker_url = format!("http://{}", worker.listen);
        let core = Service::spawn(
            "chat-core",
            &[
                "--database-url",
                &database,
                "--migrate",
                "--agent-worker-url",
                &worker_url,
                "--jwt-secret",
                SECRET,
            ],
            &receiver.grpc_endpoint(),
            "grpc",
        )?;
        let core_url = format!("http://{}", core.listen);
        let gateway = Service::spawn(
            "gateway",
            &["--chat-core-url", &core_url, "--jwt-secret", SECRET],
            &receiver.grpc_endpoint(),
            "grpc",
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        for service in [&worker, &core, &gateway] {
            service.ready(&http).await?;
        }
        Ok(Self {
            _worker: worker,
            core,
            gateway,
            http,
            _data: data,
        })
    }

    fn api(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.gateway.listen)
    }

    /// Registers a user and logs in; the access token.
    async fn user(&self) -> anyhow::Result<String> {
        let credentials = json!({"username": "tracer", "password": PASSWORD});
        self.http
            .post(self.api("/auth/register"))
            .json(&credentials)
            .send()
            .await?
            .error_for_status()?;
        let login: Value = self
            .http
            .post(self.api("/auth/login"))
            .json(&credentials)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        login["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access token")
    }

    /// Creates a session with the echo agent; its id.
    async fn session(&self, token: &str) -> anyhow::Result<String> {
        let session: Value = self
            .http
            .post(self.api("/sessions"))
            .bearer_auth(token)
            .json(&json!({"agent": "echo"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        session["id"].as_str().map(str::to_owned).context("session id")
    }

    /// Posts a message and waits for its reply; the run id.
    async fn post_message(&self, token: &str, session_id: &str, turn: &Turn) -> anyhow::Result<String> {
        let posted: Value = self
            .http
            .post(self.api(&format!("/sessions/{session_id}/messages")))
            .bearer_auth(token)
            .header("traceparent", turn.traceparent())
            .header("x-request-id", turn.request_id)
            .json(&json!({"content": "hello traces"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(posted["reply"]["content"] == "hello traces", "{posted}");
        posted["run"]["run_id"]
            .as_str()
            .map(str::to_owned)
            .context("run id")
    }

    /// Opens a socket (token in the query string), sends one message, waits
    /// for its reply and closes; the run id.
    async fn socket_turn(&self, token: &str, session_id: &str, turn: &Turn) -> anyhow::Result<String> {
        let url = format!("ws://{}/api/v1/ws?access_token={token}", self.gateway.listen);
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("traceparent", turn.traceparent().parse()?);
        request
            .headers_mut()
            .insert("x-request-id", turn.request_id.parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        let frames = [
            json!({"type": "subscribe", "session_id": session_id}),
            json!({"type": "send", "session_id": session_id, "client_msg_id": "ws-1", "content": "hello socket"}),
        ];
        for frame in frames {
            socket.send(WsMessage::Text(frame.to_string().into())).await?;
        }
        let mut run_id = None;
        let reply = tokio::time::timeout(PATIENCE, async {
            while let Some(message) = socket.next().await {
                let WsMessage::Text(text) = message? else { continue };
                let frame: Value = serde_json::from_str(text.as_str())?;
                if frame["type"] == "ack" {
                    run_id = frame["run_id"].as_str().map(str::to_owned);
                }
                let replies_to_ack =
                    run_id.is_some() && frame["message"]["run_id"].as_str() == run_id.as_deref();
                if frame["type"] == "message" && frame["message"]["role"] == "assistant" && replies_to_ack {
                    return anyhow::Ok(frame);
                }
            }
            anyhow::bail!("the socket closed before the reply")
        })
        .await
        .context("no reply on the socket")??;
        anyhow::ensure!(reply["message"]["content"] == "hello socket", "{reply}");
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        };
        socket.close(Some(normal)).await?;
        while socket.next().await.is_some() {}
        run_id.context("no ack with a run id")
    }
}

/// One `chat <service>` process, killed when dropped, with its JSON log lines.
struct Service {
    name: &'static str,
    _child: tokio::process::Child,
    listen: SocketAddr,
    admin: SocketAddr,
    logs: mpsc::UnboundedReceiver<String>,
    /// The lines read so far.
    seen: Vec<String>,
}

impl Service {
    fn spawn(name: &'static str, args: &[&str], endpoint: &str, protocol: &str) -> anyhow::Result<Self> {
        let (listen, admin) = (free_port()?, free_port()?);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat"))
            .arg(name)
            .args([
                "--listen",
                &listen.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .args(args)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_BSP_SCHEDULE_DELAY", "50")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,access=debug")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_TRACES_EXPORTER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, logs) = mpsc::unbounded_channel();
        let echo = std::env::var_os("TEST_LOG").is_some();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("{name}: {line}");
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            name,
            _child: child,
            listen,
            admin,
            logs,
            seen: Vec::new(),
        })
    }

    /// Waits until the admin `/readyz` answers 200.
    async fn ready(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.admin);
        let mut poll = tokio::time::interval(Duration::from_millis(50));
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                poll.tick().await;
                if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                    return;
                }
            }
        });
        ready
            .await
            .with_context(|| format!("{} did not become ready", self.name))
    }

    /// The first JSON log line, among those read so far and those to come,
    /// that `wanted` picks.
    async fn log_line(&mut self, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let parse = |line: &str| serde_json::from_str::<Value>(line).unwrap_or_default();
        if let Some(line) = self.seen.iter().map(|l| parse(l)).find(|l| wanted(l)) {
            return Ok(line);
        }
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.logs.recv().await {
                let value = parse(&line);
                self.seen.push(line);
                if wanted(&value) {
                    return Some(value);
                }
            }
            None
        })
        .await;
        found.ok().flatten().with_context(|| {
            format!(
                "{} logged no such line; it logged:\n{}",
                self.name,
                self.seen.join("\n")
            )
        })
    }
}

/// A port free right now on 127.0.0.1.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?)
}

// === the receiver ===

/// A span as received, with its resource's `service.name`.
#[derive(Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    parent_span_id: String,
    attributes: Vec<KeyValue>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .and_then(|value| match value {
                AnyValue::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
    }
}

/// An OTLP receiver on gRPC and on HTTP/protobuf, forwarding every span.
struct Receiver {
    grpc: SocketAddr,
    http: SocketAddr,
    spans: mpsc::UnboundedReceiver<Span>,
    /// Spans received while waiting for another trace.
    kept: Vec<Span>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let (tx, spans) = mpsc::unbounded_channel();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = grpc_listener.local_addr()?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(tx.clone())))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener)),
        );
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = http_listener.local_addr()?;
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return http::StatusCode::BAD_REQUEST.into_response();
                    };
                    forward(&tx, request);
                    (
                        [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                        .into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(http_listener, app).await });
        Ok(Self {
            grpc,
            http,
            spans,
            kept: Vec::new(),
        })
    }

    fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The spans of trace `trace_id`, once every service sent one carrying
    /// the attributes it is `expected` to (or what came within [`PATIENCE`]).
    async fn trace<'a>(
        &mut self,
        trace_id: &str,
        expected: &impl Fn(&str) -> Vec<(&'a str, &'a str)>,
    ) -> Vec<Span> {
        let (mut trace, kept): (Vec<Span>, Vec<Span>) = std::mem::take(&mut self.kept)
            .into_iter()
            .partition(|s| s.trace_id == trace_id);
        self.kept = kept;
        let complete = |trace: &[Span]| {
            SERVICES
                .iter()
                .all(|service| has_span(trace, service, &expected(service)))
        };
        let _ = tokio::time::timeout(PATIENCE, async {
            while !complete(&trace) {
                let Some(span) = self.spans.recv().await else {
                    break;
                };
                if span.trace_id == trace_id {
                    trace.push(span);
                } else {
                    self.kept.push(span);
                }
            }
        })
        .await;
        trace
    }
}

struct Collector(mpsc::UnboundedSender<Span>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        forward(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn forward(tx: &mpsc::UnboundedSender<Span>, request: ExportTraceServiceRequest) {
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let _ = tx.send(Span {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: span.attributes,
            });
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
