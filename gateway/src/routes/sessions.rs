//! Sessions: create, list, read, rename, end, delete (resolve and hand back
//! are in [`super::handoff`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use chat_proto::chat::v1 as pb;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, session_id};
use crate::json::SessionView;

#[derive(Deserialize, Default)]
pub struct CreateSession {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// enqueue, reject or interrupt.
    #[serde(default)]
    concurrency: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub struct SessionList {
    sessions: Vec<SessionView>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
pub struct RenameBody {
    title: String,
}

/// `POST /api/v1/sessions` → 201 session
pub async fn create(
    State(state): State<SharedState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<impl IntoResponse, ApiError> {
    let metadata_json = match body.metadata {
        Some(map) => serde_json::Value::Object(map).to_string(),
        None => String::new(),
    };
    let request = pb::CreateSessionRequest {
        title: body.title.unwrap_or_default(),
        agent: body.agent.unwrap_or_default(),
        metadata_json,
        concurrency: body.concurrency.unwrap_or_default(),
        ..Default::default()
    };
    let request = state.unary_as(request, &user)?;
    let session = state.core.chat().create_session(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(SessionView::from(session))))
}

/// `GET /api/v1/sessions?status=&limit=&cursor=` → `{sessions, next_cursor}`
pub async fn list(
    State(state): State<SharedState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let request = pb::ListSessionsRequest {
        status: query.status.unwrap_or_default(),
        limit: query.limit.unwrap_or_default(),
        cursor: query.cursor.unwrap_or_default(),
    };
    let request = state.unary_as(request, &user)?;
    let response = state.core.chat().list_sessions(request).await?.into_inner();
    Ok(Json(SessionList {
        sessions: response.sessions.into_iter().map(SessionView::from).collect(),
        next_cursor: Some(response.next_cursor).filter(|c| !c.is_empty()),
    }))
}

/// `GET /api/v1/sessions/{id}`
pub async fn get(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let request = state.unary_as(
        pb::GetSessionRequest {
            session_id: session_id(&id)?,
        },
        &user,
    )?;
    let session = state.core.chat().get_session(request).await?.into_inner();
    Ok(Json(session.into()))
}

/// `PATCH /api/v1/sessions/{id} {title}` → the renamed session
pub async fn rename(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameBody>,
) -> Result<Json<SessionView>, ApiError> {
    let request = pb::RenameSessionRequest {
        session_id: session_id(&id)?,
        title: body.title,
    };
    let request = state.unary_as(request, &user)?;
    let session = state.core.chat().rename_session(request).await?.into_inner();
    Ok(Json(session.into()))
}

/// `DELETE /api/v1/sessions/{id}` → 204
pub async fn delete(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let request = state.unary_as(
        pb::DeleteSessionRequest {
            session_id: session_id(&id)?,
        },
        &user,
    )?;
    state.core.chat().delete_session(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/sessions/{id}/end` → the ended session (its runs cancelled)
pub async fn end(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let request = state.unary_as(
        pb::EndSessionRequest {
            session_id: session_id(&id)?,
        },
        &user,
    )?;
    let session = state.core.chat().end_session(request).await?.into_inner();
    Ok(Json(session.into()))
}
