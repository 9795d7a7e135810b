//! Code shared by gateway, chat-core and agent-worker: the error codes both
//! transports speak, the token claims chat-core verifies, telemetry set-up
//! and shutdown signals.

pub mod error;
pub mod shutdown;
pub mod telemetry;
pub mod token;

pub use error::ErrorCode;
