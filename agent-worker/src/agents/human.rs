//! The `human_handoff` agent: hands every conversation to a person.

use futures::StreamExt;
use futures::stream::BoxStream;

use chat_proto::agent::v1::RunEvent;

use super::events;
use super::rules::DEFAULT_ESCALATION_REPLY;
use crate::config::HumanHandoffSpec;

/// Escalates each message to a person with a short holding reply.
#[derive(Clone, Debug)]
pub struct HumanHandoffAgent {
    reply: String,
    reason: String,
}

impl HumanHandoffAgent {
    /// A handoff to `human`, then the holding reply.
    pub fn events(&self) -> BoxStream<'static, RunEvent> {
        events::escalation(self.reason.clone(), self.reply.clone()).boxed()
    }
}

impl From<HumanHandoffSpec> for HumanHandoffAgent {
    fn from(spec: HumanHandoffSpec) -> Self {
        Self {
            reason: spec
                .reason
                .unwrap_or_else(|| format!("handed to a person by `{}`", spec.name)),
            reply: spec.reply.unwrap_or_else(|| DEFAULT_ESCALATION_REPLY.to_owned()),
        }
    }
}
