//! Socket.IO on `/socket.io` (socketioxide) with the legacy events, over the
//! same chat-core stream as the WebSocket: one `ChatService.Connect` per
//! connection, subscribe and send frames in, session events out.
//!
//! The handshake authenticates ([`handshake`]): a token in `auth.token`,
//! `Authorization: Bearer` or `?token=`, else `connect_error`. Identity comes
//! only from that token. The connection then holds the WebSocket's limits:
//! the messages rate limit per user and the token's expiry (a fresh token
//! comes in with `authenticate`), through [`crate::ws::Peer`]. Client events
//! are handled in [`connection`], chat-core's frames turned into events in
//! [`relay`].
//!
//! | client → server | server → client |
//! |---|---|
//! | (handshake) | `connected {socketId, userId}` |
//! | `authenticate {token}` | `authenticationSuccess {userId}` / `authenticationError {error}` |
//! | `createSession {metadata?}` | `sessionCreated {sessionId, session}` |
//! | `joinSession {sessionId}` | `sessionJoined {sessionId, session, conversationHistory}` |
//! | `sendMessage {content, type?, metadata?}` | `messageReceived`, then `newMessage` (also `messageDelta` while the reply streams) |
//! | `typing` / `stopTyping` | `userTyping` / `userStoppedTyping {userId, sessionId}` to the session's other sockets, on every gateway (through chat-core's `SetTyping`) |
//! | `endSession {reason?}` | `sessionEnded {sessionId, reason}` |
//! | `ping` | `pong {timestamp}` |
//!
//! Errors: `sessionError {error}` and `messageError {error}`.

mod connection;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, ORIGIN};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;

use crate::app::SharedState;
use crate::auth::{self, AuthUser};
use crate::connections::ConnectionGuard;
use crate::ratelimit::Tier;
use crate::ratelimit::middleware::client_ip_of;

pub use connection::Connection;

/// Where Socket.IO is served.
pub const PATH: &str = "/socket.io";

/// Engine.IO heartbeat, as the replaced service had it.
const PING_INTERVAL: Duration = Duration::from_secs(25);
/// How long a heartbeat may go unanswered before the connection is dropped.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The Socket.IO service as a layer in front of the router (it answers `/socket.io/` only).
pub fn layer(state: SharedState) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .req_path(PATH)
        .ping_interval(PING_INTERVAL)
        .ping_timeout(PING_TIMEOUT)
        .max_payload(u64::try_from(state.limits.max_ws_frame_bytes).unwrap_or(u64::MAX))
        .ws_read_buffer_size(state.limits.ws_read_buffer_bytes)
        .build_layer();
    let on_handshake = {
        let state = state.clone();
        move |socket: SocketRef, TryData(auth): TryData<Value>| {
            let state = state.clone();
            async move { handshake(&state, &socket, auth.ok()).await }
        }
    };
    let on_connect = move |socket: SocketRef| {
        let user = socket.extensions.get::<AuthUser>();
        // Held while the connection lives: it counts under the caps.
        let place = socket.extensions.remove::<Arc<ConnectionGuard>>();
        let connection = user.map(|user| Connection::open(state.clone(), &socket, user));
        async move {
            if let Some((connection, upstream)) = connection {
                relay::run(socket, connection, upstream).await;
            }
            drop(place);
        }
    };
    io.ns("/", on_connect.with(on_handshake));
    layer
}

/// Why a handshake was refused, as the client's `connect_error` tells it.
#[derive(Debug)]
pub struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Admits a connection: its origin is allowed, its token valid, its user
/// under the API rate limit (a connection counts as one request). The user
/// is kept in the socket's extensions.
async fn handshake(state: &SharedState, socket: &SocketRef, auth: Option<Value>) -> Result<(), Refused> {
    let parts = socket.req_parts();
    let host = parts.headers.get(HOST);
    if !state
        .allowed_origins
        .allows_upgrade(parts.headers.get(ORIGIN), host)
    {
        return Err(Refused("origin not allowed"));
    }
    let token = handshake_token(parts, auth.as_ref()).ok_or(Refused("authentication required"))?;
    let user = auth::authenticate(state, &token)
        .await
        .map_err(|_| Refused("access token is invalid or expired"))?;
    let key = format!("user:{}", user.user_id);
    match state.rate_limits.check(Tier::Api, &key).await {
        Ok(Some(decision)) if !decision.allowed => return Err(Refused("too many requests, retry later")),
        Ok(_) => {}
        // The limits cannot be checked and this tier fails closed.
        Err(_) => return Err(Refused("service unavailable, try again")),
    }
    // A Socket.IO connection counts under the same caps as a WebSocket.
    let address = client_ip_of(&parts.headers, &parts.extensions, state.trust_forwarded_for);
    let place = state
        .connections
        .open(&user.user_id, &address)
        .map_err(|_| Refused("too many open connections for this user or address"))?;
    socket.extensions.insert(Arc::new(place));
    socket.extensions.insert(user);
    Ok(())
}

/// The token of a handshake: `auth.token`, else `Authorization: Bearer`,
/// else `?token=` (or `?access_token=`, as on the WebSocket).
fn handshake_token(parts: &http::request::Parts, auth: Option<&Value>) -> Option<String> {
    let from_auth = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).to_owned());
    let from_header = || auth::bearer_token(&parts.headers).map(str::to_owned);
    let from_query = || {
        let query = parts.uri.query()?;
        url_query(query, "token").or_else(|| url_query(query, "access_token"))
    };
    from_auth
        .or_else(from_header)
        .or_else(from_query)
        .filter(|t| !t.is_empty())
}

/// The value of `name` in a query string (tokens hold no characters that need decoding).
fn url_query(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use http::header::AUTHORIZATION;

    use super::*;

    fn parts(uri: &str, authorization: Option<&str>) -> http::request::Parts {
        let mut request = http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request.body(()).expect("request").into_parts().0
    }

    #[test]
    fn handshake_token_comes_from_auth_then_header_then_query() {
        let auth = serde_json::json!({"token": "from-auth"});
        let both = parts("/socket.io/?EIO=4&token=from-query", Some("Bearer from-header"));
        assert_eq!(handshake_token(&both, Some(&auth)).as_deref(), Some("from-auth"));
        assert_eq!(handshake_token(&both, None).as_deref(), Some("from-header"));
        let query = parts("/socket.io/?EIO=4&transport=polling&token=from-query", None);
        assert_eq!(handshake_token(&query, None).as_deref(), Some("from-query"));
        assert_eq!(handshake_token(&parts("/socket.io/?EIO=4", None), None), None);
        let empty = serde_json::json!({"token": ""});
        assert_eq!(handshake_token(&parts("/socket.io/", None), Some(&empty)), None);
    }
}
