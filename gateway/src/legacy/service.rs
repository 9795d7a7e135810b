//! Legacy service routes: health (`/health` and the old `/health/health`
//! variants), service info (`/api`) and the agent list (`/api/agents`).
//! None of them tells URLs, settings or other internals.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chat_proto::chat::v1 as pb;
use http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::error::LegacyError;
use super::views::now;
use crate::app::SharedState;
use crate::auth::AuthUser;

const SERVICE: &str = "chat-backend";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// When this process began serving the legacy routes.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the uptime clock (once per process).
pub(super) fn start_clock() {
    STARTED.get_or_init(Instant::now);
}

fn uptime_secs() -> u64 {
    STARTED.get().map_or(0, |started| started.elapsed().as_secs())
}

/// `GET /health` (and `/health/health`, `/health/status`, `/health/metrics`,
/// `/api/health/health`):
/// 200 `{status: "healthy"}` while this gateway takes traffic (as `/readyz`),
/// else 503 `{status: "unhealthy", error}`.
pub async fn health(State(state): State<SharedState>) -> Response {
    if state.health.is_ready() {
        Json(json!({
            "status": "healthy",
            "service": SERVICE,
            "version": VERSION,
            "uptime": uptime_secs(),
            "timestamp": now(),
        }))
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unhealthy",
                "error": "service unavailable",
                "service": SERVICE,
                "timestamp": now(),
            })),
        )
            .into_response()
    }
}

/// `GET /api`: what the service is and where its routes are (paths only).
pub async fn info(
    State(state): State<SharedState>,
    user: AuthUser,
) -> Result<Json<serde_json::Value>, LegacyError> {
    state.check_signed_in(&user).await?;
    Ok(Json(json!({
        "service": SERVICE,
        "version": VERSION,
        "description": "Chat backend: sessions, messages and agents",
        "endpoints": {
            "health": "/health",
            "sessions": "/api/sessions",
            "userSessions": "/api/users/{userId}/sessions",
            "chat": "/api/chat/message",
            "history": "/api/chat/history",
            "agents": "/api/agents",
            "socket": "/socket.io",
            "v1": "/api/v1",
        },
        "timestamp": now(),
    })))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentView {
    id: String,
    name: String,
    description: String,
    #[serde(rename = "type")]
    kind: String,
    /// Whether pickers offer it (specialists reached by handoff are not).
    listed: bool,
    /// The fleet serves it: only agents a worker answers for are listed here.
    is_active: bool,
    is_healthy: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    total_agents: usize,
    active_agents: usize,
    healthy_agents: usize,
}

/// `GET /api/agents` → `{agents: [{id, name, type, isActive, isHealthy, ...}], summary}`
pub async fn agents(State(state): State<SharedState>, user: AuthUser) -> Result<Response, LegacyError> {
    let request = state.unary_as(pb::ListAgentsRequest {}, &user)?;
    let listed = state.core.chat().list_agents(request).await?.into_inner().agents;
    let agents: Vec<AgentView> = listed
        .into_iter()
        .map(|a| AgentView {
            id: a.name,
            name: a.display_name,
            description: a.description,
            kind: a.kind,
            listed: a.listed,
            is_active: true,
            is_healthy: true,
        })
        .collect();
    let summary = Summary {
        total_agents: agents.len(),
        active_agents: agents.len(),
        healthy_agents: agents.len(),
    };
    Ok(Json(json!({"agents": agents, "summary": summary, "timestamp": now()})).into_response())
}
