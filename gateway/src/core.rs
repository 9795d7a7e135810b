//! The gateway's gRPC clients for chat-core, all sharing one lazily connected channel.

use std::time::Duration;

use anyhow::Context as _;
use chat_common::inproc::Channel;
use chat_proto::chat::v1 as pb;
use chat_proto::chat::v1::chat_service_client::ChatServiceClient;
use chat_proto::chat::v1::operator_service_client::OperatorServiceClient;
use chat_proto::chat::v1::user_service_client::UserServiceClient;
use futures::Stream;
use tonic::codec::{BufferSettings, Codec, Streaming};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::error::ApiError;

/// gRPC service whose health decides readiness.
const READINESS_SERVICE: &str = "chat.v1.ChatService";
/// How long a readiness probe waits for chat-core.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
/// Initial codec buffers of a `Connect` stream. Every open WebSocket holds one
/// such stream, so tonic's 8 KiB default (twice: encode and decode) would
/// dominate the cost of an idle socket; buffers grow when a frame needs it.
const CONNECT_BUFFER_BYTES: usize = 512;
const CONNECT_YIELD_THRESHOLD: usize = 32 * 1024;

fn connect_buffers() -> BufferSettings {
    BufferSettings::new(CONNECT_BUFFER_BYTES, CONNECT_YIELD_THRESHOLD)
}

/// Metadata key carrying the request id of the HTTP request behind a call.
pub const REQUEST_ID_METADATA: &str = "x-request-id";

tokio::task_local! {
    /// The id of the HTTP request being served, set by [`with_request_id`].
    static REQUEST_ID: AsciiMetadataValue;
}

/// Runs `future` with `request_id` attached to every chat-core call it makes.
pub async fn with_request_id<F: Future>(request_id: Option<AsciiMetadataValue>, future: F) -> F::Output {
    match request_id {
        Some(id) => REQUEST_ID.scope(id, future).await,
        None => future.await,
    }
}

/// The request id of the HTTP request being served, if any.
pub fn current_request_id() -> Option<AsciiMetadataValue> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Tags a chat-core call with `request_id` (or the current request's) and,
/// when traces are exported, the current span's trace context.
pub fn tag_request_id<T>(request: &mut tonic::Request<T>, request_id: Option<AsciiMetadataValue>) {
    if let Some(id) = request_id.or_else(current_request_id) {
        request.metadata_mut().insert(REQUEST_ID_METADATA, id);
    }
    chat_common::trace::inject_metadata(request.metadata_mut());
}

/// Clients for chat-core's `ChatService`, `OperatorService`, `UserService` and health service.
#[derive(Clone, Debug)]
pub struct CoreClient {
    channel: Channel,
    chat: ChatServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    operators: OperatorServiceClient<Channel>,
    health: HealthClient<Channel>,
    unary_timeout: Duration,
}

/// HTTP/2 flow-control window of each stream from chat-core.
const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// HTTP/2 flow-control window of the whole connection to chat-core.
const CONNECTION_WINDOW_BYTES: u32 = 1 << 30;

/// One connection to one chat-core replica.
fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        // Many client connections share each HTTP/2 connection. A small
        // per-stream window bounds what one stalled client can hold of the
        // (large) connection window, so it never stalls the others.
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES))
}

impl CoreClient {
    /// Builds the clients over every chat-core replica `url` stands for (a
    /// DNS name is resolved to all its addresses, again every
    /// `resolve_every`); calls and new streams are spread across them, and
    /// nothing connects until the first call.
    /// With `tls`, chat-core is reached over TLS (an `https://` URL).
    pub async fn new(
        url: &str,
        resolve_every: Duration,
        unary_timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let endpoint = move |url: &str| {
            let endpoint = endpoint(url)?;
            match &tls {
                Some(tls) => endpoint.tls_config(tls.clone()),
                None => Ok(endpoint),
            }
        };
        endpoint(url).with_context(|| format!("invalid chat-core url `{url}`"))?;
        let endpoints = chat_common::discovery::watch(&[url.to_owned()], resolve_every)
            .await
            .map_err(|e| anyhow::anyhow!("chat-core url: {e}"))?;
        if endpoints.borrow().is_empty() {
            tracing::warn!(%url, "chat-core name does not resolve yet; retrying in the background");
        }
        let channel = chat_common::discovery::balanced_channel(endpoints, endpoint);
        Ok(Self::over(channel.into(), unary_timeout))
    }

    /// The clients of the chat-core in this process, calling it directly
    /// through `core` (the all-in-one).
    pub fn in_process(core: &chat_common::inproc::Connector, unary_timeout: Duration) -> Self {
        Self::over(core.clone().into(), unary_timeout)
    }

    fn over(channel: Channel, unary_timeout: Duration) -> Self {
        let max = chat_proto::MAX_MESSAGE_BYTES;
        Self {
            chat: ChatServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            users: UserServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            operators: OperatorServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            health: HealthClient::new(channel.clone()),
            channel,
            unary_timeout,
        }
    }

    /// The channel itself, for the gRPC-Web proxy that forwards raw calls.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn chat(&self) -> ChatServiceClient<Channel> {
        self.chat.clone()
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        self.users.clone()
    }

    pub fn operators(&self) -> OperatorServiceClient<Channel> {
        self.operators.clone()
    }

    /// Opens `ChatService.Connect` with small codec buffers (see [`CONNECT_BUFFER_BYTES`]).
    pub async fn connect<S>(
        &self,
        request: tonic::Request<S>,
    ) -> Result<Streaming<pb::ServerFrame>, tonic::Status>
    where
        S: Stream<Item = pb::ClientFrame> + Send + 'static,
    {
        let max = chat_proto::MAX_MESSAGE_BYTES;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        grpc.ready()
            .await
            .map_err(|err| tonic::Status::unavailable(format!("chat-core unreachable: {err}")))?;
        let path = http::uri::PathAndQuery::from_static("/chat.v1.ChatService/Connect");
        let mut request = request;
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("chat.v1.ChatService", "Connect"));
        let response = grpc.streaming(request, path, ConnectCodec).await?;
        Ok(response.into_inner())
    }

    /// The deadline of unary calls.
    pub fn unary_timeout(&self) -> Duration {
        self.unary_timeout
    }

    /// A unary request on behalf of the holder of `token`, with the request deadline.
    pub fn unary<T>(&self, message: T, token: &str) -> Result<tonic::Request<T>, ApiError> {
        let mut request = authorized(message, token)?;
        request.set_timeout(self.unary_timeout);
        Ok(request)
    }

    /// True when a chat-core replica answers its health check, whatever it
    /// reports: a gateway stays ready while chat-core's database is down, so
    /// clients get JSON 503s from it rather than refused connections.
    pub async fn is_reachable(&self) -> bool {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: READINESS_SERVICE.into(),
        });
        request.set_timeout(READINESS_TIMEOUT);
        let mut health = self.health.clone();
        matches!(
            tokio::time::timeout(READINESS_TIMEOUT, health.check(request)).await,
            Ok(Ok(_))
        )
    }

    /// True when chat-core reports its `ChatService` as serving.
    pub async fn is_ready(&self) -> bool {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: READINESS_SERVICE.into(),
        });
        request.set_timeout(READINESS_TIMEOUT);
        tag_request_id(&mut request, None);
        let mut health = self.health.clone();
        match tokio::time::timeout(READINESS_TIMEOUT, health.check(request)).await {
            Ok(Ok(response)) => response.into_inner().status() == ServingStatus::Serving,
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), "chat-core health check failed");
                false
            }
            Err(_) => false,
        }
    }
}

/// Wraps `message` in a request carrying `authorization: Bearer <token>`,
/// the current request id and trace context.
pub fn authorized<T>(message: T, token: &str) -> Result<tonic::Request<T>, ApiError> {
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| ApiError::unauthenticated("malformed access token"))?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value);
    tag_request_id(&mut request, None);
    Ok(request)
}

/// Names the user a service-token request acts for, and the sign-in their
/// token came from (chat-core refuses a signed-out one).
pub fn on_behalf_of<T>(
    request: &mut tonic::Request<T>,
    user: &crate::auth::AuthUser,
) -> Result<(), ApiError> {
    let malformed = || ApiError::unauthenticated("malformed user id");
    let value = MetadataValue::try_from(user.user_id.as_str()).map_err(|_| malformed())?;
    request
        .metadata_mut()
        .insert(chat_common::token::ON_BEHALF_OF_METADATA, value);
    if let Some(sign_in) = &user.sign_in {
        let value = MetadataValue::try_from(sign_in.as_str()).map_err(|_| malformed())?;
        request
            .metadata_mut()
            .insert(chat_common::token::SIGN_IN_METADATA, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_carry_the_request_id_of_their_scope() {
        let id: AsciiMetadataValue = "req-42".parse().expect("ascii");
        let inside = with_request_id(Some(id), async { authorized((), "t").expect("request") }).await;
        assert_eq!(inside.metadata().get(REQUEST_ID_METADATA).expect("id"), "req-42");
        let outside = authorized((), "t").expect("request");
        assert!(outside.metadata().get(REQUEST_ID_METADATA).is_none());
    }
}

/// The prost codec of `Connect`, with [`CONNECT_BUFFER_BYTES`].
#[derive(Clone, Copy, Debug, Default)]
struct ConnectCodec;

impl Codec for ConnectCodec {
    type Encode = pb::ClientFrame;
    type Decode = pb::ServerFrame;
    type Encoder = ProstEncoder<pb::ClientFrame>;
    type Decoder = ProstDecoder<pb::ServerFrame>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(connect_buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(connect_buffers())
    }
}
