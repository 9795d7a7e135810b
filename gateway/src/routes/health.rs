//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::StatusCode;
use serde_json::json;

use crate::app::SharedState;

/// `GET /healthz`: the process is up.
pub async fn live() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: chat-core answers and reports itself serving (so its database is reachable).
pub async fn ready(State(state): State<SharedState>) -> impl IntoResponse {
    if state.core.is_ready().await {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable"})),
        )
    }
}
