//! `POST /auth/login`, `/auth/refresh` and `/auth/logout` in the shape the
//! legacy web client expects from its login service, so it can log in
//! against the gateway. The checks are `/api/v1/auth/*`'s: the same
//! handlers do the work. Also `POST /auth/validate` (is this token good
//! here) and `GET /auth/status` (what the login service offers).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chat_common::ErrorCode;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::LegacyError;
use super::views::{date_of_secs, now};
use crate::app::SharedState;
use crate::auth::{AuthUser, TokenPair, authenticate};
use crate::extract::{ApiJson, OptionalJson};
use crate::routes::auth::{log_in, revoke, rotate};

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    #[serde(default)]
    refresh_token: String,
}

/// Tokens as the legacy client stores them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tokens {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    /// Seconds the access token is valid.
    expires_in: u64,
}

impl From<TokenPair> for Tokens {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: pair.token_type,
            expires_in: pair.expires_in,
        }
    }
}

/// `POST /auth/login {username, password}` →
/// `{status, data: {user: {userId, id, username}, tokens, roles, permissions}}`
pub async fn login(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<serde_json::Value>, LegacyError> {
    let username = body.username.clone();
    let (user_id, pair) = log_in(&state, body.username, body.password).await?;
    Ok(Json(json!({
        "status": "success",
        "data": {
            "user": {"userId": user_id, "id": user_id, "username": username},
            "tokens": Tokens::from(pair),
            "roles": [],
            "permissions": [],
        },
    })))
}

/// `POST /auth/refresh {refreshToken}` → `{status, data: {tokens}}`; the
/// refresh token is spent, as on `/api/v1/auth/refresh`.
pub async fn refresh(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<serde_json::Value>, LegacyError> {
    let pair = rotate(&state, body.refresh_token).await?;
    Ok(Json(json!({
        "status": "success",
        "data": {"tokens": Tokens::from(pair)},
    })))
}

/// `POST /auth/logout {refreshToken?}` → `{success, message}`, revoking the
/// refresh token's family when one is given.
pub async fn logout(
    State(state): State<SharedState>,
    OptionalJson(body): OptionalJson<RefreshBody>,
) -> Result<Json<serde_json::Value>, LegacyError> {
    revoke(&state, body.refresh_token).await?;
    Ok(Json(json!({"success": true, "message": "Logged out"})))
}

#[derive(Deserialize, Default)]
pub struct ValidateBody {
    #[serde(default)]
    token: String,
}

/// `POST /auth/validate {token}` → `{valid: true, userId, issued, expires,
/// sessionData: null}`, or 401 `{valid: false, error}`. Valid means what
/// every route checks: signature, audience, expiry, and (asked of chat-core)
/// a sign-in that was not signed out.
pub async fn validate(
    State(state): State<SharedState>,
    OptionalJson(body): OptionalJson<ValidateBody>,
) -> Response {
    let invalid = |error: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"valid": false, "error": error, "timestamp": now()})),
        )
            .into_response()
    };
    if body.token.is_empty() {
        return invalid("token is required");
    }
    let Ok(user) = authenticate(&state, &body.token).await else {
        return invalid("token is invalid or expired");
    };
    match state.check_signed_in(&user).await {
        Ok(()) => Json(json!({
            "valid": true,
            "userId": user.user_id,
            "issued": state.tokens.issued_at(&body.token).map(date_of_secs),
            "expires": date_of_secs(user.expires_at),
            "sessionData": null,
            "timestamp": now(),
        }))
        .into_response(),
        Err(error) if error.code == ErrorCode::Unauthenticated => invalid("token is invalid or expired"),
        Err(error) => LegacyError::from(error).into_response(),
    }
}

/// `GET /auth/status` → `{service, status, features, configuration}`: what
/// logging in here offers; the token's lifetime is the only setting told.
pub async fn status(
    State(state): State<SharedState>,
    user: AuthUser,
) -> Result<Json<serde_json::Value>, LegacyError> {
    state.check_signed_in(&user).await?;
    Ok(Json(json!({
        "service": "auth",
        "status": "active",
        "features": {
            "login": true,
            "refresh": true,
            "logout": true,
            "validate": true,
            "tokenMinting": false,
        },
        "configuration": {
            "tokenType": "Bearer",
            "accessTokenExpiresIn": state.tokens.access_ttl().as_secs(),
        },
        "timestamp": now(),
    })))
}
