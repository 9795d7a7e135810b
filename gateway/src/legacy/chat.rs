//! Legacy chat routes: posting a message and waiting for the reply
//! (`/api/chat/message`, `/api/sessions/{id}/messages`), and the history
//! read by session id (`/api/chat/history`). Sending is `/api/v1`'s:
//! [`messages::send`] then [`messages::follow`].

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::SESSION_HEADER;
use super::error::LegacyError;
use super::sessions::{core_session_id, history_page};
use super::views::{ChatTurn, stored_metadata, with_fields};
use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::messages::{self, Turn};

/// A message as legacy clients post it. `userId` and `context` may be
/// sent and are ignored: the sender is the caller.
#[derive(Deserialize)]
pub struct MessageBody {
    #[serde(default)]
    content: Option<String>,
    /// The old name of `content`.
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default, rename = "sessionId")]
    session_id: Option<String>,
}

/// `POST /api/chat/message {content, type?, metadata?, sessionId?}` with the
/// session in `X-Session-ID` (which wins) or the body → `{sessionId, message,
/// response, agent, timestamp}` once the reply is stored. An unknown session
/// is 404: no session is made up.
pub async fn message(
    State(state): State<SharedState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Response, LegacyError> {
    let Some(id) = header_session(&headers)
        .or(body.session_id.clone())
        .filter(|id| !id.is_empty())
    else {
        return Err(ApiError::invalid("a session id is required (X-Session-ID header or sessionId)").into());
    };
    let turn = post(&state, &user, &id, body).await?;
    Ok(Json(turn).into_response())
}

/// `POST /api/sessions/{id}/messages {content, type?, metadata?}` →
/// `{sessionId, message, response, agent, agentResult: {processingTime, agentsInvolved}, timestamp}`
pub async fn post_in_session(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Response, LegacyError> {
    let turn = post(&state, &user, &id, body).await?;
    let agent_result = json!({
        "processingTime": turn.response.as_ref().and_then(|r| r.agent_info.as_ref()).and_then(|a| a.processing_time),
        "agentsInvolved": turn.agent.agents_involved,
    });
    let body = with_fields(&turn, json!({"agentResult": agent_result, "success": true}));
    Ok(Json(body).into_response())
}

/// Sends `body` to session `id` and follows the run to its reply.
async fn post(
    state: &SharedState,
    user: &AuthUser,
    id: &str,
    body: MessageBody,
) -> Result<ChatTurn, LegacyError> {
    let session_id = core_session_id(id)?;
    let Some(content) = body.content.or(body.message) else {
        return Err(ApiError::invalid("content is required").into());
    };
    messages::check_content(&content, state.limits.max_content_bytes)?;
    let metadata =
        stored_metadata(body.kind.as_deref(), body.metadata.as_ref()).map_err(ApiError::invalid)?;
    let sent = messages::send(state, user, session_id, String::new(), content.clone(), metadata).await;
    let (ack, events) = sent.map_err(LegacyError::about_session(id))?;
    let turn: Turn = messages::follow(state, user, ack, content, events).await?;
    if turn.reply.is_none() && matches!(turn.run.status, "failed" | "cancelled") {
        // The message is stored; only the reply is missing.
        let error = ApiError::new(
            ErrorCode::Unavailable,
            "the assistant could not answer this message; send it again",
        );
        return Err(error.into());
    }
    Ok(ChatTurn::of(turn, &user.user_id))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    offset: Option<u32>,
    limit: Option<u32>,
}

/// `GET /api/chat/history?sessionId=&offset=&limit=` (session from
/// `X-Session-ID` when the query has none), as `/api/sessions/{id}/history`.
pub async fn history(
    State(state): State<SharedState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, LegacyError> {
    let Some(id) = query
        .session_id
        .or_else(|| header_session(&headers))
        .filter(|id| !id.trim().is_empty())
    else {
        return Err(ApiError::invalid("sessionId is required").into());
    };
    history_page(&state, &user, id.trim(), query.offset, query.limit).await
}

/// The session named by `X-Session-ID`, if the header holds one.
fn header_session(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}
