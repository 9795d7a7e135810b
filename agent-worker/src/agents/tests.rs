//! Unit tests of runs answered by the registry, without a server.

use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{HistoryMessage, RunEvent, RunRequest};
use futures::StreamExt;

use super::events::split_into_deltas;
use super::*;

fn registry() -> Registry {
    Registry::new(AgentsConfig::load(None).expect("built-in config"))
}

fn request(agent: &str, messages: &[&str]) -> RunRequest {
    RunRequest {
        run_id: "run-1".into(),
        agent: agent.into(),
        history: messages
            .iter()
            .enumerate()
            .map(|(i, content)| HistoryMessage {
                seq: i as i64 + 1,
                role: "user".into(),
                content: (*content).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn collect(events: BoxStream<'static, RunEvent>) -> Vec<Event> {
    events
        .filter_map(|event| async move { event.event })
        .collect()
        .await
}

/// The concatenated deltas and the final content of a successful run.
fn deltas_and_final(events: &[Event]) -> (Vec<String>, String) {
    let (last, deltas) = events.split_last().expect("at least one event");
    let Event::Final(last) = last else {
        panic!("run should end with a final event: {events:?}")
    };
    let deltas = deltas
        .iter()
        .map(|event| match event {
            Event::Delta(delta) => delta.text.clone(),
            other => panic!("expected only deltas before the final event, got {other:?}"),
        })
        .collect();
    (deltas, last.content.clone())
}

#[test]
fn deltas_are_words_with_their_whitespace() {
    assert_eq!(
        split_into_deltas("hello big  world\n"),
        ["hello ", "big  ", "world\n"]
    );
    assert_eq!(split_into_deltas("  leading space"), ["  leading ", "space"]);
}

#[test]
fn a_single_word_is_cut_in_half() {
    assert_eq!(split_into_deltas("hello"), ["he", "llo"]);
    assert_eq!(split_into_deltas("héé"), ["h", "éé"]);
    assert_eq!(split_into_deltas("a"), ["a"]);
    assert!(split_into_deltas("").is_empty());
}

#[test]
fn deltas_always_concatenate_to_the_text() {
    for text in [
        "",
        "x",
        "ab",
        "one two",
        " \t ",
        "multi\n\nline text ",
        "emoji 👋🏽 here",
    ] {
        assert_eq!(split_into_deltas(text).concat(), text);
    }
}

#[tokio::test]
async fn echo_streams_the_last_message_back_in_several_deltas() {
    let events = collect(registry().run(&request("echo", &["first", "say this back"]))).await;

    let (deltas, content) = deltas_and_final(&events);
    assert!(deltas.len() >= 2, "{deltas:?}");
    assert_eq!(deltas.concat(), "say this back");
    assert_eq!(content, "say this back");
}

#[tokio::test]
async fn rules_agent_answers_by_keyword() {
    let events = collect(registry().run(&request("support", &["What are your opening hours?"]))).await;

    let (deltas, content) = deltas_and_final(&events);
    assert!(content.contains("Monday to Friday"), "{content}");
    assert_eq!(deltas.concat(), content);
}

#[tokio::test]
async fn unknown_agent_yields_one_non_retryable_error_event() {
    let events = collect(registry().run(&request("nobody", &["hello"]))).await;

    let [Event::Error(error)] = events.as_slice() else {
        panic!("expected one error event: {events:?}")
    };
    assert_eq!(error.code, UNKNOWN_AGENT);
    assert!(!error.retryable);
}

#[tokio::test]
async fn empty_history_yields_an_invalid_error_event() {
    let events = collect(registry().run(&request("echo", &[]))).await;

    let [Event::Error(error)] = events.as_slice() else {
        panic!("expected one error event: {events:?}")
    };
    assert_eq!(error.code, "invalid");
    assert!(!error.retryable);
}

#[test]
fn agents_keep_config_order() {
    let registry = registry();
    let kinds: Vec<(&str, &str)> = registry.agents().iter().map(|a| (a.name(), a.kind())).collect();
    assert_eq!(kinds, [("echo", "echo"), ("support", "rules")]);
}
