//! One chat turn is one trace with spans from gateway, chat-core and
//! agent-worker, each running as its own `chat` process exporting over OTLP
//! to a receiver in this test (gRPC for two of them, HTTP/protobuf for the
//! third), continuing the `traceparent` the client sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use axum::response::IntoResponse as _;
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
use tokio::sync::mpsc;

const SECRET: &str = "traces-test-secret-0123456789abcdef";
const PASSWORD: &str = "correct horse battery";
/// The trace and parent span the client sends in `traceparent`.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";
const REQUEST_ID: &str = "trace-test-request-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_turn_is_one_trace_across_the_three_services() -> anyhow::Result<()> {
    // Arrange: a receiver, then the three services exporting to it.
    let mut receiver = Receiver::start().await?;
    let data = tempfile::tempdir()?;
    let worker = Service::spawn("agent-worker", &[], &receiver.http_endpoint(), "http/protobuf")?;
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
    let base = format!("http://{}/api/v1", gateway.listen);
    let token = user(&http, &base).await?;
    let session: Value = http
        .post(format!("{base}/sessions"))
        .bearer_auth(&token)
        .json(&json!({"agent": "echo"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let session_id = session["id"].as_str().context("session id")?.to_owned();

    // Act: one turn, sent with a trace context and a request id.
    let posted: Value = http
        .post(format!("{base}/sessions/{session_id}/messages"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"))
        .header("x-request-id", REQUEST_ID)
        .json(&json!({"content": "hello traces"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(posted["reply"]["content"], "hello traces", "{posted}");
    let run_id = posted["run"]["run_id"].as_str().context("run id")?.to_owned();

    // Assert: the trace sent has, from each service, a span carrying the
    // session, run and request ids, and the gateway's continues the client's.
    let turn = [
        ("session_id", session_id.as_str()),
        ("run_id", run_id.as_str()),
        ("request_id", REQUEST_ID),
    ];
    let services = ["gateway", "chat-core", "agent-worker"];
    let has_turn_span = |trace: &[Span], service: &str| {
        trace
            .iter()
            .any(|span| span.service == service && turn.iter().all(|(k, v)| span.attribute(k) == Some(*v)))
    };
    let mut trace: Vec<Span> = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while !services.iter().all(|service| has_turn_span(&trace, service)) {
            let Some(span) = receiver.spans.recv().await else {
                break;
            };
            if span.trace_id == TRACE_ID {
                trace.push(span);
            }
        }
    })
    .await;
    let seen: BTreeMap<&str, BTreeSet<&str>> = trace.iter().fold(BTreeMap::new(), |mut seen, span| {
        seen.entry(span.service.as_str())
            .or_default()
            .insert(span.name.as_str());
        seen
    });
    for service in services {
        assert!(
            has_turn_span(&trace, service),
            "no {service} span with {turn:?} in trace {TRACE_ID}; spans seen: {seen:?}"
        );
    }
    assert!(
        trace
            .iter()
            .any(|span| span.service == "gateway" && span.parent_span_id == CLIENT_SPAN_ID),
        "the gateway's request span continues the client's span; spans seen: {seen:?}"
    );
    Ok(())
}

/// Registers a user and logs in; the access token.
async fn user(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let credentials = json!({"username": "tracer", "password": PASSWORD});
    http.post(format!("{base}/auth/register"))
        .json(&credentials)
        .send()
        .await?
        .error_for_status()?;
    let login: Value = http
        .post(format!("{base}/auth/login"))
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

// === the services ===

/// One `chat <service>` process, killed when dropped.
struct Service {
    name: &'static str,
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Service {
    fn spawn(name: &'static str, args: &[&str], endpoint: &str, protocol: &str) -> anyhow::Result<Self> {
        let (listen, admin) = (free_port()?, free_port()?);
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
        command
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
            .env("RUST_LOG", "info")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_TRACES_EXPORTER")
            .stdin(Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        Ok(Self {
            name,
            child,
            listen,
            admin,
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
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let (tx, spans) = mpsc::unbounded_channel();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = grpc_listener.local_addr()?;
        let collector = Collector(tx.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener)),
        );
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = http_listener.local_addr()?;
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            forward(&tx, request);
                            (
                                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                                .into_response()
                        }
                        Err(_) => http::StatusCode::BAD_REQUEST.into_response(),
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(http_listener, app).await });
        Ok(Self { grpc, http, spans })
    }

    fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
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
