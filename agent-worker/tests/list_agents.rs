//! ListAgents over a real socket.

mod helpers;

use chat_proto::agent::v1::{AgentInfo, ListAgentsRequest};
use helpers::{spawn_app, spawn_app_with_config};

fn info(name: &str, description: &str, kind: &str) -> AgentInfo {
    AgentInfo {
        name: name.into(),
        description: description.into(),
        kind: kind.into(),
        display_name: String::new(),
        listed: Some(true),
    }
}

#[tokio::test]
async fn list_agents_returns_the_configured_agents_in_config_order() {
    let app = spawn_app_with_config(
        r#"
        [[agents]]
        name = "parrot"
        description = "Says it again"
        kind = "echo"
        prefix = "you said: "

        [[agents]]
        name = "faq"
        description = "Answers frequent questions"
        kind = "rules"
        default_reply = "No idea."
        rules = [{ keywords = ["refund"], reply = "Refunds take 5 days." }]

        [[agents]]
        name = "another-echo"
        display_name = "Another echo"
        listed = false
        kind = "echo"
        "#,
    )
    .await;

    let agents = app
        .worker()
        .list_agents(ListAgentsRequest {})
        .await
        .expect("list agents")
        .into_inner()
        .agents;

    assert_eq!(
        agents,
        [
            info("parrot", "Says it again", "echo"),
            info("faq", "Answers frequent questions", "rules"),
            AgentInfo {
                display_name: "Another echo".into(),
                listed: Some(false),
                ..info("another-echo", "", "echo")
            },
        ]
    );
}

#[tokio::test]
async fn built_in_config_lists_echo_and_the_banking_demo_with_descriptions() {
    let app = spawn_app().await;

    let agents = app
        .worker()
        .list_agents(ListAgentsRequest {})
        .await
        .expect("list agents")
        .into_inner()
        .agents;

    let names: Vec<&str> = agents.iter().map(|agent| agent.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "echo",
            "bank",
            "balances",
            "cards",
            "transfers",
            "faq",
            "escalation"
        ]
    );
    assert_eq!(
        agents[0].description,
        "Repeats what you say, streamed word by word"
    );
    assert_eq!(agents[1].kind, "router");
    assert!(agents.iter().all(|agent| !agent.description.is_empty()));
    assert!(agents.iter().all(|agent| !agent.display_name.is_empty()));
    let listed: Vec<&str> = agents
        .iter()
        .filter(|agent| agent.listed == Some(true))
        .map(|agent| agent.name.as_str())
        .collect();
    assert_eq!(listed, ["echo", "bank"], "the router's specialists are unlisted");
}
