//! `chat.v1.UserService`: accounts and refresh tokens, for the gateway's
//! register, login, refresh and logout. Callable with a service token only;
//! the work is done by [`Accounts`].

use chat_proto::chat::v1::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};

use super::{RpcResult, principal};
use crate::service::{Accounts, ServiceError};

fn invalid_refresh_token() -> Status {
    chat_common::ErrorCode::Unauthenticated.status("refresh token is invalid, expired or revoked")
}

/// The gRPC face of [`Accounts`].
pub struct UserApi {
    accounts: Accounts,
}

impl UserApi {
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }
}

/// The message of a request a service sent; `PERMISSION_DENIED` for anyone else.
fn from_service<T>(request: Request<T>) -> Result<T, Status> {
    if principal(&request)?.is_service() {
        Ok(request.into_inner())
    } else {
        Err(ServiceError::Forbidden.into())
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> RpcResult<pb::RegisterResponse> {
        let pb::RegisterRequest { username, password } = from_service(request)?;
        let user_id = self.accounts.register(&username, password).await?;
        Ok(Response::new(pb::RegisterResponse {
            user_id: user_id.into_string(),
        }))
    }

    async fn verify_password(
        &self,
        request: Request<pb::VerifyPasswordRequest>,
    ) -> RpcResult<pb::VerifyPasswordResponse> {
        let pb::VerifyPasswordRequest { username, password } = from_service(request)?;
        match self.accounts.verify_password(&username, password).await? {
            Some(user_id) => Ok(Response::new(pb::VerifyPasswordResponse {
                user_id: user_id.into_string(),
            })),
            None => Err(chat_common::ErrorCode::Unauthenticated.status("invalid username or password")),
        }
    }

    async fn issue_refresh_token(
        &self,
        request: Request<pb::IssueRefreshTokenRequest>,
    ) -> RpcResult<pb::IssueRefreshTokenResponse> {
        let pb::IssueRefreshTokenRequest { user_id, ttl_secs } = from_service(request)?;
        let issued = self.accounts.issue_refresh_token(&user_id, ttl_secs).await?;
        Ok(Response::new(pb::IssueRefreshTokenResponse {
            refresh_token: issued.token,
            expires_at_ms: issued.expires_at,
            family_id: issued.family_id,
        }))
    }

    async fn rotate_refresh_token(
        &self,
        request: Request<pb::RotateRefreshTokenRequest>,
    ) -> RpcResult<pb::RotateRefreshTokenResponse> {
        let pb::RotateRefreshTokenRequest {
            refresh_token,
            ttl_secs,
            family_ttl_secs,
            access_ttl_secs,
        } = from_service(request)?;
        match self
            .accounts
            .rotate_refresh_token(&refresh_token, ttl_secs, family_ttl_secs, access_ttl_secs)
            .await?
        {
            Some(issued) => Ok(Response::new(pb::RotateRefreshTokenResponse {
                user_id: issued.user_id.into_string(),
                refresh_token: issued.token,
                expires_at_ms: issued.expires_at,
                family_id: issued.family_id,
            })),
            None => Err(invalid_refresh_token()),
        }
    }

    async fn revoke_refresh_token(
        &self,
        request: Request<pb::RevokeRefreshTokenRequest>,
    ) -> RpcResult<pb::RevokeRefreshTokenResponse> {
        let pb::RevokeRefreshTokenRequest {
            refresh_token,
            access_ttl_secs,
        } = from_service(request)?;
        self.accounts
            .revoke_refresh_token(&refresh_token, access_ttl_secs)
            .await?;
        Ok(Response::new(pb::RevokeRefreshTokenResponse {}))
    }

    async fn ensure_external_user(
        &self,
        request: Request<pb::EnsureExternalUserRequest>,
    ) -> RpcResult<pb::EnsureExternalUserResponse> {
        let pb::EnsureExternalUserRequest { issuer, subject } = from_service(request)?;
        let (user_id, created) = self.accounts.ensure_external_user(&issuer, &subject).await?;
        Ok(Response::new(pb::EnsureExternalUserResponse {
            user_id: user_id.into_string(),
            created,
        }))
    }
}
