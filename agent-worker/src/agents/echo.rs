//! The `echo` agent: replies with the user's own message.

use crate::config::EchoSpec;

/// Repeats the message it answers, after an optional prefix.
#[derive(Clone, Debug)]
pub struct EchoAgent {
    pub prefix: String,
    /// Pause before each delta.
    pub delay: std::time::Duration,
}

impl EchoAgent {
    /// The reply to `message`.
    pub fn reply(&self, message: &str) -> String {
        format!("{}{message}", self.prefix)
    }
}

impl From<EchoSpec> for EchoAgent {
    fn from(spec: EchoSpec) -> Self {
        Self {
            prefix: spec.prefix,
            delay: std::time::Duration::from_millis(spec.delay_ms),
        }
    }
}
