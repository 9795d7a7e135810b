//! JSON views of chat-core's sessions and messages, as the public contract spells them.

use chat_proto::chat::v1 as pb;
use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

/// A session as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionView {
    pub id: String,
    pub title: String,
    pub status: String,
    pub agent: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution_notes: Option<String>,
    /// enqueue, reject or interrupt; absent for the server's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<String>,
    /// The operator holding a session handed to a person, by username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// While the session waits for a person: since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<String>,
}

impl From<pb::Session> for SessionView {
    fn from(session: pb::Session) -> Self {
        Self {
            id: session.id,
            title: session.title,
            status: session.status,
            agent: session.agent,
            created_at: rfc3339(session.created_at_ms),
            updated_at: rfc3339(session.updated_at_ms),
            last_seq: session.last_seq,
            metadata: embedded_json(&session.metadata_json),
            resolution_notes: Some(session.resolution_notes).filter(|n| !n.is_empty()),
            concurrency: Some(session.concurrency).filter(|c| !c.is_empty()),
            assignee: Some(session.assignee).filter(|a| !a.is_empty()),
            waiting_since: (session.waiting_since_ms > 0).then(|| rfc3339(session.waiting_since_ms)),
        }
    }
}

/// A session waiting for a person, as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitingView {
    #[serde(flatten)]
    pub session: SessionView,
    /// The username of the user who is waiting.
    pub owner: String,
}

impl WaitingView {
    /// The view of a queue entry; none when chat-core sent no session.
    pub fn from_proto(waiting: pb::WaitingSession) -> Option<Self> {
        Some(Self {
            session: waiting.session?.into(),
            owner: waiting.owner,
        })
    }
}

/// A stored message as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageView {
    pub id: String,
    pub session_id: String,
    pub seq: i64,
    pub role: String,
    pub agent: String,
    pub content: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Replies: milliseconds from the run's start to its first delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_delta_ms: Option<i64>,
    /// Replies: milliseconds from the run's start to the stored reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Replies that used tools: `[{call_id, name, arguments, result}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// The JSON object the message was sent with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl From<pb::Message> for MessageView {
    fn from(message: pb::Message) -> Self {
        Self {
            id: message.id,
            session_id: message.session_id,
            seq: message.seq,
            role: message.role,
            agent: message.agent,
            content: message.content,
            created_at: rfc3339(message.created_at_ms),
            client_msg_id: message.client_msg_id.filter(|id| !id.is_empty()),
            run_id: message.run_id.filter(|id| !id.is_empty()),
            first_delta_ms: message.first_delta_ms,
            duration_ms: message.duration_ms,
            tool_calls: embedded_json(&message.tool_calls_json),
            metadata: embedded_json(&message.metadata_json),
        }
    }
}

/// A JSON document chat-core carries as text; none when empty or malformed.
fn embedded_json(text: &str) -> Option<serde_json::Value> {
    if text.is_empty() {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// Formats epoch milliseconds as an RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_view_formats_time_and_omits_absent_ids() {
        let view = MessageView::from(pb::Message {
            id: "m1".into(),
            session_id: "s1".into(),
            seq: 1,
            role: "user".into(),
            agent: "echo".into(),
            content: "hi".into(),
            created_at_ms: 1_700_000_000_123,
            client_msg_id: None,
            run_id: Some(String::new()),
            ..Default::default()
        });
        let json = serde_json::to_value(&view).expect("serialize");
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.123Z");
        assert!(json.get("client_msg_id").is_none());
        assert!(json.get("run_id").is_none());
    }

    #[test]
    fn session_view_parses_metadata() {
        let view = SessionView::from(pb::Session {
            id: "s1".into(),
            metadata_json: r#"{"a":1}"#.into(),
            ..Default::default()
        });
        assert_eq!(view.metadata, Some(serde_json::json!({"a": 1})));
        assert_eq!(view.created_at, "1970-01-01T00:00:00.000Z");
    }
}
