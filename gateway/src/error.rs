//! One error type for every HTTP handler, and the single place that maps a
//! chat-core `tonic::Status` to what clients see.

use std::borrow::Cow;

use axum::Json;
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use chat_common::error::ERROR_CODE_METADATA;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

pub use chat_common::error::RETRY_AFTER_MS_METADATA;

/// An error as clients see it: a code, a safe message and the HTTP status derived from the code.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// Overrides the status of `code` (405, 415, ... have no code of their own).
    pub status: Option<StatusCode>,
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
            retry_after_ms: None,
        }
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    /// An unexpected failure: logged with its cause here, opaque to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, generic_message(ErrorCode::Internal))
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.http_status())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let public = PublicStatus::from(&status);
        Self {
            code: public.code,
            message: public.message.into(),
            status: None,
            retry_after_ms: public.retry_after_ms,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: &self.message,
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

// === impl PublicStatus ===

/// What of a chat-core status may be shown to a client, on any transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicStatus {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl From<&tonic::Status> for PublicStatus {
    fn from(status: &tonic::Status) -> Self {
        let code = ErrorCode::from_status(status);
        // chat-core tags the statuses it raises on purpose; their messages are written for
        // clients. Anything else (transport errors, panics) may carry internal details.
        let deliberate = status.metadata().get(ERROR_CODE_METADATA).is_some();
        let message = if deliberate && code != ErrorCode::Internal && !status.message().is_empty() {
            status.message().to_owned()
        } else {
            generic_message(code).to_owned()
        };
        if code == ErrorCode::Internal || !deliberate {
            tracing::warn!(grpc_code = ?status.code(), message = status.message(), "chat-core call failed");
        }
        let retry_after_ms = status
            .metadata()
            .get(RETRY_AFTER_MS_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Self {
            code,
            message,
            retry_after_ms,
        }
    }
}

/// A message for errors whose own message must not reach clients.
pub fn generic_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Invalid => "invalid request",
        ErrorCode::Unauthenticated => "authentication required",
        ErrorCode::Forbidden => "not allowed",
        ErrorCode::NotFound => "not found",
        ErrorCode::Conflict => "conflict",
        ErrorCode::TooLarge => "too large",
        ErrorCode::RateLimited => "too many requests",
        ErrorCode::Busy => "busy, try again",
        ErrorCode::SlowConsumer => "fell too far behind; reconnect and resume",
        ErrorCode::Unavailable => "service unavailable, try again",
        ErrorCode::Internal => "internal error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliberate_statuses_keep_their_message() {
        let public = PublicStatus::from(&ErrorCode::NotFound.status("session not found"));
        assert_eq!(public.code, ErrorCode::NotFound);
        assert_eq!(public.message, "session not found");
    }

    #[test]
    fn internal_and_transport_errors_are_opaque() {
        let public = PublicStatus::from(&ErrorCode::Internal.status("db password is hunter2"));
        assert_eq!(public.message, "internal error");
        let public = PublicStatus::from(&tonic::Status::unavailable("tcp connect error: 10.0.0.3"));
        assert_eq!(public.code, ErrorCode::Unavailable);
        assert_eq!(public.message, "service unavailable, try again");
    }

    #[test]
    fn rate_limited_status_sets_retry_after() {
        let mut status = ErrorCode::RateLimited.status("slow down");
        status
            .metadata_mut()
            .insert(RETRY_AFTER_MS_METADATA, "1500".parse().expect("ascii"));
        let response = ApiError::from(status).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
