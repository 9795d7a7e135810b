//! The replaced service's surface, so its clients work unchanged: its REST
//! routes ([`routes`]) and its Socket.IO events ([`socket`]).
//!
//! Every route here is a translation: it calls chat-core exactly as the
//! `/api/v1` handlers do (often through them) and reshapes the answer into
//! the legacy JSON ([`views`], errors in [`error`]). Security is ours, not
//! the legacy one's: every route but health, login and validate (whose
//! body token is the credential) authenticates, the
//! caller is the token's subject, and the same rate and input limits apply.
//! `docs/migration.md` maps old to new and lists what changed on purpose.

pub mod auth;
pub mod chat;
pub mod error;
pub mod service;
pub mod sessions;
pub mod socket;
pub mod views;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::app::SharedState;
use crate::ratelimit;

/// The header legacy clients name their current session in.
pub const SESSION_HEADER: &str = "x-session-id";

/// Legacy routes counted in the auth rate-limit tier.
pub const AUTH_ROUTES: [&str; 3] = [LOGIN_ROUTE, "/auth/refresh", "/auth/validate"];
/// The legacy login, counted in the account tier as well.
pub const LOGIN_ROUTE: &str = "/auth/login";
/// Legacy routes that post a message, counted in the messages tier.
pub const MESSAGE_ROUTES: [&str; 2] = ["/api/chat/message", "/api/sessions/{id}/messages"];

/// Whether `path` belongs to the legacy surface (its errors take the legacy shape).
pub fn owns(path: &str) -> bool {
    let api_v1 = path == "/api/v1" || path.starts_with("/api/v1/");
    path == "/health"
        || path.starts_with("/health/")
        || path == "/api"
        || (path.starts_with("/api/") && !api_v1)
        || path.starts_with("/auth/")
        || path.starts_with(socket::PATH)
}

/// Every legacy REST route; health is exempt from rate limits, as it was.
pub fn routes(state: SharedState) -> Router<SharedState> {
    service::start_clock();
    let limited = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/validate", post(auth::validate))
        .route("/auth/status", get(auth::status))
        .route("/api", get(service::info))
        .route("/api/agents", get(service::agents))
        .route("/api/users/{user_id}/sessions", get(sessions::list))
        .route("/api/sessions", post(sessions::create))
        .route("/api/sessions/{id}", get(sessions::get).delete(sessions::end))
        .route("/api/sessions/{id}/resume", post(sessions::resume))
        .route("/api/sessions/{id}/resolve", post(sessions::resolve))
        .route("/api/sessions/{id}/history", get(sessions::history))
        .route("/api/sessions/{id}/messages", post(chat::post_in_session))
        .route("/api/chat/message", post(chat::message))
        .route("/api/chat/history", get(chat::history))
        .route_layer(middleware::from_fn_with_state(
            state,
            ratelimit::middleware::limit,
        ));
    Router::new()
        .route("/health", get(service::health))
        .route("/health/health", get(service::health))
        .route("/health/status", get(service::health))
        // The health fields only: metrics are on each service's admin listener.
        .route("/health/metrics", get(service::health))
        .route("/api/health/health", get(service::health))
        .merge(limited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_paths_are_told_from_the_v1_api() {
        for path in [
            "/health",
            "/health/health",
            "/api",
            "/api/sessions/x",
            "/auth/login",
            "/socket.io/",
        ] {
            assert!(owns(path), "{path}");
        }
        for path in ["/api/v1", "/api/v1/sessions", "/healthz", "/", "/apis"] {
            assert!(!owns(path), "{path}");
        }
    }
}
