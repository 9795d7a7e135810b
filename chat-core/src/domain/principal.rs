//! The verified caller of an RPC.

use chat_common::token::{Claims, Role};

use super::{DomainError, Session, UserId};

/// Who is calling, as proven by their token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An end user, who may act on their own sessions only.
    User(UserId),
    /// An internal service, which may act on any session.
    Service(String),
}

impl Principal {
    pub fn from_claims(claims: &Claims) -> Self {
        match claims.role {
            Role::User => Self::User(UserId::from_trusted(claims.sub.clone())),
            Role::Service => Self::Service(claims.sub.clone()),
        }
    }

    pub fn is_service(&self) -> bool {
        matches!(self, Self::Service(_))
    }

    /// Allows the call when this principal may act on `session`.
    pub fn authorize(&self, session: &Session) -> Result<(), DomainError> {
        match self {
            Self::Service(_) => Ok(()),
            Self::User(id) if *id == session.owner_id => Ok(()),
            Self::User(_) => Err(DomainError::Forbidden),
        }
    }
}
