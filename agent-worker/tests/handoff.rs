//! Handoffs over a real socket: routing, escalation and the router agent.

mod helpers;

use chat_proto::agent::v1::run_event::Event;
use helpers::{deltas_and_final, spawn_app_with_config};

const CONFIG: &str = r#"
[[agents]]
name = "router"
kind = "router"
default_agent = "faq"
routes = [{ keywords = ["balance"], agent = "balances" }]

[[agents]]
name = "faq"
kind = "rules"
default_reply = "Ask me about your balance."
rules = [{ pattern = '\b(person|human|agent)\b', escalate = true, reply = "A colleague will take over." }]

[[agents]]
name = "balances"
kind = "rules"
default_reply = "Your balance is 42 EUR."
"#;

#[tokio::test]
async fn router_hands_off_and_the_chosen_agent_streams_its_reply() {
    let app = spawn_app_with_config(CONFIG).await;

    let events = app.run("router", &["what's my balance?"]).await;

    let Some(Event::Handoff(handoff)) = events.first() else {
        panic!("run should start with a handoff: {events:?}");
    };
    assert_eq!(handoff.to_agent, "balances");
    let (deltas, content) = deltas_and_final(&events[1..]);
    assert!(deltas.len() >= 2, "{deltas:?}");
    assert_eq!(content, "Your balance is 42 EUR.");
}

#[tokio::test]
async fn escalation_hands_off_to_human_after_a_route() {
    let app = spawn_app_with_config(CONFIG).await;

    let events = app.run("router", &["let me talk to a HUMAN"]).await;

    let handoffs: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            Event::Handoff(handoff) => Some(handoff.to_agent.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(handoffs, ["faq", "human"]);
    let (_, content) = deltas_and_final(&events[2..]);
    assert_eq!(content, "A colleague will take over.");
}
