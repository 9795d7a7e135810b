//! `GET /api/v1/agents`: the agents sessions can be routed to, with how to present them.

use axum::Json;
use axum::extract::State;
use chat_proto::chat::v1 as pb;
use serde::Serialize;

use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::error::ApiError;

#[derive(Serialize)]
pub struct AgentsResponse {
    agents: Vec<AgentView>,
}

#[derive(Serialize)]
struct AgentView {
    name: String,
    description: String,
    /// What people are shown instead of `name`.
    display_name: String,
    /// Whether pickers offer the agent (false for specialists reached by handoff).
    listed: bool,
    kind: String,
}

pub async fn list(
    State(state): State<SharedState>,
    user: AuthUser,
) -> Result<Json<AgentsResponse>, ApiError> {
    let request = state.unary_as(pb::ListAgentsRequest {}, &user)?;
    let response = state.core.chat().list_agents(request).await?.into_inner();
    let agents = response
        .agents
        .into_iter()
        .map(|a| AgentView {
            name: a.name,
            description: a.description,
            display_name: a.display_name,
            listed: a.listed,
            kind: a.kind,
        })
        .collect();
    Ok(Json(AgentsResponse { agents }))
}
