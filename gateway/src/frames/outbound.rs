//! Server → client: chat-core's frames and events as the contract's JSON objects.

use chat_common::ErrorCode;
use chat_proto::chat::v1 as pb;
use pb::server_frame::Frame as ServerKind;
use pb::session_event::Event as EventKind;
use serde::Serialize;

use crate::error::PublicStatus;
use crate::json::{MessageView, WaitingView};

/// A frame sent to a client: a WebSocket text frame or the data of an SSE event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutFrame {
    Subscribed {
        session_id: String,
        last_seq: i64,
    },
    Unsubscribed {
        session_id: String,
    },
    Ack(AckView),
    Message {
        session_id: String,
        message: Box<MessageView>,
    },
    Run(Box<RunView>),
    Delta {
        session_id: String,
        run_id: String,
        index: u32,
        text: String,
        /// A retried run streams again from index 0 under a higher attempt.
        attempt: u32,
    },
    /// The conversation moved to another agent, or to a human (`to_agent: "human"`).
    Handoff {
        session_id: String,
        run_id: String,
        from_agent: String,
        to_agent: String,
        reason: String,
    },
    /// An agent called a tool while writing its reply.
    ToolCall(Box<ToolCallView>),
    /// The result of a tool call, as given back to the agent.
    ToolResult {
        session_id: String,
        run_id: String,
        call_id: String,
        content: String,
    },
    /// The session's status or current agent changed.
    Session {
        session_id: String,
        status: String,
        agent: String,
        /// The operator holding the session, when a person has taken it.
        #[serde(skip_serializing_if = "Option::is_none")]
        assignee: Option<String>,
    },
    /// A person answering the session started or stopped typing.
    Presence {
        session_id: String,
        name: String,
        typing: bool,
    },
    /// The operators' queue of sessions waiting for a person: the whole of
    /// it (`snapshot`), or sessions that entered or changed in it and ids of
    /// sessions that left it.
    Queue {
        snapshot: bool,
        sessions: Vec<WaitingView>,
        removed: Vec<String>,
    },
    Error(ErrorView),
    Pong,
    /// The socket now runs on a fresh access token, valid until `expires_at` (Unix seconds).
    Authenticated {
        expires_at: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallView {
    pub session_id: String,
    pub run_id: String,
    pub call_id: String,
    pub name: String,
    /// The call's arguments: JSON when they parse, else the raw text.
    pub arguments: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AckView {
    pub client_msg_id: String,
    pub message_id: String,
    pub seq: i64,
    pub session_id: String,
    pub run_id: String,
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    pub session_id: String,
    pub run_id: String,
    pub status: &'static str,
    pub agent: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The seq of the user message that started the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_seq: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl OutFrame {
    /// The frame's `type`, also the SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Subscribed { .. } => "subscribed",
            Self::Unsubscribed { .. } => "unsubscribed",
            Self::Ack(_) => "ack",
            Self::Message { .. } => "message",
            Self::Run(_) => "run",
            Self::Delta { .. } => "delta",
            Self::Handoff { .. } => "handoff",
            Self::ToolCall(_) => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::Session { .. } => "session",
            Self::Presence { .. } => "presence",
            Self::Queue { .. } => "queue",
            Self::Error(_) => "error",
            Self::Pong => "pong",
            Self::Authenticated { .. } => "authenticated",
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error(ErrorView {
            code: code.as_str().to_owned(),
            message: message.into(),
            client_msg_id: None,
            session_id: None,
            retry_after_ms: None,
        })
    }

    /// An error frame for a failed chat-core call, safe to show.
    pub fn from_status(status: &tonic::Status) -> Self {
        let public = PublicStatus::from(status);
        Self::Error(ErrorView {
            code: public.code.as_str().to_owned(),
            message: public.message,
            client_msg_id: None,
            session_id: None,
            retry_after_ms: public.retry_after_ms,
        })
    }

    pub(super) fn with_context(mut self, session_id: Option<&str>, client_msg_id: Option<&str>) -> Self {
        if let Self::Error(view) = &mut self {
            view.session_id = session_id.filter(|s| !s.is_empty()).map(str::to_owned);
            view.client_msg_id = client_msg_id.filter(|s| !s.is_empty()).map(str::to_owned);
        }
        self
    }

    pub fn from_server_frame(frame: pb::ServerFrame) -> Option<Self> {
        Some(match frame.frame? {
            ServerKind::Subscribed(s) => Self::Subscribed {
                session_id: s.session_id,
                last_seq: s.last_seq,
            },
            ServerKind::Unsubscribed(u) => Self::Unsubscribed {
                session_id: u.session_id,
            },
            ServerKind::Ack(ack) => Self::from_ack(ack),
            ServerKind::Event(event) => return Self::from_session_event(event),
            ServerKind::Error(e) => Self::Error(ErrorView {
                code: if e.code.is_empty() {
                    ErrorCode::Internal.as_str().to_owned()
                } else {
                    e.code
                },
                message: e.message,
                client_msg_id: Some(e.client_msg_id).filter(|s| !s.is_empty()),
                session_id: Some(e.session_id).filter(|s| !s.is_empty()),
                retry_after_ms: Some(e.retry_after_ms).filter(|ms| *ms > 0),
            }),
            ServerKind::Pong(_) => Self::Pong,
            ServerKind::Queue(queue) => Self::Queue {
                snapshot: queue.snapshot,
                sessions: queue
                    .sessions
                    .into_iter()
                    .filter_map(WaitingView::from_proto)
                    .collect(),
                removed: queue.removed,
            },
        })
    }

    pub fn from_ack(ack: pb::Ack) -> Self {
        Self::Ack(AckView {
            client_msg_id: ack.client_msg_id,
            message_id: ack.message_id,
            seq: ack.seq,
            session_id: ack.session_id,
            run_id: ack.run_id,
            duplicate: ack.duplicate,
        })
    }

    pub fn from_session_event(event: pb::SessionEvent) -> Option<Self> {
        Some(match event.event? {
            EventKind::Message(message) => Self::Message {
                session_id: message.session_id.clone(),
                message: Box::new((*message).into()),
            },
            EventKind::Run(run) => Self::Run(Box::new(RunView::from(run))),
            EventKind::Delta(d) => Self::Delta {
                session_id: d.session_id,
                run_id: d.run_id,
                index: d.index,
                text: d.text,
                attempt: d.attempt,
            },
            EventKind::Handoff(h) => Self::Handoff {
                session_id: h.session_id,
                run_id: h.run_id,
                from_agent: h.from_agent,
                to_agent: h.to_agent,
                reason: h.reason,
            },
            EventKind::ToolCall(t) => Self::ToolCall(Box::new(ToolCallView {
                session_id: t.session_id,
                run_id: t.run_id,
                call_id: t.call_id,
                name: t.name,
                arguments: serde_json::from_str(&t.arguments_json)
                    .unwrap_or(serde_json::Value::String(t.arguments_json)),
            })),
            EventKind::ToolResult(t) => Self::ToolResult {
                session_id: t.session_id,
                run_id: t.run_id,
                call_id: t.call_id,
                content: t.content,
            },
            EventKind::Session(s) => Self::Session {
                session_id: s.session_id,
                status: s.status,
                agent: s.agent,
                assignee: Some(s.assignee).filter(|a| !a.is_empty()),
            },
            // The session's user typing is a notice for Socket.IO clients;
            // the WebSocket tells of the person answering only.
            EventKind::Presence(p) if !p.user_id.is_empty() => return None,
            EventKind::Presence(p) => Self::Presence {
                session_id: p.session_id,
                name: p.name,
                typing: p.typing,
            },
        })
    }
}

impl From<pb::RunUpdate> for RunView {
    fn from(run: pb::RunUpdate) -> Self {
        Self {
            status: run_status_name(run.status()),
            session_id: run.session_id,
            run_id: run.run_id,
            agent: run.agent,
            attempt: run.attempt,
            error: Some(run.error).filter(|e| !e.is_empty()),
            user_seq: Some(run.user_seq).filter(|seq| *seq > 0),
        }
    }
}

pub fn run_status_name(status: pb::RunStatus) -> &'static str {
    match status {
        pb::RunStatus::Unspecified => "unknown",
        pb::RunStatus::Queued => "queued",
        pb::RunStatus::Running => "running",
        pb::RunStatus::Retrying => "retrying",
        pb::RunStatus::Completed => "completed",
        pb::RunStatus::Failed => "failed",
        pb::RunStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::server_frame::Frame as ServerKind;
    use serde_json::{Value, json};

    fn server(frame: ServerKind) -> Value {
        let out = OutFrame::from_server_frame(pb::ServerFrame { frame: Some(frame) }).expect("frame");
        serde_json::from_str(&out.to_json()).expect("json")
    }

    #[test]
    fn server_frames_become_contract_json() {
        let ack = server(ServerKind::Ack(pb::Ack {
            session_id: "s".into(),
            client_msg_id: "c".into(),
            message_id: "m".into(),
            seq: 1,
            run_id: "r".into(),
            duplicate: false,
            message: None,
        }));
        assert_eq!(
            ack,
            json!({"type": "ack", "client_msg_id": "c", "message_id": "m", "seq": 1,
                   "session_id": "s", "run_id": "r", "duplicate": false})
        );
        let run = server(ServerKind::Event(pb::SessionEvent {
            event: Some(EventKind::Run(pb::RunUpdate {
                session_id: "s".into(),
                run_id: "r".into(),
                status: pb::RunStatus::Completed.into(),
                agent: "echo".into(),
                attempt: 1,
                error: String::new(),
                user_seq: 0,
            })),
        }));
        assert_eq!(
            run,
            json!({"type": "run", "session_id": "s", "run_id": "r", "status": "completed",
                   "agent": "echo", "attempt": 1})
        );
        let delta = server(ServerKind::Event(pb::SessionEvent {
            event: Some(EventKind::Delta(pb::Delta {
                session_id: "s".into(),
                run_id: "r".into(),
                index: 0,
                text: "he".into(),
                attempt: 1,
            })),
        }));
        assert_eq!(
            delta,
            json!({"type": "delta", "session_id": "s", "run_id": "r", "index": 0, "text": "he", "attempt": 1})
        );
        let error = server(ServerKind::Error(pb::ErrorFrame {
            code: "forbidden".into(),
            message: "not yours".into(),
            ..Default::default()
        }));
        assert_eq!(
            error,
            json!({"type": "error", "code": "forbidden", "message": "not yours"})
        );
        let subscribed = server(ServerKind::Subscribed(pb::Subscribed {
            session_id: "s".into(),
            last_seq: 4,
        }));
        assert_eq!(
            subscribed,
            json!({"type": "subscribed", "session_id": "s", "last_seq": 4})
        );
    }
}
