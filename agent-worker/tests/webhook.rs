//! The `webhook` agent against a local agent service: both contracts, timeouts, retries and
//! the circuit breaker.

mod helpers;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_worker::AgentsConfig;
use agent_worker::agents::Registry;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chat_proto::agent::v1::run_event::Event;
use futures::StreamExt;
use helpers::{deltas_and_final, run_request, spawn_app_with_config};
use serde_json::{Value, json};

/// How the service answers one call.
#[derive(Clone, Debug)]
enum Answer {
    Json(u16, Value),
    After(Duration, Value),
}

/// A local agent service answering from a script, then with `fallback`; it records every call.
#[derive(Clone)]
struct Service {
    url: String,
    script: Arc<Mutex<VecDeque<Answer>>>,
    fallback: Arc<Mutex<Answer>>,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Service {
    async fn start(script: Vec<Answer>, fallback: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let service = Self {
            url: format!("http://{}", listener.local_addr().expect("addr")),
            script: Arc::new(Mutex::new(script.into())),
            fallback: Arc::new(Mutex::new(fallback)),
            calls: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new().fallback(answer).with_state(service.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        service
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().expect("lock").clone()
    }

    fn answer_from_now_on(&self, answer: Answer) {
        *self.fallback.lock().expect("lock") = answer;
    }
}

async fn answer(State(service): State<Service>, uri: Uri, Json(body): Json<Value>) -> Response {
    service
        .calls
        .lock()
        .expect("lock")
        .push((uri.path().to_owned(), body));
    let next = service.script.lock().expect("lock").pop_front();
    let answer = next.unwrap_or_else(|| service.fallback.lock().expect("lock").clone());
    match answer {
        Answer::Json(status, body) => {
            (StatusCode::from_u16(status).expect("status"), Json(body)).into_response()
        }
        Answer::After(pause, body) => {
            tokio::time::sleep(pause).await;
            Json(body).into_response()
        }
    }
}

fn registry(service: &Service, options: &str) -> Arc<Registry> {
    let toml = format!(
        r#"
        [[agents]]
        name = "legacy"
        kind = "webhook"
        endpoint = "{}"
        timeout_secs = 0.3
        retry_backoff_secs = 0.01
        {options}
        "#,
        service.url
    );
    let config = AgentsConfig::from_toml(&toml).expect("valid config");
    Arc::new(Registry::new(config).expect("agents build"))
}

async fn run(registry: &Arc<Registry>, messages: &[&str]) -> Vec<Event> {
    registry
        .run(run_request("legacy", messages))
        .filter_map(|event| async move { event.event })
        .collect()
        .await
}

fn error_of(events: &[Event]) -> &chat_proto::agent::v1::ErrorEvent {
    match events {
        [Event::Error(error)] => error,
        _ => panic!("expected one error event: {events:?}"),
    }
}

fn ok(body: Value) -> Answer {
    Answer::Json(200, body)
}

fn server_error() -> Answer {
    Answer::Json(500, json!({ "error": "boom" }))
}

#[tokio::test]
async fn seed_mode_speaks_the_replaced_systems_contract_over_the_worker() {
    let service = Service::start(
        vec![],
        ok(json!({ "response": "Your balance is 42 EUR.", "confidence": 0.9 })),
    )
    .await;
    let app = spawn_app_with_config(&format!(
        "[[agents]]\nname = \"legacy\"\nkind = \"webhook\"\nmode = \"seed\"\nendpoint = \"{}/\"\n",
        service.url
    ))
    .await;

    let events = app.run("legacy", &["hello", "what is my balance?"]).await;

    let (deltas, content) = deltas_and_final(&events);
    assert_eq!(content, "Your balance is 42 EUR.");
    assert!(deltas.len() >= 2, "{deltas:?}");
    let [(path, body)] = service.calls().try_into().expect("one call");
    assert_eq!(path, "/api/process");
    assert_eq!(
        body,
        json!({
            "message": "what is my balance?",
            "conversationContext": [{ "role": "user", "content": "hello" }],
            "previousResults": [],
            "sessionInfo": { "sessionId": "session-1", "agent": "legacy", "metadata": {} }
        })
    );
}

#[tokio::test]
async fn seed_mode_also_reads_message_or_content() {
    let service = Service::start(
        vec![
            ok(json!({ "message": "from message" })),
            ok(json!({ "content": "from content" })),
        ],
        ok(json!({ "unexpected": true })),
    )
    .await;
    let registry = registry(&service, "mode = \"seed\"\nretries = 0");

    assert_eq!(deltas_and_final(&run(&registry, &["hi"]).await).1, "from message");
    assert_eq!(deltas_and_final(&run(&registry, &["hi"]).await).1, "from content");
    let error = error_of(&run(&registry, &["hi"]).await).clone();
    assert_eq!(error.code, "upstream_invalid");
    assert!(!error.retryable);
}

#[tokio::test]
async fn simple_mode_posts_the_history_and_reads_reply() {
    let service = Service::start(vec![], ok(json!({ "reply": "pong" }))).await;
    let registry = registry(&service, "history_window = 2");

    let events = run(&registry, &["one", "two", "ping"]).await;

    assert_eq!(deltas_and_final(&events).1, "pong");
    let (path, body) = &service.calls()[0];
    assert_eq!(path, "/");
    assert_eq!(body["session_id"], "session-1");
    assert_eq!(body["run_id"], "run-1");
    let contents: Vec<&str> = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["two", "ping"]);
}

#[tokio::test]
async fn a_timed_out_call_is_retried_and_the_retry_answers() {
    let service = Service::start(
        vec![Answer::After(
            Duration::from_secs(2),
            json!({ "reply": "too late" }),
        )],
        ok(json!({ "reply": "second try" })),
    )
    .await;
    let registry = registry(&service, "retries = 2");

    let events = run(&registry, &["hi"]).await;

    assert_eq!(deltas_and_final(&events).1, "second try");
    assert_eq!(service.calls().len(), 2);
}

#[tokio::test]
async fn timeouts_on_every_attempt_end_with_a_retryable_timeout() {
    let service = Service::start(
        vec![],
        Answer::After(Duration::from_secs(2), json!({ "reply": "late" })),
    )
    .await;
    let registry = registry(&service, "retries = 1");

    let error = error_of(&run(&registry, &["hi"]).await).clone();

    assert_eq!(error.code, "upstream_timeout");
    assert!(error.retryable);
    assert_eq!(service.calls().len(), 2);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let service = Service::start(vec![], Answer::Json(400, json!({ "error": "bad input" }))).await;
    let registry = registry(&service, "retries = 3");

    let error = error_of(&run(&registry, &["hi"]).await).clone();

    assert_eq!(error.code, "upstream_rejected");
    assert!(!error.retryable);
    assert!(error.message.contains("bad input"), "{}", error.message);
    assert_eq!(service.calls().len(), 1);
}

#[tokio::test]
async fn repeated_server_errors_open_the_breaker_which_then_fails_fast() {
    let service = Service::start(vec![], server_error()).await;
    let registry = registry(
        &service,
        "retries = 2\nbreaker_failures = 3\nbreaker_cooldown_secs = 60",
    );

    let error = error_of(&run(&registry, &["hi"]).await).clone();
    assert_eq!(error.code, "upstream_unavailable");
    assert!(error.retryable);
    assert_eq!(service.calls().len(), 3, "first call and two retries");

    let error = error_of(&run(&registry, &["hi"]).await).clone();

    assert_eq!(error.code, "circuit_open");
    assert!(error.retryable);
    assert_eq!(
        service.calls().len(),
        3,
        "an open breaker does not call the service"
    );
}

#[tokio::test]
async fn after_the_cooldown_a_successful_probe_closes_the_breaker() {
    let service = Service::start(vec![], server_error()).await;
    let registry = registry(
        &service,
        "retries = 0\nbreaker_failures = 2\nbreaker_cooldown_secs = 1",
    );
    for _ in 0..2 {
        assert_eq!(
            error_of(&run(&registry, &["hi"]).await).code,
            "upstream_unavailable"
        );
    }
    assert_eq!(error_of(&run(&registry, &["hi"]).await).code, "circuit_open");

    service.answer_from_now_on(ok(json!({ "reply": "back again" })));
    tokio::time::sleep(Duration::from_millis(1_050)).await;

    assert_eq!(deltas_and_final(&run(&registry, &["hi"]).await).1, "back again");
    assert_eq!(deltas_and_final(&run(&registry, &["hi"]).await).1, "back again");
    assert_eq!(service.calls().len(), 4);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let service = Service::start(vec![], server_error()).await;
    let registry = registry(
        &service,
        "retries = 0\nbreaker_failures = 1\nbreaker_cooldown_secs = 1",
    );
    assert_eq!(
        error_of(&run(&registry, &["hi"]).await).code,
        "upstream_unavailable"
    );
    tokio::time::sleep(Duration::from_millis(1_050)).await;

    assert_eq!(
        error_of(&run(&registry, &["hi"]).await).code,
        "upstream_unavailable"
    );
    assert_eq!(error_of(&run(&registry, &["hi"]).await).code, "circuit_open");
    assert_eq!(service.calls().len(), 2);
}
