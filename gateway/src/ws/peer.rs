//! The user behind a socket: their message rate limit, and the lifetime of
//! the access token the socket runs on (renewed in-band by `auth` frames).

use std::sync::Arc;
use std::time::Duration;

use chat_common::ErrorCode;
pub use chat_common::token_clock::{Expiry, TokenClock};
use chat_proto::chat::v1 as pb;

use crate::app::SharedState;
use crate::auth::{self, Tokens};
use crate::frames::{AccessToken, ErrorView, Inbound, OutFrame};
use crate::ratelimit::{RateLimits, Tier};

/// Error code of the warning sent when a socket's token expires.
pub const TOKEN_EXPIRED: &str = "token_expired";

/// The user behind a socket and what their frames are held to.
#[derive(Debug)]
pub struct Peer {
    pub user_id: String,
    pub max_content_bytes: usize,
    pub rate_limits: RateLimits,
    pub tokens: Arc<Tokens>,
    /// The gateway's state, so in-band tokens may also come from an external
    /// identity provider (see `auth::authenticate`); without it only the
    /// gateway's own access tokens are taken.
    pub state: Option<SharedState>,
    /// When the token the socket was opened with expires, in Unix seconds.
    pub expires_at: u64,
    /// How long after expiry the socket waits for a fresh token before closing.
    pub token_grace: Duration,
    /// How long a write may wait on the client before it counts as a slow consumer.
    pub flush_timeout: Duration,
    /// How long the socket may stay open before it is closed with 1001, if limited
    /// (see [`Peer::age_limit`]).
    pub max_age: Option<Duration>,
    /// How the turns sent on the socket are traced.
    pub traces: TurnTraces,
}

/// How each turn (`send` frame) on a socket is traced, while traces are
/// exported: every turn gets a span whose context travels to chat-core in
/// the frame (a `Connect` stream carries many turns, so its metadata
/// cannot). When the client sent a `traceparent` with the upgrade, its
/// turns join that trace; otherwise each turn starts a trace of its own,
/// linked to the upgrade request's span.
#[derive(Clone, Debug, Default)]
pub struct TurnTraces {
    /// The span of the upgrade request.
    upgrade: chat_common::trace::Parent,
    /// The client asked for its trace to be continued.
    continue_upgrade: bool,
    /// The upgrade request's id.
    request_id: Option<Box<str>>,
}

impl TurnTraces {
    /// For a socket upgraded from a request with `headers`, from within that
    /// request's span.
    pub fn of_upgrade(headers: &http::HeaderMap) -> Self {
        if !chat_common::trace::enabled() {
            return Self::default();
        }
        Self {
            upgrade: chat_common::trace::Parent::current(),
            continue_upgrade: headers.contains_key("traceparent"),
            request_id: headers
                .get(chat_common::trace::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(Box::from),
        }
    }

    /// Opens the span of a `send` frame and writes its context into the frame.
    pub(super) fn trace_turn(&self, frame: &mut pb::ClientFrame, user_id: &str) {
        let Some(pb::client_frame::Frame::Send(send)) = &mut frame.frame else {
            return;
        };
        if !chat_common::trace::enabled() {
            return;
        }
        let span = tracing::info_span!(
            parent: None,
            "turn",
            otel.name = "websocket send",
            otel.kind = "server",
            session_id = %send.session_id,
            client_msg_id = %send.client_msg_id,
            user_id,
            request_id = self.request_id.as_deref().unwrap_or_default(),
        );
        if self.continue_upgrade {
            self.upgrade.adopt(&span);
        } else {
            self.upgrade.link(&span);
        }
        send.trace_context = span.in_scope(chat_common::trace::context_map);
    }
}

impl Peer {
    /// Counts a client frame of any type in the frames tier, and a `send`
    /// then in the messages tier, in one round trip; the error frame to
    /// answer when over a limit (the frame is then dropped).
    pub(super) async fn check_frame(&self, inbound: &Inbound) -> Option<OutFrame> {
        match inbound {
            Inbound::Forward(pb::ClientFrame {
                frame: Some(pb::client_frame::Frame::Send(send)),
            }) => {
                self.check_rates(&[Tier::Frames, Tier::Messages], Some(send))
                    .await
            }
            _ => self.check_rates(&[Tier::Frames], None).await,
        }
    }

    /// Counts a `send` frame in the messages tier; the error frame to answer when over the limit.
    pub(crate) async fn check_send(&self, frame: &pb::ClientFrame) -> Option<OutFrame> {
        let Some(pb::client_frame::Frame::Send(send)) = &frame.frame else {
            return None;
        };
        self.check_rates(&[Tier::Messages], Some(send)).await
    }

    /// Counts a frame in `tiers` in turn; when over a limit (or a limit
    /// cannot be checked), the error frame to answer, naming the `send` it refuses.
    async fn check_rates(&self, tiers: &[Tier], send: Option<&pb::SendFrame>) -> Option<OutFrame> {
        let (tier, refusal) = self.rate_limits.check_in_turn(tiers, &self.user_id).await.err()?;
        let client_msg_id = send.map(|send| send.client_msg_id.clone());
        let session_id = send.map(|send| send.session_id.clone());
        let decision = match refusal {
            Ok(decision) => decision,
            Err(down) => {
                let error = down.into_error();
                return Some(OutFrame::Error(ErrorView {
                    code: error.code.as_str().to_owned(),
                    message: error.message.into_owned(),
                    client_msg_id,
                    session_id,
                    retry_after_ms: error.retry_after_ms,
                }));
            }
        };
        let retry_after_ms = decision.retry_after_ms();
        Some(OutFrame::Error(ErrorView {
            code: ErrorCode::RateLimited.as_str().to_owned(),
            message: format!("too many {}, retry in {retry_after_ms} ms", tier.as_str()),
            client_msg_id,
            session_id,
            retry_after_ms: Some(retry_after_ms),
        }))
    }

    /// Takes a fresh access token for the same user and moves the clock; the
    /// answer frame. A valid token of another user is a policy violation:
    /// the socket serves the user it was opened for and must be closed.
    pub(super) async fn reauthenticate(
        &self,
        token: &AccessToken,
        clock: &mut TokenClock,
    ) -> Result<OutFrame, Refused> {
        match self.verify_renewal(&token.0).await {
            Ok(user) => {
                clock.renew(user.expires_at);
                Ok(OutFrame::Authenticated {
                    expires_at: user.expires_at,
                })
            }
            Err(Refused::OtherUser) => Err(Refused::OtherUser),
            Err(refused) => Ok(OutFrame::error(ErrorCode::Unauthenticated, refused.message())),
        }
    }

    /// Checks a fresh access token sent on the socket: valid, the same
    /// user's, and (asked of chat-core) of a sign-in that was not signed out.
    pub(crate) async fn verify_renewal(&self, token: &str) -> Result<auth::AuthUser, Refused> {
        let verified = match &self.state {
            Some(state) => auth::authenticate(state, token).await,
            None => self.tokens.verify_access(token),
        };
        let user = match verified {
            Ok(user) if user.user_id == self.user_id => user,
            Ok(_) => return Err(Refused::OtherUser),
            Err(_) => return Err(Refused::Invalid),
        };
        if let Some(state) = &self.state {
            match state.check_signed_in(&user).await {
                Ok(()) => {}
                Err(error) if error.code == ErrorCode::Unauthenticated => return Err(Refused::Invalid),
                Err(_) => return Err(Refused::Unchecked),
            }
        }
        Ok(user)
    }

    /// A random moment between 90% and 100% of the socket's maximum age, if
    /// it has one: sockets opened together (after a gateway restart, say)
    /// are not all closed, and back, at once.
    pub(super) fn age_limit(&self) -> Option<Duration> {
        self.max_age.map(|age| age.mul_f64(rand::random_range(0.9..=1.0)))
    }
}

/// Why a fresh token sent on a socket was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Invalid, expired, or of a sign-in that was signed out.
    Invalid,
    /// Valid, but another user's.
    OtherUser,
    /// Whether its sign-in was signed out cannot be checked now.
    Unchecked,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Self::Invalid => "access token is invalid or expired",
            Self::OtherUser => "the token belongs to another user",
            Self::Unchecked => "cannot check the token now; retry shortly",
        }
    }
}

/// The warning frame sent when the socket's token expires.
pub fn expiry_warning(clock: &TokenClock) -> OutFrame {
    OutFrame::Error(ErrorView {
        code: TOKEN_EXPIRED.to_owned(),
        message: format!(
            "access token expired; send {{\"type\":\"auth\",\"access_token\":\"...\"}} within {} s or the socket closes",
            clock.grace().as_secs()
        ),
        client_msg_id: None,
        session_id: None,
        retry_after_ms: None,
    })
}
