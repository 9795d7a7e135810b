//! Messages of a session: history, posting (JSON or SSE), cancelling a run.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use chat_proto::chat::v1 as pb;
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use pb::send_message_event::Event as SendEvent;
use pb::session_event::Event as SessionEventKind;
use serde::{Deserialize, Serialize};

use crate::app::SharedState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, client_msg_id, session_id};
use crate::frames::run_status_name;
use crate::json::MessageView;
use crate::ratelimit::middleware::ClientAddress;
use crate::sse;
use chat_common::token_clock::TokenClock;

#[derive(Deserialize)]
pub struct HistoryQuery {
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct History {
    messages: Vec<MessageView>,
}

#[derive(Deserialize)]
pub struct PostMessage {
    content: String,
    #[serde(default)]
    client_msg_id: Option<String>,
    /// A JSON object stored with the message.
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The JSON answer to a post: the stored message, its reply and how the run ended.
#[derive(Serialize)]
pub struct Posted {
    message: MessageView,
    reply: Option<MessageView>,
    run: RunOutcome,
}

/// How a run ended, as the JSON answer to a post tells it.
#[derive(Debug, Serialize)]
pub struct RunOutcome {
    pub run_id: String,
    /// completed, failed, cancelled, or unknown when no run was started.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/sessions/{id}/messages?after_seq=&before_seq=&limit=` → `{messages}`
pub async fn list(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let request = pb::ListMessagesRequest {
        session_id: session_id(&id)?,
        after_seq: query.after_seq,
        before_seq: query.before_seq,
        limit: query.limit.unwrap_or_default(),
    };
    let request = state.unary_as(request, &user)?;
    let response = state.core.chat().list_messages(request).await?.into_inner();
    Ok(Json(History {
        messages: response.messages.into_iter().map(MessageView::from).collect(),
    }))
}

/// `POST /api/v1/sessions/{id}/messages {content, client_msg_id?, metadata?}`
///
/// With `Accept: text/event-stream`: an SSE stream of the ack and the run's
/// events. Otherwise JSON `{message, reply, run}` once the run has ended.
pub async fn post(
    State(state): State<SharedState>,
    user: AuthUser,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<Response, ApiError> {
    let session_id = session_id(&id)?;
    let span = tracing::Span::current();
    span.record("session_id", session_id.as_str());
    check_content(&body.content, state.limits.max_content_bytes)?;
    let client_msg_id = client_msg_id(body.client_msg_id)?;
    // An SSE stream takes a place under the connection caps before the message is sent.
    let guard = if sse::wants_event_stream(&headers) {
        let guard = state
            .connections
            .open(&user.user_id, &address)
            .map_err(|over| over.into_error())?;
        Some(guard)
    } else {
        None
    };
    let metadata = body
        .metadata
        .map(|object| serde_json::Value::Object(object).to_string());
    let (ack, stream) = send(
        &state,
        &user,
        session_id,
        client_msg_id,
        body.content.clone(),
        metadata,
    )
    .await?;
    span.record("run_id", ack.run_id.as_str());
    if let Some(guard) = guard {
        let clock = TokenClock::new(user.expires_at, state.limits.ws_token_grace);
        return Ok(sse::send_stream(ack, stream, state.shutdown.clone(), clock, guard).into_response());
    }
    let turn = follow(&state, &user, ack, body.content, stream).await?;
    Ok(Json(Posted {
        message: MessageView::from(turn.message),
        reply: turn.reply.map(MessageView::from),
        run: turn.run,
    })
    .into_response())
}

/// Refuses content that is blank, holds NUL or is larger than `max_bytes`, as every transport does.
pub fn check_content(content: &str, max_bytes: usize) -> Result<(), ApiError> {
    use chat_common::limits::ContentError;
    chat_common::limits::check_content(content, max_bytes).map_err(|error| match error {
        ContentError::Empty | ContentError::Nul => ApiError::invalid(error.to_string()),
        ContentError::TooLarge(_) => ApiError::too_large(error.to_string()),
    })
}

/// The events of a sent message's run, as chat-core streams them after the ack.
pub type SendEvents = tonic::Streaming<pb::SendMessageEvent>;

/// Sends a user message (`SendMessage`) and returns its ack, once the
/// message is stored, with the stream of its run's events.
pub async fn send(
    state: &SharedState,
    user: &AuthUser,
    session_id: String,
    client_msg_id: String,
    content: String,
    metadata: Option<String>,
) -> Result<(pb::Ack, SendEvents), ApiError> {
    let request = pb::SendMessageRequest {
        session_id,
        client_msg_id,
        content,
        role: String::new(),
        metadata_json: metadata.unwrap_or_default(),
    };
    // No deadline on the call itself: the stream lives as long as the run.
    let request = state.stream_as(request, user)?;
    let mut stream = state.core.chat().send_message(request).await?.into_inner();
    match stream.message().await? {
        Some(pb::SendMessageEvent {
            event: Some(SendEvent::Ack(ack)),
        }) => Ok((ack, stream)),
        _ => Err(ApiError::internal("send stream did not start with an ack")),
    }
}

/// A sent message followed until its run ended.
#[derive(Debug)]
pub struct Turn {
    /// The stored user message.
    pub message: pb::Message,
    /// The reply of the run, if it completed with one.
    pub reply: Option<pb::Message>,
    pub run: RunOutcome,
    /// The agents that took part, in order: the one the run started with,
    /// then the target of each handoff to another agent (not to a person).
    pub agents: Vec<String>,
}

pub use chat_proto::HUMAN_AGENT as HUMAN;

/// How long a finished run's stream may take to end before it is dropped.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows the run of `ack` to its end and picks out the reply.
pub async fn follow<U>(
    state: &SharedState,
    user: &AuthUser,
    ack: pb::Ack,
    content: String,
    mut events: U,
) -> Result<Turn, ApiError>
where
    U: Stream<Item = Result<pb::SendMessageEvent, tonic::Status>> + Unpin,
{
    let mut reply: Option<pb::Message> = None;
    let mut run: Option<pb::RunUpdate> = None;
    let mut agents: Vec<String> = Vec::new();
    while let Some(event) = events.next().await {
        let Some(SendEvent::SessionEvent(event)) = event?.event else {
            continue;
        };
        match event.event {
            Some(SessionEventKind::Message(message)) if is_reply(&message, &ack) => reply = Some(*message),
            Some(SessionEventKind::Handoff(handoff)) if handoff.run_id == ack.run_id => {
                if agents.is_empty() {
                    agents.push(handoff.from_agent);
                }
                if handoff.to_agent != HUMAN {
                    agents.push(handoff.to_agent);
                }
            }
            Some(SessionEventKind::Run(update)) if update.run_id == ack.run_id => {
                if agents.is_empty() && !update.agent.is_empty() {
                    agents.push(update.agent.clone());
                }
                let done = update.status().is_terminal();
                run = Some(update);
                if done {
                    // Read the stream to its end rather than dropping it: each
                    // stream dropped early resets on the shared HTTP/2
                    // connection, and too many resets make chat-core's side
                    // close the connection for everyone.
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                        while let Some(Ok(_)) = events.next().await {}
                    })
                    .await;
                    break;
                }
            }
            _ => {}
        }
    }
    // A resent client_msg_id may find its run long finished: look the reply up.
    if reply.is_none()
        && run
            .as_ref()
            .is_none_or(|r| r.status() == pb::RunStatus::Completed)
    {
        reply = find_reply(state, user, &ack).await?;
    }
    if let Some(reply) = &reply
        && !reply.agent.is_empty()
        && agents.last() != Some(&reply.agent)
    {
        agents.push(reply.agent.clone());
    }
    let run = match run {
        Some(update) => RunOutcome {
            status: run_status_name(update.status()),
            error: Some(update.error).filter(|e| !e.is_empty()),
            run_id: update.run_id,
        },
        None => RunOutcome {
            status: if reply.is_some() { "completed" } else { "unknown" },
            error: None,
            run_id: ack.run_id.clone(),
        },
    };
    let message = ack.message.as_deref().cloned().unwrap_or_else(|| pb::Message {
        id: ack.message_id.clone(),
        session_id: ack.session_id.clone(),
        seq: ack.seq,
        role: "user".into(),
        content,
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        client_msg_id: Some(ack.client_msg_id.clone()),
        run_id: Some(ack.run_id.clone()).filter(|r| !r.is_empty()),
        ..Default::default()
    });
    Ok(Turn {
        message,
        reply,
        run,
        agents,
    })
}

fn is_reply(message: &pb::Message, ack: &pb::Ack) -> bool {
    message.id != ack.message_id
        && message.role != "user"
        && message
            .run_id
            .as_deref()
            .is_none_or(|run_id| run_id == ack.run_id)
}

async fn find_reply(
    state: &SharedState,
    user: &AuthUser,
    ack: &pb::Ack,
) -> Result<Option<pb::Message>, ApiError> {
    let request = pb::ListMessagesRequest {
        session_id: ack.session_id.clone(),
        after_seq: Some(ack.seq),
        before_seq: None,
        limit: 100,
    };
    let request = state.unary_as(request, user)?;
    let messages = state
        .core
        .chat()
        .list_messages(request)
        .await?
        .into_inner()
        .messages;
    Ok(messages.into_iter().find(|m| {
        m.run_id.as_deref() == Some(ack.run_id.as_str()) && m.id != ack.message_id && m.role != "user"
    }))
}

/// `POST /api/v1/sessions/{id}/runs/{run_id}/cancel` → 202
pub async fn cancel(
    State(state): State<SharedState>,
    user: AuthUser,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if uuid::Uuid::parse_str(&run_id).is_err() {
        return Err(ApiError::new(ErrorCode::NotFound, "run not found"));
    }
    let request = pb::CancelRunRequest {
        session_id: session_id(&id)?,
        run_id,
    };
    let request = state.unary_as(request, &user)?;
    state.core.chat().cancel_run(request).await?;
    Ok(StatusCode::ACCEPTED)
}
