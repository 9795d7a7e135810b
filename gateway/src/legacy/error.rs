//! Errors as legacy clients read them: `{error: "<text>", code, timestamp}`,
//! `error` always a string. Handlers return [`LegacyError`]; every other
//! error response on a legacy path (extractors, rate limits, body limits,
//! unknown routes) is rewritten into the same shape by [`rewrite`].

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::views::now;
use crate::error::ApiError;

/// Longest error body read back for rewriting; the gateway's are far smaller.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;
/// Longest request path echoed in a 404.
const MAX_ECHOED_PATH_CHARS: usize = 256;

/// An error of a legacy handler.
#[derive(Debug)]
pub enum LegacyError {
    /// Any error of the shared handlers and chat-core calls.
    Api(ApiError),
    /// The session named in the request does not exist (or is not the caller's to see).
    SessionNotFound(String),
}

impl From<ApiError> for LegacyError {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<tonic::Status> for LegacyError {
    fn from(status: tonic::Status) -> Self {
        Self::Api(status.into())
    }
}

impl LegacyError {
    /// A not-found error about session `id` becomes `SessionNotFound`; others stay.
    pub fn about_session(id: &str) -> impl Fn(ApiError) -> Self + '_ {
        move |error| {
            if error.code == ErrorCode::NotFound {
                Self::SessionNotFound(id.to_owned())
            } else {
                Self::Api(error)
            }
        }
    }
}

impl IntoResponse for LegacyError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(error) => {
                let status = error.status();
                let retry_after = error.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
                let mut response = (
                    status,
                    Json(body(status, error.code, &error.message, retry_after)),
                )
                    .into_response();
                if let Some(secs) = retry_after {
                    response.headers_mut().insert(RETRY_AFTER, secs.into());
                }
                response
            }
            Self::SessionNotFound(id) => (
                StatusCode::NOT_FOUND,
                Json(json!({
                    "error": "Session not found",
                    "code": ErrorCode::NotFound.as_str(),
                    "sessionId": id,
                    "timestamp": now(),
                })),
            )
                .into_response(),
        }
    }
}

/// The legacy error body: the message as `error`; 429s add `message` and `retryAfter` (seconds).
fn body(status: StatusCode, code: ErrorCode, message: &str, retry_after_secs: Option<u64>) -> Value {
    let mut body = Map::new();
    body.insert("error".into(), message.into());
    body.insert("code".into(), code.as_str().into());
    if status == StatusCode::TOO_MANY_REQUESTS {
        body.insert("message".into(), message.into());
        body.insert("retryAfter".into(), retry_after_secs.unwrap_or(1).into());
    }
    body.insert("timestamp".into(), now().into());
    Value::Object(body)
}

/// `404 {error: "Endpoint not found", path, method}` for a legacy path no route serves.
pub fn endpoint_not_found(method: &Method, path: &str) -> Response {
    let path: String = path.chars().take(MAX_ECHOED_PATH_CHARS).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "Endpoint not found",
            "code": ErrorCode::NotFound.as_str(),
            "path": path,
            "method": method.as_str(),
            "timestamp": now(),
        })),
    )
        .into_response()
}

/// Rewrites an error response in the gateway's shape (`{error: {code,
/// message}}`) into the legacy one, keeping status and headers; anything
/// else passes unchanged.
pub async fn rewrite(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || !is_json(response.headers()) {
        return response;
    }
    let (mut parts, body_in) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body_in, MAX_ERROR_BODY_BYTES).await else {
        let fallback = body(status, ErrorCode::Internal, "internal error", None);
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(fallback.to_string()));
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let Some(Value::Object(detail)) = parsed.as_ref().and_then(|v| v.get("error")).cloned() else {
        // Already legacy (a string `error`) or not an error body of ours.
        return Response::from_parts(parts, Body::from(bytes));
    };
    let code = detail
        .get("code")
        .and_then(Value::as_str)
        .and_then(ErrorCode::parse)
        .unwrap_or(ErrorCode::Internal);
    let message = detail.get("message").and_then(Value::as_str).unwrap_or("error");
    let retry_after = parts
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let rewritten = body(status, code, message, retry_after);
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(rewritten.to_string()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn gateway_errors_become_string_errors_with_their_status() {
        let mut limited = ApiError::new(ErrorCode::RateLimited, "too many requests, retry in 3 s");
        limited.retry_after_ms = Some(2_500);
        let response = rewrite(limited.into_response()).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        let body = json_of(response).await;
        assert_eq!(body["error"], "too many requests, retry in 3 s");
        assert_eq!(body["message"], body["error"]);
        assert_eq!(body["retryAfter"], 3);
        assert_eq!(body["code"], "rate_limited");
    }

    #[tokio::test]
    async fn legacy_bodies_and_successes_pass_unchanged() {
        let body = json_of(rewrite(LegacyError::SessionNotFound("s1".into()).into_response()).await).await;
        assert_eq!(
            (body["error"].as_str(), body["sessionId"].as_str()),
            (Some("Session not found"), Some("s1"))
        );
        let ok = rewrite((StatusCode::OK, Json(json!({"error": {"a": 1}}))).into_response()).await;
        assert_eq!(json_of(ok).await["error"]["a"], 1);
    }
}
