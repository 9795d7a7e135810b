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

use crate::domain::Principal;
use crate::service::ServiceError;

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
