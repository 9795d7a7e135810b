//! Client → server: parsing and validating the JSON frames clients send.

use chat_common::ErrorCode;
use chat_proto::chat::v1 as pb;
use pb::client_frame::Frame as ClientKind;
use serde::Deserialize;

use chat_common::limits::{self, ContentError};

use super::OutFrame;

/// Longest accepted `client_msg_id` (chat-core's limit too).
pub use chat_common::limits::MAX_CLIENT_MSG_ID_LEN;

/// What to do with a frame a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Valid: forward to chat-core.
    Forward(pb::ClientFrame),
    /// Answered by the gateway itself (pong, or an error frame).
    Reply(OutFrame),
    /// A fresh access token for the socket (`{type: "auth", access_token}`).
    Auth(AccessToken),
}

/// An access token sent in-band; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(pub String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
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
    /// A JSON object stored with the message.
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct AuthBody {
    access_token: String,
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
        "auth" => {
            let b: AuthBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            return Ok(Inbound::Auth(AccessToken(b.access_token)));
        }
        "subscribe" => {
            let b: SubscribeBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            let session_id = canonical_session_id(&b.session_id)?;
            if b.after_seq < 0 {
                return Err(invalid("`after_seq` must not be negative".to_owned()));
            }
            ClientKind::Subscribe(pb::SubscribeFrame {
                session_id,
                after_seq: b.after_seq,
            })
        }
        "unsubscribe" => {
            let b: SessionBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            ClientKind::Unsubscribe(pb::UnsubscribeFrame {
                session_id: canonical_session_id(&b.session_id)?,
            })
        }
        "send" => {
            let b: SendBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            let client_msg_id = b
                .client_msg_id
                .ok_or_else(|| invalid("`send` frames need a `client_msg_id`".into()))?;
            check_client_msg_id(&client_msg_id).map_err(&invalid)?;
            match limits::check_content(&b.content, max_content_bytes) {
                Ok(()) => {}
                Err(error @ (ContentError::Empty | ContentError::Nul)) => {
                    return Err(invalid(error.to_string()));
                }
                Err(error @ ContentError::TooLarge(_)) => {
                    return Err(OutFrame::error(ErrorCode::TooLarge, error.to_string())
                        .with_context(Some(&b.session_id), Some(&client_msg_id)));
                }
            }
            let session_id = canonical_session_id(&b.session_id)
                .map_err(|f| f.with_context(Some(&b.session_id), Some(&client_msg_id)))?;
            ClientKind::Send(pb::SendFrame {
                session_id,
                client_msg_id,
                content: b.content,
                trace_context: Default::default(),
                metadata_json: b
                    .metadata
                    .map(|object| serde_json::Value::Object(object).to_string())
                    .unwrap_or_default(),
            })
        }
        "watch_queue" => ClientKind::WatchQueue(pb::WatchQueueFrame {}),
        "unwatch_queue" => ClientKind::UnwatchQueue(pb::UnwatchQueueFrame {}),
        "cancel" => {
            let b: CancelBody = from_value(value.clone(), &kind).map_err(&invalid)?;
            ClientKind::Cancel(pb::CancelFrame {
                session_id: canonical_session_id(&b.session_id)?,
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

/// The session id in its canonical form, as REST paths have it too.
fn canonical_session_id(session_id: &str) -> Result<String, OutFrame> {
    limits::normalize_session_id(session_id).ok_or_else(|| {
        OutFrame::error(ErrorCode::NotFound, "session not found").with_context(Some(session_id), None)
    })
}

pub use chat_common::limits::check_client_msg_id;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SESSION: &str = "0190f5c2-7b1e-7cc0-8000-000000000000";

    fn reply_json(text: &str) -> Value {
        match parse_client_frame(text, 10) {
            Inbound::Reply(frame) => serde_json::to_value(&frame).expect("serialize"),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// A subscribe to `SESSION` after `after_seq`, as it is forwarded to chat-core.
    fn forwarded_subscribe(after_seq: i64) -> Inbound {
        let frame = ClientKind::Subscribe(pb::SubscribeFrame {
            session_id: SESSION.into(),
            after_seq,
        });
        Inbound::Forward(pb::ClientFrame { frame: Some(frame) })
    }

    #[test]
    fn session_ids_are_canonical_as_on_rest_paths() {
        let upper = SESSION.to_ascii_uppercase();
        let text = json!({"type": "subscribe", "session_id": upper, "after_seq": 3}).to_string();
        assert_eq!(parse_client_frame(&text, 10), forwarded_subscribe(3));
    }

    #[test]
    fn subscribe_is_forwarded_with_default_after_seq() {
        let text = json!({"type": "subscribe", "session_id": SESSION}).to_string();
        assert_eq!(parse_client_frame(&text, 10), forwarded_subscribe(0));
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
    fn auth_frames_carry_a_token_that_debug_hides() {
        let parsed = parse_client_frame(r#"{"type":"auth","access_token":"tok-secret"}"#, 10);
        assert_eq!(parsed, Inbound::Auth(AccessToken("tok-secret".into())));
        assert!(!format!("{parsed:?}").contains("tok-secret"));
        assert_eq!(reply_json(r#"{"type":"auth"}"#)["code"], "invalid");
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
}
