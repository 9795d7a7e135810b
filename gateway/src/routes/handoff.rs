//! The session changes that both a session's owner and the operator holding
//! it make, each through their own chat-core service: handing the session
//! back to an agent, and resolving it.

use axum::Json;
use axum::extract::{Path, State};
use chat_proto::chat::v1 as pb;
use serde::Deserialize;

use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{OptionalJson, session_id};
use crate::json::SessionView;

/// The body of both hand-back routes (the operator's and the owner's).
#[derive(Deserialize, Default)]
pub struct HandBackBody {
    #[serde(default)]
    pub(crate) agent: Option<String>,
}

/// The body of both resolve routes (the operator's and the owner's).
#[derive(Deserialize, Default)]
pub struct ResolveBody {
    #[serde(default)]
    pub(crate) notes: Option<String>,
}

/// Whom a route serves, and so which chat-core service it calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The session's owner: `ChatService`.
    Owner,
    /// The operator holding the session: `OperatorService`.
    Operator,
}

/// A route's [`Side`], as a type the handlers below are instantiated with.
pub trait Route {
    const SIDE: Side;
}

/// The routes under `/api/v1/sessions`.
pub struct OwnerRoute;

/// The routes under `/api/v1/operator/sessions`.
pub struct OperatorRoute;

impl Route for OwnerRoute {
    const SIDE: Side = Side::Owner;
}

impl Route for OperatorRoute {
    const SIDE: Side = Side::Operator;
}

/// `POST …/sessions/{id}/hand-back {agent?}` → the session, active again with
/// its agent (the session's, or `agent`): from its owner, whether or not an
/// operator has taken it, or from the operator holding it
pub async fn hand_back<R: Route>(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<HandBackBody>,
) -> Result<Json<SessionView>, ApiError> {
    let request = pb::HandBackRequest {
        session_id: session_id(&id)?,
        agent: body.agent.unwrap_or_default(),
    };
    let request = state.unary_as(request, &user)?;
    let session = match R::SIDE {
        Side::Owner => state.core.chat().hand_back(request).await,
        Side::Operator => state.core.operators().hand_back(request).await,
    }?;
    Ok(Json(session.into_inner().into()))
}

/// `POST …/sessions/{id}/resolve {notes?}` → the resolved session
pub async fn resolve<R: Route>(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ResolveBody>,
) -> Result<Json<SessionView>, ApiError> {
    let request = pb::ResolveSessionRequest {
        session_id: session_id(&id)?,
        notes: body.notes.unwrap_or_default(),
    };
    let request = state.unary_as(request, &user)?;
    let session = match R::SIDE {
        Side::Owner => state.core.chat().resolve_session(request).await,
        Side::Operator => state.core.operators().resolve(request).await,
    }?;
    Ok(Json(session.into_inner().into()))
}
