//! Messages of a conversation.

use super::{ClientMsgId, MessageId, RunId, SessionId, named_enum};

named_enum!(
    /// Author of a message.
    MessageRole {
        User => "user",
        Assistant => "assistant",
        /// A person who took over from the agents.
        Human => "human",
        System => "system",
    }
);

impl MessageRole {
    /// Roles an internal service may post as: a user, a person who took
    /// over, or the system; replies come only from runs.
    pub fn can_be_posted_by_a_service(self) -> bool {
        matches!(self, Self::User | Self::Human | Self::System)
    }
}

pub use chat_proto::HUMAN_AGENT;

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub session_id: SessionId,
    /// Position in the session, from 1, without gaps.
    pub seq: i64,
    pub role: MessageRole,
    /// The agent that wrote an assistant message.
    pub agent: Option<String>,
    pub content: String,
    pub client_msg_id: Option<ClientMsgId>,
    /// The run a reply answers.
    pub run_id: Option<RunId>,
    pub created_at: i64,
    pub first_delta_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// JSON array of [`ToolCallRecord`]s, as stored.
    pub tool_calls: Option<String>,
    /// The JSON object its sender attached, as text.
    pub metadata: Option<String>,
}

/// What a sender posts: the text, and optionally a JSON object of metadata
/// stored with it (checked by [`super::validate_metadata`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Post {
    pub content: String,
    pub metadata: Option<String>,
}

impl Post {
    /// Text without metadata.
    pub fn text(content: String) -> Self {
        Self {
            content,
            metadata: None,
        }
    }
}

/// A tool call made for a reply, with its result once known. Serialised
/// with its fields in this (alphabetical) order, as replies have always
/// been stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCallRecord {
    /// The arguments as JSON, or as a string when they were not valid JSON.
    pub arguments: serde_json::Value,
    pub call_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

impl ToolCallRecord {
    /// A call as an agent reported it.
    pub fn new(call_id: String, name: String, arguments_json: &str) -> Self {
        let arguments = serde_json::from_str(arguments_json)
            .unwrap_or_else(|_| serde_json::Value::String(arguments_json.to_owned()));
        Self {
            arguments,
            call_id,
            name,
            result: None,
        }
    }

    /// The stored form of a reply's calls: `None` when there were none.
    pub fn encode(calls: &[Self]) -> Option<String> {
        (!calls.is_empty()).then(|| serde_json::to_string(calls).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_write_assistant_messages() {
        assert!(!MessageRole::Assistant.can_be_posted_by_a_service());
        for role in [MessageRole::User, MessageRole::Human, MessageRole::System] {
            assert!(role.can_be_posted_by_a_service());
        }
    }

    #[test]
    fn tool_calls_are_stored_as_before() {
        let mut call = ToolCallRecord::new("c1".into(), "lookup".into(), r#"{"q":"x"}"#);
        let legacy = serde_json::json!([{"call_id": "c1", "name": "lookup", "arguments": {"q": "x"}}]);
        assert_eq!(
            ToolCallRecord::encode(&[call.clone()]).unwrap(),
            legacy.to_string()
        );
        call.result = Some("found".into());
        let legacy = serde_json::json!([{"call_id": "c1", "name": "lookup", "arguments": {"q": "x"}, "result": "found"}]);
        assert_eq!(ToolCallRecord::encode(&[call]).unwrap(), legacy.to_string());
        let raw = ToolCallRecord::new("c2".into(), "f".into(), "not json");
        assert_eq!(raw.arguments, serde_json::Value::String("not json".into()));
        assert_eq!(ToolCallRecord::encode(&[]), None);
    }
}
