//! Human handoff over REST: who the caller is, and for operators the queue of
//! sessions waiting for a person, taking one, answering it, typing presence,
//! handing it back and resolving it ([`super::handoff`]). chat-core decides
//! who is an operator.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use chat_proto::chat::v1 as pb;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, client_msg_id, session_id};
use crate::json::{MessageView, SessionView, WaitingView};
use crate::routes::messages::check_content;

#[derive(Serialize)]
pub struct Me {
    user_id: String,
    username: String,
    operator: bool,
    limits: ClientLimits,
}

/// The size limits a client checks before sending.
#[derive(Serialize)]
struct ClientLimits {
    /// Longest message content, in UTF-8 bytes.
    max_content_bytes: usize,
    /// Longest WebSocket frame, in bytes; a longer one closes the socket with 1009.
    max_ws_frame_bytes: usize,
}

#[derive(Deserialize)]
pub struct QueueQuery {
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct Queue {
    sessions: Vec<WaitingView>,
}

#[derive(Deserialize)]
pub struct ReplyBody {
    content: String,
    #[serde(default)]
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
}

/// `GET /api/v1/me` → `{user_id, username, operator, limits}`
pub async fn me(State(state): State<SharedState>, user: AuthUser) -> Result<Json<Me>, ApiError> {
    let request = state.unary_as(pb::WhoAmIRequest {}, &user)?;
    let me = state.core.operators().who_am_i(request).await?.into_inner();
    Ok(Json(Me {
        user_id: me.user_id,
        username: me.username,
        operator: me.operator,
        limits: ClientLimits {
            max_content_bytes: state.limits.max_content_bytes,
            max_ws_frame_bytes: state.limits.max_ws_frame_bytes,
        },
    }))
}

/// `GET /api/v1/operator/sessions?limit=` → `{sessions}` waiting for a person, longest waiting first
pub async fn queue(
    State(state): State<SharedState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<QueueQuery>,
) -> Result<Json<Queue>, ApiError> {
    let request = pb::ListWaitingRequest {
        limit: query.limit.unwrap_or_default(),
    };
    let request = state.unary_as(request, &user)?;
    let response = state.core.operators().list_waiting(request).await?.into_inner();
    Ok(Json(Queue {
        sessions: response
            .sessions
            .into_iter()
            .filter_map(WaitingView::from_proto)
            .collect(),
    }))
}

/// `POST /api/v1/operator/sessions/{id}/claim` → the session, now held by the caller
pub async fn claim(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let request = pb::ClaimRequest {
        session_id: session_id(&id)?,
    };
    let request = state.unary_as(request, &user)?;
    let session = state.core.operators().claim(request).await?.into_inner();
    Ok(Json(session.into()))
}

/// `POST /api/v1/operator/sessions/{id}/messages {content, client_msg_id?}` → 201 message (role `human`)
pub async fn reply(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplyBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_content(&body.content, state.limits.max_content_bytes)?;
    let client_msg_id = client_msg_id(body.client_msg_id)?;
    let request = pb::ReplyRequest {
        session_id: session_id(&id)?,
        client_msg_id,
        content: body.content,
    };
    let request = state.unary_as(request, &user)?;
    let message = state.core.operators().reply(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(MessageView::from(message))))
}

/// `POST /api/v1/operator/sessions/{id}/typing {typing}` → 204
pub async fn typing(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TypingBody>,
) -> Result<StatusCode, ApiError> {
    let request = pb::SetTypingRequest {
        session_id: session_id(&id)?,
        typing: body.typing,
        origin: String::new(),
    };
    let request = state.unary_as(request, &user)?;
    state.core.operators().set_typing(request).await?;
    Ok(StatusCode::NO_CONTENT)
}
