//! `POST /auth/login`, `/auth/refresh` and `/auth/logout` in the shape the
//! legacy web client expects from its login service, so it can log in
//! against the gateway. The checks are `/api/v1/auth/*`'s: the same
//! handlers do the work.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::LegacyError;
use crate::app::SharedState;
use crate::auth::TokenPair;
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
