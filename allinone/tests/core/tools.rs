//! An `llm` agent that calls a tool, end to end: the worker talks to a local
//! stand-in for an OpenAI-compatible server (the real streaming wire format),
//! clients see `tool_call` and `tool_result` events, and the stored reply
//! carries its tool calls.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use chat_proto::chat::v1::{self as pb, session_event::Event};
use common::*;
use serde_json::{Value, json};

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "stand-in",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {body}\n\n")
}

/// Asks for the calculator first, then answers with the tool's result.
async fn completions(
    State(seen): State<Arc<Mutex<Vec<Value>>>>,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let answered = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "tool");
    seen.lock().unwrap().push(body);
    let mut stream = String::new();
    if answered {
        stream.push_str(&chunk(json!({"role": "assistant", "content": "It is "}), None));
        stream.push_str(&chunk(json!({"content": "14."}), None));
        stream.push_str(&chunk(json!({}), Some("stop")));
    } else {
        let start = json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "calculator", "arguments": ""}}]});
        stream.push_str(&chunk(start, None));
        stream.push_str(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"expression\":"}}]}),
            None,
        ));
        stream.push_str(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"2+3*4\"}"}}]}),
            None,
        ));
        stream.push_str(&chunk(json!({}), Some("tool_calls")));
    }
    stream.push_str("data: [DONE]\n\n");
    ([(http::header::CONTENT_TYPE, "text/event-stream")], stream)
}

#[tokio::test]
async fn tool_calls_are_streamed_to_clients_and_stored_with_the_reply() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stand_in = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = format!(
        r#"
[[agents]]
name = "maths"
kind = "llm"
base_url = "http://{stand_in}/v1"
model = "stand-in"
builtin_tools = ["calculator"]
"#
    );
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(&config)).await;
    let core = spawn_core(&db.url, &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "maths", "").await;
    let events = send(core.addr, &token, &session.id, "m1", "what is 2+3*4?").await;

    let session_events: Vec<Event> = events
        .into_iter()
        .filter_map(|e| match e.event {
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent { event: Some(event) })) => {
                Some(event)
            }
            _ => None,
        })
        .collect();
    let call = session_events
        .iter()
        .find_map(|e| {
            if let Event::ToolCall(c) = e {
                Some(c.clone())
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(
        (call.call_id.as_str(), call.name.as_str()),
        ("call_1", "calculator")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments_json).unwrap(),
        json!({"expression": "2+3*4"})
    );
    let result = session_events
        .iter()
        .find_map(|e| {
            if let Event::ToolResult(r) = e {
                Some(r.clone())
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(result.content, "14");

    let stored = history(core.addr, &token, &session.id).await;
    assert_eq!(stored[1].content, "It is 14.");
    let tool_calls: Value = serde_json::from_str(&stored[1].tool_calls_json).unwrap();
    assert_eq!(
        tool_calls,
        json!([{"call_id": "call_1", "name": "calculator", "arguments": {"expression": "2+3*4"}, "result": "14"}])
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the model was asked again with the tool's result"
    );
}
