//! Translation between the public JSON frames (WebSocket text frames and SSE
//! events) and chat-core's `ClientFrame`/`ServerFrame` protos. Pure functions.

use chat_common::ErrorCode;
use chat_proto::chat::v1 as pb;
use pb::client_frame::Frame as ClientKind;
use pb::server_frame::Frame as ServerKind;
use pb::session_event::Event as EventKind;
use serde::{Deserialize, Serialize};

use crate::error::PublicStatus;
use crate::json::MessageView;

/// Longest accepted `client_msg_id` (chat-core's limit too).
pub const MAX_CLIENT_MSG_ID_LEN: usize = 128;

// === Server → client ===

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
    Run(RunView),
    Delta {
        session_id: String,
        run_id: String,
        index: u32,
        text: String,
    },
    Error(ErrorView),
    Pong,
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
            Self::Error(_) => "error",
            Self::Pong => "pong",
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

    fn with_context(mut self, session_id: Option<&str>, client_msg_id: Option<&str>) -> Self {
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
                message: Box::new(message.into()),
            },
            EventKind::Run(run) => Self::Run(RunView::from(run)),
            EventKind::Delta(d) => Self::Delta {
                session_id: d.session_id,
                run_id: d.run_id,
                index: d.index,
                text: d.text,
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

pub fn is_terminal(status: pb::RunStatus) -> bool {
    matches!(
        status,
        pb::RunStatus::Completed | pb::RunStatus::Failed | pb::RunStatus::Cancelled
    )
}

// === Client → server ===

/// What to do with a frame a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Valid: forward to chat-core.
    Forward(pb::ClientFrame),
    /// Answered by the gateway itself (pong, or an error frame).
    Reply(OutFrame),
}

#[derive(Deserialize)]
struct SubscribeBody {
    session_id: String,
    #[serde(default)]
    after_seq: i64,
}

#[derive(Deserialize)]
struct SessionBody {
    session_id: String,
}

#[derive(Deserialize)]
struct SendBody {
    session_id: String,
    client_msg_id: Option<String>,
    content: String,
}

#[derive(Deserialize)]
struct CancelBody {
    session_id: String,
    run_id: String,
}

/// Parses and validates one client frame; `max_content_bytes` bounds `send` content.
pub fn parse_client_frame(text: &str, max_content_bytes: usize) -> Inbound {
    match parse(text, max_content_bytes) {
        Ok(inbound) => inbound,
        Err(frame) => Inbound::Reply(frame),
    }
}

fn parse(text: &str, max_content_bytes: usize) -> Result<Inbound, OutFrame> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| OutFrame::error(ErrorCode::Invalid, format!("malformed JSON frame: {err}")))?;
    let str_field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let session_id = str_field("session_id");
    let client_msg_id = str_field("client_msg_id");
    let invalid = |message: String| {
        OutFrame::error(ErrorCode::Invalid, message)
            .with_context(session_id.as_deref(), client_msg_id.as_deref())
    };
    let Some(kind) = value.get("type") else {
        return Err(invalid("frames need a string `type`".to_owned()));
    };
    let Some(kind) = kind.as_str().map(str::to_owned) else {
        return Err(invalid("frames need a string `type`".to_owned()));
    };
    let frame = match kind.as_str() {
        "ping" => return Ok(Inbound::Reply(OutFrame::Pong)),
        "subscribe" => {
            let b: SubscribeBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            check_session_id(&b.session_id)?;
            if b.after_seq < 0 {
                return Err(invalid("`after_seq` must not be negative".to_owned()));
            }
            ClientKind::Subscribe(pb::SubscribeFrame {
                session_id: b.session_id,
                after_seq: b.after_seq,
            })
        }
        "unsubscribe" => {
            let b: SessionBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            check_session_id(&b.session_id)?;
            ClientKind::Unsubscribe(pb::UnsubscribeFrame {
                session_id: b.session_id,
            })
        }
        "send" => {
            let b: SendBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            let client_msg_id = b
                .client_msg_id
                .ok_or_else(|| invalid("`send` frames need a `client_msg_id`".into()))?;
            check_client_msg_id(&client_msg_id).map_err(&invalid)?;
            if b.content.trim().is_empty() {
                return Err(invalid("content must not be empty".to_owned()));
            }
            if b.content.len() > max_content_bytes {
                return Err(OutFrame::error(
                    ErrorCode::TooLarge,
                    format!("content exceeds {max_content_bytes} bytes"),
                )
                .with_context(Some(&b.session_id), Some(&client_msg_id)));
            }
            check_session_id(&b.session_id)
                .map_err(|f| f.with_context(Some(&b.session_id), Some(&client_msg_id)))?;
            ClientKind::Send(pb::SendFrame {
                session_id: b.session_id,
                client_msg_id,
                content: b.content,
            })
        }
        "cancel" => {
            let b: CancelBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            check_session_id(&b.session_id)?;
            ClientKind::Cancel(pb::CancelFrame {
                session_id: b.session_id,
                run_id: b.run_id,
            })
        }
        other => return Err(invalid(format!("unknown frame type `{other}`"))),
    };
    Ok(Inbound::Forward(pb::ClientFrame { frame: Some(frame) }))
}

fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value, kind: &str) -> Result<T, String> {
    serde_json::from_value(value).map_err(|err| format!("invalid `{kind}` frame: {err}"))
}

fn check_session_id(session_id: &str) -> Result<(), OutFrame> {
    uuid::Uuid::parse_str(session_id).map(drop).map_err(|_| {
        OutFrame::error(ErrorCode::NotFound, "session not found").with_context(Some(session_id), None)
    })
}

/// `client_msg_id`: 1 to 128 printable ASCII characters.
pub fn check_client_msg_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CLIENT_MSG_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_LEN} printable ASCII characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SESSION: &str = "0190f5c2-7b1e-7cc0-8000-000000000000";

    fn reply_json(text: &str) -> Value {
        match parse_client_frame(text, 10) {
            Inbound::Reply(frame) => serde_json::to_value(&frame).expect("serialize"),
            Inbound::Forward(frame) => panic!("expected a reply, got {frame:?}"),
        }
    }

    #[test]
    fn subscribe_is_forwarded_with_default_after_seq() {
        let text = json!({"type": "subscribe", "session_id": SESSION}).to_string();
        let expected = ClientKind::Subscribe(pb::SubscribeFrame {
            session_id: SESSION.into(),
            after_seq: 0,
        });
        assert_eq!(
            parse_client_frame(&text, 10),
            Inbound::Forward(pb::ClientFrame {
                frame: Some(expected)
            })
        );
    }

    #[test]
    fn send_is_forwarded_intact() {
        let text = json!({"type": "send", "session_id": SESSION, "client_msg_id": "c1", "content": "hi"});
        let Inbound::Forward(pb::ClientFrame {
            frame: Some(ClientKind::Send(send)),
        }) = parse_client_frame(&text.to_string(), 10)
        else {
            panic!("expected a forwarded send");
        };
        assert_eq!((send.client_msg_id.as_str(), send.content.as_str()), ("c1", "hi"));
    }

    #[test]
    fn ping_is_answered_locally() {
        assert_eq!(reply_json(r#"{"type":"ping"}"#), json!({"type": "pong"}));
    }

    #[test]
    fn malformed_and_unknown_frames_are_invalid() {
        let reply = reply_json("{not json");
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("invalid"))
        );
        let reply = reply_json(r#"{"type":"dance"}"#);
        assert_eq!(reply["code"], "invalid");
        assert_eq!(reply["message"], "unknown frame type `dance`");
        assert_eq!(reply_json(r#"{"session_id":"x"}"#)["code"], "invalid");
    }

    #[test]
    fn send_content_is_validated_with_its_client_msg_id() {
        let empty = json!({"type": "send", "session_id": SESSION, "client_msg_id": "c1", "content": "  "});
        let reply = reply_json(&empty.to_string());
        assert_eq!(
            (reply["code"].as_str(), reply["client_msg_id"].as_str()),
            (Some("invalid"), Some("c1"))
        );
        let big =
            json!({"type": "send", "session_id": SESSION, "client_msg_id": "c2", "content": "x".repeat(11)});
        let reply = reply_json(&big.to_string());
        assert_eq!(
            (reply["code"].as_str(), reply["client_msg_id"].as_str()),
            (Some("too_large"), Some("c2"))
        );
        let no_id = json!({"type": "send", "session_id": SESSION, "content": "hi"});
        assert_eq!(reply_json(&no_id.to_string())["code"], "invalid");
    }

    #[test]
    fn non_uuid_session_is_not_found() {
        let reply = reply_json(r#"{"type":"subscribe","session_id":"nope"}"#);
        assert_eq!(
            (reply["code"].as_str(), reply["session_id"].as_str()),
            (Some("not_found"), Some("nope"))
        );
    }

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
            })),
        }));
        assert_eq!(
            delta,
            json!({"type": "delta", "session_id": "s", "run_id": "r", "index": 0, "text": "he"})
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
