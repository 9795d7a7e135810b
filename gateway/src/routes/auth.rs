//! Accounts and tokens: register, login, refresh, logout.
//!
//! Passwords are checked by chat-core (`UserService`, argon2), which also
//! keeps the refresh tokens (opaque, stored hashed, rotated on every refresh,
//! a reused one revoking its family). The gateway signs the access tokens and
//! calls chat-core with its own service token.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use chat_proto::chat::v1 as pb;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::refresh_cookie;
use crate::app::SharedState;
use crate::auth::TokenPair;
use crate::error::ApiError;
use crate::extract::{ApiJson, OptionalJson};

#[derive(Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Serialize)]
pub struct Registered {
    user_id: String,
}

#[derive(Deserialize, Default)]
pub struct RefreshBody {
    #[serde(default)]
    refresh_token: String,
}

/// `POST /api/v1/auth/register` → 201 `{user_id}`
pub async fn register(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    let request = pb::RegisterRequest {
        username: body.username,
        password: body.password,
    };
    let request = state.core.unary(request, &state.tokens.service_token()?)?;
    let user_id = state.core.users().register(request).await?.into_inner().user_id;
    Ok((StatusCode::CREATED, Json(Registered { user_id })))
}

/// `POST /api/v1/auth/login` → `{access_token, refresh_token, token_type, expires_in}`;
/// a page that sends `X-Refresh-Cookie` gets the refresh token as a cookie instead.
pub async fn login(
    State(state): State<SharedState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let (_, pair) = log_in(&state, body.username, body.password).await?;
    Ok(answer(&state, refresh_cookie::opted_in(&headers), pair))
}

/// A token pair as JSON; with `cookie`, its refresh token goes into the
/// page's `HttpOnly` cookie and not into the body.
fn answer(state: &SharedState, cookie: bool, mut pair: TokenPair) -> Response {
    let set_cookie = cookie
        .then(|| refresh_cookie::set(&pair.refresh_token, state.tokens.refresh_ttl()))
        .flatten();
    match set_cookie {
        Some(set_cookie) => {
            pair.refresh_token.clear();
            let mut response = Json(pair).into_response();
            refresh_cookie::append(response.headers_mut(), set_cookie);
            response
        }
        None => Json(pair).into_response(),
    }
}

/// Checks a username and password; the user's id and a fresh token pair.
pub async fn log_in(
    state: &SharedState,
    username: String,
    password: String,
) -> Result<(String, TokenPair), ApiError> {
    let bad_credentials = || ApiError::unauthenticated("invalid username or password");
    if validate_username(&username).is_err() || validate_password(&password).is_err() {
        return Err(bad_credentials());
    }
    let request = pb::VerifyPasswordRequest { username, password };
    let request = state.core.unary(request, &state.tokens.service_token()?)?;
    let user_id = match state.core.users().verify_password(request).await {
        Ok(response) => response.into_inner().user_id,
        Err(status) => {
            return Err(match ErrorCode::from_status(&status) {
                ErrorCode::Unauthenticated | ErrorCode::NotFound | ErrorCode::Forbidden => bad_credentials(),
                _ => status.into(),
            });
        }
    };
    let request = pb::IssueRefreshTokenRequest {
        user_id: user_id.clone(),
        ttl_secs: state.tokens.refresh_ttl().as_secs(),
    };
    let request = state.core.unary(request, &state.tokens.service_token()?)?;
    let issued = state
        .core
        .users()
        .issue_refresh_token(request)
        .await?
        .into_inner();
    let pair = state
        .tokens
        .pair(&user_id, issued.refresh_token, &issued.family_id)?;
    Ok((user_id, pair))
}

/// `POST /api/v1/auth/refresh {refresh_token}` → a new token pair. A page
/// that sends `X-Refresh-Cookie` and `{}` spends its refresh cookie
/// and gets a new one (the custom header keeps other sites from making the
/// call: it needs a CORS preflight, and the cookie is `SameSite=Strict`).
///
/// The presented refresh token is spent: using it again is taken as theft
/// and revokes every token descended from the same login.
pub async fn refresh(
    State(state): State<SharedState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, ApiError> {
    let cookie = refresh_cookie::opted_in(&headers);
    let token = presented_token(body, cookie, &headers);
    match rotate(&state, token).await {
        Ok(pair) => Ok(answer(&state, cookie, pair)),
        Err(error) if cookie => {
            // A spent or revoked cookie is of no further use.
            let mut response = error.into_response();
            refresh_cookie::append(response.headers_mut(), refresh_cookie::clear());
            Ok(response)
        }
        Err(error) => Err(error),
    }
}

/// The body's refresh token, else (for a page that asked) its cookie's.
fn presented_token(body: RefreshBody, cookie: bool, headers: &HeaderMap) -> String {
    match body.refresh_token {
        token if token.is_empty() && cookie => refresh_cookie::presented(headers).unwrap_or_default(),
        token => token,
    }
}

/// Spends a refresh token for a new token pair of the same user.
pub async fn rotate(state: &SharedState, refresh_token: String) -> Result<TokenPair, ApiError> {
    if refresh_token.is_empty() {
        return Err(invalid_refresh_token());
    }
    let request = pb::RotateRefreshTokenRequest {
        refresh_token,
        ttl_secs: state.tokens.refresh_ttl().as_secs(),
        family_ttl_secs: state.tokens.refresh_family_ttl().as_secs(),
        access_ttl_secs: state.tokens.access_ttl().as_secs(),
    };
    let request = state.core.unary(request, &state.tokens.service_token()?)?;
    let rotated = match state.core.users().rotate_refresh_token(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Err(match ErrorCode::from_status(&status) {
                ErrorCode::Unauthenticated | ErrorCode::NotFound | ErrorCode::Invalid => {
                    invalid_refresh_token()
                }
                _ => status.into(),
            });
        }
    };
    state
        .tokens
        .pair(&rotated.user_id, rotated.refresh_token, &rotated.family_id)
}

/// `POST /api/v1/auth/logout {refresh_token}` → 204, revoking the refresh
/// token's family (idempotent; without a token there is nothing to revoke).
/// A page that sends `X-Refresh-Cookie` and no body token revokes its
/// refresh cookie's family, and the cookie is cleared.
pub async fn logout(
    State(state): State<SharedState>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<RefreshBody>,
) -> Result<Response, ApiError> {
    let cookie = refresh_cookie::opted_in(&headers);
    revoke(&state, presented_token(body, cookie, &headers)).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if cookie {
        refresh_cookie::append(response.headers_mut(), refresh_cookie::clear());
    }
    Ok(response)
}

/// Revokes a refresh token's family, and with it the access tokens of that
/// sign-in on every gateway and chat-core; nothing to do without a token.
pub async fn revoke(state: &SharedState, refresh_token: String) -> Result<(), ApiError> {
    if !refresh_token.is_empty() {
        let request = pb::RevokeRefreshTokenRequest {
            refresh_token,
            access_ttl_secs: state.tokens.access_ttl().as_secs(),
        };
        let request = state.core.unary(request, &state.tokens.service_token()?)?;
        state.core.users().revoke_refresh_token(request).await?;
    }
    Ok(())
}

fn invalid_refresh_token() -> ApiError {
    ApiError::unauthenticated("refresh token is invalid, expired or revoked")
}

fn validate_username(username: &str) -> Result<(), ApiError> {
    let ok_len = (3..=64).contains(&username.len());
    let ok_chars = username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "username must be 3 to 64 characters of A-Z, a-z, 0-9, `_`, `.` or `-`",
        ))
    }
}

/// Longest password the gateway passes on; chat-core applies the configured
/// rules (PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH) and answers with them.
const MAX_PASSWORD_CHARS: usize = 1024;

fn validate_password(password: &str) -> Result<(), ApiError> {
    if (1..=MAX_PASSWORD_CHARS).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::invalid("password must be 1 to 1024 characters"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_passwords_are_bounded() {
        assert!(validate_username("ada.l-1_x").is_ok());
        assert!(validate_username("ab").is_err());
        assert!(validate_username("has space").is_err());
        assert!(validate_username(&"a".repeat(65)).is_err());
        assert!(
            validate_password("1234567").is_ok(),
            "length rules are chat-core's"
        );
        assert!(validate_password("").is_err());
        assert!(validate_password(&"é".repeat(1024)).is_ok());
        assert!(validate_password(&"x".repeat(1025)).is_err());
    }
}
