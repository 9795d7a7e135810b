//! gRPC handlers: `chat.v1.ChatService`, `chat.v1.OperatorService` and `chat.v1.UserService`. Each
//! handler reads the verified [`Principal`](crate::domain::Principal),
//! checks the shape of its input, and calls the service layer
//! ([`ChatCore`](crate::service::ChatCore), [`Accounts`](crate::service::Accounts));
//! none reaches the store or the dispatcher itself.

mod auth;
mod chat;
mod connect;
mod mux;
mod operators;
mod user_limits;
mod users;

pub use crate::service::{PasswordPolicy, Passwords};
pub use auth::{AuthInterceptor, DirectUser};
pub use chat::{ChatApi, StreamLimits};
pub use operators::OperatorApi;
pub use user_limits::UserLimits;
pub use users::UserApi;

use chat_proto::chat::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{Principal, Session};
use crate::service::{ChatCore, ServiceError, Side};

/// The request id of the client request behind a call (`x-request-id`).
fn request_id<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<chat_common::trace::RequestId>()
        .map(|id| id.0.clone())
}

/// A message as sent over gRPC: its content, and metadata unless empty.
fn post(content: String, metadata_json: String) -> crate::domain::Post {
    crate::domain::Post {
        content,
        metadata: Some(metadata_json).filter(|m| !m.is_empty()),
    }
}

/// The principal the interceptor attached to the request.
fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ServiceError::Unauthenticated.into())
}

/// What a gRPC handler returns: its response, or the status it fails with.
type RpcResult<T> = Result<Response<T>, Status>;

/// Calls `call` with the request's principal and message, and answers with
/// the session it returns, as [`ChatCore::session_view`] shows it.
async fn answer_session<T>(
    core: &ChatCore,
    request: Request<T>,
    call: impl AsyncFnOnce(&Principal, T) -> Result<Session, ServiceError>,
) -> RpcResult<pb::Session> {
    let principal = principal(&request)?;
    let session = call(&principal, request.into_inner()).await?;
    Ok(Response::new(core.session_view(&session)))
}

// === handlers of both ChatService and OperatorService ===

/// `HandBack`, as the session's owner (or a service) or as the operator holding it.
async fn hand_back(
    core: &ChatCore,
    request: Request<pb::HandBackRequest>,
    side: Side,
) -> RpcResult<pb::Session> {
    answer_session(core, request, async |principal, req| {
        core.hand_back(principal, &req.session_id, &req.agent, side).await
    })
    .await
}

/// `ResolveSession` (`Resolve` for operators), with optional notes.
async fn resolve(
    core: &ChatCore,
    request: Request<pb::ResolveSessionRequest>,
    side: Side,
) -> RpcResult<pb::Session> {
    answer_session(core, request, async |principal, req| {
        let notes = (!req.notes.is_empty()).then_some(req.notes);
        core.resolve_session(principal, &req.session_id, notes, side)
            .await
    })
    .await
}
