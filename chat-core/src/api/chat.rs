//! `chat.v1.ChatService`.

use std::pin::Pin;
use std::time::Duration;

use chat_common::token_clock::TokenClock;

use chat_common::ErrorCode;
use chat_proto::chat::v1::{self as pb, chat_service_server::ChatService};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use std::sync::Arc;

use super::UserLimits;
use super::auth::DirectUser;
use super::{RpcResult, answer_session, post, principal, request_id};
use crate::dispatch::RunOrigin;
use crate::domain::SessionStatus;
use crate::domain::{MessageRole, Principal, UserId};
use crate::service::Concurrency;
use crate::service::{ChatCore, ServiceError, Side, StreamGuard, convert};
use crate::store::{NewSession, SessionFilter};

/// What the `recent` filter means: updated within the last day.
const RECENT_MS: i64 = 24 * 60 * 60 * 1000;

use crate::domain::MAX_METADATA_BYTES;
/// Default and largest page of messages.
const DEFAULT_MESSAGE_LIMIT: u32 = 50;
const MAX_MESSAGE_LIMIT: u32 = 1000;

pub(super) type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What ends a stream besides its own end.
pub(super) struct Ends {
    /// chat-core draining: `UNAVAILABLE`, so the caller reconnects to
    /// another replica and resumes.
    pub(super) draining: CancellationToken,
    /// The user's stream, ended with `UNAUTHENTICATED` when their sign-in is
    /// revoked on any replica.
    pub(super) guard: Option<StreamGuard>,
    /// The clock of a user's own token: `UNAUTHENTICATED` after its expiry
    /// and grace.
    pub(super) clock: Option<TokenClock>,
}

/// `stream`, ended early by `ends`: the reason comes as its last item.
pub(super) fn until_ended<T, S>(stream: S, ends: Ends) -> EventStream<T>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    let Ends {
        draining,
        guard,
        clock,
    } = ends;
    let draining = ending(
        draining.cancelled_owned(),
        ErrorCode::Unavailable,
        "chat-core restarting; reconnect and resume",
    );
    let revoked = guard.as_ref().map(|guard| {
        ending(
            guard.revoked(),
            ErrorCode::Unauthenticated,
            "signed out; sign in again",
        )
    });
    let expired =
        clock.map(|clock| ending(clock.closed(), ErrorCode::Unauthenticated, "access token expired"));
    Box::pin(UntilEnded {
        stream,
        ends: [Some(draining), revoked, expired],
        _guard: guard,
        over: false,
    })
}

/// One way a stream ends early: what it waits for, and the status it ends
/// with. Only the future waited for is boxed (a future wrapping it to make
/// the status would hold its own copy of it, twice the size in every idle
/// stream).
struct Ending {
    done: Pin<Box<dyn Future<Output = ()> + Send>>,
    code: ErrorCode,
    message: &'static str,
}

/// Ends a stream with `code` and `message` once `done` completes.
fn ending(done: impl Future<Output = ()> + Send + 'static, code: ErrorCode, message: &'static str) -> Ending {
    Ending {
        done: Box::pin(done),
        code,
        message,
    }
}

/// A stream and what ends it early. Each end is a future of its own, boxed
/// only when it applies (a multiplexed connection has no token clock), so an
/// idle stream holds a few hundred bytes rather than one state machine sized
/// for every end at once: every idle connection holds one.
struct UntilEnded<S> {
    stream: S,
    ends: [Option<Ending>; 3],
    /// Counts the stream against its user's cap while it lives.
    _guard: Option<StreamGuard>,
    over: bool,
}

impl<T, S> Stream for UntilEnded<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.over {
            return Poll::Ready(None);
        }
        for end in self.ends.iter_mut().flatten() {
            if end.done.as_mut().poll(cx).is_ready() {
                let status = end.code.status(end.message);
                self.over = true;
                return Poll::Ready(Some(Err(status)));
            }
        }
        let item = self.stream.poll_next_unpin(cx);
        if let Poll::Ready(None) = item {
            self.over = true;
        }
        item
    }
}

/// How streams of end users are bounded.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// How long a stream opened with a user's own token outlives the token.
    pub token_grace: Duration,
    /// Streams a user with their own token may hold on this replica; 0 for no cap.
    pub max_streams_per_user: usize,
}

/// The gRPC face of [`ChatCore`].
pub struct ChatApi {
    core: ChatCore,
    /// Cancelled when chat-core starts draining: every stream ends.
    draining: CancellationToken,
    limits: StreamLimits,
    /// The message limit of users calling with their own tokens.
    user_limits: Arc<UserLimits>,
}

impl ChatApi {
    pub fn new(
        core: ChatCore,
        draining: CancellationToken,
        limits: StreamLimits,
        user_limits: Arc<UserLimits>,
    ) -> Self {
        Self {
            core,
            draining,
            limits,
            user_limits,
        }
    }

    /// The message limit of this call's caller, when it is a user with their own token.
    fn message_limit<T>(&self, request: &Request<T>) -> Option<Arc<UserLimits>> {
        request
            .extensions()
            .get::<DirectUser>()
            .map(|_| self.user_limits.clone())
    }

    /// What ends a stream of this call's caller; over a direct user's
    /// stream cap, `RESOURCE_EXHAUSTED`.
    fn ends<T>(&self, request: &Request<T>, principal: &Principal) -> Result<Ends, Status> {
        let direct = request.extensions().get::<DirectUser>().copied();
        let guard = match principal {
            Principal::User(user_id) => {
                let max = if direct.is_some() {
                    self.limits.max_streams_per_user
                } else {
                    // The gateway counts the streams of the users it serves.
                    0
                };
                let guard = self.core.streams().open(user_id, max).ok_or_else(|| {
                    ErrorCode::RateLimited.status(format!("at most {max} open streams per user"))
                })?;
                Some(guard)
            }
            Principal::Service(_) => None,
        };
        Ok(Ends {
            draining: self.draining.clone(),
            guard,
            clock: direct.map(|d| TokenClock::new(d.expires_at, self.limits.token_grace)),
        })
    }
}

fn parse_role(principal: &Principal, role: &str) -> Result<MessageRole, ServiceError> {
    let parsed = if role.is_empty() {
        Some(MessageRole::User)
    } else {
        MessageRole::parse(role)
    };
    match parsed {
        Some(MessageRole::User) => Ok(MessageRole::User),
        _ if !principal.is_service() => Err(ServiceError::Forbidden),
        Some(role) if role.can_be_posted_by_a_service() => Ok(role),
        _ => Err(ServiceError::Invalid(format!("role `{role}` cannot be posted"))),
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn create_session(&self, request: Request<pb::CreateSessionRequest>) -> RpcResult<pb::Session> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let owner_id = match &principal {
            Principal::User(id) => id.clone(),
            Principal::Service(_) if !req.owner_id.is_empty() => UserId::parse(&req.owner_id)?,
            Principal::Service(_) => return Err(ServiceError::Invalid("owner_id is required".into()).into()),
        };
        let agent = if req.agent.is_empty() {
            self.core.default_agent.clone()
        } else {
            req.agent.clone()
        };
        self.core.check_agent(&agent).await?;
        let metadata = if req.metadata_json.is_empty() {
            "{}".to_owned()
        } else {
            req.metadata_json
        };
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(ServiceError::TooLarge("metadata is too large".into()).into());
        }
        if !serde_json::from_str::<serde_json::Value>(&metadata).is_ok_and(|v| v.is_object()) {
            return Err(ServiceError::Invalid("metadata must be a JSON object".into()).into());
        }
        if req.title.chars().count() > 200 {
            return Err(ServiceError::Invalid("title must be at most 200 characters".into()).into());
        }
        if chat_common::limits::has_nul(&req.title) || chat_common::limits::has_nul(&metadata) {
            return Err(
                ServiceError::Invalid("title and metadata must not contain NUL characters".into()).into(),
            );
        }
        let concurrency = match req.concurrency.as_str() {
            "" => None,
            other => Some(Concurrency::parse(other).ok_or_else(|| {
                ServiceError::Invalid("concurrency must be enqueue, reject or interrupt".into())
            })?),
        };
        let session = self
            .core
            .create_session(NewSession {
                owner_id,
                title: req.title,
                agent,
                metadata,
                concurrency,
            })
            .await?;
        Ok(Response::new(self.core.session_view(&session)))
    }

    async fn get_session(&self, request: Request<pb::GetSessionRequest>) -> RpcResult<pb::Session> {
        answer_session(&self.core, request, async |principal, req| {
            self.core.readable_session(principal, &req.session_id).await
        })
        .await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> RpcResult<pb::ListSessionsResponse> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let filter = match req.status.as_str() {
            "" => SessionFilter::All,
            "unresolved" => SessionFilter::Unresolved,
            "recent" => SessionFilter::UpdatedSince(crate::domain::now_ms() - RECENT_MS),
            other => SessionFilter::Status(SessionStatus::parse(other).ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "unknown status filter `{other}` (active, pending_human, resolved, expired, ended, unresolved, recent)"
                ))
            })?),
        };
        let limit = u64::from(if req.limit == 0 { 50 } else { req.limit.min(200) });
        let cursor = (!req.cursor.is_empty()).then_some(req.cursor);
        let page = self.core.list_sessions(&principal, filter, limit, cursor).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page.sessions.iter().map(|s| self.core.session_view(s)).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn resolve_session(&self, request: Request<pb::ResolveSessionRequest>) -> RpcResult<pb::Session> {
        super::resolve(&self.core, request, Side::Owner).await
    }

    async fn end_session(&self, request: Request<pb::EndSessionRequest>) -> RpcResult<pb::Session> {
        answer_session(&self.core, request, async |principal, req| {
            self.core.end_session(principal, &req.session_id).await
        })
        .await
    }

    async fn hand_back(&self, request: Request<pb::HandBackRequest>) -> RpcResult<pb::Session> {
        super::hand_back(&self.core, request, Side::Owner).await
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> RpcResult<pb::DeleteSessionResponse> {
        let principal = principal(&request)?;
        self.core
            .delete_session(&principal, &request.get_ref().session_id)
            .await?;
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> RpcResult<pb::ListMessagesResponse> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            DEFAULT_MESSAGE_LIMIT
        } else {
            req.limit.min(MAX_MESSAGE_LIMIT)
        };
        let messages = self
            .core
            .list_messages(
                &principal,
                &req.session_id,
                req.after_seq,
                req.before_seq,
                u64::from(limit),
            )
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: messages.iter().map(convert::message).collect(),
        }))
    }

    type SendMessageStream = EventStream<pb::SendMessageEvent>;

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> RpcResult<Self::SendMessageStream> {
        let principal = principal(&request)?;
        if let (Some(limits), Principal::User(user_id)) = (self.message_limit(&request), &principal) {
            limits.check_message(user_id)?;
        }
        let ends = self.ends(&request, &principal)?;
        let origin = RunOrigin::current(request_id(&request));
        let req = request.into_inner();
        let role = parse_role(&principal, &req.role)?;
        let (sent, events) = self
            .core
            .send_and_follow(
                &principal,
                &req.session_id,
                &req.client_msg_id,
                post(req.content, req.metadata_json),
                role,
                origin,
            )
            .await?;
        let ack = pb::SendMessageEvent {
            event: Some(pb::send_message_event::Event::Ack(sent.ack)),
        };
        let stream = futures::stream::once(async { Ok(ack) }).chain(events.map(|item| {
            item.map(|ev| pb::SendMessageEvent {
                event: Some(pb::send_message_event::Event::SessionEvent(ev)),
            })
            .map_err(Status::from)
        }));
        Ok(Response::new(until_ended(Box::pin(stream), ends)))
    }

    type SubscribeStream = EventStream<pb::SessionEvent>;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> RpcResult<Self::SubscribeStream> {
        let principal = principal(&request)?;
        let ends = self.ends(&request, &principal)?;
        let req = request.into_inner();
        let subscription = self
            .core
            .subscribe(&principal, &req.session_id, req.after_seq)
            .await?;
        Ok(Response::new(until_ended(
            subscription.events.map(|item| item.map_err(Status::from)),
            ends,
        )))
    }

    async fn cancel_run(&self, request: Request<pb::CancelRunRequest>) -> RpcResult<pb::CancelRunResponse> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        self.core.cancel(&principal, &req.session_id, &req.run_id).await?;
        Ok(Response::new(pb::CancelRunResponse {}))
    }

    type ConnectStream = EventStream<pb::ServerFrame>;

    async fn connect(&self, request: Request<Streaming<pb::ClientFrame>>) -> RpcResult<Self::ConnectStream> {
        let principal = principal(&request)?;
        let ends = self.ends(&request, &principal)?;
        let request_id = request_id(&request);
        let message_limit = self.message_limit(&request);
        let frames = request.into_inner();
        Ok(Response::new(until_ended(
            super::connect::serve(self.core.clone(), principal, request_id, message_limit, frames),
            ends,
        )))
    }

    type MultiplexStream = EventStream<pb::MuxServerFrame>;

    async fn multiplex(
        &self,
        request: Request<Streaming<pb::MuxClientFrame>>,
    ) -> RpcResult<Self::MultiplexStream> {
        if !principal(&request)?.is_service() {
            return Err(ServiceError::Forbidden.into());
        }
        let core = self.core.clone();
        let draining = self.draining.clone();
        // The gateway counts and caps its users' connections itself; each
        // one still ends on its user's revocation and on draining.
        let ends = move |user: &UserId| Ends {
            draining: draining.clone(),
            guard: core.streams().open(user.as_str(), 0),
            clock: None,
        };
        Ok(Response::new(super::mux::serve(
            self.core.clone(),
            request.into_inner(),
            self.draining.clone(),
            ends,
        )))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> RpcResult<pb::ListAgentsResponse> {
        let agents = self.core.list_agents().await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.into_iter().map(convert::agent).collect(),
        }))
    }

    async fn rename_session(&self, request: Request<pb::RenameSessionRequest>) -> RpcResult<pb::Session> {
        answer_session(&self.core, request, async |principal, req| {
            self.core.rename(principal, &req.session_id, &req.title).await
        })
        .await
    }
}
