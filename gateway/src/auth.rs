//! Tokens: issuing user token pairs, verifying them on every request, and
//! holding the gateway's own service token for account calls.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Query};
use chat_common::token::{self, Role, TokenKeys};
use http::header::AUTHORIZATION;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::app::SharedState;
use crate::error::ApiError;

/// Subject of the gateway's service token.
const SERVICE_SUBJECT: &str = "gateway";
/// Lifetime of the service token, and how long before expiry it is re-signed.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);
const SERVICE_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Refresh tokens name `refresh:<user_id>` so they cannot pass as access tokens.
const REFRESH_PREFIX: &str = "refresh:";

/// The tokens a successful login or refresh hands out.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
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
    service: Mutex<Option<(String, Instant)>>,
}

impl Tokens {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            keys: TokenKeys::new(secret),
            access_ttl,
            refresh_ttl,
            service: Mutex::new(None),
        }
    }

    pub fn issue_pair(&self, user_id: &str) -> Result<TokenPair, ApiError> {
        let access_token = self
            .keys
            .sign(user_id, Role::User, self.access_ttl)
            .map_err(ApiError::internal)?;
        let refresh_token = self
            .keys
            .sign(
                &format!("{REFRESH_PREFIX}{user_id}"),
                Role::User,
                self.refresh_ttl,
            )
            .map_err(ApiError::internal)?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
        })
    }

    /// Checks an access token and returns the user it speaks for.
    pub fn verify_access(&self, token: &str) -> Result<AuthUser, ApiError> {
        let claims = self.keys.verify(token).map_err(|_| invalid_token())?;
        if claims.role != Role::User || claims.sub.starts_with(REFRESH_PREFIX) || claims.sub.is_empty() {
            return Err(invalid_token());
        }
        Ok(AuthUser {
            user_id: claims.sub,
            token: token.to_owned(),
            expires_at: claims.exp,
        })
    }

    /// Checks a refresh token and returns its user id.
    pub fn verify_refresh(&self, token: &str) -> Result<String, ApiError> {
        let claims = self.keys.verify(token).map_err(|_| invalid_refresh_token())?;
        match claims.sub.strip_prefix(REFRESH_PREFIX) {
            Some(user_id) if claims.role == Role::User && !user_id.is_empty() => Ok(user_id.to_owned()),
            _ => Err(invalid_refresh_token()),
        }
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

fn invalid_refresh_token() -> ApiError {
    ApiError::unauthenticated("refresh token is invalid or expired")
}

// === impl AuthUser ===

/// The verified user behind a request, with the token forwarded to chat-core.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub user_id: String,
    pub token: String,
    /// When the token expires, in Unix seconds.
    pub expires_at: u64,
}

impl FromRequestParts<SharedState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        let token = header_token(parts)?.ok_or_else(missing_token)?;
        state.tokens.verify_access(token)
    }
}

/// Like [`AuthUser`], but also accepts `?access_token=` (browsers cannot set headers on WebSockets).
#[derive(Clone, Debug)]
pub struct WsAuthUser(pub AuthUser);

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

impl FromRequestParts<SharedState> for WsAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        if let Some(token) = header_token(parts)? {
            return state.tokens.verify_access(token).map(Self);
        }
        let query = Query::<TokenQuery>::try_from_uri(&parts.uri).ok();
        let token = query
            .and_then(|Query(q)| q.access_token)
            .filter(|t| !t.is_empty());
        let token = token.ok_or_else(missing_token)?;
        state.tokens.verify_access(&token).map(Self)
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
    fn access_and_refresh_tokens_are_not_interchangeable() {
        let tokens = tokens();
        let pair = tokens.issue_pair("u1").expect("sign");
        assert_eq!(
            tokens.verify_access(&pair.access_token).expect("access").user_id,
            "u1"
        );
        assert_eq!(tokens.verify_refresh(&pair.refresh_token).expect("refresh"), "u1");
        assert!(tokens.verify_access(&pair.refresh_token).is_err());
        assert!(tokens.verify_refresh(&pair.access_token).is_err());
    }

    #[test]
    fn service_token_is_reused_and_rejected_as_user_token() {
        let tokens = tokens();
        let first = tokens.service_token().expect("sign");
        assert_eq!(first, tokens.service_token().expect("sign"));
        assert!(tokens.verify_access(&first).is_err());
    }
}
