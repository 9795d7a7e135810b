//! The `llm` agent against a local stand-in speaking the OpenAI streaming wire format.

mod helpers;

use std::sync::Arc;
use std::time::Duration;

use agent_worker::AgentsConfig;
use agent_worker::agents::Registry;
use chat_proto::agent::v1::ListAgentsRequest;
use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{HistoryMessage, RunRequest};
use futures::StreamExt;
use helpers::openai::{
    Reply, StandIn, text_answer, tool_call_arguments, tool_call_start, tool_calls_finished,
};
use helpers::{deltas_and_final, spawn_app_with};
use serde_json::json;

const API_KEY: &str = "sk-test-0123456789";

/// A registry whose `gpt` agent talks to `stand_in`, with `extra` options and agents appended.
fn registry(stand_in: &StandIn, extra: &str) -> Arc<Registry> {
    let toml = format!(
        r#"
        [[agents]]
        name = "gpt"
        description = "A language model"
        kind = "llm"
        base_url = "{}"
        model = "gpt-test"
        api_key_env = "TEST_LLM_KEY"
        timeout_secs = 1
        {extra}
        "#,
        stand_in.base_url()
    );
    let config = AgentsConfig::from_toml(&toml).expect("valid config");
    let env = |name: &str| (name == "TEST_LLM_KEY").then(|| API_KEY.to_owned());
    Arc::new(Registry::with_env(config, &env).expect("agents build"))
}

fn request(agent: &str, history: &[(&str, &str)]) -> RunRequest {
    RunRequest {
        run_id: "run-1".into(),
        session_id: "session-1".into(),
        agent: agent.into(),
        attempt: 1,
        history: history
            .iter()
            .zip(1..)
            .map(|(&(role, content), seq)| HistoryMessage {
                seq,
                role: role.into(),
                agent: String::new(),
                content: content.into(),
            })
            .collect(),
        metadata_json: "{}".into(),
    }
}

async fn run(registry: &Arc<Registry>, agent: &str, history: &[(&str, &str)]) -> Vec<Event> {
    registry
        .run(request(agent, history))
        .filter_map(|event| async move { event.event })
        .collect()
        .await
}

fn single_error(events: &[Event]) -> &chat_proto::agent::v1::ErrorEvent {
    match events.last() {
        Some(Event::Error(error)) => error,
        _ => panic!("run should end with an error: {events:?}"),
    }
}

#[tokio::test]
async fn content_deltas_stream_as_they_arrive_then_the_full_text() {
    let stand_in = StandIn::start(vec![Reply::Stream(text_answer(&["Hel", "lo", " world"]))]).await;
    let registry = registry(
        &stand_in,
        "system_prompt = \"You are terse.\"\ntemperature = 0.2\nmax_tokens = 64\nhistory_window = 3",
    );

    let events = run(
        &registry,
        "gpt",
        &[
            ("user", "too old to send"),
            ("user", "hi"),
            ("human", "a person answered"),
            ("user", "say hello"),
        ],
    )
    .await;

    let (deltas, content) = deltas_and_final(&events);
    assert_eq!(deltas, ["Hel", "lo", " world"]);
    assert_eq!(content, "Hello world");
    let [received] = stand_in.received().try_into().expect("one request");
    assert_eq!(
        received.authorization.as_deref(),
        Some(&*format!("Bearer {API_KEY}"))
    );
    assert_eq!(
        received.body,
        json!({
            "model": "gpt-test",
            "stream": true,
            "temperature": 0.2,
            "max_tokens": 64,
            "messages": [
                { "role": "system", "content": "You are terse." },
                { "role": "user", "content": "hi" },
                { "role": "assistant", "content": "a person answered" },
                { "role": "user", "content": "say hello" }
            ]
        })
    );
}

#[tokio::test]
async fn tool_calls_split_over_chunks_are_executed_and_sent_back() {
    let tool_round = vec![
        tool_call_start(0, "call_calc", "calculator"),
        tool_call_start(1, "call_balance", "balance"),
        tool_call_arguments(0, "{\"expre"),
        tool_call_arguments(1, "{\"account\":"),
        tool_call_arguments(0, "ssion\": \"(2 + 3) * 4.5\"}"),
        tool_call_arguments(1, " \"main\"}"),
        tool_calls_finished(),
    ];
    let stand_in = StandIn::start(vec![
        Reply::Stream(tool_round),
        Reply::Stream(text_answer(&["It is ", "22.5."])),
    ])
    .await;
    let balance_url = format!("http://{}/tools/balance", stand_in.addr);
    let registry = registry(
        &stand_in,
        &format!(
            r#"builtin_tools = ["calculator", "current_time"]
            [[agents.tools]]
            name = "balance"
            description = "Looks up an account balance"
            url = "{balance_url}"
            parameters = '{{"type": "object", "properties": {{"account": {{"type": "string"}}}}}}'
            "#
        ),
    );

    let events = run(&registry, "gpt", &[("user", "what is (2+3)*4.5?")]).await;

    let [
        Event::ToolCall(calc),
        Event::ToolResult(calc_result),
        Event::ToolCall(balance),
        Event::ToolResult(balance_result),
        rest @ ..,
    ] = events.as_slice()
    else {
        panic!("expected tool calls and results first: {events:?}");
    };
    assert_eq!(
        (calc.call_id.as_str(), calc.name.as_str()),
        ("call_calc", "calculator")
    );
    assert_eq!(calc.arguments_json, r#"{"expression": "(2 + 3) * 4.5"}"#);
    assert_eq!(
        (calc_result.call_id.as_str(), calc_result.content.as_str()),
        ("call_calc", "22.5")
    );
    assert_eq!(balance.name, "balance");
    assert_eq!(balance_result.call_id, "call_balance");
    assert!(
        balance_result.content.contains("42.00"),
        "{}",
        balance_result.content
    );
    assert_eq!(deltas_and_final(rest).1, "It is 22.5.");
    assert_eq!(stand_in.tool_calls(), [json!({ "account": "main" })]);

    let received = stand_in.received();
    assert_eq!(received.len(), 2);
    let tools: Vec<&str> = received[0].body["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .map(|tool| tool["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(tools, ["calculator", "current_time", "balance"]);
    let messages = received[1].body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"][0]["id"], "call_calc");
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["arguments"],
        r#"{"expression": "(2 + 3) * 4.5"}"#
    );
    assert_eq!(messages[1]["tool_calls"][1]["function"]["name"], "balance");
    assert_eq!(
        messages[2],
        json!({ "role": "tool", "tool_call_id": "call_calc", "content": "22.5" })
    );
    assert_eq!(messages[3]["tool_call_id"], "call_balance");
}

#[tokio::test]
async fn a_server_error_ends_the_run_with_a_retryable_error() {
    let stand_in = StandIn::start(vec![Reply::Status(
        500,
        json!({ "error": { "message": "The server had an error", "type": "server_error" } }),
    )])
    .await;

    let events = run(&registry(&stand_in, ""), "gpt", &[("user", "hi")]).await;

    let [Event::Error(error)] = events.as_slice() else {
        panic!("expected one error: {events:?}");
    };
    assert_eq!(error.code, "upstream_unavailable");
    assert!(error.retryable);
    assert!(
        error.message.contains("500") && error.message.contains("The server had an error"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn an_unauthorized_answer_is_not_retryable_and_never_shows_the_key() {
    let stand_in = StandIn::start(vec![Reply::Status(
        401,
        json!({ "error": { "message": format!("Incorrect API key provided: {API_KEY}"), "code": "invalid_api_key" } }),
    )])
    .await;

    let events = run(&registry(&stand_in, ""), "gpt", &[("user", "hi")]).await;

    let error = single_error(&events);
    assert_eq!(error.code, "upstream_rejected");
    assert!(!error.retryable);
    assert!(
        error.message.contains("401") && error.message.contains("Incorrect API key"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(API_KEY), "{}", error.message);
}

#[tokio::test]
async fn a_stream_that_stalls_beyond_the_timeout_fails_retryably() {
    let stand_in = StandIn::start(vec![Reply::Stall(
        text_answer(&["Hel", "lo"]),
        Duration::from_secs(3),
    )])
    .await;

    let events = run(&registry(&stand_in, ""), "gpt", &[("user", "hi")]).await;

    let error = single_error(&events);
    assert_eq!(error.code, "upstream_timeout");
    assert!(error.retryable);
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            Event::Delta(delta) => Some(delta.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, ["Hel", "lo"], "deltas sent before the stall still stream");
}

#[tokio::test]
async fn a_stream_closed_without_done_is_reported_as_truncated() {
    let pieces = text_answer(&["Hel", "lo"]);
    let stand_in = StandIn::start(vec![
        Reply::EndEarly(pieces[..2].to_vec()),
        Reply::Abort(pieces[..2].to_vec()),
    ])
    .await;
    let registry = registry(&stand_in, "");

    for _ in 0..2 {
        let events = run(&registry, "gpt", &[("user", "hi")]).await;

        let error = single_error(&events);
        assert_eq!(error.code, "upstream_truncated", "{error:?}");
        assert!(error.retryable);
    }
}

#[tokio::test]
async fn a_missing_api_key_variable_is_a_start_up_error() {
    let toml = r#"
        [[agents]]
        name = "gpt"
        kind = "llm"
        base_url = "http://127.0.0.1:9/v1"
        model = "gpt-test"
        api_key_env = "SURELY_UNSET_LLM_KEY"
    "#;
    let config = AgentsConfig::from_toml(toml).expect("valid config");

    let err = Registry::with_env(config, &|_| None).expect_err("key is missing");

    assert!(err.to_string().contains("SURELY_UNSET_LLM_KEY"), "{err}");
}

#[tokio::test]
async fn router_asks_the_llm_to_classify_and_falls_back_on_failure() {
    let stand_in = StandIn::start(vec![
        Reply::Stream(text_answer(&["bill", "ing"])),
        Reply::Status(503, json!({ "error": { "message": "overloaded" } })),
    ])
    .await;
    let registry = registry(
        &stand_in,
        r#"
        [[agents]]
        name = "billing"
        description = "Invoices and payments"
        kind = "echo"
        prefix = "billing: "
        [[agents]]
        name = "general"
        description = "Everything else"
        kind = "echo"
        prefix = "general: "
        [[agents]]
        name = "router"
        kind = "router"
        classifier = "gpt"
        default_agent = "general"
        candidates = ["billing", "general"]
        "#,
    );

    let events = run(&registry, "router", &[("user", "why was I charged twice?")]).await;

    let Some(Event::Handoff(handoff)) = events.first() else {
        panic!("expected a handoff: {events:?}");
    };
    assert_eq!(handoff.to_agent, "billing");
    assert_eq!(
        deltas_and_final(&events[1..]).1,
        "billing: why was I charged twice?"
    );
    let prompt = &stand_in.received()[0].body["messages"];
    assert_eq!(prompt[0]["role"], "system");
    let instructions = prompt[0]["content"].as_str().expect("text");
    assert!(
        instructions.contains("- billing: Invoices and payments"),
        "{instructions}"
    );
    assert_eq!(
        prompt[1],
        json!({ "role": "user", "content": "why was I charged twice?" })
    );

    let events = run(&registry, "router", &[("user", "hello")]).await;

    let Some(Event::Handoff(handoff)) = events.first() else {
        panic!("expected a handoff: {events:?}");
    };
    assert_eq!(handoff.to_agent, "general");
    assert!(handoff.reason.contains("classifier failed"), "{}", handoff.reason);
}

#[tokio::test]
async fn an_llm_base_url_adds_an_assistant_that_the_bank_router_falls_back_to() {
    let stand_in = StandIn::start(vec![Reply::Stream(text_answer(&[
        "Why did the ",
        "banker ",
        "switch careers?",
    ]))])
    .await;
    let base_url = stand_in.base_url();
    let app = spawn_app_with(|s| {
        s.llm_base_url = Some(base_url);
        s.llm_model = "local-model".into();
        s.llm_api_key_env = "AGENT_WORKER_TEST_SURELY_UNSET_KEY".into();
    })
    .await;

    let agents = app
        .worker()
        .list_agents(ListAgentsRequest {})
        .await
        .expect("list")
        .into_inner()
        .agents;
    let assistant = agents.last().expect("agents");
    assert_eq!(
        (assistant.name.as_str(), assistant.kind.as_str()),
        ("assistant", "llm")
    );

    let events = app.run("bank", &["tell me a joke"]).await;

    let Some((Event::Handoff(handoff), reply)) = events.split_first() else {
        panic!("expected a handoff first: {events:?}");
    };
    assert_eq!(handoff.to_agent, "assistant");
    assert_eq!(deltas_and_final(reply).1, "Why did the banker switch careers?");
    let [received] = stand_in.received().try_into().expect("one request");
    assert_eq!(
        received.authorization, None,
        "no key variable, no Authorization header"
    );
    assert_eq!(received.body["model"], "local-model");
    assert_eq!(received.body["messages"][0]["role"], "system");
}

/// A completion that streams `text` (if any), then calls the handoff tool with `arguments`.
fn handoff_answer(text: &str, arguments: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    if !text.is_empty() {
        chunks.extend(text_answer(&[text]).into_iter().take(2));
    }
    chunks.push(tool_call_start(0, "call_handoff", "handoff"));
    chunks.push(tool_call_arguments(0, arguments));
    chunks.push(tool_calls_finished());
    chunks
}

const HANDOFF_TARGETS: &str = r#"handoffs = ["cards", "human"]
    [[agents]]
    name = "cards"
    kind = "echo"
    prefix = "cards team here: "
    "#;

#[tokio::test]
async fn the_model_hands_off_to_an_agent_which_answers_in_the_same_run() {
    let stand_in = StandIn::start(vec![Reply::Stream(handoff_answer(
        "One moment. ",
        r#"{"agent": "cards", "reason": "card question"}"#,
    ))])
    .await;
    let registry = registry(&stand_in, HANDOFF_TARGETS);

    let events = run(&registry, "gpt", &[("user", "my card is blocked")]).await;

    let [
        Event::Delta(first),
        Event::ToolCall(call),
        Event::Handoff(handoff),
        rest @ ..,
    ] = events.as_slice()
    else {
        panic!("expected a delta, the handoff call and a handoff: {events:?}");
    };
    assert_eq!(first.text, "One moment. ");
    assert_eq!(call.name, "handoff");
    assert_eq!(
        (handoff.to_agent.as_str(), handoff.reason.as_str()),
        ("cards", "card question")
    );
    let (deltas, content) = deltas_and_final(rest);
    assert_eq!(deltas.concat(), "cards team here: my card is blocked");
    assert_eq!(
        content, "One moment. cards team here: my card is blocked",
        "final repeats every delta of the run"
    );
    let received = stand_in.received();
    let offered: Vec<&str> = received[0].body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|tool| tool["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(offered, ["handoff"]);
}

#[tokio::test]
async fn the_model_escalates_to_a_person_with_a_holding_reply() {
    let stand_in = StandIn::start(vec![Reply::Stream(handoff_answer(
        "",
        r#"{"agent": "human", "reason": "angry customer"}"#,
    ))])
    .await;
    let registry = registry(&stand_in, HANDOFF_TARGETS);

    let events = run(&registry, "gpt", &[("user", "this is unacceptable")]).await;

    let [Event::ToolCall(_), Event::Handoff(handoff), rest @ ..] = events.as_slice() else {
        panic!("expected the handoff call and a handoff: {events:?}");
    };
    assert_eq!(
        (handoff.to_agent.as_str(), handoff.reason.as_str()),
        ("human", "angry customer")
    );
    let (_, content) = deltas_and_final(rest);
    assert!(content.contains("member of our team"), "{content}");
}

#[tokio::test]
async fn a_handoff_to_an_unlisted_agent_is_refused_back_to_the_model() {
    let stand_in = StandIn::start(vec![
        Reply::Stream(handoff_answer("", r#"{"agent": "loans", "reason": "loan"}"#)),
        Reply::Stream(text_answer(&["I can't do loans."])),
    ])
    .await;
    let registry = registry(&stand_in, HANDOFF_TARGETS);

    let events = run(&registry, "gpt", &[("user", "I want a loan")]).await;

    let [Event::ToolCall(_), Event::ToolResult(result), rest @ ..] = events.as_slice() else {
        panic!("expected the call and its error result: {events:?}");
    };
    assert!(
        result.content.contains("`loans` is not one of cards, human"),
        "{}",
        result.content
    );
    assert_eq!(deltas_and_final(rest).1, "I can't do loans.");
}
