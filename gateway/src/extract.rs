//! Extractors whose rejections are JSON errors with a clear message, never
//! axum's plain-text defaults.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// A JSON request body that may be left out entirely (then `T::default()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_error(rejection.status()))?;
        decode_optional_json(&bytes).map(Self)
    }
}

/// Decodes a body [`ApiJson`] has read (after its `Content-Type` check), as
/// axum's `Json` does; public for the fuzz targets.
#[doc(hidden)]
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(value)| value)
        .map_err(|rejection| json_rejection(&rejection))
}

/// Decodes a body as [`OptionalJson`] does: blank means `T::default()`.
#[doc(hidden)]
pub fn decode_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => ApiError::invalid(format!("invalid JSON body: {}", inner(err))),
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::invalid(format!("malformed JSON body: {}", inner(err)))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("expected a JSON body with `Content-Type: application/json`")
        }
        other => body_error(other.status()),
    }
}

fn body_error(status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("request body is too large")
    } else {
        ApiError::invalid("failed to read the request body")
    }
}

/// The innermost cause of an axum rejection: serde's own message, without axum's prefix.
fn inner(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Query-string parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => Err(ApiError::invalid(format!(
                "invalid query string: {}",
                inner(&err)
            ))),
            Err(_) => Err(ApiError::invalid("invalid query string")),
        }
    }
}

/// Parses a session id from a path: anything but a UUID names no session.
pub fn session_id(raw: &str) -> Result<String, ApiError> {
    chat_common::limits::normalize_session_id(raw).ok_or_else(|| ApiError::not_found("session not found"))
}

/// Checks an optional client message id from a body; none is the empty id.
pub fn client_msg_id(raw: Option<String>) -> Result<String, ApiError> {
    match raw {
        Some(id) => {
            chat_common::limits::check_client_msg_id(&id).map_err(ApiError::invalid)?;
            Ok(id)
        }
        None => Ok(String::new()),
    }
}
