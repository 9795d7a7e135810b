//! Tokens: signing user access tokens, verifying them on every request (ours,
//! or a configured identity provider's, see [`authenticate`]), and holding the
//! gateway's own service token for account calls. Refresh tokens are opaque
//! and live in chat-core (see `routes::auth`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Query};
use chat_common::token::{self, Audience, Role, TokenKeys};
use http::header::AUTHORIZATION;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::app::{AppState, SharedState};
use crate::error::ApiError;
use crate::idp::{ExternalIdentity, MAX_TOKEN_BYTES};
use chat_proto::chat::v1 as pb;

/// Subject of the gateway's service token.
const SERVICE_SUBJECT: &str = "gateway";
/// Lifetime of the service token, and how long before expiry it is re-signed.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);
const SERVICE_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Absolute lifetime of a refresh token family unless configured (90 days).
const DEFAULT_REFRESH_FAMILY_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The tokens a successful login or refresh hands out.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    /// Left out when it went into the page's refresh cookie instead.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// Signs and verifies every token the gateway deals with.
#[derive(Debug)]
pub struct Tokens {
    keys: TokenKeys,
    access_ttl: Duration,
    refresh_ttl: Duration,
    refresh_family_ttl: Duration,
    service: Mutex<Option<(String, Instant)>>,
}

impl Tokens {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            keys: TokenKeys::new(secret),
            access_ttl,
            refresh_ttl,
            refresh_family_ttl: DEFAULT_REFRESH_FAMILY_TTL,
            service: Mutex::new(None),
        }
    }

    /// Signs an access token for `user_id` of sign-in `sign_in` (the refresh
    /// token family, whose logout revokes the token).
    pub fn issue_access(&self, user_id: &str, sign_in: Option<&str>) -> Result<String, ApiError> {
        self.keys
            .sign_user(user_id, sign_in, self.access_ttl)
            .map_err(ApiError::internal)
    }

    /// Longest lifetime of the access tokens this gateway signs.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Signs an access token for `user_id` that expires by `expires_at` (Unix
    /// seconds) at the latest; returns it with its actual expiry.
    pub fn issue_access_until(&self, user_id: &str, expires_at: u64) -> Result<(String, u64), ApiError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let ttl = self
            .access_ttl
            .min(Duration::from_secs(expires_at.saturating_sub(now).max(1)));
        let token = self
            .keys
            .sign(user_id, Role::User, ttl)
            .map_err(ApiError::internal)?;
        Ok((token, now + ttl.as_secs()))
    }

    /// A fresh access token for `user_id` with the refresh token chat-core
    /// issued, both of sign-in `sign_in`.
    pub fn pair(&self, user_id: &str, refresh_token: String, sign_in: &str) -> Result<TokenPair, ApiError> {
        let sign_in = Some(sign_in).filter(|s| !s.is_empty());
        Ok(TokenPair {
            access_token: self.issue_access(user_id, sign_in)?,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
        })
    }

    /// Sets how long the refresh tokens of one login may be rotated, in all.
    pub fn with_refresh_family_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_family_ttl = ttl;
        self
    }

    /// Lifetime of the refresh tokens chat-core issues for the gateway.
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// Absolute lifetime of a refresh token family, from its login.
    pub fn refresh_family_ttl(&self) -> Duration {
        self.refresh_family_ttl
    }

    /// Checks an access token and returns the user it speaks for.
    pub fn verify_access(&self, token: &str) -> Result<AuthUser, ApiError> {
        let claims = self
            .keys
            .verify(token, Audience::Gateway)
            .map_err(|_| invalid_token())?;
        if claims.role != Role::User || claims.sub.is_empty() {
            return Err(invalid_token());
        }
        Ok(AuthUser {
            user_id: claims.sub,
            token: token.to_owned(),
            expires_at: claims.exp,
            sign_in: claims.sid,
        })
    }

    /// When one of our access tokens was issued (Unix seconds), if it is valid.
    pub fn issued_at(&self, token: &str) -> Option<u64> {
        self.keys
            .verify(token, Audience::Gateway)
            .ok()
            .filter(|claims| claims.role == Role::User)
            .map(|claims| claims.iat)
    }

    /// The gateway's service token, re-signed shortly before it expires.
    pub fn service_token(&self) -> Result<String, ApiError> {
        let mut cached = self
            .service
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + SERVICE_TOKEN_REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let token = self
            .keys
            .sign(SERVICE_SUBJECT, Role::Service, SERVICE_TOKEN_TTL)
            .map_err(ApiError::internal)?;
        *cached = Some((token.clone(), Instant::now() + SERVICE_TOKEN_TTL));
        Ok(token)
    }
}

fn invalid_token() -> ApiError {
    ApiError::unauthenticated("access token is invalid or expired")
}

// === authenticate ===

/// Verifies a bearer token: the gateway's own access token, or a configured
/// identity provider's. For the latter the caller becomes the local user
/// mapped to `(iss, sub)` (created on first sight by chat-core), and carries a
/// short-lived access token of ours for chat-core, which trusts only the
/// shared secret.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid_token());
    }
    let internal = state.tokens.verify_access(token);
    let Some(external) = state.external.as_ref().filter(|_| internal.is_err()) else {
        return internal;
    };
    let identity = external.providers.verify(token).await.ok_or_else(invalid_token)?;
    let user_id = match external.users.get(&identity) {
        Some(user_id) => user_id,
        None => {
            let user_id = ensure_external_user(state, &identity).await?;
            external.users.put(&identity, &user_id);
            user_id
        }
    };
    let (token, expires_at) = state.tokens.issue_access_until(&user_id, identity.expires_at)?;
    Ok(AuthUser {
        user_id,
        token,
        expires_at,
        sign_in: None,
    })
}

/// The outcome of authenticating a request's token, kept in its extensions
/// (by the rate-limit middleware) so the handler's extractor need not repeat it.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub token: String,
    pub result: Result<AuthUser, ApiError>,
}

/// Authenticates `token`, reusing the outcome recorded for this request if any.
async fn authenticate_once(parts: &Parts, state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    match parts.extensions.get::<Authenticated>() {
        Some(done) if done.token == token => done.result.clone(),
        _ => authenticate(state, token).await,
    }
}

async fn ensure_external_user(state: &AppState, identity: &ExternalIdentity) -> Result<String, ApiError> {
    let request = pb::EnsureExternalUserRequest {
        issuer: identity.issuer.clone(),
        subject: identity.subject.clone(),
    };
    let request = state.core.unary(request, &state.tokens.service_token()?)?;
    Ok(state
        .core
        .users()
        .ensure_external_user(request)
        .await?
        .into_inner()
        .user_id)
}

// === impl AuthUser ===

/// The verified user behind a request, with the token forwarded to chat-core.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub user_id: String,
    pub token: String,
    /// When the token expires, in Unix seconds.
    pub expires_at: u64,
    /// The sign-in the token came from (our own tokens'), which chat-core
    /// refuses once it is signed out.
    pub sign_in: Option<String>,
}

impl FromRequestParts<SharedState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        let token = header_token(parts)?.ok_or_else(missing_token)?;
        authenticate_once(parts, state, token).await
    }
}

/// Like [`AuthUser`], but also accepts `?access_token=` (browsers cannot set headers on WebSockets).
#[derive(Clone, Debug)]
pub struct WsAuthUser(pub AuthUser);

/// The `?access_token=` query of a WebSocket upgrade.
#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    pub(crate) access_token: Option<String>,
}

/// The WebSocket subprotocol the page asks for; it carries the access token
/// beside it as `bearer.<token>`, so the token stays out of the URL (and of
/// access logs and browser history).
pub const WS_PROTOCOL: &str = "chat.v1";
const WS_TOKEN_PROTOCOL_PREFIX: &str = "bearer.";

/// The token offered as a `bearer.<token>` subprotocol, if any.
fn protocol_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|protocol| protocol.strip_prefix(WS_TOKEN_PROTOCOL_PREFIX))
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
}

impl FromRequestParts<SharedState> for WsAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        if let Some(token) = header_token(parts)? {
            return authenticate_once(parts, state, token).await.map(Self);
        }
        if let Some(token) = protocol_token(parts) {
            return authenticate_once(parts, state, &token).await.map(Self);
        }
        let query = Query::<TokenQuery>::try_from_uri(&parts.uri).ok();
        let token = query
            .and_then(|Query(q)| q.access_token)
            .filter(|t| !t.is_empty());
        let token = token.ok_or_else(missing_token)?;
        authenticate_once(parts, state, &token).await.map(Self)
    }
}

fn header_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| invalid_token())?;
    token::bearer(value)
        .map(Some)
        .ok_or_else(|| ApiError::unauthenticated("expected `Authorization: Bearer <token>`"))
}

/// The token of a well-formed `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token::bearer)
}

fn missing_token() -> ApiError {
    ApiError::unauthenticated("missing access token")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(b"secret", Duration::from_secs(60), Duration::from_secs(600))
    }

    #[test]
    fn issued_access_tokens_verify_as_their_user() {
        let tokens = tokens();
        let pair = tokens.pair("u1", "opaque".into(), "family").expect("sign");
        let user = tokens.verify_access(&pair.access_token).expect("access");
        assert_eq!(user.user_id, "u1");
        assert_eq!(user.sign_in.as_deref(), Some("family"));
        assert!(tokens.verify_access(&pair.refresh_token).is_err());
    }

    #[test]
    fn service_token_is_reused_and_rejected_as_user_token() {
        let tokens = tokens();
        let first = tokens.service_token().expect("sign");
        assert_eq!(first, tokens.service_token().expect("sign"));
        assert!(tokens.verify_access(&first).is_err());
    }
}
