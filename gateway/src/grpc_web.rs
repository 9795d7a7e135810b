//! gRPC-Web: browsers call `chat.v1.ChatService` on the gateway's own port.
//! tonic-web turns each gRPC-Web call into plain gRPC; [`GrpcWebProxy`] then
//! authenticates it, counts it against the rate limits, and forwards it to
//! chat-core with the gateway's service token naming the caller (as every
//! gateway call does), streaming the answer back. Unary and
//! server-streaming calls work; `Connect` (bidirectional) cannot over gRPC-Web.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use chat_common::ErrorCode;
use chat_common::token;
use chat_common::token_clock::TokenClock;
use futures::future::BoxFuture;
use http::header::{AUTHORIZATION, CONTENT_TYPE, TE};
use http::{HeaderName, HeaderValue, Request, Response};
use tonic::body::Body;
use tower::{Service, ServiceExt};

use crate::app::SharedState;
use crate::auth::{self, AuthUser};
use crate::connections::ConnectionGuard;
use crate::error::RETRY_AFTER_MS_METADATA;
use crate::ratelimit::Tier;
use crate::ratelimit::middleware::client_ip;

/// The server-streaming methods, counted under the connection caps.
const STREAMING_METHODS: [&str; 2] = ["Subscribe", "SendMessage"];

/// Path prefix of the proxied service; the router mounts the proxy under it.
pub const SERVICE_PREFIX: &str = "/chat.v1.ChatService/";

/// Request headers passed on to chat-core; everything else stays at the edge.
/// `authorization` is set anew: the gateway's service token, with the
/// verified user in `x-on-behalf-of` (and their sign-in in `x-sign-in`).
const FORWARDED_HEADERS: [HeaderName; 8] = [
    CONTENT_TYPE,
    TE,
    HeaderName::from_static("grpc-timeout"),
    HeaderName::from_static("grpc-encoding"),
    HeaderName::from_static("grpc-accept-encoding"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// Forwards authenticated, rate-limited `ChatService` calls to chat-core.
#[derive(Clone, Debug)]
pub struct GrpcWebProxy {
    state: SharedState,
}

impl GrpcWebProxy {
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

impl Service<Request<Body>> for GrpcWebProxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            Ok(forward(state, request)
                .await
                .unwrap_or_else(tonic::Status::into_http))
        })
    }
}

async fn forward(state: SharedState, request: Request<Body>) -> Result<Response<Body>, tonic::Status> {
    let method = request
        .uri()
        .path()
        .strip_prefix(SERVICE_PREFIX)
        .unwrap_or_default();
    if method == "Connect" {
        return Err(tonic::Status::unimplemented(
            "bidirectional streams are not possible over gRPC-Web; use the WebSocket",
        ));
    }
    let token = auth::bearer_token(request.headers()).map(str::to_owned);
    let ip = client_ip(&request, state.trust_forwarded_for);
    let user = authenticate(&state, token.as_deref(), &ip).await?;
    limit(&state, Tier::Api, &format!("user:{}", user.user_id)).await?;
    if method == "SendMessage" {
        limit(&state, Tier::Messages, &user.user_id).await?;
    }
    let guard = if STREAMING_METHODS.contains(&method) {
        let guard = state
            .connections
            .open(&user.user_id, &ip)
            .map_err(|over| ErrorCode::RateLimited.status(over.message()))?;
        Some(guard)
    } else {
        None
    };
    let service_token = state
        .tokens
        .service_token()
        .map_err(|_| ErrorCode::Internal.status("internal error"))?;
    let authorization = HeaderValue::try_from(format!("Bearer {service_token}"))
        .map_err(|_| ErrorCode::Internal.status("internal error"))?;
    let on_behalf_of = HeaderValue::try_from(user.user_id.as_str())
        .map_err(|_| ErrorCode::Unauthenticated.status("malformed user id"))?;

    let (parts, body) = request.into_parts();
    let mut upstream = Request::builder()
        .method(http::Method::POST)
        .uri(parts.uri.path())
        .body(body)
        .map_err(|_| tonic::Status::invalid_argument("malformed request"))?;
    for name in FORWARDED_HEADERS {
        for value in parts.headers.get_all(&name) {
            upstream.headers_mut().append(name.clone(), value.clone());
        }
    }
    upstream.headers_mut().insert(AUTHORIZATION, authorization);
    upstream
        .headers_mut()
        .insert(token::ON_BEHALF_OF_METADATA, on_behalf_of);
    if let Some(sign_in) = user
        .sign_in
        .as_deref()
        .and_then(|s| HeaderValue::try_from(s).ok())
    {
        upstream.headers_mut().insert(token::SIGN_IN_METADATA, sign_in);
    }
    // While tracing, chat-core's span is a child of this request's (which
    // continues the caller's `traceparent`); otherwise it is passed as sent.
    chat_common::trace::inject_headers(upstream.headers_mut());
    let channel = state.core.channel();
    let response = channel.oneshot(upstream).await.map_err(|error| {
        tracing::warn!(%error, "grpc-web call to chat-core failed");
        ErrorCode::Unavailable.status("service unavailable, try again")
    })?;
    let draining = state.shutdown.clone().cancelled_owned();
    let expired = TokenClock::new(user.expires_at, state.limits.ws_token_grace).closed();
    Ok(response.map(|body| {
        Body::new(UntilEnded {
            inner: body,
            draining: Box::pin(draining),
            expired: Box::pin(expired),
            done: false,
            _guard: guard,
        })
    }))
}

/// A response body from chat-core that ends with `UNAVAILABLE` when the
/// gateway drains, so a server stream (`Subscribe`) does not hold the
/// gateway open (the client resumes elsewhere), and with `UNAUTHENTICATED`
/// once the caller's token has expired and its grace passed (gRPC-Web cannot
/// renew a token in-band: the client subscribes again with a fresh one). A
/// revoked sign-in ends the stream from chat-core.
struct UntilEnded<B> {
    inner: B,
    draining: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    expired: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
    /// A stream's place under the caller's connection caps, held while it lasts.
    _guard: Option<ConnectionGuard>,
}

/// The trailers that end a stream with `code`; `message` percent-encoded.
fn ending(code: ErrorCode, grpc_status: &'static str, message: &'static str) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(grpc_status));
    trailers.insert("grpc-message", HeaderValue::from_static(message));
    trailers.insert(
        chat_common::error::ERROR_CODE_METADATA,
        HeaderValue::from_static(code.as_str()),
    );
    trailers
}

impl<B> http_body::Body for UntilEnded<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.draining.as_mut().poll(cx).is_ready() {
            self.done = true;
            let trailers = ending(
                ErrorCode::Unavailable,
                "14",
                "server%20restarting%3B%20resume%20on%20another%20connection",
            );
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        if self.expired.as_mut().poll(cx).is_ready() {
            self.done = true;
            let trailers = ending(ErrorCode::Unauthenticated, "16", "access%20token%20expired");
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.done = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

/// The verified user of the call; anonymous calls still count against their IP.
async fn authenticate(state: &SharedState, token: Option<&str>, ip: &str) -> Result<AuthUser, tonic::Status> {
    let user = match token {
        Some(token) => Some(auth::authenticate(state, token).await),
        None => None,
    };
    match user {
        Some(Ok(user)) => Ok(user),
        _ => {
            limit(state, Tier::Api, &format!("ip:{ip}")).await?;
            Err(ErrorCode::Unauthenticated.status("missing, invalid or expired access token"))
        }
    }
}

async fn limit(state: &SharedState, tier: Tier, key: &str) -> Result<(), tonic::Status> {
    match state.rate_limits.check(tier, key).await {
        Err(_down) => {
            let mut status = ErrorCode::Unavailable.status("rate limiting is unavailable; retry shortly");
            let retry_after_ms = crate::ratelimit::STORE_DOWN_RETRY_AFTER.as_millis().to_string();
            if let Ok(value) = retry_after_ms.parse() {
                status.metadata_mut().insert(RETRY_AFTER_MS_METADATA, value);
            }
            Err(status)
        }
        Ok(Some(decision)) if !decision.allowed => {
            let retry_after_ms = decision.retry_after_ms();
            let mut status =
                ErrorCode::RateLimited.status(format!("too many requests, retry in {retry_after_ms} ms"));
            if let Ok(value) = retry_after_ms.to_string().parse() {
                status.metadata_mut().insert(RETRY_AFTER_MS_METADATA, value);
            }
            Err(status)
        }
        _ => Ok(()),
    }
}
