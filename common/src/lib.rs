//! Code shared by gateway, chat-core and agent-worker: the error codes both
//! transports speak, the token claims chat-core verifies, health, the admin
//! listener, metrics, logging and trace export, trace context propagation,
//! secrets, owner-only files, endpoint discovery, gRPC endpoints, in-process
//! connections and shutdown.

pub mod admin;
pub mod alloc;
pub mod config;
pub mod discovery;
pub mod error;
pub mod files;
pub mod grpc_call;
pub mod grpc_server;
pub mod health;
pub mod inproc;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod token_clock;
pub mod trace;

pub use error::ErrorCode;
pub use health::Health;
