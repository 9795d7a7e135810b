//! The `rules` agent: acts on the first rule that matches the message, by replying, routing to
//! another agent, or escalating to a person.

use futures::StreamExt;
use futures::stream::BoxStream;

use chat_proto::agent::v1::RunEvent;

use super::events;
use super::matcher::{Matcher, Message};
use crate::config::{RuleSpec, RulesSpec};

/// The reply sent while a conversation waits for a person, unless the config gives one.
pub const DEFAULT_ESCALATION_REPLY: &str =
    "I'm passing you to a member of our team. Someone will reply here shortly.";

/// Picks a canned reply, a route or an escalation by keyword or pattern, falling back to a default reply.
#[derive(Clone, Debug)]
pub struct RulesAgent {
    rules: Vec<Rule>,
    default_reply: String,
}

/// One rule: its matcher selects its action.
#[derive(Clone, Debug)]
struct Rule {
    matcher: Matcher,
    action: Action,
    reason: Option<String>,
}

#[derive(Clone, Debug)]
enum Action {
    Reply(String),
    Route(String),
    Escalate(String),
}

/// What a rules agent does with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Reply(&'a str),
    /// Hand the conversation to another agent, which answers this message.
    Route {
        to: &'a str,
        reason: String,
    },
    /// Hand the conversation to a person, answering `reply` meanwhile.
    Escalate {
        reply: &'a str,
        reason: String,
    },
}

// === impl RulesAgent ===

impl RulesAgent {
    /// What to do with `message`: the first matching rule's action, else the default reply.
    pub fn decide(&self, message: &str) -> Decision<'_> {
        let message = Message::new(message);
        let Some((rule, found)) = self
            .rules
            .iter()
            .find_map(|rule| rule.matcher.find(&message).map(|found| (rule, found)))
        else {
            return Decision::Reply(&self.default_reply);
        };
        let reason = || {
            rule.reason
                .clone()
                .unwrap_or_else(|| format!("message matched {found}"))
        };
        match &rule.action {
            Action::Reply(reply) => Decision::Reply(reply),
            Action::Route(to) => Decision::Route { to, reason: reason() },
            Action::Escalate(reply) => Decision::Escalate {
                reply,
                reason: reason(),
            },
        }
    }
}

impl From<RulesSpec> for RulesAgent {
    fn from(spec: RulesSpec) -> Self {
        Self {
            rules: spec.rules.into_iter().map(Rule::from).collect(),
            default_reply: spec.default_reply.unwrap_or_default(),
        }
    }
}

impl From<RuleSpec> for Rule {
    fn from(spec: RuleSpec) -> Self {
        let action = match (spec.route, spec.escalate) {
            (Some(to), _) => Action::Route(to),
            (None, true) => {
                Action::Escalate(spec.reply.unwrap_or_else(|| DEFAULT_ESCALATION_REPLY.to_owned()))
            }
            (None, false) => Action::Reply(spec.reply.unwrap_or_default()),
        };
        Self {
            matcher: Matcher::new(&spec.keywords, spec.pattern.as_deref()),
            action,
            reason: spec.reason,
        }
    }
}

// === impl Decision ===

impl Decision<'_> {
    /// The events of the run: a streamed reply, a handoff alone (the target answers next),
    /// or a handoff to a person followed by the streamed reply.
    pub fn into_events(self) -> BoxStream<'static, RunEvent> {
        match self {
            Decision::Reply(reply) => events::reply(reply.to_owned()).boxed(),
            Decision::Route { to, reason } => futures::stream::iter([events::handoff(to, reason)]).boxed(),
            Decision::Escalate { reply, reason } => events::escalation(reason, reply.to_owned()).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(keywords: &[&str]) -> RuleSpec {
        RuleSpec {
            keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
            ..RuleSpec::default()
        }
    }

    fn reply(keywords: &[&str], reply: &str) -> RuleSpec {
        RuleSpec {
            reply: Some(reply.to_owned()),
            ..rule(keywords)
        }
    }

    fn agent(rules: Vec<RuleSpec>) -> RulesAgent {
        RulesAgent::from(RulesSpec {
            name: "support".into(),
            description: String::new(),
            rules,
            default_reply: Some("default".into()),
        })
    }

    #[test]
    fn first_matching_rule_wins() {
        let agent = agent(vec![reply(&["hours"], "9 to 5"), reply(&["hello"], "hello")]);
        assert_eq!(
            agent.decide("hello, what are your hours?"),
            Decision::Reply("9 to 5")
        );
    }

    #[test]
    fn no_match_gives_the_default_reply() {
        let agent = agent(vec![reply(&["hours"], "9 to 5")]);
        assert_eq!(agent.decide("tell me a joke"), Decision::Reply("default"));
    }

    #[test]
    fn pattern_rule_replies_when_the_regex_matches() {
        let agent = agent(vec![RuleSpec {
            pattern: Some(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,}\b".into()),
            reply: Some("that looks like an IBAN".into()),
            ..RuleSpec::default()
        }]);
        assert_eq!(
            agent.decide("send to de89370400440532013000"),
            Decision::Reply("that looks like an IBAN")
        );
    }

    #[test]
    fn route_rule_names_the_target_and_the_matched_keyword() {
        let agent = agent(vec![RuleSpec {
            route: Some("cards".into()),
            ..rule(&["card*"])
        }]);
        assert_eq!(
            agent.decide("I lost my Cards"),
            Decision::Route {
                to: "cards",
                reason: "message matched keyword \"card*\"".into()
            }
        );
    }

    #[test]
    fn escalation_rule_uses_its_reason_and_the_default_reply() {
        let agent = agent(vec![RuleSpec {
            escalate: true,
            reason: Some("customer asked for a person".into()),
            ..rule(&["human", "agent"])
        }]);
        assert_eq!(
            agent.decide("let me talk to a human"),
            Decision::Escalate {
                reply: DEFAULT_ESCALATION_REPLY,
                reason: "customer asked for a person".into()
            }
        );
    }
}
