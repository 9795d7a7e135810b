//! `chat.v1.UserService`: accounts, for the gateway's register and login.

use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use chat_proto::chat::v1::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};

use super::principal;
use crate::service::ServiceError;
use crate::store::ChatStore;

/// A hash checked when the user does not exist, so both paths cost the same.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash("not-a-real-password").unwrap_or_default());

fn hash(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(e.to_string().into()))
}

fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn validate_username(username: &str) -> Result<(), ServiceError> {
    let ok = (3..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "username must be 3 to 64 characters of letters, digits, _ . -".into(),
        ))
    }
}

fn validate_password(password: &str) -> Result<(), ServiceError> {
    if (8..=256).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "password must be 8 to 256 characters".into(),
        ))
    }
}

/// Account operations, callable with a service token only.
pub struct UserApi {
    store: Arc<dyn ChatStore>,
}

impl UserApi {
    pub fn new(store: Arc<dyn ChatStore>) -> Self {
        Self { store }
    }
}

fn require_service<T>(request: &Request<T>) -> Result<(), Status> {
    if principal(request)?.is_service() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden.into())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::from(ServiceError::Internal(e.to_string().into())))
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        require_service(&request)?;
        let pb::RegisterRequest { username, password } = request.into_inner();
        validate_username(&username)?;
        validate_password(&password)?;
        let password_hash = blocking(move || hash(&password)).await??;
        let user = self
            .store
            .create_user(&username, &password_hash)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::RegisterResponse { user_id: user.id }))
    }

    async fn verify_password(
        &self,
        request: Request<pb::VerifyPasswordRequest>,
    ) -> Result<Response<pb::VerifyPasswordResponse>, Status> {
        require_service(&request)?;
        let pb::VerifyPasswordRequest { username, password } = request.into_inner();
        let user = self
            .store
            .find_user(&username)
            .await
            .map_err(ServiceError::from)?;
        let stored = user
            .as_ref()
            .map_or_else(|| DUMMY_HASH.clone(), |u| u.password_hash.clone());
        let matches = blocking(move || verify(&password, &stored)).await?;
        match user {
            Some(user) if matches => Ok(Response::new(pb::VerifyPasswordResponse { user_id: user.id })),
            _ => Err(chat_common::ErrorCode::Unauthenticated.status("invalid username or password")),
        }
    }
}
