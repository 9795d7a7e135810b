//! The agents a worker can run, and the registry that finds them by name.

mod echo;
pub mod events;
mod handoff;
mod human;
mod llm;
pub mod matcher;
mod router;
mod rules;
pub mod tools;
pub mod upstream;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use chat_common::ErrorCode;
use chat_proto::agent::v1::{AgentInfo, RunEvent, RunRequest};
use futures::StreamExt;
use futures::stream::{self, BoxStream};

pub use echo::EchoAgent;
pub use handoff::MAX_HANDOFF_HOPS;
pub use human::HumanHandoffAgent;
pub use llm::{LlmAgent, MAX_TOOL_ROUNDS};
pub use router::RouterAgent;
pub use rules::{Decision, RulesAgent};
pub use webhook::{SEED_REPLY_FIELDS, WebhookAgent};

use crate::config::{AgentSpec, AgentsConfig, ConfigError, Listing};

/// `ErrorEvent.code` of a run addressed to an agent this worker does not serve.
pub const UNKNOWN_AGENT: &str = "unknown_agent";

/// One configured agent, ready to answer runs.
#[derive(Clone, Debug)]
pub enum Agent {
    Echo(EchoAgent),
    Rules(RulesAgent),
    Router(RouterAgent),
    HumanHandoff(HumanHandoffAgent),
    Llm(LlmAgent),
    Webhook(WebhookAgent),
}

// === impl Agent ===

impl Agent {
    /// Answers one run on its own: deltas, then exactly one final or error event, or a handoff
    /// event last when another agent should answer (which [`Registry::run`] then runs).
    pub fn run(&self, registry: &Arc<Registry>, request: &RunRequest) -> BoxStream<'static, RunEvent> {
        let Some(message) = request.history.last() else {
            return stream::iter([no_history()]).boxed();
        };
        let message = message.content.as_str();
        match self {
            Self::Echo(agent) if agent.delay.is_zero() => events::reply(agent.reply(message)).boxed(),
            Self::Echo(agent) => {
                let delay = agent.delay;
                events::reply(agent.reply(message))
                    .then(move |event| async move {
                        tokio::time::sleep(delay).await;
                        event
                    })
                    .boxed()
            }
            Self::Rules(agent) => agent.decide(message).into_events(),
            Self::Router(agent) => agent.run(registry, request, message),
            Self::HumanHandoff(agent) => agent.events(),
            Self::Llm(agent) => agent.run(request),
            Self::Webhook(agent) => agent.run(request),
        }
    }

    /// Builds a configured agent; `env` reads environment variables such as API keys.
    fn build(spec: AgentSpec, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(match spec {
            AgentSpec::Echo(spec) => Self::Echo(EchoAgent::from(spec)),
            AgentSpec::Rules(spec) => Self::Rules(RulesAgent::from(spec)),
            AgentSpec::Router(spec) => Self::Router(RouterAgent::from(spec)),
            AgentSpec::HumanHandoff(spec) => Self::HumanHandoff(HumanHandoffAgent::from(spec)),
            AgentSpec::Llm(spec) => Self::Llm(LlmAgent::new(spec, env)?),
            AgentSpec::Webhook(spec) => Self::Webhook(WebhookAgent::new(spec, env)?),
        })
    }
}

/// The agents this worker serves, in config order and by name.
#[derive(Clone, Debug)]
pub struct Registry {
    agents: Vec<Agent>,
    /// Each agent as `ListAgents` describes it, in the same order.
    infos: Vec<AgentInfo>,
    by_name: HashMap<String, usize>,
}

// === impl Registry ===

impl Registry {
    /// Builds the agents of a validated config, reading API keys from the process environment.
    pub fn new(config: AgentsConfig) -> Result<Self, ConfigError> {
        Self::with_env(config, &|name| std::env::var(name).ok())
    }

    /// Builds the agents of a validated config, reading environment variables with `env`.
    pub fn with_env(config: AgentsConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let default = Listing::default();
        let infos: Vec<AgentInfo> = config
            .agents
            .iter()
            .map(|spec| info(spec, config.listings.get(spec.name()).unwrap_or(&default)))
            .collect();
        let by_name = infos
            .iter()
            .enumerate()
            .map(|(i, info)| (info.name.clone(), i))
            .collect();
        let agents = config
            .agents
            .into_iter()
            .map(|spec| Agent::build(spec, env))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            agents,
            infos,
            by_name,
        })
    }

    /// The agent called `name`, if this worker serves it.
    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.by_name.get(name).map(|&i| &self.agents[i])
    }

    /// How `ListAgents` describes the agent called `name`, if this worker serves it.
    pub fn info(&self, name: &str) -> Option<&AgentInfo> {
        self.by_name.get(name).map(|&i| &self.infos[i])
    }

    /// Every agent as `ListAgents` describes it, in config order.
    pub fn infos(&self) -> &[AgentInfo] {
        &self.infos
    }

    /// Answers one run with the agent it names, following handoffs to other agents here.
    pub fn run(self: &Arc<Self>, request: RunRequest) -> BoxStream<'static, RunEvent> {
        if request.history.is_empty() {
            return stream::iter([no_history()]).boxed();
        }
        handoff::follow(Arc::clone(self), request).boxed()
    }
}

/// The agent `spec` declares as `ListAgents` describes it, presented as `listing` says.
fn info(spec: &AgentSpec, listing: &Listing) -> AgentInfo {
    let (name, description) = spec.name_and_description();
    AgentInfo {
        name: name.to_owned(),
        description: description.to_owned(),
        kind: spec.kind().to_owned(),
        display_name: listing.display_name.clone().unwrap_or_default(),
        listed: Some(listing.listed),
    }
}

fn no_history() -> RunEvent {
    events::error(ErrorCode::Invalid.as_str(), "run has no history to answer", false)
}

fn unknown_agent(name: &str) -> RunEvent {
    let message = format!("this worker has no agent named `{name}`");
    events::error(UNKNOWN_AGENT, message, false)
}

#[cfg(test)]
mod tests;
