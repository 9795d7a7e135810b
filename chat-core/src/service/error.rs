//! Errors of chat-core's operations, mapped once to gRPC statuses.

use chat_common::ErrorCode;
use tracing::error;

use crate::domain::DomainError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("authentication required")]
    Unauthenticated,
    #[error("not allowed")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("session is busy: a run is in progress")]
    Busy,
    /// A bounded resource is taken; the caller may retry after `retry_after`.
    #[error("{message}")]
    Overloaded {
        message: &'static str,
        retry_after: std::time::Duration,
    },
    /// The caller used up an allowance; it may retry after `retry_after`.
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after: std::time::Duration,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::Invalid,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Busy => ErrorCode::Busy,
            Self::Overloaded { .. } => ErrorCode::Unavailable,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl ServiceError {
    /// How long the caller should wait before retrying, where that makes sense.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Overloaded { retry_after, .. } | Self::RateLimited { retry_after, .. } => {
                Some((*retry_after).max(std::time::Duration::from_millis(1)))
            }
            _ => None,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(msg) => Self::Conflict(msg),
            StoreError::Busy => Self::Busy,
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Self::Unavailable("database unavailable".into())
            }
            StoreError::Other(source) => Self::Internal(Box::new(source)),
        }
    }
}

impl From<DomainError> for ServiceError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Invalid(msg) => Self::Invalid(msg),
            DomainError::TooLarge(msg) => Self::TooLarge(msg),
            DomainError::NotFound(what) => Self::NotFound(what),
            DomainError::Forbidden => Self::Forbidden,
            DomainError::Conflict(msg) => Self::Conflict(msg),
        }
    }
}

impl From<DomainError> for tonic::Status {
    fn from(err: DomainError) -> Self {
        ServiceError::from(err).into()
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(err: ServiceError) -> Self {
        if let ServiceError::Internal(source) = &err {
            error!(error = %source, "internal error");
        }
        let mut status = err.code().status(err.to_string());
        if let Some(retry_after) = err.retry_after()
            && let Ok(value) = retry_after.as_millis().to_string().parse()
        {
            status
                .metadata_mut()
                .insert(chat_common::error::RETRY_AFTER_MS_METADATA, value);
        }
        status
    }
}
