//! Command-line flags and environment variables of the agent-worker binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use chat_common::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{BUILTIN_TOOLS, LlmSpec};

/// Everything an agent-worker process is configured with; each flag also reads an environment variable.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "agent-worker",
    version,
    about = "Stateless agent runtime: serves agent.v1.AgentWorker over gRPC for the agents in its config"
)]
pub struct Settings {
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, env = "AGENT_WORKER_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// TOML file declaring the agents to serve. Without it the built-in config is used
    /// (an `echo` agent and a banking-assistant demo behind the `bank` router).
    #[arg(long, env = "AGENTS_CONFIG", value_name = "PATH")]
    pub agents_config: Option<PathBuf>,

    /// Address of the admin listener: `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:9002")]
    pub admin_listen: SocketAddr,

    /// Log output: `auto` (JSON unless writing to a terminal), `pretty` for people reading a
    /// terminal, `json` for log collectors. `RUST_LOG` sets the filter (default `info`).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "auto|pretty|json",
        default_value = "auto"
    )]
    pub log_format: LogFormat,

    /// Seconds a stopping worker (SIGTERM) has to finish its in-flight runs; it takes no new ones.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,

    /// Shared secret of chat-core's service tokens: every call must carry one meant for
    /// agent-workers (`aud: agent-worker`). Required unless `GRPC_TLS_CLIENT_CA_FILE` has
    /// chat-core prove itself with a client certificate instead.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// File holding the token secret, instead of `JWT_SECRET`.
    #[arg(long, env = "JWT_SECRET_FILE", value_name = "PATH")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Serve gRPC server reflection (to callers with a service token, like every call).
    #[arg(long, env = "GRPC_REFLECTION")]
    pub grpc_reflection: bool,

    #[command(flatten)]
    pub tls: chat_common::tls::ServerTlsSettings,

    /// Most runs this worker executes at once; runs beyond it are refused with
    /// RESOURCE_EXHAUSTED so chat-core can send them to another worker.
    #[arg(
        long,
        env = "AGENT_WORKER_MAX_CONCURRENT_RUNS",
        value_name = "N",
        default_value_t = 256,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_concurrent_runs: usize,

    /// Base URL, including `/v1`, of an OpenAI-compatible API, such as
    /// https://api.openai.com/v1. When set, an `assistant` llm agent is added to the agents,
    /// with the key from --llm-api-key-env if that variable is set; with the built-in config
    /// it also answers what the `bank` router cannot place. Empty means unset.
    #[arg(long, env = "LLM_BASE_URL", value_name = "URL")]
    pub llm_base_url: Option<String>,

    /// Model of the added `assistant` agent.
    #[arg(long, env = "LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,

    /// Name of the environment variable holding the API key of the added `assistant` agent
    /// (the key itself is never taken as a flag, so it does not show in process lists). Like
    /// every key variable an agent names, it can also be given as a file in `<VAR>_FILE`.
    #[arg(
        long,
        env = "LLM_API_KEY_ENV",
        value_name = "VAR",
        default_value = "OPENAI_API_KEY"
    )]
    pub llm_api_key_env: String,
}

// === impl Settings ===

impl Default for Settings {
    /// The flags' defaults, without reading the environment.
    fn default() -> Self {
        chat_common::config::defaults()
    }
}

impl Settings {
    /// Reads the secrets given as files (`*_FILE`) into their settings.
    pub fn load_secret_files(&mut self) -> Result<(), String> {
        let file = self.jwt_secret_file.take();
        self.jwt_secret =
            chat_common::secret::resolve("JWT_SECRET", self.jwt_secret.take(), file.as_deref())?;
        Ok(())
    }

    /// Checks what clap cannot; the error is one line naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let mutual_tls = self.tls.files()?.is_some_and(|files| files.client_ca.is_some());
        match self.jwt_secret.as_ref().map(ExposeSecret::expose_secret) {
            Some(secret) if !secret.is_empty() => chat_common::token::check_secret(secret.as_bytes()),
            _ if mutual_tls => Ok(()),
            _ => Err(
                "JWT_SECRET (or JWT_SECRET_FILE) is required: agent-workers take only chat-core's \
                 service tokens (or set GRPC_TLS_CLIENT_CA_FILE to require chat-core's client certificate)"
                    .into(),
            ),
        }
    }

    /// The keys of chat-core's service tokens, when a secret is set.
    pub fn token_keys(&self) -> Option<std::sync::Arc<chat_common::token::TokenKeys>> {
        self.jwt_secret
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|secret| !secret.is_empty())
            .map(|secret| std::sync::Arc::new(chat_common::token::TokenKeys::new(secret.as_bytes())))
    }

    /// The `assistant` llm agent these settings ask for, if any; `env` reads environment variables.
    pub fn llm_assistant(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<LlmSpec> {
        let base_url = self
            .llm_base_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())?;
        let has_key = env(&self.llm_api_key_env).is_some_and(|key| !key.trim().is_empty());
        Some(LlmSpec {
            name: ASSISTANT.to_owned(),
            description: "A language model assistant for open questions".to_owned(),
            base_url: base_url.to_owned(),
            model: self.llm_model.clone(),
            api_key_env: has_key.then(|| self.llm_api_key_env.clone()),
            system_prompt: Some(ASSISTANT_PROMPT.to_owned()),
            history_window: 20,
            temperature: None,
            max_tokens: None,
            timeout_secs: 60.0,
            builtin_tools: BUILTIN_TOOLS.iter().map(|&tool| tool.to_owned()).collect(),
            tools: Vec::new(),
            handoffs: vec![crate::agents::events::HUMAN.to_owned()],
        })
    }
}

/// Name of the llm agent added by `--llm-base-url` or an API key.
pub const ASSISTANT: &str = "assistant";

const ASSISTANT_PROMPT: &str = "You are the assistant of a retail bank's chat. Answer briefly and politely. \
You cannot see or change the customer's accounts; for balances, cards and transfers, tell the customer \
to ask about them directly, and offer to put them through to a person for anything else you cannot do. \
Use the calculator for arithmetic.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn flags_are_consistent() {
        Settings::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let settings = Settings::parse_from([
            "agent-worker",
            "--listen",
            "127.0.0.1:0",
            "--agents-config",
            "/etc/agents.toml",
            "--log-format",
            "json",
            "--max-concurrent-runs",
            "8",
        ]);
        assert_eq!(settings.listen, "127.0.0.1:0".parse().expect("valid address"));
        assert_eq!(settings.agents_config, Some(PathBuf::from("/etc/agents.toml")));
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.max_concurrent_runs, 8);
    }

    #[test]
    fn an_llm_base_url_adds_the_assistant_with_the_key_variable_when_set() {
        let settings = Settings::parse_from(["agent-worker", "--llm-base-url", "http://llm:8000/v1"]);

        let with_key = settings
            .llm_assistant(&|name| (name == "OPENAI_API_KEY").then(|| "sk-x".to_owned()))
            .expect("assistant");
        let without_key = settings.llm_assistant(&|_| None).expect("assistant");

        assert_eq!(with_key.name, ASSISTANT);
        assert_eq!(with_key.base_url, "http://llm:8000/v1");
        assert_eq!(with_key.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(without_key.api_key_env, None);
    }

    #[test]
    fn no_or_empty_llm_base_url_adds_no_assistant() {
        let key = |_: &str| Some("sk-x".to_owned());
        let empty = Settings::parse_from(["agent-worker", "--llm-base-url", ""]);
        assert!(empty.llm_assistant(&key).is_none());
    }

    #[test]
    fn zero_concurrent_runs_is_rejected() {
        let result = Settings::try_parse_from(["agent-worker", "--max-concurrent-runs", "0"]);
        assert!(result.is_err());
    }
}
