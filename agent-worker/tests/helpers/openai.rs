//! A stand-in for an OpenAI-compatible `/v1/chat/completions` endpoint, on 127.0.0.1:0.
//!
//! Each request takes the next scripted [`Reply`] and is recorded for assertions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};

/// How the stand-in answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// SSE `data:` payloads, then `data: [DONE]`.
    Stream(Vec<String>),
    /// The payloads, then silence for the duration, then `[DONE]`.
    Stall(Vec<String>, Duration),
    /// The payloads, then the connection ends cleanly without `[DONE]`.
    EndEarly(Vec<String>),
    /// The payloads, then the connection is cut mid-response.
    Abort(Vec<String>),
    /// An error status with a JSON body.
    Status(u16, Value),
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
    tool_calls: Arc<Mutex<Vec<Value>>>,
}

/// A running stand-in; requests beyond the script get a 500.
pub struct StandIn {
    pub addr: SocketAddr,
    shared: Shared,
}

impl StandIn {
    /// Starts a stand-in answering requests with `script`, in order.
    pub async fn start(script: Vec<Reply>) -> Self {
        let shared = Shared {
            script: Arc::new(Mutex::new(script.into())),
            ..Shared::default()
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/tools/balance", post(balance_tool))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    /// The `base_url` to configure: the API root including `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every completions request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// The JSON bodies the `balance` HTTP tool received.
    pub fn tool_calls(&self) -> Vec<Value> {
        self.shared.tool_calls.lock().expect("lock").clone()
    }
}

async fn completions(State(shared): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    shared.received.lock().expect("lock").push(Received {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    });
    let reply = shared.script.lock().expect("lock").pop_front();
    let Some(reply) = reply else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response();
    };
    let (payloads, tail): (Vec<String>, Tail) = match reply {
        Reply::Status(status, body) => {
            let status = StatusCode::from_u16(status).expect("valid status");
            return (status, Json(body)).into_response();
        }
        Reply::Stream(payloads) => (payloads, Tail::Done(Duration::ZERO)),
        Reply::Stall(payloads, pause) => (payloads, Tail::Done(pause)),
        Reply::EndEarly(payloads) => (payloads, Tail::End),
        Reply::Abort(payloads) => (payloads, Tail::Abort),
    };
    let frames = payloads
        .into_iter()
        .map(|p| Ok(Bytes::from(format!("data: {p}\n\n"))));
    let tail = futures::stream::once(async move {
        match tail {
            Tail::Done(pause) => {
                tokio::time::sleep(pause).await;
                Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            }
            Tail::End => None,
            Tail::Abort => {
                // Let the head and first chunks go out, so the cut is mid-response.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some(Err(std::io::Error::other("cut")))
            }
        }
    })
    .filter_map(|frame| async move { frame });
    let body = futures::stream::iter(frames).chain(tail);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .expect("response")
}

enum Tail {
    Done(Duration),
    End,
    Abort,
}

async fn balance_tool(State(shared): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    shared.tool_calls.lock().expect("lock").push(body);
    Json(json!({ "balance": "42.00", "currency": "EUR" }))
}

// === chunks in the real wire format ===

fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }]
    })
    .to_string()
}

/// A complete streamed text answer: the role chunk, one chunk per piece, the stop chunk.
pub fn text_answer(pieces: &[&str]) -> Vec<String> {
    let mut chunks = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    chunks.extend(
        pieces
            .iter()
            .map(|piece| chunk(json!({ "content": piece }), None)),
    );
    chunks.push(chunk(json!({}), Some("stop")));
    chunks
}

/// The start of a tool call: its index, id and function name, with empty arguments.
pub fn tool_call_start(index: usize, id: &str, name: &str) -> String {
    chunk(
        json!({ "tool_calls": [{ "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }] }),
        None,
    )
}

/// A fragment of a tool call's arguments.
pub fn tool_call_arguments(index: usize, fragment: &str) -> String {
    chunk(
        json!({ "tool_calls": [{ "index": index, "function": { "arguments": fragment } }] }),
        None,
    )
}

/// The last chunk of a response that asked for tool calls.
pub fn tool_calls_finished() -> String {
    chunk(json!({}), Some("tool_calls"))
}
