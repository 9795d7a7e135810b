//! gateway: the stateless edge of the chat backend.
//!
//! Browsers speak HTTP, WebSocket and SSE here; every request is
//! authenticated, validated and translated into gRPC calls and streams to
//! chat-core, which owns all state. A request goes through [`app`]'s
//! middleware (its span and access line in [`access`]), then a handler in [`routes`] (or [`ws`] for sockets), which
//! calls chat-core through [`core`] (sockets share streams through [`mux`]); errors leave through [`error`]. The
//! replaced service's REST routes and Socket.IO events live in [`legacy`].

pub mod access;
pub mod app;
pub mod auth;
pub mod connections;
pub mod core;
pub mod error;
pub mod extract;
pub mod frames;
pub mod grpc_web;
pub mod idle;
pub mod idp;
pub mod json;
pub mod legacy;
pub mod mux;
pub mod origin;
pub mod ratelimit;
pub mod routes;
pub mod settings;
pub mod sse;
pub mod ws;

pub use app::Application;
pub use settings::Settings;
