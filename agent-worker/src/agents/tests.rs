//! Unit tests of runs answered by the registry, without a server.

use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{HistoryMessage, RunEvent, RunRequest};
use futures::StreamExt;

use super::events::split_into_deltas;
use super::handoff::HANDOFF_LOOP;
use super::*;

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(AgentsConfig::load(None).expect("built-in config")).expect("agents build"))
}

fn registry_of(toml: &str) -> Arc<Registry> {
    let config = AgentsConfig::from_toml(toml).expect("valid config");
    Arc::new(Registry::new(config).expect("agents build"))
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
    let events = collect(registry().run(request("echo", &["first", "say this back"]))).await;

    let (deltas, content) = deltas_and_final(&events);
    assert!(deltas.len() >= 2, "{deltas:?}");
    assert_eq!(deltas.concat(), "say this back");
    assert_eq!(content, "say this back");
}

#[tokio::test]
async fn rules_agent_answers_by_keyword() {
    let events = collect(registry().run(request("faq", &["What are your opening hours?"]))).await;

    let (deltas, content) = deltas_and_final(&events);
    assert!(content.contains("Monday to Friday"), "{content}");
    assert_eq!(deltas.concat(), content);
}

#[tokio::test]
async fn unknown_agent_yields_one_non_retryable_error_event() {
    let events = collect(registry().run(request("nobody", &["hello"]))).await;

    let [Event::Error(error)] = events.as_slice() else {
        panic!("expected one error event: {events:?}")
    };
    assert_eq!(error.code, UNKNOWN_AGENT);
    assert!(!error.retryable);
}

#[tokio::test]
async fn empty_history_yields_an_invalid_error_event() {
    let events = collect(registry().run(request("echo", &[]))).await;

    let [Event::Error(error)] = events.as_slice() else {
        panic!("expected one error event: {events:?}")
    };
    assert_eq!(error.code, "invalid");
    assert!(!error.retryable);
}

#[test]
fn agents_keep_config_order() {
    let registry = registry();
    let kinds: Vec<(&str, &str)> = registry
        .infos()
        .iter()
        .map(|a| (a.name.as_str(), a.kind.as_str()))
        .collect();
    assert_eq!(
        kinds[..3],
        [("echo", "echo"), ("bank", "router"), ("balances", "rules")]
    );
}

// === handoffs ===

const BANK: &str = r#"
[[agents]]
name = "front"
kind = "rules"
default_reply = "How can I help?"
rules = [
  { keywords = ["card*"], route = "cards" },
  { pattern = '\border\s+#?\d{4,}', route = "orders", reason = "order number given" },
  { keywords = ["human", "person"], escalate = true, reason = "asked for a person" },
]

[[agents]]
name = "cards"
description = "Card questions"
kind = "rules"
default_reply = "Your card is active."
rules = [{ keywords = ["loop"], route = "front" }]

[[agents]]
name = "orders"
description = "Order tracking"
kind = "echo"
prefix = "tracking: "

[[agents]]
name = "desk"
description = "Hands you to a person"
kind = "human_handoff"
reply = "Hold on."

[[agents]]
name = "router"
kind = "router"
default_agent = "front"
routes = [{ keywords = ["card", "debit"], agent = "cards" }, { pattern = 'order\s+\d+', agent = "orders" }]

[[agents]]
name = "classifier"
description = "Stands in for an llm: names an agent"
kind = "rules"
default_reply = "I am not sure, maybe the weather agent"
rules = [{ keywords = ["parcel"], reply = " `Orders`. " }, { keywords = ["refuse"], reply = "front desk please" }]

[[agents]]
name = "smart-router"
kind = "router"
default_agent = "front"
classifier = "classifier"
routes = [{ keywords = ["card"], agent = "cards" }]
candidates = ["cards", "orders", "front"]
"#;

fn handoff_of(event: &Event) -> (&str, &str) {
    match event {
        Event::Handoff(handoff) => (&handoff.to_agent, &handoff.reason),
        other => panic!("expected a handoff event, got {other:?}"),
    }
}

#[tokio::test]
async fn route_rule_hands_off_then_the_target_answers_in_the_same_run() {
    let events = collect(registry_of(BANK).run(request("front", &["my card is blocked"]))).await;

    let (first, rest) = events.split_first().expect("events");
    assert_eq!(handoff_of(first), ("cards", "message matched keyword \"card*\""));
    let (deltas, content) = deltas_and_final(rest);
    assert_eq!(content, "Your card is active.");
    assert_eq!(deltas.concat(), content);
}

#[tokio::test]
async fn pattern_rule_routes_with_its_configured_reason() {
    let events = collect(registry_of(BANK).run(request("front", &["where is Order #88123"]))).await;

    assert_eq!(handoff_of(&events[0]), ("orders", "order number given"));
    let (_, content) = deltas_and_final(&events[1..]);
    assert_eq!(content, "tracking: where is Order #88123");
}

#[tokio::test]
async fn handoff_back_to_a_visited_agent_ends_the_run_with_a_loop_error() {
    let events = collect(registry_of(BANK).run(request("front", &["card loop"]))).await;

    let [first, Event::Error(error)] = events.as_slice() else {
        panic!("expected a handoff then an error: {events:?}")
    };
    assert_eq!(handoff_of(first).0, "cards");
    assert_eq!(error.code, HANDOFF_LOOP);
    assert!(
        error.message.contains("front -> cards -> front"),
        "{}",
        error.message
    );
    assert!(!error.retryable);
}

#[tokio::test]
async fn a_fourth_handoff_in_one_run_is_refused() {
    let chain: String = ["a", "b", "c", "d", "e"]
        .windows(2)
        .map(|pair| {
            format!(
                "[[agents]]\nname = \"{}\"\nkind = \"rules\"\ndefault_reply = \"x\"\nrules = [{{ keywords = [\"go\"], route = \"{}\" }}]\n",
                pair[0], pair[1]
            )
        })
        .collect::<String>()
        + "[[agents]]\nname = \"e\"\nkind = \"echo\"\n";

    let events = collect(registry_of(&chain).run(request("a", &["go"]))).await;

    let targets: Vec<&str> = events[..MAX_HANDOFF_HOPS]
        .iter()
        .map(|e| handoff_of(e).0)
        .collect();
    assert_eq!(targets, ["b", "c", "d"]);
    let [Event::Error(error)] = &events[MAX_HANDOFF_HOPS..] else {
        panic!("expected the run to end with one error: {events:?}")
    };
    assert_eq!(error.code, HANDOFF_LOOP);
}

#[tokio::test]
async fn escalation_rule_hands_off_to_human_then_replies() {
    let events = collect(registry_of(BANK).run(request("front", &["can I talk to a person?"]))).await;

    assert_eq!(handoff_of(&events[0]), (events::HUMAN, "asked for a person"));
    let (_, content) = deltas_and_final(&events[1..]);
    assert_eq!(content, rules::DEFAULT_ESCALATION_REPLY);
}

#[tokio::test]
async fn human_handoff_agent_always_escalates_with_its_reply() {
    let events = collect(registry_of(BANK).run(request("desk", &["anything"]))).await;

    assert_eq!(handoff_of(&events[0]).0, events::HUMAN);
    let (_, content) = deltas_and_final(&events[1..]);
    assert_eq!(content, "Hold on.");
}

#[tokio::test]
async fn router_hands_off_by_keyword_and_pattern() {
    let registry = registry_of(BANK);

    let events = collect(registry.run(request("router", &["my DEBIT card"]))).await;
    assert_eq!(handoff_of(&events[0]).0, "cards");
    assert_eq!(deltas_and_final(&events[1..]).1, "Your card is active.");

    let events = collect(registry.run(request("router", &["order 1234"]))).await;
    assert_eq!(handoff_of(&events[0]).0, "orders");
    assert_eq!(deltas_and_final(&events[1..]).1, "tracking: order 1234");
}

#[tokio::test]
async fn router_without_a_match_hands_off_to_the_default_agent() {
    let events = collect(registry_of(BANK).run(request("router", &["hello"]))).await;

    assert_eq!(handoff_of(&events[0]), ("front", "no route matched the message"));
    assert_eq!(deltas_and_final(&events[1..]).1, "How can I help?");
}

#[tokio::test]
async fn router_asks_the_classifier_when_no_route_matches() {
    let registry = registry_of(BANK);

    let events = collect(registry.run(request("smart-router", &["where is my parcel"]))).await;
    assert_eq!(
        handoff_of(&events[0]),
        ("orders", "classifier `classifier` chose `orders`")
    );
    assert_eq!(deltas_and_final(&events[1..]).1, "tracking: where is my parcel");

    // Routes still come first.
    let events = collect(registry.run(request("smart-router", &["card parcel"]))).await;
    assert_eq!(handoff_of(&events[0]).0, "cards");
}

#[tokio::test]
async fn router_falls_back_to_the_default_on_an_unexpected_classifier_answer() {
    let registry = registry_of(BANK);

    for message in ["what's the weather", "I refuse"] {
        let events = collect(registry.run(request("smart-router", &[message]))).await;
        let (to, reason) = handoff_of(&events[0]);
        assert_eq!(to, "front", "{message}");
        assert!(reason.contains("named no candidate"), "{reason}");
    }
}
