//! Identifier newtypes, parsed once where input enters chat-core.

use chat_common::limits;

use super::DomainError;

pub use limits::MAX_CLIENT_MSG_ID_LEN;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id read back from storage or minted by chat-core, which
            /// was validated when it was first created.
            pub fn from_trusted(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A session: a time-ordered UUID.
    SessionId
);
id_type!(
    /// A run: a time-ordered UUID.
    RunId
);
id_type!(
    /// A stored message.
    MessageId
);
id_type!(
    /// A user account.
    UserId
);
id_type!(
    /// The client's own id of a message it sends, unique per session.
    ClientMsgId
);

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl SessionId {
    /// A session id as a client wrote it, in its canonical form; anything
    /// but a UUID names no session.
    pub fn parse(id: &str) -> Result<Self, DomainError> {
        limits::normalize_session_id(id)
            .map(Self)
            .ok_or(DomainError::NotFound("session"))
    }

    pub fn generate() -> Self {
        Self(new_id())
    }
}

impl RunId {
    /// A run id as a client wrote it, in its canonical form (lowercase,
    /// hyphenated); anything but a UUID names no run.
    pub fn parse(id: &str) -> Result<Self, DomainError> {
        uuid::Uuid::parse_str(id)
            .map(|uuid| Self(uuid.hyphenated().to_string()))
            .map_err(|_| DomainError::NotFound("run"))
    }

    pub fn generate() -> Self {
        Self(new_id())
    }
}

impl MessageId {
    pub fn generate() -> Self {
        Self(new_id())
    }
}

impl UserId {
    /// A user id as another service sent it; the empty string names no user.
    pub fn parse(id: &str) -> Result<Self, DomainError> {
        if id.is_empty() {
            return Err(DomainError::NotFound("user"));
        }
        Ok(Self(id.to_owned()))
    }

    pub fn generate() -> Self {
        Self(new_id())
    }
}

impl ClientMsgId {
    /// 1 to [`MAX_CLIENT_MSG_ID_LEN`] printable ASCII characters.
    pub fn parse(id: &str) -> Result<Self, DomainError> {
        limits::check_client_msg_id(id).map_err(DomainError::Invalid)?;
        Ok(Self(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_ids_are_bounded_printable_ascii() {
        assert!(ClientMsgId::parse("abc-123").is_ok());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("has space").is_err());
        assert!(ClientMsgId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn session_and_run_ids_must_be_uuids() {
        assert!(SessionId::parse("not-a-uuid").is_err());
        assert!(SessionId::parse("0190f5c2-7b1e-7cc0-8000-000000000000").is_ok());
        assert_eq!(
            SessionId::parse("0190F5C2-7B1E-7CC0-8000-000000000000").unwrap(),
            "0190f5c2-7b1e-7cc0-8000-000000000000",
            "one canonical form"
        );
        assert!(RunId::parse("nope").is_err());
        assert!(RunId::parse(&new_id()).is_ok());
    }
}
