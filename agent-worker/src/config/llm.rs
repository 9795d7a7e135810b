//! Options of an `llm` agent: an OpenAI-compatible chat completions endpoint, streamed.

use serde::Deserialize;

use super::{ConfigError, Declared};

/// Built-in tools an `llm` agent may offer the model.
pub const BUILTIN_TOOLS: [&str; 2] = ["calculator", "current_time"];

/// Options of an `llm` agent, which streams replies from `POST {base_url}/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The API root including its version, such as `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key, sent as a bearer token.
    pub api_key_env: Option<String>,
    pub system_prompt: Option<String>,
    /// How many of the latest history messages are sent.
    #[serde(default = "default_history_window")]
    pub history_window: usize,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Longest wait, in seconds, for the response to start and for each next chunk.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Built-in tools offered to the model: `calculator`, `current_time`.
    #[serde(default)]
    pub builtin_tools: Vec<String>,
    /// Tools served over HTTP.
    #[serde(default)]
    pub tools: Vec<HttpToolSpec>,
    /// Agents (or `human`) the model may hand the conversation to, through a `handoff` tool.
    #[serde(default)]
    pub handoffs: Vec<String>,
}

/// A tool the model may call, executed by sending its arguments to `url`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolSpec {
    pub name: String,
    pub description: String,
    pub url: String,
    /// `POST` sends the arguments as a JSON body; `GET` as query parameters.
    #[serde(default = "default_method")]
    pub method: String,
    /// JSON schema of the arguments object, as a table or as JSON text.
    #[serde(default = "default_parameters")]
    pub parameters: serde_json::Value,
}

fn default_history_window() -> usize {
    20
}

fn default_timeout_secs() -> f64 {
    60.0
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_parameters() -> serde_json::Value {
    serde_json::json!({ "type": "object", "properties": {} })
}

// === impl LlmSpec ===

impl LlmSpec {
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::BadOption {
            agent: self.name.clone(),
            message,
        };
        check_url(&self.base_url).map_err(|m| bad(format!("base_url {m}")))?;
        if self.model.trim().is_empty() {
            return Err(bad("model is empty".to_owned()));
        }
        if self.history_window == 0 {
            return Err(bad("history_window must be at least 1".to_owned()));
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 86_400.0) {
            return Err(bad(
                "timeout_secs must be more than 0 and at most 86400".to_owned()
            ));
        }
        if let Some(t) = self.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            return Err(bad(format!("temperature {t} is outside 0 to 2")));
        }
        if self.api_key_env.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(bad("api_key_env is empty".to_owned()));
        }
        let mut names: Vec<&str> = Vec::new();
        for tool in &self.builtin_tools {
            if !BUILTIN_TOOLS.contains(&tool.as_str()) {
                return Err(bad(format!(
                    "unknown built-in tool `{tool}` (known: {})",
                    BUILTIN_TOOLS.join(", ")
                )));
            }
            names.push(tool);
        }
        for tool in &mut self.tools {
            let name = tool.name.clone();
            tool.validate().map_err(|m| bad(format!("tool `{name}`: {m}")))?;
        }
        for tool in &self.tools {
            if tool.name == "handoff" {
                return Err(bad("tool name `handoff` is reserved for handoffs".to_owned()));
            }
            if names.contains(&tool.name.as_str()) {
                return Err(bad(format!("tool `{}` is declared more than once", tool.name)));
            }
            names.push(&tool.name);
        }
        Ok(())
    }
}

// === impl LlmSpec ===

impl LlmSpec {
    /// Checks that each handoff target is `human` or another declared agent.
    pub(super) fn validate_targets(&self, declared: &Declared<'_>) -> Result<(), ConfigError> {
        for target in &self.handoffs {
            if target == crate::agents::events::HUMAN {
                continue;
            }
            if *target == self.name {
                return Err(ConfigError::BadOption {
                    agent: self.name.clone(),
                    message: "handoffs names the agent itself".to_owned(),
                });
            }
            declared.get(&self.name, "handoffs".to_owned(), target)?;
        }
        Ok(())
    }
}

// === impl HttpToolSpec ===

impl HttpToolSpec {
    fn validate(&mut self) -> Result<(), String> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !valid_name {
            return Err("name must be 1 to 64 letters, digits, '_' or '-'".to_owned());
        }
        check_url(&self.url).map_err(|m| format!("url {m}"))?;
        self.method = self.method.to_ascii_uppercase();
        if !matches!(self.method.as_str(), "GET" | "POST") {
            return Err(format!("method `{}` is not GET or POST", self.method));
        }
        if let serde_json::Value::String(text) = &self.parameters {
            self.parameters =
                serde_json::from_str(text).map_err(|err| format!("parameters is not valid JSON: {err}"))?;
        }
        if !self.parameters.is_object() {
            return Err("parameters must be a JSON schema object".to_owned());
        }
        Ok(())
    }
}

/// Checks that `url` is an absolute http(s) URL.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!("`{url}` is not an http(s) URL")),
        Err(err) => Err(format!("`{url}` is not a valid URL: {err}")),
    }
}
