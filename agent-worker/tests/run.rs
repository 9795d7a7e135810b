//! Runs over a real socket: streamed replies and run-level errors.

mod helpers;

use chat_proto::agent::v1::run_event::Event;
use helpers::{deltas_and_final, run_request, spawn_app, spawn_app_with_config};

const BANK_CONFIG: &str = r#"
[[agents]]
name = "bank"
description = "Answers questions about your account"
kind = "rules"
default_reply = "I can tell you your balance or your card limit."

[[agents.rules]]
keywords = ["balance"]
reply = "Your balance is 42 EUR."

[[agents.rules]]
keywords = ["card limit", "limit*"]
reply = "Your card limit is 1000 EUR per month."
"#;

#[tokio::test]
async fn echo_streams_the_message_in_several_deltas_then_the_full_text() {
    let app = spawn_app().await;
    let text = "Streaming works, one word at a time!";

    let events = app.run("echo", &["an earlier message", text]).await;

    let (deltas, content) = deltas_and_final(&events);
    assert!(deltas.len() >= 2, "expected several deltas, got {deltas:?}");
    assert_eq!(deltas.concat(), content);
    assert_eq!(content, text);
}

#[tokio::test]
async fn echo_splits_a_single_word_into_two_deltas() {
    let app = spawn_app().await;

    let events = app.run("echo", &["hello"]).await;

    let (deltas, content) = deltas_and_final(&events);
    assert_eq!(deltas, ["he", "llo"]);
    assert_eq!(content, "hello");
}

#[tokio::test]
async fn rules_agent_replies_with_the_rule_whose_keyword_matches() {
    let app = spawn_app_with_config(BANK_CONFIG).await;

    let events = app.run("bank", &["What's my BALANCE today?"]).await;

    let (deltas, content) = deltas_and_final(&events);
    assert_eq!(content, "Your balance is 42 EUR.");
    assert!(deltas.len() >= 2, "{deltas:?}");
    assert_eq!(deltas.concat(), content);
}

#[tokio::test]
async fn rules_agent_gives_the_default_reply_when_nothing_matches() {
    let app = spawn_app_with_config(BANK_CONFIG).await;

    let events = app.run("bank", &["tell me a joke"]).await;

    let (_, content) = deltas_and_final(&events);
    assert_eq!(content, "I can tell you your balance or your card limit.");
}

#[tokio::test]
async fn shipped_bank_router_hands_opening_hours_to_the_faq() {
    let app = spawn_app().await;

    let events = app.run("bank", &["hi! when are you open?"]).await;

    let Some((Event::Handoff(handoff), reply)) = events.split_first() else {
        panic!("expected a handoff first: {events:?}");
    };
    assert_eq!(handoff.to_agent, "faq");
    let (_, content) = deltas_and_final(reply);
    assert!(content.contains("Monday to Friday"), "{content}");
}

#[tokio::test]
async fn shipped_bank_demo_escalates_a_stolen_card_to_a_person() {
    let app = spawn_app().await;

    let events = app.run("bank", &["I think my card was stolen"]).await;

    let handoffs: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            Event::Handoff(handoff) => Some(handoff.to_agent.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(handoffs, ["cards", "human"]);
    let (_, content) = deltas_and_final(&events[2..]);
    assert!(content.contains("fraud team"), "{content}");
}

#[tokio::test]
async fn unknown_agent_ends_the_stream_with_one_error_event() {
    let app = spawn_app().await;

    let events = app.run("no-such-agent", &["hello"]).await;

    let [Event::Error(error)] = events.as_slice() else {
        panic!("expected exactly one error event, got {events:?}");
    };
    assert_eq!(error.code, "unknown_agent");
    assert!(error.message.contains("no-such-agent"), "{}", error.message);
    assert!(!error.retryable);
}

#[tokio::test]
async fn run_without_history_ends_with_an_invalid_error_event() {
    let app = spawn_app().await;

    let events = app.run("echo", &[]).await;

    let [Event::Error(error)] = events.as_slice() else {
        panic!("expected exactly one error event, got {events:?}");
    };
    assert_eq!(error.code, "invalid");
    assert!(!error.retryable);
}

#[tokio::test]
async fn runs_beyond_the_concurrency_limit_are_refused() {
    let app = helpers::spawn_app_with(|s| s.max_concurrent_runs = 1).await;
    // Its deltas (~4 MiB) overflow the worker's buffer and the HTTP/2 flow-control windows,
    // so while the client does not read them the first run stays in flight.
    let long_text = "w ".repeat(400_000);
    let _in_flight = app
        .worker()
        .run(run_request("echo", &[&long_text]))
        .await
        .expect("first run starts");

    let refused = app
        .worker()
        .run(run_request("echo", &["hello"]))
        .await
        .expect_err("second run is refused");

    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
}
