//! The gateway's suites: REST, WebSocket, SSE, gRPC-Web, auth, limits and the edge, each
//! against a real chat-core and agent-worker.

#![allow(clippy::unwrap_used)]

mod access;
mod authz_matrix;
mod caps;
mod common;
mod cors;
mod database_outage;
mod error_leaks;
mod external_idp;
mod grpc_web;
mod headers;
mod internal_tls;
mod legacy_rest;
mod legacy_socketio;
mod operators;
mod own_tokens;
mod page;
mod rate_limit_store;
mod rate_limits;
mod refresh_tokens;
mod replicas_soak;
mod rest;
mod sessions;
mod slow_consumer;
mod stream_ends;
mod tls;
mod token_expiry;
mod validation;
mod websocket;
