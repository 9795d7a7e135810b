//! Options of the agents that answer or route by matching the message: `rules`, `router`,
//! and `human_handoff`.

use serde::Deserialize;

use super::{AgentSpec, ConfigError, Declared};

/// Options of a `rules` agent, which acts on the first rule that matches the message.
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

/// One rule: a match (`keywords` and/or `pattern`) and an action (`reply`, `route` or `escalate`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Any of these words or phrases in the message selects the rule.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A regular expression (case-insensitive) that selects the rule when it matches.
    pub pattern: Option<String>,
    /// The answer to send.
    pub reply: Option<String>,
    /// Hand the conversation to this agent, which answers the message in the same run.
    pub route: Option<String>,
    /// Hand the conversation to a person; `reply` is the short answer sent meanwhile.
    #[serde(default)]
    pub escalate: bool,
    /// Why the conversation is handed off, shown in the handoff event.
    pub reason: Option<String>,
}

/// Options of a `router` agent, which picks the agent that answers each message.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub routes: Vec<RouteRuleSpec>,
    /// Agent for messages no route matches (and the classifier's fallback).
    pub default_agent: String,
    /// An agent (normally `llm`) asked to name the best agent when no route matches.
    pub classifier: Option<String>,
    /// Agents the classifier may choose from; default: every route's agent and `default_agent`.
    #[serde(default)]
    pub candidates: Vec<String>,
}

/// One route: any of `keywords` (or the `pattern`) in the message selects `agent`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRuleSpec {
    #[serde(default)]
    pub keywords: Vec<String>,
    pub pattern: Option<String>,
    pub agent: String,
}

/// Options of a `human_handoff` agent, which hands every conversation to a person.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanHandoffSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The short answer sent while the user waits for a person.
    pub reply: Option<String>,
    /// Why the conversation is handed off, shown in the handoff event.
    pub reason: Option<String>,
}

// === impl RulesSpec ===

impl RulesSpec {
    pub(super) fn validate(&self, declared: &Declared<'_>) -> Result<(), ConfigError> {
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
            let position = index + 1;
            let bad_rule = |problem: String| ConfigError::BadRule {
                agent: self.name.clone(),
                position,
                problem,
            };
            check_match(&rule.keywords, rule.pattern.as_deref()).map_err(bad_rule)?;
            check_action(rule).map_err(|problem| bad_rule(problem.to_owned()))?;
            if let Some(target) = &rule.route {
                if *target == self.name {
                    return Err(bad_rule("routes to its own agent".to_owned()));
                }
                declared.get(&self.name, format!("rule #{position} route"), target)?;
            }
        }
        Ok(())
    }
}

/// Checks that a rule has exactly one action: `reply`, `route`, or `escalate` (with an optional reply).
fn check_action(rule: &RuleSpec) -> Result<(), &'static str> {
    if rule.reply.as_deref().is_some_and(|reply| reply.trim().is_empty()) {
        return Err("has an empty reply");
    }
    match (&rule.reply, &rule.route, rule.escalate) {
        (_, Some(_), true) => Err("has both route and escalate; choose one"),
        (Some(_), Some(_), false) => Err("has both reply and route; choose one"),
        (None, None, false) => Err("needs a reply, a route or escalate = true"),
        _ => Ok(()),
    }
}

/// Checks the match of a rule or route: non-empty keywords and/or a regular expression that compiles.
fn check_match(keywords: &[String], pattern: Option<&str>) -> Result<(), String> {
    if keywords.is_empty() && pattern.is_none() {
        return Err("has no keywords and no pattern".to_owned());
    }
    if keywords.iter().any(|k| k.trim_end_matches('*').trim().is_empty()) {
        return Err("has an empty keyword".to_owned());
    }
    if let Some(pattern) = pattern {
        if pattern.is_empty() {
            return Err("has an empty pattern".to_owned());
        }
        if let Err(err) = crate::agents::matcher::compile_pattern(pattern) {
            let message = err.to_string();
            let reason = message.lines().last().unwrap_or_default().trim();
            return Err(format!(
                "pattern `{pattern}` is not a valid regular expression: {reason}"
            ));
        }
    }
    Ok(())
}

// === impl RouterSpec ===

impl RouterSpec {
    pub(super) fn validate(&self, declared: &Declared<'_>) -> Result<(), ConfigError> {
        let target = |field: String, target: &str| -> Result<(), ConfigError> {
            if target == self.name {
                return Err(ConfigError::BadOption {
                    agent: self.name.clone(),
                    message: format!("{field} routes to the router itself"),
                });
            }
            declared.get(&self.name, field, target).map(drop)
        };
        target("default_agent".to_owned(), &self.default_agent)?;
        for (index, route) in self.routes.iter().enumerate() {
            let position = index + 1;
            check_match(&route.keywords, route.pattern.as_deref()).map_err(|problem| {
                ConfigError::BadRule {
                    agent: self.name.clone(),
                    position,
                    problem,
                }
            })?;
            target(format!("route #{position}"), &route.agent)?;
        }
        for candidate in &self.candidates {
            target("candidates".to_owned(), candidate)?;
        }
        if let Some(classifier) = &self.classifier {
            let spec = declared.get(&self.name, "classifier".to_owned(), classifier)?;
            if matches!(spec, AgentSpec::Router(_) | AgentSpec::HumanHandoff(_)) {
                return Err(ConfigError::BadOption {
                    agent: self.name.clone(),
                    message: format!(
                        "classifier `{classifier}` is a {} agent; use an agent that answers in text, such as an llm agent",
                        spec.kind()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The agents the classifier chooses from: `candidates`, else every route's agent and the default.
    pub fn candidate_agents(&self) -> Vec<String> {
        if !self.candidates.is_empty() {
            return self.candidates.clone();
        }
        let mut agents: Vec<String> = Vec::new();
        let all = self.routes.iter().map(|r| &r.agent).chain([&self.default_agent]);
        for agent in all {
            if !agents.contains(agent) {
                agents.push(agent.clone());
            }
        }
        agents
    }
}
