//! Verifies the bearer token of every call and attaches its principal.
//!
//! Callers are services with service tokens (the gateway among them, acting
//! for the user it verified, named in `x-on-behalf-of`), and end users with
//! their own access tokens only where chat-core accepts them
//! (`--accept-user-tokens`).

use std::sync::Arc;

use chat_common::ErrorCode;
use chat_common::token::{Audience, ON_BEHALF_OF_METADATA, Role, SIGN_IN_METADATA, Scope, TokenKeys};
use tonic::service::Interceptor;

use super::UserLimits;
use crate::domain::{Principal, UserId};
use crate::service::UserStreams;

/// A caller that is an end user with their own token: chat-core ends their
/// streams when it expires and holds them to the per-user limits.
#[derive(Clone, Copy, Debug)]
pub struct DirectUser {
    /// When the token expires, in Unix seconds.
    pub expires_at: u64,
}

/// Rejects calls without a valid token; attaches the [`Principal`] otherwise.
#[derive(Clone)]
pub struct AuthInterceptor {
    keys: Arc<TokenKeys>,
    accept_user_tokens: bool,
    /// What a scoped service token must allow to call the guarded service.
    scope: Scope,
    /// The limits of users calling with their own tokens.
    user_limits: Option<Arc<UserLimits>>,
    /// Where signed-out sign-ins are kept: their access tokens are refused.
    sign_outs: UserStreams,
}

impl AuthInterceptor {
    /// Guards `chat.v1.ChatService`.
    pub fn new(keys: Arc<TokenKeys>, accept_user_tokens: bool) -> Self {
        Self {
            keys,
            accept_user_tokens,
            scope: Scope::Chat,
            user_limits: None,
            sign_outs: UserStreams::default(),
        }
    }

    /// Refuses the access tokens of the sign-ins signed out in `streams`
    /// (named in the token's `sid`, or by the gateway in `x-sign-in`).
    pub fn with_sign_outs(mut self, streams: UserStreams) -> Self {
        self.sign_outs = streams;
        self
    }

    /// Counts each call of a user with their own token against `limits`.
    pub fn with_user_limits(mut self, limits: Arc<UserLimits>) -> Self {
        self.user_limits = Some(limits);
        self
    }

    /// The same check for another service, which scoped tokens must name.
    pub fn for_scope(&self, scope: Scope) -> Self {
        Self {
            scope,
            ..self.clone()
        }
    }

    /// Guards a service for internal callers only (reflection): service tokens allowing `scope`.
    pub fn services_only(&self, scope: Scope) -> Self {
        Self {
            scope,
            accept_user_tokens: false,
            keys: self.keys.clone(),
            user_limits: None,
            sign_outs: self.sign_outs.clone(),
        }
    }
}

impl AuthInterceptor {
    /// Refuses the calls of a signed-out sign-in.
    fn check_signed_in(&self, sign_in: Option<&str>) -> Result<(), tonic::Status> {
        match sign_in {
            Some(sign_in) if self.sign_outs.is_signed_out(sign_in) => {
                Err(ErrorCode::Unauthenticated.status("signed out; sign in again"))
            }
            _ => Ok(()),
        }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let claims = self.keys.verify_call(&request, Audience::ChatCore)?;
        if claims.role == Role::Service && !claims.allows(self.scope) {
            return Err(ErrorCode::Forbidden.status(format!(
                "the service token's scope does not include `{}`",
                self.scope.as_str()
            )));
        }
        let on_behalf_of = request.metadata().get(ON_BEHALF_OF_METADATA);
        let principal = match claims.role {
            Role::User if !self.accept_user_tokens => {
                return Err(ErrorCode::Unauthenticated.status(
                    "chat-core does not accept user tokens; call through the gateway or use a service token",
                ));
            }
            Role::User if on_behalf_of.is_some() => {
                return Err(ErrorCode::Forbidden.status("only services may act on behalf of a user"));
            }
            Role::User => {
                self.check_signed_in(claims.sid.as_deref())?;
                if let Some(limits) = &self.user_limits {
                    limits.check_request(&claims.sub)?;
                }
                request.extensions_mut().insert(DirectUser {
                    expires_at: claims.exp,
                });
                Principal::from_claims(&claims)
            }
            Role::Service => match on_behalf_of {
                // A service may act on any session, so acting as one user
                // narrows what it may do.
                Some(user) => {
                    let user = user
                        .to_str()
                        .ok()
                        .and_then(|user| UserId::parse(user).ok())
                        .ok_or_else(|| {
                            ErrorCode::Invalid.status(format!("{ON_BEHALF_OF_METADATA} is not a user id"))
                        })?;
                    let sign_in = request
                        .metadata()
                        .get(SIGN_IN_METADATA)
                        .and_then(|v| v.to_str().ok());
                    self.check_signed_in(sign_in)?;
                    Principal::User(user)
                }
                None => Principal::from_claims(&claims),
            },
        };
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}
