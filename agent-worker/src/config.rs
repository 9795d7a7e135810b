//! The agents config file: TOML parsing and start-up validation.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The config built into the binary, served when no `--agents-config` is given.
pub const DEFAULT_AGENTS_TOML: &str = include_str!("../agents.toml");

/// Longest accepted agent name, in bytes.
const MAX_NAME_LEN: usize = 64;

/// Why an agents config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("agent {agent}: {message}")]
    BadAgent { agent: String, message: String },
    #[error("no agents declared (add at least one [[agents]] entry)")]
    NoAgents,
    #[error("agent #{position}: name is empty")]
    EmptyName { position: usize },
    #[error("agent name `{0}` must be at most {MAX_NAME_LEN} letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("agent `{0}` is declared more than once")]
    DuplicateName(String),
    #[error("rules agent `{agent}` needs a non-empty default_reply")]
    MissingDefaultReply { agent: String },
    #[error("rules agent `{agent}`, rule #{position}: {problem}")]
    BadRule {
        agent: String,
        position: usize,
        problem: &'static str,
    },
}

/// The validated list of agents a worker serves, in file order.
#[derive(Clone, Debug)]
pub struct AgentsConfig {
    pub agents: Vec<AgentSpec>,
}

/// The file's top level, with each agent left as a table so its errors can name it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    agents: Vec<toml::Table>,
}

/// One `[[agents]]` entry; `kind` selects the variant.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AgentSpec {
    Echo(EchoSpec),
    Rules(RulesSpec),
}

/// Options of an `echo` agent, which repeats the user's message.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Text put before the echoed message.
    #[serde(default)]
    pub prefix: String,
}

/// Options of a `rules` agent, which answers with the first rule whose keywords match.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Reply when no rule matches; required, but optional here so its absence gets a clear error.
    pub default_reply: Option<String>,
}

/// One keyword rule: any of `keywords` in the message selects `reply`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub keywords: Vec<String>,
    pub reply: String,
}

// === impl AgentsConfig ===

impl AgentsConfig {
    /// Reads and validates the file at `path`, or the built-in config when there is none.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Self::from_toml(DEFAULT_AGENTS_TOML);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates a config from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|err| syntax_error(text, &err))?;
        let agents = file
            .agents
            .into_iter()
            .enumerate()
            .map(|(index, table)| parse_agent(index, table));
        let config = Self {
            agents: agents.collect::<Result<_, _>>()?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.agents.is_empty() {
            return Err(ConfigError::NoAgents);
        }
        let mut names = HashSet::new();
        for (index, agent) in self.agents.iter().enumerate() {
            let name = agent.name();
            if name.is_empty() {
                return Err(ConfigError::EmptyName { position: index + 1 });
            }
            if !is_valid_name(name) {
                return Err(ConfigError::BadName(name.to_owned()));
            }
            if !names.insert(name) {
                return Err(ConfigError::DuplicateName(name.to_owned()));
            }
            if let AgentSpec::Rules(rules) = agent {
                rules.validate()?;
            }
        }
        Ok(())
    }
}

fn is_valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads one `[[agents]]` table; errors name the agent by position and, when it has one, name.
fn parse_agent(index: usize, table: toml::Table) -> Result<AgentSpec, ConfigError> {
    let name = table.get("name").and_then(toml::Value::as_str).map(str::to_owned);
    toml::Value::Table(table)
        .try_into()
        .map_err(|err: toml::de::Error| {
            let position = index + 1;
            let agent = match name {
                Some(name) => format!("#{position} `{name}`"),
                None => format!("#{position}"),
            };
            ConfigError::BadAgent {
                agent,
                message: one_line(err.message()),
            }
        })
}

/// Turns a TOML error into one line that points at the offending place.
fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |span| span.start);
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError::Syntax {
        line,
        column,
        message: one_line(err.message()),
    }
}

fn one_line(message: &str) -> String {
    message.trim_end().replace('\n', " ")
}

// === impl AgentSpec ===

impl AgentSpec {
    /// The name runs address this agent by.
    pub fn name(&self) -> &str {
        match self {
            Self::Echo(spec) => &spec.name,
            Self::Rules(spec) => &spec.name,
        }
    }
}

// === impl RulesSpec ===

impl RulesSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if self
            .default_reply
            .as_deref()
            .is_none_or(|reply| reply.trim().is_empty())
        {
            return Err(ConfigError::MissingDefaultReply {
                agent: self.name.clone(),
            });
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let problem = if rule.keywords.is_empty() {
                "has no keywords"
            } else if rule
                .keywords
                .iter()
                .any(|k| k.trim_end_matches('*').trim().is_empty())
            {
                "has an empty keyword"
            } else if rule.reply.trim().is_empty() {
                "has an empty reply"
            } else {
                continue;
            };
            return Err(ConfigError::BadRule {
                agent: self.name.clone(),
                position: index + 1,
                problem,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
