//! Statuses and roles, with their stored names.

use chat_proto::chat::v1 as pb;

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
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

named_enum!(
    /// Lifecycle of a session.
    SessionStatus {
        Active => "active",
        PendingHuman => "pending_human",
        Resolved => "resolved",
        Expired => "expired",
        Ended => "ended",
    }
);

named_enum!(
    /// Author of a message.
    MessageRole {
        User => "user",
        Assistant => "assistant",
        Human => "human",
        System => "system",
    }
);

named_enum!(
    /// Lifecycle of a run: one agent execution answering one user message.
    RunStatus {
        Queued => "queued",
        Running => "running",
        Retrying => "retrying",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    pub fn to_proto(self) -> pb::RunStatus {
        match self {
            Self::Queued => pb::RunStatus::Queued,
            Self::Running => pb::RunStatus::Running,
            Self::Retrying => pb::RunStatus::Retrying,
            Self::Completed => pb::RunStatus::Completed,
            Self::Failed => pb::RunStatus::Failed,
            Self::Cancelled => pb::RunStatus::Cancelled,
        }
    }
}
