//! The agents a worker can run, and the registry that finds them by name.

mod echo;
pub mod events;
mod rules;

use std::collections::HashMap;

use chat_common::ErrorCode;
use chat_proto::agent::v1::{AgentInfo, RunEvent, RunRequest};
use futures::StreamExt;
use futures::stream::{self, BoxStream};

pub use echo::EchoAgent;
pub use rules::RulesAgent;

use crate::config::{AgentSpec, AgentsConfig};

/// `ErrorEvent.code` of a run addressed to an agent this worker does not serve.
pub const UNKNOWN_AGENT: &str = "unknown_agent";

/// One configured agent, ready to answer runs.
#[derive(Clone, Debug)]
pub enum Agent {
    Echo(EchoAgent),
    Rules(RulesAgent),
}

// === impl Agent ===

impl Agent {
    /// The name runs address this agent by.
    pub fn name(&self) -> &str {
        match self {
            Self::Echo(agent) => &agent.name,
            Self::Rules(agent) => &agent.name,
        }
    }

    /// What the agent does, for people choosing one.
    pub fn description(&self) -> &str {
        match self {
            Self::Echo(agent) => &agent.description,
            Self::Rules(agent) => &agent.description,
        }
    }

    /// The `kind` the agent was declared with in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Echo(_) => "echo",
            Self::Rules(_) => "rules",
        }
    }

    /// Answers one run: deltas, then exactly one final or error event.
    pub fn run(&self, request: &RunRequest) -> BoxStream<'static, RunEvent> {
        let Some(message) = request.history.last() else {
            let error = events::error(ErrorCode::Invalid.as_str(), "run has no history to answer", false);
            return stream::iter([error]).boxed();
        };
        let reply = match self {
            Self::Echo(agent) => agent.reply(&message.content),
            Self::Rules(agent) => agent.reply(&message.content).to_owned(),
        };
        events::reply(reply).boxed()
    }

    /// The agent as `ListAgents` describes it.
    pub fn info(&self) -> AgentInfo {
        AgentInfo {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            kind: self.kind().to_owned(),
        }
    }
}

impl From<AgentSpec> for Agent {
    fn from(spec: AgentSpec) -> Self {
        match spec {
            AgentSpec::Echo(spec) => Self::Echo(EchoAgent::from(spec)),
            AgentSpec::Rules(spec) => Self::Rules(RulesAgent::from(spec)),
        }
    }
}

/// The agents this worker serves, in config order and by name.
#[derive(Clone, Debug)]
pub struct Registry {
    agents: Vec<Agent>,
    by_name: HashMap<String, usize>,
}

// === impl Registry ===

impl Registry {
    /// Builds the agents of a validated config.
    pub fn new(config: AgentsConfig) -> Self {
        let agents: Vec<Agent> = config.agents.into_iter().map(Agent::from).collect();
        let by_name = agents
            .iter()
            .enumerate()
            .map(|(i, agent)| (agent.name().to_owned(), i))
            .collect();
        Self { agents, by_name }
    }

    /// The agent called `name`, if this worker serves it.
    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.by_name.get(name).map(|&i| &self.agents[i])
    }

    /// Every agent, in config order.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Answers one run with the agent it names, or with an `unknown_agent` error event.
    pub fn run(&self, request: &RunRequest) -> BoxStream<'static, RunEvent> {
        match self.get(&request.agent) {
            Some(agent) => agent.run(request),
            None => {
                let message = format!("this worker has no agent named `{}`", request.agent);
                stream::iter([events::error(UNKNOWN_AGENT, message, false)]).boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests;
