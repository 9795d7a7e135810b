//! The domain: ids, sessions, messages and runs with their lifecycle rules.
//! Depends on nothing else in the crate; the store maps its rows to these
//! types and the service enforces these rules.

mod error;
mod ids;
mod message;
mod principal;
mod run;
mod session;
mod validate;

pub use error::DomainError;
pub use ids::{ClientMsgId, MAX_CLIENT_MSG_ID_LEN, MessageId, RunId, SessionId, UserId, new_id};
pub use message::{HUMAN_AGENT, Message, MessageRole, Post, ToolCallRecord};
pub use principal::Principal;
pub use run::{Run, RunErrorCode, RunFailure, RunStatus};
pub use session::{
    Actor, Assignee, Concurrency, MAX_NOTES_CHARS, MAX_TITLE_CHARS, Session, SessionChange, SessionStatus,
    validate_notes, validate_title,
};
pub use validate::{MAX_METADATA_BYTES, validate_content, validate_metadata};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// An enum with stored names: `as_str`, `parse`, `ALL` and `Display`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use named_enum;
