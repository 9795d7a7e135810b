//! The authorisation matrix: every REST route, WebSocket frame type and
//! gRPC-Web method, called with no token, a garbage token, another user's
//! token and the owner's token, with the result each must get.

use crate::common;

use std::fmt::Write as _;

use chat_proto::chat::v1 as pb;
use chat_proto::chat::v1::chat_service_client::ChatServiceClient;
use common::TestStack;
use futures::StreamExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use reqwest::Method;
use serde_json::{Value, json};
use tonic::Code;
use tonic_web::GrpcWebClientLayer;

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Garbage,
    Other,
    Owner,
}

const CALLERS: [Caller; 4] = [Caller::Anonymous, Caller::Garbage, Caller::Other, Caller::Owner];
const GARBAGE: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bm90LWEtc2lnbmF0dXJl";

struct Matrix {
    stack: TestStack,
    owner: String,
    other: String,
    mismatches: String,
}

impl Matrix {
    async fn new() -> anyhow::Result<Self> {
        let stack = TestStack::spawn_with(|s| {
            s.rate_limit_max_requests = common::nz(100_000);
            s.message_rate_limit = common::nz(10_000);
        })
        .await?;
        let owner = stack.user("owner").await?;
        let other = stack.user("other").await?;
        Ok(Self {
            stack,
            owner,
            other,
            mismatches: String::new(),
        })
    }

    fn token(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Anonymous => None,
            Caller::Garbage => Some(GARBAGE),
            Caller::Other => Some(&self.other),
            Caller::Owner => Some(&self.owner),
        }
    }

    /// A fresh session of the owner, so destructive calls do not affect other rows.
    async fn session(&self) -> anyhow::Result<String> {
        self.stack.session(&self.owner, "echo").await
    }

    fn check(&mut self, what: &str, caller: Caller, got: impl std::fmt::Debug, want: impl std::fmt::Debug) {
        let (got, want) = (format!("{got:?}"), format!("{want:?}"));
        if got != want {
            let _ = writeln!(self.mismatches, "{what} as {caller:?}: got {got}, want {want}");
        }
    }
}

// === REST ===

struct Route {
    method: Method,
    /// `{id}` is replaced by a fresh session of the owner, `{run}` by a run id.
    path: &'static str,
    body: Option<Value>,
    /// Status for the other user and for the owner (anonymous and garbage get 401).
    other: u16,
    owner: u16,
}

fn routes() -> Vec<Route> {
    let route = |method: Method, path, body, other, owner| Route {
        method,
        path,
        body,
        other,
        owner,
    };
    vec![
        route(Method::GET, "/api/v1/sessions", None, 200, 200),
        route(
            Method::POST,
            "/api/v1/sessions",
            Some(json!({"agent": "echo"})),
            201,
            201,
        ),
        route(Method::GET, "/api/v1/sessions/{id}", None, 403, 200),
        route(Method::DELETE, "/api/v1/sessions/{id}", None, 403, 204),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/resolve",
            Some(json!({})),
            403,
            200,
        ),
        route(Method::POST, "/api/v1/sessions/{id}/end", None, 403, 200),
        route(Method::GET, "/api/v1/sessions/{id}/messages", None, 403, 200),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/messages",
            Some(json!({"content": "hello", "client_msg_id": "m1"})),
            403,
            200,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/runs/{run}/cancel",
            None,
            403,
            404,
        ),
        route(Method::GET, "/api/v1/agents", None, 200, 200),
        route(Method::GET, "/api/v1/ws", None, 400, 400),
    ]
}

#[tokio::test]
async fn every_rest_route() -> anyhow::Result<()> {
    let mut matrix = Matrix::new().await?;
    for route in routes() {
        for caller in CALLERS {
            let session = matrix.session().await?;
            let path = route
                .path
                .replace("{id}", &session)
                .replace("{run}", &uuid::Uuid::new_v4().to_string());
            let mut request = matrix
                .stack
                .http
                .request(route.method.clone(), matrix.stack.url(&path));
            if let Some(token) = matrix.token(caller) {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &route.body {
                request = request.json(body);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let want = match caller {
                Caller::Anonymous | Caller::Garbage => 401,
                Caller::Other => route.other,
                Caller::Owner => route.owner,
            };
            let what = format!("{} {}", route.method, route.path);
            matrix.check(&what, caller, status, want);
            if status >= 400 {
                let body: Value = response.json().await.unwrap_or_default();
                let code = match status {
                    401 => Some("unauthenticated"),
                    403 => Some("forbidden"),
                    404 => Some("not_found"),
                    _ => None,
                };
                if let Some(code) = code {
                    matrix.check(&what, caller, body["error"]["code"].clone(), json!(code));
                }
            }
        }
    }
    assert!(matrix.mismatches.is_empty(), "\n{}", matrix.mismatches);
    Ok(())
}

// === WebSocket ===

/// A frame type, the frame for a session, and the answer for the other user and the owner.
type FrameRow = (&'static str, fn(&str) -> Value, &'static str, &'static str);

#[tokio::test]
async fn every_websocket_frame_type() -> anyhow::Result<()> {
    let mut matrix = Matrix::new().await?;
    // Upgrades: without a valid token there is no socket.
    for caller in [Caller::Anonymous, Caller::Garbage] {
        let mut url = format!("ws://{}/api/v1/ws", matrix.stack.addr);
        if let Some(token) = matrix.token(caller) {
            url.push_str(&format!("?access_token={token}"));
        }
        let refused = match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
            Err(_) => None,
            Ok(_) => Some(101),
        };
        matrix.check("ws upgrade", caller, refused, Some(401));
    }
    // Frames: (type, frame, first answer's type or error code) for the other user and the owner.
    let frames: Vec<FrameRow> = vec![
        ("ping", |_| json!({"type": "ping"}), "pong", "pong"),
        (
            "subscribe",
            |s| json!({"type": "subscribe", "session_id": s, "after_seq": 0}),
            "forbidden",
            "subscribed",
        ),
        (
            "send",
            |s| json!({"type": "send", "session_id": s, "client_msg_id": "w1", "content": "hi"}),
            "forbidden",
            "ack",
        ),
        (
            "cancel",
            |s| json!({"type": "cancel", "session_id": s, "run_id": uuid::Uuid::new_v4().to_string()}),
            "forbidden",
            "not_found",
        ),
        (
            "unsubscribe",
            // A no-op for a session the socket does not follow: nothing to refuse or reveal.
            |s| json!({"type": "unsubscribe", "session_id": s}),
            "unsubscribed",
            "unsubscribed",
        ),
    ];
    for (kind, frame, other, owner) in frames {
        for (caller, want) in [(Caller::Other, other), (Caller::Owner, owner)] {
            let session = matrix.session().await?;
            let token = matrix.token(caller).unwrap_or_default().to_owned();
            let mut ws = matrix.stack.ws(&token).await?;
            ws.send(frame(&session)).await;
            let answer = ws.recv().await;
            let got = match answer["type"].as_str() {
                Some("error") => answer["code"].as_str().unwrap_or_default().to_owned(),
                other => other.unwrap_or_default().to_owned(),
            };
            matrix.check(&format!("ws {kind}"), caller, got, want);
        }
    }
    // In-band auth: only a token of the socket's own user is taken; another
    // user's is forbidden (and closes the socket, so it comes last).
    let mut ws = matrix.stack.ws(&matrix.owner).await?;
    for (caller, want) in [
        (Caller::Garbage, "unauthenticated"),
        (Caller::Owner, "authenticated"),
        (Caller::Other, "forbidden"),
    ] {
        let token = matrix.token(caller).unwrap_or_default().to_owned();
        ws.send(json!({"type": "auth", "access_token": token})).await;
        let answer = ws.recv().await;
        let got = match answer["type"].as_str() {
            Some("error") => answer["code"].as_str().unwrap_or_default().to_owned(),
            other => other.unwrap_or_default().to_owned(),
        };
        matrix.check("ws auth", caller, got, want);
    }
    assert!(matrix.mismatches.is_empty(), "\n{}", matrix.mismatches);
    Ok(())
}

// === gRPC-Web ===

type GrpcWeb = ChatServiceClient<
    tonic_web::GrpcWebClientService<
        Client<hyper_util::client::legacy::connect::HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>,
    >,
>;

fn grpc_web(stack: &TestStack) -> anyhow::Result<GrpcWeb> {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    Ok(ChatServiceClient::with_origin(service, stack.url("").parse()?))
}

fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}

/// The code of a server stream: its call's, else its first item's (a stream
/// still open and quiet after a moment, like an idle subscription, is `Ok`).
async fn stream_code<T>(result: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>) -> Code {
    let mut stream = match result {
        Err(status) => return status.code(),
        Ok(response) => response.into_inner(),
    };
    match tokio::time::timeout(std::time::Duration::from_secs(1), stream.next()).await {
        Ok(Some(Err(status))) => status.code(),
        _ => Code::Ok,
    }
}

#[tokio::test]
async fn every_grpc_web_method() -> anyhow::Result<()> {
    let mut matrix = Matrix::new().await?;
    let mut client = grpc_web(&matrix.stack)?;
    let methods = [
        "CreateSession",
        "GetSession",
        "ListSessions",
        "ResolveSession",
        "EndSession",
        "HandBack",
        "DeleteSession",
        "ListMessages",
        "SendMessage",
        "Subscribe",
        "CancelRun",
        "ListAgents",
    ];
    for method in methods {
        for caller in CALLERS {
            let session_id = matrix.session().await?;
            let token = matrix.token(caller).map(str::to_owned);
            let token = token.as_deref();
            let got = match method {
                "CreateSession" => code(
                    client
                        .create_session(request(
                            pb::CreateSessionRequest {
                                agent: "echo".into(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await,
                ),
                "GetSession" => code(
                    client
                        .get_session(request(pb::GetSessionRequest { session_id }, token))
                        .await,
                ),
                "ListSessions" => code(
                    client
                        .list_sessions(request(pb::ListSessionsRequest::default(), token))
                        .await,
                ),
                "ResolveSession" => code(
                    client
                        .resolve_session(request(
                            pb::ResolveSessionRequest {
                                session_id,
                                notes: String::new(),
                            },
                            token,
                        ))
                        .await,
                ),
                "EndSession" => code(
                    client
                        .end_session(request(pb::EndSessionRequest { session_id }, token))
                        .await,
                ),
                "HandBack" => code(
                    client
                        .hand_back(request(
                            pb::HandBackRequest {
                                session_id,
                                agent: String::new(),
                            },
                            token,
                        ))
                        .await,
                ),
                "DeleteSession" => code(
                    client
                        .delete_session(request(pb::DeleteSessionRequest { session_id }, token))
                        .await,
                ),
                "ListMessages" => code(
                    client
                        .list_messages(request(
                            pb::ListMessagesRequest {
                                session_id,
                                limit: 10,
                                ..Default::default()
                            },
                            token,
                        ))
                        .await,
                ),
                "SendMessage" => {
                    stream_code(
                        client
                            .send_message(request(
                                pb::SendMessageRequest {
                                    session_id,
                                    client_msg_id: "g1".into(),
                                    content: "hi".into(),
                                    role: String::new(),
                                    metadata_json: String::new(),
                                },
                                token,
                            ))
                            .await,
                    )
                    .await
                }
                "Subscribe" => {
                    stream_code(
                        client
                            .subscribe(request(
                                pb::SubscribeRequest {
                                    session_id,
                                    after_seq: 0,
                                },
                                token,
                            ))
                            .await,
                    )
                    .await
                }
                "CancelRun" => code(
                    client
                        .cancel_run(request(
                            pb::CancelRunRequest {
                                session_id,
                                run_id: uuid::Uuid::new_v4().to_string(),
                            },
                            token,
                        ))
                        .await,
                ),
                "ListAgents" => code(client.list_agents(request(pb::ListAgentsRequest {}, token)).await),
                _ => unreachable!(),
            };
            let collection = matches!(method, "CreateSession" | "ListSessions" | "ListAgents");
            let want = match caller {
                Caller::Anonymous | Caller::Garbage => Code::Unauthenticated,
                Caller::Other if collection => Code::Ok,
                Caller::Other => Code::PermissionDenied,
                Caller::Owner if method == "CancelRun" => Code::NotFound,
                // The owner may go back to the agent only from waiting for a
                // person; the matrix's sessions are active.
                Caller::Owner if method == "HandBack" => Code::AlreadyExists,
                Caller::Owner => Code::Ok,
            };
            matrix.check(method, caller, got, want);
        }
    }
    assert!(matrix.mismatches.is_empty(), "\n{}", matrix.mismatches);
    Ok(())
}

// === Beyond the matrix ===

/// The SSE form of sending is authorised like the JSON one.
#[tokio::test]
async fn sse_sending_is_authorised_like_json_sending() -> anyhow::Result<()> {
    let mut matrix = Matrix::new().await?;
    for caller in CALLERS {
        let session = matrix.session().await?;
        let mut request = matrix
            .stack
            .http
            .post(matrix.stack.url(&format!("/api/v1/sessions/{session}/messages")))
            .header("accept", "text/event-stream")
            .json(&json!({"content": "hello", "client_msg_id": "sse-1"}));
        if let Some(token) = matrix.token(caller) {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let event_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = response.text().await?;
        let want = match caller {
            Caller::Anonymous | Caller::Garbage => (401, false),
            Caller::Other => (403, false),
            Caller::Owner => (200, true),
        };
        matrix.check("SSE send", caller, (status, event_stream), want);
        if caller == Caller::Owner {
            matrix.check("SSE send ends with", caller, body.contains("event: run"), true);
        }
    }
    assert!(matrix.mismatches.is_empty(), "\n{}", matrix.mismatches);
    Ok(())
}

/// Another user's listing holds none of the owner's sessions.
#[tokio::test]
async fn another_users_listing_holds_none_of_the_owners_sessions() -> anyhow::Result<()> {
    let matrix = Matrix::new().await?;
    let owned = matrix.session().await?;
    let list = |token: String| {
        let request = matrix
            .stack
            .http
            .get(matrix.stack.url("/api/v1/sessions"))
            .bearer_auth(token);
        async move { request.send().await?.json::<Value>().await }
    };
    let ids = |body: &Value| -> Vec<String> {
        body["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        ids(&list(matrix.owner.clone()).await?).contains(&owned),
        "the owner sees it"
    );
    assert!(
        !ids(&list(matrix.other.clone()).await?).contains(&owned),
        "another user's listing shows the owner's session"
    );
    Ok(())
}

/// Cancelling a real run: another user is refused on every transport, and
/// the owner naming it under another of their sessions finds no such run;
/// the run is untouched either way.
#[tokio::test]
async fn a_real_run_is_cancelled_only_through_its_own_session_by_its_owner() -> anyhow::Result<()> {
    let mut matrix = Matrix::new().await?;
    let session = matrix.session().await?;
    let elsewhere = matrix.session().await?;
    let sent: Value = matrix
        .stack
        .http
        .post(matrix.stack.url(&format!("/api/v1/sessions/{session}/messages")))
        .bearer_auth(&matrix.owner)
        .json(&json!({"content": "keep me", "client_msg_id": "real-run"}))
        .send()
        .await?
        .json()
        .await?;
    let run_id = sent["run"]["run_id"].as_str().expect("a run").to_owned();
    assert_eq!(sent["run"]["status"], "completed");

    let cancel = |token: &str, session: &str| {
        matrix
            .stack
            .http
            .post(
                matrix
                    .stack
                    .url(&format!("/api/v1/sessions/{session}/runs/{run_id}/cancel")),
            )
            .bearer_auth(token)
            .send()
    };
    let other = cancel(&matrix.other, &session).await?.status().as_u16();
    let mixed = cancel(&matrix.owner, &elsewhere).await?.status().as_u16();
    matrix.check("REST cancel of a real run", Caller::Other, other, 403);
    matrix.check("REST cancel under another session", Caller::Owner, mixed, 404);

    let mut ws = matrix.stack.ws(&matrix.other).await?;
    ws.send(json!({"type": "cancel", "session_id": session, "run_id": run_id}))
        .await;
    let answer = ws.recv().await;
    matrix.check(
        "ws cancel of a real run",
        Caller::Other,
        answer["code"].clone(),
        json!("forbidden"),
    );
    let mut ws = matrix.stack.ws(&matrix.owner).await?;
    ws.send(json!({"type": "cancel", "session_id": elsewhere, "run_id": run_id}))
        .await;
    let answer = ws.recv().await;
    matrix.check(
        "ws cancel under another session",
        Caller::Owner,
        answer["code"].clone(),
        json!("not_found"),
    );

    let mut client = grpc_web(&matrix.stack)?;
    let refused = client
        .cancel_run(request(
            pb::CancelRunRequest {
                session_id: session.clone(),
                run_id: run_id.clone(),
            },
            Some(&matrix.other),
        ))
        .await;
    matrix.check(
        "gRPC-Web cancel of a real run",
        Caller::Other,
        code(refused),
        Code::PermissionDenied,
    );

    let history = matrix.stack.history(&matrix.owner, &session).await?;
    matrix.check("the run's reply", Caller::Owner, history.len(), 2);
    assert!(matrix.mismatches.is_empty(), "\n{}", matrix.mismatches);
    Ok(())
}

/// Logging out revokes the family of the refresh token given, and only it:
/// another user's session of the app keeps refreshing.
#[tokio::test]
async fn logout_revokes_only_the_family_it_names() -> anyhow::Result<()> {
    let matrix = Matrix::new().await?;
    let mine = matrix.stack.login("owner").await?;
    let theirs = matrix.stack.login("other").await?;
    let refresh = |token: &Value| {
        let request = matrix
            .stack
            .http
            .post(matrix.stack.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": token["refresh_token"]}));
        async move { request.send().await.map(|r| r.status().as_u16()) }
    };
    let logout = matrix
        .stack
        .http
        .post(matrix.stack.url("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": mine["refresh_token"]}))
        .send()
        .await?;
    assert_eq!(logout.status(), 204);
    assert_eq!(
        refresh(&mine).await?,
        401,
        "the logged-out family no longer refreshes"
    );
    assert_eq!(refresh(&theirs).await?, 200, "another user's family is untouched");
    Ok(())
}
