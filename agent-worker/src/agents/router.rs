//! The `router` agent: picks the agent that answers each message, by keyword or pattern routes,
//! then by asking a classifier agent, else the default agent.

use std::sync::Arc;

use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{HistoryMessage, RunEvent, RunRequest};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::matcher::{Matcher, Message};
use super::{Registry, events};
use crate::config::RouterSpec;

/// Hands each message to the agent its routes, classifier or default select.
#[derive(Clone, Debug)]
pub struct RouterAgent {
    routes: Vec<(Matcher, String)>,
    default_agent: String,
    classifier: Option<String>,
    candidates: Vec<String>,
}

// === impl RouterAgent ===

impl RouterAgent {
    /// A single handoff event to the chosen agent, which the run then continues with.
    pub fn run(
        &self,
        registry: &Arc<Registry>,
        request: &RunRequest,
        message: &str,
    ) -> BoxStream<'static, RunEvent> {
        if let Some((agent, reason)) = self.route_by_rules(message) {
            return futures::stream::iter([events::handoff(agent, reason)]).boxed();
        }
        let Some(classifier) = self.classifier.clone() else {
            let handoff = events::handoff(&self.default_agent, "no route matched the message");
            return futures::stream::iter([handoff]).boxed();
        };
        let this = self.clone();
        let registry = Arc::clone(registry);
        let request = self.classification_request(&registry, request, &classifier, message);
        futures::stream::once(async move {
            let (agent, reason) = this.classify(&registry, &classifier, &request).await;
            events::handoff(agent, reason)
        })
        .boxed()
    }

    /// The agent of the first route matching `message`, with why it matched.
    pub fn route_by_rules(&self, message: &str) -> Option<(&str, String)> {
        let message = Message::new(message);
        self.routes.iter().find_map(|(matcher, agent)| {
            let found = matcher.find(&message)?;
            Some((agent.as_str(), format!("message matched {found}")))
        })
    }

    /// Asks the classifier to name an agent, falling back to the default on anything unexpected.
    async fn classify(
        &self,
        registry: &Arc<Registry>,
        classifier: &str,
        request: &RunRequest,
    ) -> (String, String) {
        let fallback = |why: String| (self.default_agent.clone(), why);
        let Some(agent) = registry.get(classifier) else {
            return fallback(format!("classifier `{classifier}` is not served here"));
        };
        let mut events = agent.run(registry, request);
        let mut answer = None;
        while let Some(event) = events.next().await {
            match event.event {
                Some(Event::Final(reply)) => answer = Some(reply.content),
                Some(Event::Error(error)) => {
                    tracing::warn!(classifier, code = %error.code, message = %error.message, "classifier failed");
                    return fallback(format!("classifier failed ({}); default agent", error.code));
                }
                _ => {}
            }
        }
        let Some(answer) = answer else {
            return fallback("classifier gave no answer; default agent".to_owned());
        };
        match self.parse_choice(&answer) {
            Some(agent) => (
                agent.to_owned(),
                format!("classifier `{classifier}` chose `{agent}`"),
            ),
            None => {
                tracing::debug!(classifier, answer = %answer, "classifier answer names no candidate");
                fallback("classifier answer named no candidate; default agent".to_owned())
            }
        }
    }

    /// The candidate named by a classifier's answer, ignoring case, quotes and trailing punctuation.
    pub fn parse_choice(&self, answer: &str) -> Option<&str> {
        let answer = answer
            .trim()
            .trim_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '.' | '!' | '*'));
        self.candidates
            .iter()
            .find(|candidate| candidate.eq_ignore_ascii_case(answer))
            .map(String::as_str)
    }

    /// The run asked of the classifier: instructions listing the candidates, then the message.
    fn classification_request(
        &self,
        registry: &Registry,
        request: &RunRequest,
        classifier: &str,
        message: &str,
    ) -> RunRequest {
        let mut instructions = String::from(
            "You route each customer message to the agent best suited to answer it. The agents are:\n",
        );
        for candidate in &self.candidates {
            let description = registry
                .info(candidate)
                .map_or("", |info| info.description.as_str());
            instructions.push_str(&format!("- {candidate}: {description}\n"));
        }
        instructions.push_str("Answer with exactly one agent name from this list and nothing else.");
        let turn = |seq, role: &str, content: String| HistoryMessage {
            seq,
            role: role.to_owned(),
            agent: String::new(),
            content,
        };
        RunRequest {
            agent: classifier.to_owned(),
            history: vec![
                turn(1, "system", instructions),
                turn(2, "user", message.to_owned()),
            ],
            // Every other field of `request`, spelled out so its history is not cloned only to be replaced.
            run_id: request.run_id.clone(),
            session_id: request.session_id.clone(),
            attempt: request.attempt,
            metadata_json: request.metadata_json.clone(),
        }
    }
}

impl From<RouterSpec> for RouterAgent {
    fn from(spec: RouterSpec) -> Self {
        Self {
            candidates: spec.candidate_agents(),
            routes: spec
                .routes
                .into_iter()
                .map(|route| {
                    (
                        Matcher::new(&route.keywords, route.pattern.as_deref()),
                        route.agent,
                    )
                })
                .collect(),
            default_agent: spec.default_agent,
            classifier: spec.classifier,
        }
    }
}
