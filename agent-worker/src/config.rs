//! The agents config file: TOML parsing and start-up validation.

mod llm;
mod routing;
mod webhook;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use llm::{BUILTIN_TOOLS, HttpToolSpec, LlmSpec};
pub use routing::{HumanHandoffSpec, RouteRuleSpec, RouterSpec, RuleSpec, RulesSpec};
pub use webhook::{WebhookMode, WebhookSpec};

/// The config built into the binary, served when no `--agents-config` is given.
pub const DEFAULT_AGENTS_TOML: &str = include_str!("../agents.toml");

/// Longest accepted agent name, in bytes.
const MAX_NAME_LEN: usize = 64;
/// Longest accepted display name, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

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
    #[error("agent name `human` is reserved for handoffs to a person")]
    ReservedName,
    #[error("agent `{0}` is declared more than once")]
    DuplicateName(String),
    #[error("rules agent `{agent}` needs a non-empty default_reply")]
    MissingDefaultReply { agent: String },
    #[error("agent `{agent}`, rule #{position}: {problem}")]
    BadRule {
        agent: String,
        position: usize,
        problem: String,
    },
    #[error("agent `{agent}`: {field} names agent `{target}`, which is not declared")]
    UnknownTarget {
        agent: String,
        field: String,
        target: String,
    },
    #[error("agent `{agent}`: {message}")]
    BadOption { agent: String, message: String },
}

/// The validated list of agents a worker serves, in file order.
#[derive(Clone, Debug)]
pub struct AgentsConfig {
    pub agents: Vec<AgentSpec>,
    /// How each agent is presented, by name; agents not in it are listed under their name.
    pub listings: HashMap<String, Listing>,
}

/// How clients present an agent: the two keys every kind takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// Shown to people instead of the name; `None` for the name itself.
    pub display_name: Option<String>,
    /// Offered in pickers; `false` (`listed = false`) for agents reached only by handoff.
    pub listed: bool,
}

impl Default for Listing {
    fn default() -> Self {
        Self {
            display_name: None,
            listed: true,
        }
    }
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
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentSpec {
    Echo(EchoSpec),
    Rules(RulesSpec),
    Router(RouterSpec),
    HumanHandoff(HumanHandoffSpec),
    Llm(LlmSpec),
    Webhook(WebhookSpec),
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
    /// Milliseconds to wait before each delta (simulates a slow model).
    #[serde(default)]
    pub delay_ms: u64,
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
        let mut agents = Vec::with_capacity(file.agents.len());
        let mut listings = HashMap::new();
        for (index, table) in file.agents.into_iter().enumerate() {
            let (spec, listing) = parse_agent(index, table)?;
            listings.insert(spec.name().to_owned(), listing);
            agents.push(spec);
        }
        let mut config = Self { agents, listings };
        config.validate()?;
        Ok(config)
    }

    /// Adds an llm agent; when `default_of` names a router, that router's unmatched messages go to it.
    pub fn add_llm_assistant(&mut self, spec: LlmSpec, default_of: Option<&str>) -> Result<(), ConfigError> {
        let name = spec.name.clone();
        if let Some(router) = default_of {
            for agent in &mut self.agents {
                if let AgentSpec::Router(spec) = agent
                    && spec.name == router
                {
                    spec.default_agent.clone_from(&name);
                }
            }
        }
        self.agents.push(AgentSpec::Llm(spec));
        self.validate()
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
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
            if name == crate::agents::events::HUMAN {
                return Err(ConfigError::ReservedName);
            }
            if !names.insert(name) {
                return Err(ConfigError::DuplicateName(name.to_owned()));
            }
        }
        for agent in &mut self.agents {
            if let AgentSpec::Llm(spec) = agent {
                spec.validate()?;
            }
        }
        let declared = Declared(self.agents.iter().map(|a| (a.name(), a)).collect());
        for agent in &self.agents {
            match agent {
                AgentSpec::Echo(_) | AgentSpec::HumanHandoff(_) => {}
                AgentSpec::Llm(spec) => spec.validate_targets(&declared)?,
                AgentSpec::Webhook(spec) => spec.validate()?,
                AgentSpec::Rules(spec) => spec.validate(&declared)?,
                AgentSpec::Router(spec) => spec.validate(&declared)?,
            }
        }
        Ok(())
    }
}

/// The declared agents by name, for checking the agents a config refers to.
struct Declared<'a>(HashMap<&'a str, &'a AgentSpec>);

impl Declared<'_> {
    /// The agent called `target`, or an error naming the `field` of `agent` that refers to it.
    fn get(&self, agent: &str, field: String, target: &str) -> Result<&AgentSpec, ConfigError> {
        self.0
            .get(target)
            .copied()
            .ok_or_else(|| ConfigError::UnknownTarget {
                agent: agent.to_owned(),
                field,
                target: target.to_owned(),
            })
    }
}

fn is_valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads one `[[agents]]` table: its listing keys, then its kind's options.
/// Errors name the agent by position and, when it has one, name.
fn parse_agent(index: usize, mut table: toml::Table) -> Result<(AgentSpec, Listing), ConfigError> {
    let name = table.get("name").and_then(toml::Value::as_str).map(str::to_owned);
    let position = index + 1;
    let bad_agent = |message: String| {
        let agent = match &name {
            Some(name) => format!("#{position} `{name}`"),
            None => format!("#{position}"),
        };
        ConfigError::BadAgent { agent, message }
    };
    let listing = parse_listing(&mut table).map_err(|message| bad_agent(message.to_owned()))?;
    let spec = toml::Value::Table(table)
        .try_into()
        .map_err(|err: toml::de::Error| bad_agent(one_line(err.message())))?;
    Ok((spec, listing))
}

/// Takes `display_name` and `listed` out of an agent's table.
fn parse_listing(table: &mut toml::Table) -> Result<Listing, &'static str> {
    let display_name = match table.remove("display_name") {
        None => None,
        Some(toml::Value::String(text)) => {
            let chars = text.chars().count();
            if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS || text.chars().any(char::is_control) {
                return Err("display_name must be 1 to 100 characters, none of them control characters");
            }
            Some(text)
        }
        Some(_) => return Err("display_name must be a string"),
    };
    let listed = match table.remove("listed") {
        None => true,
        Some(toml::Value::Boolean(listed)) => listed,
        Some(_) => return Err("listed must be true or false"),
    };
    Ok(Listing { display_name, listed })
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
        self.name_and_description().0
    }

    /// The agent's name, and what it does for people choosing one.
    pub fn name_and_description(&self) -> (&str, &str) {
        match self {
            Self::Echo(spec) => (&spec.name, &spec.description),
            Self::Rules(spec) => (&spec.name, &spec.description),
            Self::Router(spec) => (&spec.name, &spec.description),
            Self::HumanHandoff(spec) => (&spec.name, &spec.description),
            Self::Llm(spec) => (&spec.name, &spec.description),
            Self::Webhook(spec) => (&spec.name, &spec.description),
        }
    }

    /// The `kind` the agent is declared with.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Echo(_) => "echo",
            Self::Rules(_) => "rules",
            Self::Router(_) => chat_proto::ROUTER_KIND,
            Self::HumanHandoff(_) => "human_handoff",
            Self::Llm(_) => "llm",
            Self::Webhook(_) => "webhook",
        }
    }
}

#[cfg(test)]
mod tests;
