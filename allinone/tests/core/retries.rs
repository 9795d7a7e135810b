//! When an attempt fails in a way another attempt may fix (a retryable error
//! event, an upstream stream cut short, no worker answering in time), the
//! run starts its next attempt, up to `RUN_MAX_ATTEMPTS`, then fails; clients
//! are told at each step. The LLM endpoint is a stand-in speaking the
//! OpenAI streaming wire format; the agent-worker and chat-core are real.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chat_proto::chat::v1::{self as pb, session_event::Event};
use chat_testkit::{CuttableProxy, TestDatabase, socket_addr_of};
use common::*;
use serde_json::json;

/// How the stand-in answers its n-th call (from 0).
#[derive(Clone, Copy)]
enum Answer {
    /// HTTP 503: retryable `upstream_unavailable`.
    Unavailable,
    /// A chunk, then the body ends without a finish or `[DONE]`.
    CutShort,
    /// "fine", streamed in two chunks.
    Fine,
}

#[derive(Clone)]
struct StandIn {
    calls: Arc<AtomicUsize>,
    script: Arc<dyn Fn(usize) -> Answer + Send + Sync>,
}

fn chunk(content: &str, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "stand-in",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    });
    format!("data: {body}\n\n")
}

async fn completions(State(stand_in): State<StandIn>) -> Response {
    let call = stand_in.calls.fetch_add(1, Ordering::SeqCst);
    let stream = match (stand_in.script)(call) {
        Answer::Unavailable => return (http::StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response(),
        Answer::CutShort => chunk("half an ans", None),
        Answer::Fine => format!(
            "{}{}data: [DONE]\n\n",
            chunk("fi", None),
            chunk("ne", Some("stop"))
        ),
    };
    ([(http::header::CONTENT_TYPE, "text/event-stream")], stream).into_response()
}

/// A stand-in LLM endpoint answering by `script`; returns the agents config
/// of an `llm` agent `model` using it, and its call counter.
async fn stand_in(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let state = StandIn {
        calls: Arc::default(),
        script: Arc::new(script),
    };
    let calls = state.calls.clone();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = format!(
        "[[agents]]\nname = \"model\"\nkind = \"llm\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"stand-in\"\n\n\
         [[agents]]\nname = \"echo\"\nkind = \"echo\"\n"
    );
    (config, calls)
}

/// The run statuses (with attempts) a send reported, and its stored reply.
fn statuses(events: &[pb::SendMessageEvent]) -> Vec<(pb::RunStatus, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent {
                event: Some(Event::Run(r)),
            })) => Some((r.status(), r.attempt)),
            _ => None,
        })
        .filter(|(status, _)| *status != pb::RunStatus::Queued)
        .collect()
}

/// Asserts the run failed, telling clients `code`.
fn assert_failed_with(events: &[pb::SendMessageEvent], code: &str) {
    let error = failure(events);
    assert!(error.starts_with(code), "{error}");
}

fn failure(events: &[pb::SendMessageEvent]) -> String {
    events
        .iter()
        .find_map(|e| match &e.event {
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent {
                event: Some(Event::Run(r)),
            })) if r.status() == pb::RunStatus::Failed => Some(r.error.clone()),
            _ => None,
        })
        .expect("a failed run")
}

#[tokio::test]
async fn a_retryable_error_event_starts_the_next_attempt() {
    let (config, calls) = stand_in(|call| {
        if call == 0 {
            Answer::Unavailable
        } else {
            Answer::Fine
        }
    })
    .await;
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(&config)).await;
    let core = spawn_core(&db.url, &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "model", "").await;

    let events = send(core.addr, &token, &session.id, "m1", "hello").await;
    assert_eq!(
        statuses(&events),
        [
            (pb::RunStatus::Running, 1),
            (pb::RunStatus::Retrying, 2),
            (pb::RunStatus::Running, 2),
            (pb::RunStatus::Completed, 2)
        ]
    );
    assert_eq!(history(core.addr, &token, &session.id).await[1].content, "fine");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_stream_cut_short_is_retried_and_its_partial_text_never_stored() {
    let (config, calls) = stand_in(|call| if call == 0 { Answer::CutShort } else { Answer::Fine }).await;
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(&config)).await;
    let core = spawn_core(&db.url, &worker.url).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "model", "").await;

    let events = send(core.addr, &token, &session.id, "m1", "hello").await;
    let deltas: Vec<(u32, u32, String)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent {
                event: Some(Event::Delta(d)),
            })) => Some((d.attempt, d.index, d.text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        deltas,
        [
            (1, 0, "half an ans".to_owned()),
            (2, 0, "fi".to_owned()),
            (2, 1, "ne".to_owned())
        ],
        "the second attempt streams again from index 0"
    );
    assert_eq!(statuses(&events).last(), Some(&(pb::RunStatus::Completed, 2)));
    let stored = history(core.addr, &token, &session.id).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].content, "fine");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn after_the_last_attempt_the_run_fails_and_clients_are_told() {
    let (config, calls) = stand_in(|_| Answer::Unavailable).await;
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker_with(Some(&config)).await;
    let core = spawn_core_with(&db.url, &worker.url, |s| s.run_max_attempts = 3).await;
    let (_, token) = register(core.addr).await;
    let session = create_session_with(core.addr, &token, "model", "").await;

    let events = send(core.addr, &token, &session.id, "m1", "hello").await;
    assert_eq!(
        statuses(&events),
        [
            (pb::RunStatus::Running, 1),
            (pb::RunStatus::Retrying, 2),
            (pb::RunStatus::Running, 2),
            (pb::RunStatus::Retrying, 3),
            (pb::RunStatus::Running, 3),
            (pb::RunStatus::Failed, 3)
        ]
    );
    assert_failed_with(&events, "upstream_unavailable");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "exactly RUN_MAX_ATTEMPTS calls");
    assert_eq!(
        history(core.addr, &token, &session.id).await.len(),
        1,
        "no reply is stored"
    );
}

/// A worker that hangs (its connection open, nothing answered) fails each
/// attempt at `DISPATCH_TIMEOUT_MS`; once the last one failed, the run is
/// failed, and the next message is answered when the worker recovers.
#[tokio::test]
async fn a_hanging_worker_fails_attempts_at_the_dispatch_timeout() {
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let proxy = CuttableProxy::start(socket_addr_of(&worker.url).unwrap())
        .await
        .unwrap();
    // Room for a first turn's connect through the proxy on a loaded machine.
    let core = spawn_core_with(&db.url, &format!("http://{}", proxy.addr()), |s| {
        s.dispatch_timeout_ms = 1_000;
        s.run_max_attempts = 2;
    })
    .await;
    let (_, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    // The pool has learnt the worker's agents: a first turn is answered.
    let first = send(core.addr, &token, &session.id, "m1", "before").await;
    assert_eq!(statuses(&first).last(), Some(&(pb::RunStatus::Completed, 1)));

    proxy.stall();
    let events = send(core.addr, &token, &session.id, "m2", "while it hangs").await;
    assert_eq!(
        statuses(&events),
        [
            (pb::RunStatus::Running, 1),
            (pb::RunStatus::Retrying, 2),
            (pb::RunStatus::Running, 2),
            (pb::RunStatus::Failed, 2)
        ]
    );
    assert_failed_with(&events, "worker_unavailable");

    proxy.restore();
    let after = send(core.addr, &token, &session.id, "m3", "after").await;
    assert_eq!(statuses(&after).last(), Some(&(pb::RunStatus::Completed, 1)));
}
