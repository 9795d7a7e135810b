//! Verifies the bearer token of every call and attaches its principal.

use std::sync::Arc;

use chat_common::ErrorCode;
use chat_common::token::{Audience, TokenKeys, bearer};
use tonic::service::Interceptor;

use crate::domain::Principal;

/// Rejects calls without a valid token; attaches the [`Principal`] otherwise.
#[derive(Clone)]
pub struct AuthInterceptor {
    keys: Arc<TokenKeys>,
}

impl AuthInterceptor {
    pub fn new(keys: Arc<TokenKeys>) -> Self {
        Self { keys }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| ErrorCode::Unauthenticated.status("missing bearer token"))?;
        let claims = self
            .keys
            .verify(token, Audience::ChatCore)
            .map_err(|_| ErrorCode::Unauthenticated.status("invalid or expired token"))?;
        request.extensions_mut().insert(Principal::from_claims(&claims));
        Ok(request)
    }
}
