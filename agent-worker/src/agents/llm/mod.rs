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
use super::tools::Toolbox;
use super::upstream::{UpstreamError, quote};
use crate::config::{ConfigError, LlmSpec};

/// Most rounds of tool calls in one run; the round after it must answer in text.
pub const MAX_TOOL_ROUNDS: usize = 5;

/// `ErrorEvent.code` of a model that keeps calling tools or gives an empty answer.
pub const BAD_COMPLETION: &str = "bad_completion";

/// Streams chat completions from the configured endpoint and model.
#[derive(Clone, Debug)]
pub struct LlmAgent {
    pub name: String,
    pub description: String,
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
}

// === impl LlmAgent ===

impl LlmAgent {
    /// Builds the agent, reading its API key with `env` (the process environment in production).
    pub fn new(spec: LlmSpec, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::BadOption {
            agent: spec.name.clone(),
            message,
        };
        let api_key = match &spec.api_key_env {
            Some(var) => match env(var).filter(|key| !key.trim().is_empty()) {
                Some(key) => Some(SecretString::from(key)),
                None => {
                    return Err(bad(format!(
                        "environment variable {var} (api_key_env) is not set"
                    )));
                }
            },
            None => None,
        };
        let timeout = Duration::from_secs_f64(spec.timeout_secs);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .map_err(|err| bad(format!("failed to build the HTTP client: {err}")))?;
        let tools = Toolbox::new(&spec.builtin_tools, spec.tools, client.clone(), timeout);
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
            }),
            name: spec.name,
            description: spec.description,
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
                if round == MAX_TOOL_ROUNDS {
                    let message = format!("the model still called tools after {MAX_TOOL_ROUNDS} rounds");
                    yield events::error(BAD_COMPLETION, message, false);
                    return;
                }
                messages.push(ChatMessage::tool_request(text, calls.clone()));
                for call in calls {
                    yield tool_call_event(&call);
                    let result = inner.tools.call(&call.function.name, &call.function.arguments).await;
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
            let tools = self.tools.definitions();
            let body = ChatRequest {
                model: &self.model,
                messages,
                stream: true,
                temperature: self.temperature,
                max_tokens: self.max_tokens,
                tools: &tools,
                tool_choice: (last_round && !tools.is_empty()).then_some("none"),
            };
            let mut request = self.client.post(&self.url).json(&body);
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
