//! Who may call an agent-worker: chat-core, proving itself with a service
//! token meant for agent-workers (signed with the shared secret), or with a
//! client certificate when the worker requires mutual TLS.

use std::sync::Arc;

use chat_common::ErrorCode;
use chat_common::token::{Audience, Role, Scope, TokenKeys};
use tonic::service::Interceptor;

/// Refuses calls without a service token meant for agent-workers.
#[derive(Clone, Debug)]
pub struct RequireServiceToken {
    /// `None` when the worker trusts its mutual TLS alone (no `JWT_SECRET`).
    keys: Option<Arc<TokenKeys>>,
}

impl RequireServiceToken {
    pub fn new(keys: Option<Arc<TokenKeys>>) -> Self {
        Self { keys }
    }
}

impl Interceptor for RequireServiceToken {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(keys) = &self.keys else {
            return Ok(request);
        };
        let claims = keys.verify_call(&request, Audience::AgentWorker)?;
        if claims.role != Role::Service || !claims.allows(Scope::Run) {
            return Err(ErrorCode::Forbidden.status("agent-workers serve chat-core only"));
        }
        Ok(request)
    }
}
