//! Liveness and readiness on the public port, the same answers as the admin
//! listener's.

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

/// `GET /readyz`: this gateway takes traffic: chat-core answers and the
/// gateway is not draining. It stays ready while chat-core's database is
/// down, so clients get JSON 503s rather than refused connections.
pub async fn ready(State(state): State<SharedState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable"})),
        )
    }
}
