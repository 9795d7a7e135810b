//! `chat.v1.OperatorService`: the people who answer sessions handed to a person.

use chat_proto::chat::v1::{self as pb, operator_service_server::OperatorService};
use tonic::{Request, Response, Status};

use super::{principal, request_id};
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
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
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
    ) -> Result<Response<pb::ListWaitingResponse>, Status> {
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

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> Result<Response<pb::Session>, Status> {
        let principal = principal(&request)?;
        let session = self.core.claim(&principal, &request.get_ref().session_id).await?;
        Ok(Response::new(self.core.session_view(&session)))
    }

    async fn reply(&self, request: Request<pb::ReplyRequest>) -> Result<Response<pb::Message>, Status> {
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

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        self.core
            .set_typing(&principal, &req.session_id, req.typing, req.origin)
            .await?;
        Ok(Response::new(pb::SetTypingResponse {}))
    }

    async fn hand_back(
        &self,
        request: Request<pb::HandBackRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        super::hand_back(&self.core, request, Side::Operator).await
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        super::resolve(&self.core, request, Side::Operator).await
    }
}
