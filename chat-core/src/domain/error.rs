//! Why the domain refuses something.

/// A rule of the domain was broken; the service maps each to an error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("not allowed")]
    Forbidden,
    /// A lifecycle transition that the current state does not allow.
    #[error("{0}")]
    Conflict(String),
}
