//! WebSocket client frames: `gateway::frames::parse_client_frame` on any text.
//!
//! Invariants: it never panics; a frame forwarded to chat-core carries
//! canonical session ids, a valid `client_msg_id` and content within the
//! limit; every reply serialises to a JSON `error` or `pong` frame.

#![no_main]

use chat_common::limits;
use chat_proto::chat::v1::client_frame::Frame;
use gateway::frames::{Inbound, parse_client_frame};
use libfuzzer_sys::fuzz_target;

/// A small limit, so that the fuzzer reaches both sides of it.
const MAX_CONTENT_BYTES: usize = 64;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time they are parsed (tungstenite checks).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_frame(text, MAX_CONTENT_BYTES) {
        Inbound::Forward(frame) => check_forwarded(frame.frame.expect("forwarded frames have a kind")),
        Inbound::Reply(reply) => {
            let json = serde_json::to_value(&reply).expect("replies serialise");
            let kind = json["type"].as_str().expect("replies have a type");
            assert!(kind == "error" || kind == "pong", "unexpected reply {json}");
            if kind == "error" {
                assert!(json["code"].is_string() && json["message"].is_string(), "{json}");
            }
        }
        Inbound::Auth(_) => {}
    }
});

fn check_forwarded(frame: Frame) {
    match frame {
        Frame::Subscribe(f) => {
            assert_canonical(&f.session_id);
            assert!(f.after_seq >= 0, "negative after_seq forwarded");
        }
        Frame::Unsubscribe(f) => assert_canonical(&f.session_id),
        Frame::Send(f) => {
            assert_canonical(&f.session_id);
            limits::check_client_msg_id(&f.client_msg_id).expect("forwarded client_msg_id is valid");
            limits::check_content(&f.content, MAX_CONTENT_BYTES).expect("forwarded content is valid");
            assert!(f.trace_context.is_empty(), "clients cannot set trace context");
        }
        Frame::Cancel(f) => assert_canonical(&f.session_id),
        Frame::Ping(_) => panic!("pings are answered by the gateway, never forwarded"),
        Frame::WatchQueue(_) | Frame::UnwatchQueue(_) => {}
    }
}

fn assert_canonical(session_id: &str) {
    assert_eq!(
        limits::normalize_session_id(session_id).as_deref(),
        Some(session_id),
        "forwarded session id is not canonical"
    );
}
