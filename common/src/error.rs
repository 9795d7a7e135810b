//! One set of error codes for every transport: gRPC status codes, HTTP
//! statuses and WebSocket error frames all derive from [`ErrorCode`].

use std::fmt;

/// Metadata key carrying the [`ErrorCode`] on a `tonic::Status`.
pub const ERROR_CODE_METADATA: &str = "x-error-code";
/// Metadata key of `rate_limited` and `unavailable` statuses: milliseconds to
/// wait before retrying.
pub const RETRY_AFTER_MS_METADATA: &str = "x-retry-after-ms";

/// What went wrong, as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Invalid,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Busy,
    /// The client read too slowly and fell behind its connection's queue.
    SlowConsumer,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        Self::Invalid,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::TooLarge,
        Self::RateLimited,
        Self::Busy,
        Self::SlowConsumer,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The wire name, as used in JSON error bodies and error frames.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Busy => "busy",
            Self::SlowConsumer => "slow_consumer",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == s)
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::Invalid => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::Forbidden => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::Conflict => tonic::Code::AlreadyExists,
            Self::TooLarge => tonic::Code::OutOfRange,
            Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::Busy => tonic::Code::FailedPrecondition,
            Self::SlowConsumer => tonic::Code::Aborted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }

    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::Invalid => S::BAD_REQUEST,
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::Forbidden => S::FORBIDDEN,
            Self::NotFound => S::NOT_FOUND,
            Self::Conflict | Self::Busy => S::CONFLICT,
            Self::TooLarge => S::PAYLOAD_TOO_LARGE,
            Self::SlowConsumer => S::TOO_MANY_REQUESTS,
            Self::RateLimited => S::TOO_MANY_REQUESTS,
            Self::Unavailable => S::SERVICE_UNAVAILABLE,
            Self::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// Builds a status that carries this code in its metadata.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.grpc_code(), message);
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }

    /// Reads the code of a status: the metadata when present, else derived
    /// from the gRPC code (for statuses raised by tonic itself).
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Some(code) = status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
        {
            return code;
        }
        match status.code() {
            tonic::Code::InvalidArgument => Self::Invalid,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::PermissionDenied => Self::Forbidden,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::AlreadyExists => Self::Conflict,
            tonic::Code::OutOfRange => Self::TooLarge,
            tonic::Code::ResourceExhausted => Self::RateLimited,
            tonic::Code::FailedPrecondition | tonic::Code::Aborted => Self::Busy,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Self::Unavailable
            }
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_a_status() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_status(&code.status("x")), code);
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn bare_grpc_statuses_map_to_a_code() {
        let status = tonic::Status::unavailable("down");
        assert_eq!(ErrorCode::from_status(&status), ErrorCode::Unavailable);
        assert_eq!(
            ErrorCode::Unavailable.http_status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
