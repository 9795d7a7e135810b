//! gRPC messages: prost decoding of every request type of `chat.v1` and
//! `agent.v1`, the `Connect` frames and `RunEvent`, from any bytes.
//!
//! Invariants: decoding never panics, and decode → encode → decode gives the
//! same message with an encoding of the announced length. (Bytes are not
//! compared: map fields encode in hash order.)
//!
//! Input: the first byte picks the message type, the rest is its encoding.

#![no_main]

use chat_proto::agent::v1 as agent;
use chat_proto::chat::v1 as chat;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `bytes` as `M` and checks the round trip.
fn round_trip<M: Message + Default + PartialEq>(bytes: &[u8]) {
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len());
    let again = M::decode(encoded.as_slice()).expect("re-decoding our own encoding");
    assert!(again == message, "decode → encode → decode changed the message");
    assert_eq!(again.encode_to_vec().len(), encoded.len());
}

/// Every message type a peer can send us, in a fixed order (the seed corpus
/// names types by their index here: append, never reorder).
const TYPES: &[fn(&[u8])] = &[
    round_trip::<chat::CreateSessionRequest>,
    round_trip::<chat::GetSessionRequest>,
    round_trip::<chat::ListSessionsRequest>,
    round_trip::<chat::ResolveSessionRequest>,
    round_trip::<chat::EndSessionRequest>,
    round_trip::<chat::HandBackRequest>,
    round_trip::<chat::DeleteSessionRequest>,
    round_trip::<chat::ListMessagesRequest>,
    round_trip::<chat::SendMessageRequest>,
    round_trip::<chat::SubscribeRequest>,
    round_trip::<chat::CancelRunRequest>,
    round_trip::<chat::ListAgentsRequest>,
    round_trip::<chat::RegisterRequest>,
    round_trip::<chat::VerifyPasswordRequest>,
    round_trip::<chat::IssueRefreshTokenRequest>,
    round_trip::<chat::RotateRefreshTokenRequest>,
    round_trip::<chat::RevokeRefreshTokenRequest>,
    round_trip::<chat::EnsureExternalUserRequest>,
    round_trip::<chat::ClientFrame>,
    round_trip::<chat::ServerFrame>,
    round_trip::<agent::RunRequest>,
    round_trip::<agent::ListAgentsRequest>,
    round_trip::<agent::RunEvent>,
];

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, bytes)) = data.split_first() {
        TYPES[usize::from(kind) % TYPES.len()](bytes);
    }
});
