//! Legacy session routes: a user's list, create, read, end (`DELETE`),
//! resume, resolve and history, each one or two chat-core calls.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use chat_proto::chat::v1 as pb;
use futures::{StreamExt, TryStreamExt};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::LegacyError;
use super::views::{ListedSession, MessageRecord, SessionView, now, with_fields};
use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{ApiQuery, OptionalJson, session_id};

/// Sessions listed when the client gives no `limit`, and the most it may ask for.
const DEFAULT_LIST_LIMIT: u32 = 10;
const MAX_LIST_LIMIT: u32 = 100;
/// Newest messages shown with each listed session.
const RECENT_MESSAGES: u32 = 3;
/// Lists of recent messages fetched at once.
const RECENT_FETCHES: usize = 4;
/// Messages of a page of history when the client gives no `limit`, and the most it may ask for.
const DEFAULT_HISTORY_LIMIT: u32 = 50;
const MAX_HISTORY_LIMIT: u32 = 500;
/// Longest `reason` and `notes` accepted, in characters.
const MAX_NOTE_CHARS: usize = 2000;

// === chat-core calls ===

/// The chat-core id of the session a legacy request names `id`; not a session id is `SessionNotFound`.
pub(super) fn core_session_id(id: &str) -> Result<String, LegacyError> {
    session_id(id).map_err(LegacyError::about_session(id))
}

/// The answer of a chat-core call about session `id`; not found is `SessionNotFound`.
fn about_session<T>(id: &str, answer: Result<tonic::Response<T>, tonic::Status>) -> Result<T, LegacyError> {
    let answer = answer
        .map_err(ApiError::from)
        .map_err(LegacyError::about_session(id))?;
    Ok(answer.into_inner())
}

/// The caller's session `id`; unknown (or not a session id) is `SessionNotFound`.
pub(super) async fn fetch(
    state: &SharedState,
    user: &AuthUser,
    id: &str,
) -> Result<pb::Session, LegacyError> {
    let session_id = core_session_id(id)?;
    let request = state.unary_as(pb::GetSessionRequest { session_id }, user)?;
    about_session(id, state.core.chat().get_session(request).await)
}

/// Messages of session `id`: after `after_seq` when given, else the last `limit`; oldest first.
pub(super) async fn messages(
    state: &SharedState,
    user: &AuthUser,
    id: &str,
    after_seq: Option<i64>,
    limit: u32,
) -> Result<Vec<pb::Message>, LegacyError> {
    let session_id = core_session_id(id)?;
    let request = pb::ListMessagesRequest {
        session_id,
        after_seq,
        before_seq: None,
        limit,
    };
    let request = state.unary_as(request, user)?;
    let response = about_session(id, state.core.chat().list_messages(request).await)?;
    Ok(response.messages)
}

// === GET /api/users/{userId}/sessions ===

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionList {
    user_id: String,
    #[serde(rename = "type")]
    kind: String,
    count: usize,
    sessions: Vec<ListedSession>,
    timestamp: String,
}

/// `GET /api/users/{userId}/sessions?type=active|unresolved|recent&limit=` →
/// `{userId, type, count, sessions}`, newest activity first. Only the
/// caller's own: another `userId` is 403.
pub async fn list(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(user_id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, LegacyError> {
    if user_id != user.user_id {
        return Err(ApiError::new(ErrorCode::Forbidden, "you may only list your own sessions").into());
    }
    let kind = query.kind.unwrap_or_else(|| "active".to_owned());
    // `unresolved` and `recent` are chat-core's filters of the same names.
    if !matches!(kind.as_str(), "active" | "unresolved" | "recent") {
        return Err(ApiError::invalid("type must be active, unresolved or recent").into());
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT);
    let request = pb::ListSessionsRequest {
        status: kind.clone(),
        limit,
        cursor: String::new(),
    };
    let request = state.unary_as(request, &user)?;
    let found = state
        .core
        .chat()
        .list_sessions(request)
        .await?
        .into_inner()
        .sessions;
    let sessions: Vec<ListedSession> = futures::stream::iter(found)
        .map(|session| {
            let (state, user) = (&state, &user);
            async move {
                let mut recent = messages(state, user, &session.id, None, RECENT_MESSAGES).await?;
                recent.reverse();
                Ok::<_, LegacyError>(ListedSession {
                    session: SessionView::from(session),
                    recent_messages: recent.into_iter().map(MessageRecord::from).collect(),
                })
            }
        })
        .buffered(RECENT_FETCHES)
        .try_collect()
        .await?;
    Ok(Json(SessionList {
        user_id,
        kind,
        count: sessions.len(),
        sessions,
        timestamp: now(),
    })
    .into_response())
}

// === POST /api/sessions ===

#[derive(Deserialize, Default)]
pub struct CreateBody {
    /// Kept with the session. A body `userId` is ignored: the owner is the caller.
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// `POST /api/sessions {metadata?}` → 201 `{success, sessionId, session, chatSession, timestamp}`;
/// the session starts with chat-core's default agent.
pub async fn create(
    State(state): State<SharedState>,
    user: AuthUser,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> Result<Response, LegacyError> {
    let session = create_session(&state, &user, body.metadata).await?;
    let view = SessionView::from(session);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "success": true,
            "sessionId": view.session_id,
            "session": view,
            "chatSession": view,
            "timestamp": now(),
        })),
    )
        .into_response())
}

/// Creates a session of the caller's with `metadata`, as `POST /api/v1/sessions` does.
pub(super) async fn create_session(
    state: &SharedState,
    user: &AuthUser,
    metadata: Option<serde_json::Map<String, Value>>,
) -> Result<pb::Session, ApiError> {
    let request = pb::CreateSessionRequest {
        metadata_json: metadata.map(|m| Value::Object(m).to_string()).unwrap_or_default(),
        ..Default::default()
    };
    let request = state.unary_as(request, user)?;
    Ok(state.core.chat().create_session(request).await?.into_inner())
}

// === GET /api/sessions/{id} ===

/// `GET /api/sessions/{id}` → the session's fields, flat and again under `session`.
pub async fn get(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, LegacyError> {
    let view = SessionView::from(fetch(&state, &user, &id).await?);
    let body = with_fields(&view, json!({"session": view, "timestamp": now()}));
    Ok(Json(body).into_response())
}

// === DELETE /api/sessions/{id} ===

#[derive(Deserialize, Default)]
pub struct EndBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `DELETE /api/sessions/{id} {reason?}` ends the session (status
/// `terminated`): nothing is erased, its history stays readable, and it
/// leaves the `unresolved` list. → `{success, sessionId, reason, status, timestamp}`
pub async fn end(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<EndBody>,
) -> Result<Response, LegacyError> {
    let reason = body.reason.unwrap_or_else(|| "ended by user".to_owned());
    check_note("reason", &reason)?;
    let session = end_session(&state, &user, &id).await?;
    Ok(session_answer(
        &SessionView::from(session),
        json!({"reason": reason}),
    ))
}

/// Ends the caller's session `id` (its runs cancelled).
pub(super) async fn end_session(
    state: &SharedState,
    user: &AuthUser,
    id: &str,
) -> Result<pb::Session, LegacyError> {
    let session_id = core_session_id(id)?;
    let request = state.unary_as(pb::EndSessionRequest { session_id }, user)?;
    about_session(id, state.core.chat().end_session(request).await)
}

fn check_note(field: &str, text: &str) -> Result<(), ApiError> {
    if text.chars().count() > MAX_NOTE_CHARS || chat_common::limits::has_nul(text) {
        return Err(ApiError::invalid(format!(
            "{field} must be at most {MAX_NOTE_CHARS} characters, without NUL"
        )));
    }
    Ok(())
}

/// The answer of a route that acts on one session: `{success, sessionId, status,
/// isResolved, timestamp}` and `fields`.
fn session_answer(view: &SessionView, fields: Value) -> Response {
    let answer = json!({
        "success": true,
        "sessionId": view.session_id,
        "status": view.status,
        "isResolved": view.is_resolved,
        "timestamp": now(),
    });
    Json(with_fields(&answer, fields)).into_response()
}

// === POST /api/sessions/{id}/resume ===

/// `POST /api/sessions/{id}/resume` → `{success, sessionId, status,
/// isResolved, session, history, message, timestamp}`; `history` is the
/// last messages, oldest first. Resuming reads; it changes nothing.
pub async fn resume(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, LegacyError> {
    let session = fetch(&state, &user, &id).await?;
    let history = messages(&state, &user, &id, None, DEFAULT_HISTORY_LIMIT).await?;
    let view = SessionView::from(session);
    let context = json!({"agent": view.agent, "title": view.title, "metadata": view.metadata});
    let session = with_fields(&view, json!({"conversationContext": context}));
    let history: Vec<MessageRecord> = history.into_iter().map(MessageRecord::from).collect();
    let resumed = json!({"session": session, "history": history, "message": "Session resumed"});
    Ok(session_answer(&view, resumed))
}

// === POST /api/sessions/{id}/resolve ===

#[derive(Deserialize, Default)]
pub struct ResolveBody {
    #[serde(default)]
    notes: Option<String>,
}

/// `POST /api/sessions/{id}/resolve {notes?}` → `{success, sessionId, status, message, timestamp}`
pub async fn resolve(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ResolveBody>,
) -> Result<Response, LegacyError> {
    let notes = body.notes.unwrap_or_default();
    check_note("notes", &notes)?;
    let session_id = core_session_id(&id)?;
    let request = state.unary_as(pb::ResolveSessionRequest { session_id, notes }, &user)?;
    let session = about_session(&id, state.core.chat().resolve_session(request).await)?;
    Ok(session_answer(
        &SessionView::from(session),
        json!({"message": "Session resolved"}),
    ))
}

// === history ===

#[derive(Deserialize)]
pub struct HistoryQuery {
    offset: Option<u32>,
    limit: Option<u32>,
}

/// `GET /api/sessions/{id}/history?offset=&limit=` → `{sessionId, history, count, hasMore, timestamp}`
pub async fn history(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, LegacyError> {
    history_page(&state, &user, &id, query.offset, query.limit).await
}

/// A page of history: the messages after the first `offset`, at most
/// `limit`, oldest first. Seqs count every message from 1 without gaps, so
/// skipping `offset` messages is reading after seq `offset`.
pub(super) async fn history_page(
    state: &SharedState,
    user: &AuthUser,
    id: &str,
    offset: Option<u32>,
    limit: Option<u32>,
) -> Result<Response, LegacyError> {
    let offset = i64::from(offset.unwrap_or(0));
    let limit = limit.unwrap_or(DEFAULT_HISTORY_LIMIT).clamp(1, MAX_HISTORY_LIMIT);
    // One more than asked tells whether more follow.
    let mut page = messages(state, user, id, Some(offset), limit + 1).await?;
    let has_more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let session_id = core_session_id(id)?;
    let history: Vec<MessageRecord> = page.into_iter().map(MessageRecord::from).collect();
    Ok(Json(json!({
        "sessionId": session_id,
        "count": history.len(),
        "history": history,
        "hasMore": has_more,
        "offset": offset,
        "limit": limit,
        "timestamp": now(),
    }))
    .into_response())
}
