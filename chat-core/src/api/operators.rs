//! `chat.v1.OperatorService`: the people who answer sessions handed to a person.

use chat_proto::chat::v1::{self as pb, operator_service_server::OperatorService};
use tonic::{Request, Response, Status};

use super::{RpcResult, answer_session, principal, request_id};
use crate::dispatch::RunOrigin;
use crate::service::{ChatCore, ServiceError, Side};

/// Default and largest page of waiting sessions.
const DEFAULT_WAITING_LIMIT: u32 = 50;
const MAX_WAITING_LIMIT: u32 = 200;

/// The gRPC face of the operator operations of [`ChatCore`].
pub struct OperatorApi {
    core: ChatCore,
}

impl OperatorApi {
    pub fn new(core: ChatCore) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> RpcResult<pb::WhoAmIResponse> {
        let principal = principal(&request)?;
        let user = self
            .core
            .caller(&principal)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        Ok(Response::new(pb::WhoAmIResponse {
            user_id: user.id.to_string(),
            username: user.username,
            operator: user.operator,
        }))
    }

    async fn list_waiting(
        &self,
        request: Request<pb::ListWaitingRequest>,
    ) -> RpcResult<pb::ListWaitingResponse> {
        let principal = principal(&request)?;
        let limit = match request.get_ref().limit {
            0 => DEFAULT_WAITING_LIMIT,
            n => n.min(MAX_WAITING_LIMIT),
        };
        let waiting = self.core.list_waiting(&principal, u64::from(limit)).await?;
        Ok(Response::new(pb::ListWaitingResponse {
            sessions: waiting
                .iter()
                .map(|(session, owner)| pb::WaitingSession {
                    session: Some(self.core.session_view(session)),
                    owner: owner.clone(),
                })
                .collect(),
        }))
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> RpcResult<pb::Session> {
        answer_session(&self.core, request, async |principal, req| {
            self.core.claim(principal, &req.session_id).await
        })
        .await
    }

    async fn reply(&self, request: Request<pb::ReplyRequest>) -> RpcResult<pb::Message> {
        let principal = principal(&request)?;
        let origin = RunOrigin::current(request_id(&request));
        let req = request.into_inner();
        let sent = self
            .core
            .operator_reply(&principal, &req.session_id, &req.client_msg_id, req.content)
            .await?;
        self.core.announce(&sent, origin).await;
        let message = sent
            .ack
            .message
            .ok_or_else(|| Status::internal("a stored message has no body"))?;
        Ok(Response::new(*message))
    }

    async fn set_typing(&self, request: Request<pb::SetTypingRequest>) -> RpcResult<pb::SetTypingResponse> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        self.core
            .set_typing(&principal, &req.session_id, req.typing, req.origin)
            .await?;
        Ok(Response::new(pb::SetTypingResponse {}))
    }

    async fn hand_back(&self, request: Request<pb::HandBackRequest>) -> RpcResult<pb::Session> {
        super::hand_back(&self.core, request, Side::Operator).await
    }

    async fn resolve(&self, request: Request<pb::ResolveSessionRequest>) -> RpcResult<pb::Session> {
        super::resolve(&self.core, request, Side::Operator).await
    }
}
