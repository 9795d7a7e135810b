//! Domain vocabulary: roles, statuses, who is calling, and input validation.

mod principal;
mod status;
mod validate;

pub use principal::Principal;
pub use status::{MessageRole, RunStatus, SessionStatus};
pub use validate::{validate_client_msg_id, validate_content, validate_session_id};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
