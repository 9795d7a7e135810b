//! HTTP handlers, one module per resource.

pub mod agents;
pub mod auth;
pub mod handoff;
pub mod health;
pub mod messages;
pub mod operators;
pub mod page;
pub mod refresh_cookie;
pub mod sessions;
