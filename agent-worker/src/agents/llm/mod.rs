//! The `llm` agent: streams replies from an OpenAI-compatible `/chat/completions` endpoint,
//! executing the tool calls the model asks for.

mod wire;

use std::sync::Arc;
use std::time::Duration;

use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{HistoryMessage, RunEvent, RunRequest, ToolCallEvent, ToolResultEvent};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};

use self::wire::{ChatMessage, ChatRequest, Chunk, ToolCall, ToolCalls};
use super::events;
use super::rules::DEFAULT_ESCALATION_REPLY;
use super::tools::Toolbox;
use super::upstream::{UpstreamError, http_client, quote, read_api_key};
use crate::config::{ConfigError, LlmSpec};

/// Most rounds of tool calls in one run; the round after it must answer in text.
pub const MAX_TOOL_ROUNDS: usize = 5;

/// `ErrorEvent.code` of a model that keeps calling tools or gives an empty answer.
pub const BAD_COMPLETION: &str = "bad_completion";

/// The tool offered to models of agents with `handoffs`: calling it hands the conversation over.
pub const HANDOFF_TOOL: &str = "handoff";

/// Streams chat completions from the configured endpoint and model.
#[derive(Clone, Debug)]
pub struct LlmAgent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: String,
    url: String,
    model: String,
    api_key: Option<SecretString>,
    system_prompt: Option<String>,
    history_window: usize,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    timeout: Duration,
    client: reqwest::Client,
    tools: Toolbox,
    /// The `tools` of every request: built once, as they never change.
    tool_definitions: Vec<serde_json::Value>,
    /// Agents (or `human`) the model may hand the conversation to.
    handoffs: Vec<String>,
}

// === impl LlmAgent ===

impl LlmAgent {
    /// Builds the agent, reading its API key with `env` (the process environment in production).
    pub fn new(spec: LlmSpec, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let api_key = read_api_key(&spec.name, spec.api_key_env.as_deref(), env)?;
        let timeout = Duration::from_secs_f64(spec.timeout_secs);
        let client = http_client(&spec.name, reqwest::Client::builder().connect_timeout(timeout))?;
        let tools = Toolbox::new(&spec.builtin_tools, spec.tools, client.clone(), timeout);
        let tool_definitions = tool_definitions(&tools, &spec.handoffs);
        Ok(Self {
            inner: Arc::new(Inner {
                service: format!("llm endpoint of `{}`", spec.name),
                url: format!("{}/chat/completions", spec.base_url.trim_end_matches('/')),
                model: spec.model,
                api_key,
                system_prompt: spec.system_prompt,
                history_window: spec.history_window,
                temperature: spec.temperature,
                max_tokens: spec.max_tokens,
                timeout,
                client,
                tools,
                tool_definitions,
                handoffs: spec.handoffs,
            }),
        })
    }

    /// Streams the model's reply: deltas, tool calls and results, then the final text or an error.
    pub fn run(&self, request: &RunRequest) -> BoxStream<'static, RunEvent> {
        let inner = Arc::clone(&self.inner);
        let mut messages = inner.messages(&request.history);
        async_stream::stream! {
            let mut reply = String::new();
            for round in 0..=MAX_TOOL_ROUNDS {
                let mut completion = inner.complete(&messages, round == MAX_TOOL_ROUNDS);
                let mut text = String::new();
                let mut calls = Vec::new();
                while let Some(step) = completion.next().await {
                    match step {
                        Ok(Step::Text(delta)) => {
                            text.push_str(&delta);
                            yield events::delta(delta);
                        }
                        Ok(Step::ToolCalls(asked)) => calls = asked,
                        Err(err) => {
                            tracing::warn!(code = err.code(), error = %err, "llm call failed");
                            yield err.into_event();
                            return;
                        }
                    }
                }
                drop(completion);
                reply.push_str(&text);
                if calls.is_empty() {
                    if reply.is_empty() {
                        yield events::error(BAD_COMPLETION, "the model returned an empty reply", true);
                    } else {
                        yield events::final_reply(reply);
                    }
                    return;
                }
                let mut handoff_error = None;
                if let Some(call) = calls.iter().find(|call| call.function.name == HANDOFF_TOOL) {
                    match inner.parse_handoff(&call.function.arguments) {
                        Ok((to_agent, reason)) => {
                            yield tool_call_event(call);
                            let escalates = to_agent == events::HUMAN;
                            yield events::handoff(to_agent, reason);
                            if escalates {
                                // The user hears from the model, or a holding reply, while a person is found.
                                let reply = if reply.is_empty() { DEFAULT_ESCALATION_REPLY.to_owned() } else { reply };
                                let mut holding = events::reply(reply).boxed();
                                while let Some(event) = holding.next().await {
                                    yield event;
                                }
                            }
                            return;
                        }
                        Err(message) => handoff_error = Some(message),
                    }
                }
                if round == MAX_TOOL_ROUNDS {
                    let message = format!("the model still called tools after {MAX_TOOL_ROUNDS} rounds");
                    yield events::error(BAD_COMPLETION, message, false);
                    return;
                }
                messages.push(ChatMessage::tool_request(text, calls.clone()));
                for call in calls {
                    yield tool_call_event(&call);
                    let result = match (&handoff_error, call.function.name == HANDOFF_TOOL) {
                        (Some(message), true) => format!("error: {message}"),
                        _ => inner.tools.call(&call.function.name, &call.function.arguments).await,
                    };
                    yield tool_result_event(&call.id, &result);
                    messages.push(ChatMessage::tool_result(call.id, result));
                }
            }
        }
        .boxed()
    }
}

/// What one streamed completion yields: text as it comes, then the tool calls it asked for.
enum Step {
    Text(String),
    ToolCalls(Vec<ToolCall>),
}

// === impl Inner ===

impl Inner {
    /// The conversation sent to the model: the system prompt, then the latest history.
    fn messages(&self, history: &[HistoryMessage]) -> Vec<ChatMessage> {
        let start = history.len().saturating_sub(self.history_window);
        let system = self
            .system_prompt
            .iter()
            .map(|prompt| ChatMessage::text("system", prompt.as_str()));
        let turns = history[start..].iter().filter_map(|message| {
            let role = match message.role.as_str() {
                "user" => "user",
                "assistant" | "human" => "assistant",
                "system" => "system",
                _ => return None,
            };
            Some(ChatMessage::text(role, message.content.as_str()))
        });
        system.chain(turns).collect()
    }

    /// One streamed call of the endpoint; the stream ends after `[DONE]` or with an error.
    fn complete<'a>(
        &'a self,
        messages: &'a [ChatMessage],
        last_round: bool,
    ) -> BoxStream<'a, Result<Step, UpstreamError>> {
        async_stream::try_stream! {
            let tools = &self.tool_definitions;
            let body = ChatRequest {
                model: &self.model,
                messages,
                stream: true,
                temperature: self.temperature,
                max_tokens: self.max_tokens,
                tools,
                tool_choice: (last_round && !tools.is_empty()).then_some("none"),
            };
            let mut request = self
                .client
                .post(&self.url)
                .headers(chat_common::trace::headers())
                .json(&body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key.expose_secret());
            }
            let response = tokio::time::timeout(self.timeout, request.send())
                .await
                .map_err(|_| self.timed_out())?
                .map_err(|err| UpstreamError::from_reqwest(&self.service, &err))?;
            let status = response.status();
            let response = if status.is_success() {
                response
            } else {
                let body = tokio::time::timeout(self.timeout, response.text()).await;
                let body = body.ok().and_then(Result::ok).unwrap_or_default();
                Err::<reqwest::Response, _>(self.status_error(status.as_u16(), &body))?
            };
            let mut events = response.bytes_stream().eventsource();
            let mut calls = ToolCalls::default();
            loop {
                let event = tokio::time::timeout(self.timeout, events.next())
                    .await
                    .map_err(|_| self.timed_out())?;
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(err)) => Err(self.truncated(&err.to_string()))?,
                    None => Err(self.truncated("no [DONE] before the end"))?,
                };
                if event.data.trim() == "[DONE]" {
                    break;
                }
                let chunk: Chunk = serde_json::from_str(&event.data).map_err(|err| UpstreamError::Invalid {
                    service: self.service.clone(),
                    message: format!("chunk is not valid JSON: {err}"),
                })?;
                if let Some(error) = chunk.error {
                    Err::<(), _>(UpstreamError::Status {
                        service: self.service.clone(),
                        status: 500,
                        message: quote(&error.to_string(), None),
                    })?;
                }
                for choice in chunk.choices {
                    calls.add(choice.delta.tool_calls);
                    if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                        yield Step::Text(text);
                    }
                }
            }
            let calls = calls.finish().map_err(|index| UpstreamError::Invalid {
                service: self.service.clone(),
                message: format!("tool call #{index} has no function name"),
            })?;
            yield Step::ToolCalls(calls);
        }
        .boxed()
    }

    /// The target and reason of a handoff call, or what is wrong with it (told to the model).
    fn parse_handoff(&self, arguments: &str) -> Result<(String, String), String> {
        let arguments: serde_json::Value =
            serde_json::from_str(arguments).map_err(|err| format!("arguments are not valid JSON: {err}"))?;
        let agent = arguments
            .get("agent")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if !self.handoffs.iter().any(|target| target == agent) {
            return Err(format!("`{agent}` is not one of {}", self.handoffs.join(", ")));
        }
        let reason = arguments
            .get("reason")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let reason = if reason.trim().is_empty() {
            "the model handed off"
        } else {
            reason
        };
        Ok((agent.to_owned(), reason.to_owned()))
    }

    fn timed_out(&self) -> UpstreamError {
        UpstreamError::Timeout {
            service: self.service.clone(),
            after: self.timeout,
        }
    }

    fn truncated(&self, message: &str) -> UpstreamError {
        UpstreamError::Truncated {
            service: self.service.clone(),
            message: message.to_owned(),
        }
    }

    /// An error status, quoting the server's `error.message` (or body) without the API key.
    fn status_error(&self, status: u16, body: &str) -> UpstreamError {
        let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let message = parsed
            .as_ref()
            .and_then(|json| json.pointer("/error/message"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or(body);
        UpstreamError::Status {
            service: self.service.clone(),
            status,
            message: quote(message, self.api_key.as_ref().map(|key| key.expose_secret())),
        }
    }
}

/// The `tools` of a request: the toolbox's, and the handoff tool when there are targets.
fn tool_definitions(toolbox: &Toolbox, handoffs: &[String]) -> Vec<serde_json::Value> {
    let mut tools = toolbox.definitions();
    if !handoffs.is_empty() {
        tools.push(serde_json::json!({
            "type": "function",
            "function": {
                "name": HANDOFF_TOOL,
                "description": "Hands the conversation to another agent, or to a person (`human`), \
                    when they are better placed to help. Use it instead of answering.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "agent": { "type": "string", "enum": handoffs },
                        "reason": { "type": "string", "description": "Why, in a few words" }
                    },
                    "required": ["agent", "reason"]
                }
            }
        }));
    }
    tools
}

fn tool_call_event(call: &ToolCall) -> RunEvent {
    RunEvent {
        event: Some(Event::ToolCall(ToolCallEvent {
            call_id: call.id.clone(),
            name: call.function.name.clone(),
            arguments_json: call.function.arguments.clone(),
        })),
    }
}

fn tool_result_event(call_id: &str, content: &str) -> RunEvent {
    RunEvent {
        event: Some(Event::ToolResult(ToolResultEvent {
            call_id: call_id.to_owned(),
            content: content.to_owned(),
        })),
    }
}
