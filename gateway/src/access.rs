//! The span of each HTTP request (continuing the caller's `traceparent` when
//! traces are exported) and its access log line.
//!
//! Only the path is ever recorded, never the query string: a WebSocket
//! upgrade may carry an access token there.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::header::USER_AGENT;
use tracing::field::Empty;

/// The span of a request. Handlers fill in `session_id` and `run_id`.
pub fn request_span(request: &Request) -> tracing::Span {
    let route = route(request);
    let request_id = header(request, "x-request-id");
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {}", request.method(), route),
        otel.kind = "server",
        otel.status_code = Empty,
        method = %request.method(),
        route,
        path = %request.uri().path(),
        request_id,
        status = Empty,
        session_id = Empty,
        run_id = Empty,
    );
    chat_common::trace::continue_from_headers(&span, request.headers());
    span
}

/// Logs one line per request at info (target `access`) once its response
/// is ready: method, route, path, status, latency, request id and user
/// agent. A streamed response (SSE) is logged when its stream starts; a
/// WebSocket gets its own line when it closes.
pub async fn log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route(&request).to_owned();
    let path = request.uri().path().to_owned();
    let request_id = header(&request, "x-request-id").to_owned();
    let user_agent = header(&request, USER_AGENT.as_str()).to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let span = tracing::Span::current();
    span.record("status", status);
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::info!(
        target: "access",
        %method,
        route,
        path,
        status,
        latency_ms = chat_common::trace::millis(started.elapsed()),
        request_id,
        user_agent,
        "http request"
    );
    response
}

/// The route template the request matched (`/api/v1/sessions/{id}`), or
/// `unmatched`.
fn route(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
