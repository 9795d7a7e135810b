//! Translation between the public JSON frames (WebSocket text frames and SSE
//! events) and chat-core's `ClientFrame`/`ServerFrame` protos. Pure functions:
//! [`outbound`] turns server frames into JSON, [`inbound`] parses and validates
//! what clients send.

mod inbound;
mod outbound;

pub use inbound::{AccessToken, Inbound, MAX_CLIENT_MSG_ID_LEN, check_client_msg_id, parse_client_frame};
pub use outbound::{AckView, ErrorView, OutFrame, RunView, run_status_name};
