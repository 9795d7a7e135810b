//! The JSON shapes legacy clients read: sessions, message records and chat
//! turns, in the replaced service's field names, built from chat-core's protos.

use chat_proto::chat::v1 as pb;
use serde::Serialize;
use serde_json::Value;

use crate::json::rfc3339;
use crate::routes::messages::Turn;

/// Now, as legacy bodies carry it in `timestamp`.
pub fn now() -> String {
    rfc3339(chrono::Utc::now().timestamp_millis())
}

/// A Unix time in seconds, as legacy bodies carry dates.
pub fn date_of_secs(secs: u64) -> String {
    rfc3339(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// `value` as JSON with `fields` added to it (a value that is not an object stays as it is).
pub fn with_fields(value: &impl Serialize, fields: Value) -> Value {
    let mut value = serde_json::to_value(value).unwrap_or_default();
    if let (Value::Object(object), Value::Object(fields)) = (&mut value, fields) {
        object.extend(fields);
    }
    value
}

// === statuses ===

/// A session status as legacy clients name it (`pending_human` is
/// `pending`, `ended` is `terminated`; the others keep their names).
pub fn status(status: pb::SessionStatus) -> &'static str {
    use pb::SessionStatus as S;
    match status {
        S::Active => "active",
        S::PendingHuman => "pending",
        S::Resolved => "resolved",
        S::Expired => "expired",
        S::Ended => "terminated",
        S::Unspecified => "unknown",
    }
}

/// Whether a session still takes part in conversation (neither closed nor over).
fn is_active(status: pb::SessionStatus) -> bool {
    matches!(
        status,
        pb::SessionStatus::Active | pb::SessionStatus::PendingHuman
    )
}

/// A message's direction: the user's are incoming, everyone else's outgoing.
fn direction(role: pb::MessageRole) -> &'static str {
    if role == pb::MessageRole::User {
        "incoming"
    } else {
        "outgoing"
    }
}

// === sessions ===

/// A session, flat, as every legacy body that carries one spells it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub session_id: String,
    pub user_id: String,
    pub status: String,
    pub is_active: bool,
    pub is_resolved: bool,
    pub title: String,
    /// The agent answering the session now.
    pub agent: String,
    pub created_at: String,
    pub last_activity: String,
    /// When an active session expires if left idle (its last activity plus
    /// chat-core's `SESSION_TTL`); null when it does not expire.
    pub expires_at: Option<String>,
    /// Messages in the session, replies included (seqs have no gaps).
    pub message_count: i64,
    pub metadata: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution_notes: Option<String>,
}

impl From<pb::Session> for SessionView {
    fn from(session: pb::Session) -> Self {
        let metadata = serde_json::from_str(&session.metadata_json)
            .unwrap_or_else(|_| Value::Object(Default::default()));
        Self {
            status: status(session.session_status()).to_owned(),
            is_active: is_active(session.session_status()),
            is_resolved: session.session_status() == pb::SessionStatus::Resolved,
            session_id: session.id,
            user_id: session.owner_id,
            title: session.title,
            agent: session.agent,
            created_at: rfc3339(session.created_at_ms),
            last_activity: rfc3339(session.updated_at_ms),
            expires_at: (session.expires_at_ms > 0).then(|| rfc3339(session.expires_at_ms)),
            message_count: session.last_seq,
            metadata,
            resolution_notes: Some(session.resolution_notes).filter(|n| !n.is_empty()),
        }
    }
}

/// A session in a user's list, with its newest messages.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSession {
    #[serde(flatten)]
    pub session: SessionView,
    /// Up to three, newest first.
    pub recent_messages: Vec<MessageRecord>,
}

// === messages ===

/// What a legacy message is stored with: the client's `metadata` object,
/// holding a `type` other than `text` as `type` (unless it names one itself).
/// An error for metadata that is not an object.
pub fn stored_metadata(kind: Option<&str>, metadata: Option<&Value>) -> Result<Option<String>, &'static str> {
    let mut object = match metadata {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(object)) => object.clone(),
        Some(_) => return Err("metadata must be an object"),
    };
    if let Some(kind) = kind.filter(|k| *k != "text") {
        object
            .entry("type")
            .or_insert_with(|| Value::String(kind.to_owned()));
    }
    Ok((!object.is_empty()).then(|| Value::Object(object).to_string()))
}

/// The metadata a message was stored with; `{}` when none.
fn stored(message: &pb::Message) -> Value {
    serde_json::from_str::<Value>(&message.metadata_json)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()))
}

/// A message's legacy `type`: the one it was sent with, `text` by default.
fn message_kind(message: &pb::Message) -> String {
    stored(message)
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("text")
        .to_owned()
}

/// A stored message as the legacy history and lists spell it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub message_id: String,
    pub direction: &'static str,
    pub content: String,
    pub message_type: String,
    /// The JSON object the message was sent with (`{}` when none).
    pub metadata: Value,
    /// The agent that wrote a reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    pub created_at: String,
    pub sequence_number: i64,
    /// user, assistant, human (a person answering) or system.
    pub role: String,
}

impl From<pb::Message> for MessageRecord {
    fn from(message: pb::Message) -> Self {
        Self {
            direction: direction(message.message_role()),
            message_type: message_kind(&message),
            metadata: stored(&message),
            intent: Some(message.agent).filter(|a| !a.is_empty()),
            message_id: message.id,
            content: message.content,
            created_at: rfc3339(message.created_at_ms),
            sequence_number: message.seq,
            role: message.role,
        }
    }
}

// === chat turns ===

/// One side of a chat turn: the user's message or the reply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: String,
    pub session_id: String,
    pub user_id: String,
    pub content: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    pub direction: &'static str,
    pub sequence_number: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_info: Option<AgentInfo>,
    pub metadata: Value,
}

/// Who wrote a reply.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub agent_id: String,
    pub agent_type: String,
    /// Agents report no confidence score (the agent protocol has none): null.
    pub confidence: Option<f64>,
    /// Milliseconds from the run's start to the stored reply.
    pub processing_time: Option<i64>,
}

/// The agent side of a turn, as the client shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnAgent {
    /// The agent that answered (the client shows it as the intent).
    #[serde(rename = "type")]
    pub kind: String,
    pub confidence: Option<f64>,
    /// Every agent the run went through, handoffs included.
    pub agents_involved: Vec<String>,
}

/// A user message and its reply: `POST /api/chat/message`'s answer and
/// Socket.IO's `newMessage`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatTurn {
    pub session_id: String,
    /// The user's message; null for a message nobody sent in this turn (a
    /// person's answer, for example).
    pub message: Option<ChatMessage>,
    /// The reply; null while a person, not an agent, handles the session.
    pub response: Option<ChatMessage>,
    pub agent: TurnAgent,
    pub timestamp: String,
}

/// A user message as the turn shows it, with the `type` and `metadata` it
/// was stored with.
pub fn incoming(message: pb::Message, user_id: &str) -> ChatMessage {
    let kind = message_kind(&message);
    let metadata = stored(&message);
    ChatMessage {
        direction: direction(message.message_role()),
        timestamp: rfc3339(message.created_at_ms),
        sequence_number: message.seq,
        id: message.id,
        session_id: message.session_id,
        user_id: user_id.to_owned(),
        content: message.content,
        kind,
        agent_info: None,
        metadata,
    }
}

/// A reply as the turn shows it.
pub fn outgoing(reply: pb::Message, user_id: &str) -> ChatMessage {
    let mut metadata = serde_json::Map::new();
    if let Some(run_id) = reply.run_id.clone().filter(|r| !r.is_empty()) {
        metadata.insert("runId".into(), Value::String(run_id));
    }
    metadata.insert("role".into(), Value::String(reply.role.clone()));
    ChatMessage {
        direction: direction(reply.message_role()),
        timestamp: rfc3339(reply.created_at_ms),
        sequence_number: reply.seq,
        agent_info: Some(AgentInfo {
            agent_id: reply.agent.clone(),
            agent_type: if reply.agent.is_empty() {
                reply.role.clone()
            } else {
                reply.agent.clone()
            },
            confidence: None,
            processing_time: reply.duration_ms,
        }),
        id: reply.id,
        session_id: reply.session_id,
        user_id: user_id.to_owned(),
        content: reply.content,
        kind: "text".to_owned(),
        metadata: Value::Object(metadata),
    }
}

/// The agent side of a turn whose run went through `agents` and was answered by `reply`.
pub fn turn_agent(reply: Option<&pb::Message>, agents: Vec<String>) -> TurnAgent {
    let kind = reply
        .map(|r| {
            if r.agent.is_empty() {
                r.role.clone()
            } else {
                r.agent.clone()
            }
        })
        .or_else(|| agents.last().cloned())
        .unwrap_or_default();
    TurnAgent {
        kind,
        confidence: None,
        agents_involved: agents,
    }
}

impl ChatTurn {
    /// The answer to a message sent over REST and followed to its run's end.
    pub fn of(turn: Turn, user_id: &str) -> Self {
        let agent = turn_agent(turn.reply.as_ref(), turn.agents);
        Self {
            session_id: turn.message.session_id.clone(),
            message: Some(incoming(turn.message, user_id)),
            response: turn.reply.map(|reply| outgoing(reply, user_id)),
            agent,
            timestamp: now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_directions_use_the_legacy_names() {
        assert_eq!(status(pb::SessionStatus::PendingHuman), "pending");
        assert_eq!(status(pb::SessionStatus::Ended), "terminated");
        assert_eq!(status(pb::SessionStatus::Resolved), "resolved");
        assert_eq!(direction(pb::MessageRole::User), "incoming");
        assert_eq!(direction(pb::MessageRole::Human), "outgoing");
    }

    #[test]
    fn session_view_is_flat_with_dates_javascript_parses() {
        let view = SessionView::from(pb::Session {
            id: "s1".into(),
            owner_id: "u1".into(),
            status: "pending_human".into(),
            session_status: pb::SessionStatus::PendingHuman.into(),
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_500,
            last_seq: 4,
            metadata_json: r#"{"channel":"web"}"#.into(),
            ..Default::default()
        });
        let json = serde_json::to_value(&view).expect("serialize");
        assert_eq!(json["sessionId"], "s1");
        assert_eq!(json["status"], "pending");
        assert_eq!(json["isActive"], true);
        assert_eq!(json["isResolved"], false);
        assert_eq!(json["messageCount"], 4);
        assert_eq!(json["lastActivity"], "2023-11-14T22:13:20.500Z");
        assert_eq!(json["metadata"]["channel"], "web");
    }
}
