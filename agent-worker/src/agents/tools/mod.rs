//! Tools an `llm` agent offers the model: built-in `calculator` and `current_time`, and HTTP tools.

pub mod calculator;

use std::time::Duration;

use serde_json::{Value, json};

use super::upstream::{error_chain, quote};
use crate::config::HttpToolSpec;

/// Longest tool result handed back to the model, in bytes.
const MAX_RESULT_BYTES: usize = 16 * 1024;

/// The tools one agent offers, with the client its HTTP tools use.
#[derive(Clone, Debug)]
pub struct Toolbox {
    tools: Vec<Tool>,
    client: reqwest::Client,
    timeout: Duration,
}

#[derive(Clone, Debug)]
enum Tool {
    Calculator,
    CurrentTime,
    Http(HttpToolSpec),
}

// === impl Toolbox ===

impl Toolbox {
    /// The validated built-in tool names and HTTP tools of an agent.
    pub fn new(
        builtin: &[String],
        http: Vec<HttpToolSpec>,
        client: reqwest::Client,
        timeout: Duration,
    ) -> Self {
        let builtin = builtin.iter().filter_map(|name| match name.as_str() {
            "calculator" => Some(Tool::Calculator),
            "current_time" => Some(Tool::CurrentTime),
            _ => None,
        });
        Self {
            tools: builtin.chain(http.into_iter().map(Tool::Http)).collect(),
            client,
            timeout,
        }
    }

    /// The `tools` array of a chat completions request.
    pub fn definitions(&self) -> Vec<Value> {
        self.tools.iter().map(Tool::definition).collect()
    }

    /// Runs the tool `name` with the model's JSON `arguments`; failures become text for the model.
    pub async fn call(&self, name: &str, arguments: &str) -> String {
        let Some(tool) = self.tools.iter().find(|tool| tool.name() == name) else {
            return format!("error: there is no tool named `{name}`");
        };
        let arguments: Value = match arguments.trim() {
            "" => json!({}),
            text => match serde_json::from_str(text) {
                Ok(value) => value,
                Err(err) => return format!("error: arguments are not valid JSON: {err}"),
            },
        };
        let result = match tool {
            Tool::Calculator => calculate(&arguments),
            Tool::CurrentTime => Ok(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            Tool::Http(spec) => self.call_http(spec, &arguments).await,
        };
        let mut text = result.unwrap_or_else(|err| format!("error: {err}"));
        if text.len() > MAX_RESULT_BYTES {
            let mut end = MAX_RESULT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }

    async fn call_http(&self, spec: &HttpToolSpec, arguments: &Value) -> Result<String, String> {
        let request = if spec.method == "GET" {
            let query: Vec<(String, String)> = arguments
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, value)| match value {
                    Value::String(text) => (key.clone(), text.clone()),
                    other => (key.clone(), other.to_string()),
                })
                .collect();
            self.client.get(&spec.url).query(&query)
        } else {
            self.client.post(&spec.url).json(arguments)
        };
        let response = request
            .headers(chat_common::trace::headers())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|err| format!("tool service failed: {}", error_chain(&err)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|err| format!("tool service failed: {}", error_chain(&err)))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!(
                "tool service answered HTTP {}: {}",
                status.as_u16(),
                quote(&body, None)
            ))
        }
    }
}

fn calculate(arguments: &Value) -> Result<String, String> {
    let expression = arguments
        .get("expression")
        .and_then(Value::as_str)
        .ok_or("missing string argument `expression`")?;
    calculator::evaluate(expression)
        .map(calculator::format_number)
        .map_err(|err| err.to_string())
}

// === impl Tool ===

impl Tool {
    fn name(&self) -> &str {
        match self {
            Self::Calculator => "calculator",
            Self::CurrentTime => "current_time",
            Self::Http(spec) => &spec.name,
        }
    }

    fn definition(&self) -> Value {
        let (description, parameters) = match self {
            Self::Calculator => (
                "Evaluates an arithmetic expression with + - * /, parentheses and decimals.",
                json!({
                    "type": "object",
                    "properties": {
                        "expression": { "type": "string", "description": "For example (1200 * 0.035) / 12" }
                    },
                    "required": ["expression"]
                }),
            ),
            Self::CurrentTime => (
                "Returns the current date and time in UTC, in RFC 3339 format.",
                json!({ "type": "object", "properties": {} }),
            ),
            Self::Http(spec) => (spec.description.as_str(), spec.parameters.clone()),
        };
        json!({
            "type": "function",
            "function": { "name": self.name(), "description": description, "parameters": parameters }
        })
    }
}
