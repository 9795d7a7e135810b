//! In-process calls: one service of a process (the all-in-one) calls another
//! service's gRPC handlers directly, with no transport between them.
//!
//! A server makes a [`pair`], hands the [`Connector`] to the clients in its
//! process and, once it serves, [`Mount::serve`]s the same layered service
//! it serves its network listener with. A call through the connector is that
//! service called in the caller's task: the request and response bodies are
//! the gRPC messages encoded as over the network, but no HTTP/2 connection,
//! pipe or task stands between the two sides, so a call wakes nothing.
//!
//! Clients hold a [`Channel`]: tonic's network channel or a connector, one
//! type for both.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tokio::sync::watch;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// What a call may fail with before the server answers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Handler = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The call side: a clone per client. Calls made before the server serves
/// wait for it; calls after it stopped are refused.
#[derive(Clone)]
pub struct Connector {
    server: watch::Receiver<Option<Handler>>,
}

/// The server side: where the server puts its service while it serves.
pub struct Mount {
    slot: watch::Sender<Option<Handler>>,
}

/// A connector and the mount it calls into.
pub fn pair() -> (Connector, Mount) {
    let (slot, server) = watch::channel(None);
    (Connector { server }, Mount { slot })
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("serving", &self.server.borrow().is_some())
            .finish()
    }
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount").finish_non_exhaustive()
    }
}

impl Mount {
    /// Answers this process's calls with `service` until the mount is
    /// dropped; calls made after that are refused.
    pub fn serve<S, B>(&self, service: S)
    where
        S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let handler = service
            .map_response(|response: Response<B>| response.map(Body::new))
            .map_err(Into::into);
        self.slot.send_replace(Some(BoxCloneSyncService::new(handler)));
    }
}

impl Drop for Mount {
    /// A watch keeps its last value after its sender is gone: the service is
    /// taken out, so that calls from now on are refused, not served by a
    /// stopped server.
    fn drop(&mut self) {
        self.slot.send_replace(None);
    }
}

/// As a refused connection: the caller sees `UNAVAILABLE`.
fn refused() -> BoxError {
    Box::new(tonic::ConnectError(Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "the in-process server has stopped",
    ))))
}

impl Service<Request<Body>> for Connector {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        let mut server = self.server.clone();
        // The deadline a network server enforces from the call's
        // `grpc-timeout`, from the moment the call is made (a call made
        // before the server serves waits within it too).
        let deadline = grpc_timeout(request.headers());
        let call = async move {
            let handler = match server.wait_for(Option::is_some).await {
                Ok(serving) => serving.clone().ok_or_else(refused)?,
                Err(_) => return Err(refused()),
            };
            // A panic in the handler fails this call alone, as it fails one
            // stream of a network server, and not the caller's task.
            match AssertUnwindSafe(handler.oneshot(request)).catch_unwind().await {
                Ok(response) => response.map(|response| response.map(|body| Body::new(Contained::new(body)))),
                Err(_) => Ok(tonic::Status::internal("internal error").into_http()),
            }
        };
        Box::pin(async move {
            match deadline {
                // As tonic's server answers an expired call.
                Some(deadline) => tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or_else(|_| Ok(tonic::Status::cancelled("Timeout expired").into_http())),
                None => call.await,
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends the call with `INTERNAL` if producing it
    /// panics (a server stream's handler code runs as its body is polled).
    struct Contained {
        #[pin]
        inner: Body,
        failed: bool,
    }
}

impl Contained {
    fn new(inner: Body) -> Self {
        Self { inner, failed: false }
    }
}

impl http_body::Body for Contained {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, tonic::Status>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let inner = this.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(frame) => frame,
            Err(_) => {
                *this.failed = true;
                Poll::Ready(Some(Err(tonic::Status::internal("internal error"))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-timeout` of a call (gRPC over HTTP/2: at most 8 digits and a
/// unit), if it has a valid one.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1).filter(|&at| (1..=8).contains(&at))?;
    let (amount, unit) = value.split_at(split);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A channel to a gRPC server: over the network, or straight into a server
/// of this process.
#[derive(Clone, Debug)]
pub enum Channel {
    Network(tonic::transport::Channel),
    InProcess(Connector),
}

impl From<tonic::transport::Channel> for Channel {
    fn from(channel: tonic::transport::Channel) -> Self {
        Self::Network(channel)
    }
}

impl From<Connector> for Channel {
    fn from(connector: Connector) -> Self {
        Self::InProcess(connector)
    }
}

impl Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Network(channel) => channel.poll_ready(cx).map_err(Into::into),
            Self::InProcess(connector) => connector.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        match self {
            Self::Network(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Self::InProcess(connector) => connector.call(request),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::net::TcpListener;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// The health status a server reports through `channel`.
    pub(crate) async fn check(channel: Channel) -> Result<ServingStatus, tonic::Status> {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        request.set_timeout(Duration::from_secs(5));
        Ok(HealthClient::new(channel)
            .check(request)
            .await?
            .into_inner()
            .status())
    }

    /// Routes serving only the health service, reporting the server as serving.
    pub(crate) async fn serving_health() -> tonic::service::Routes {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tonic::service::Routes::new(health)
    }

    #[tokio::test]
    async fn a_server_answers_its_process_directly_and_the_network_as_before() {
        let routes = serving_health().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (connector, mount) = pair();
        // A call made before the server serves waits for it.
        let mut early = Box::pin(check(connector.clone().into()));
        assert!(futures::poll!(&mut early).is_pending(), "nothing serves yet");
        mount.serve(routes.clone());
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        assert_eq!(early.await.expect("check"), ServingStatus::Serving);
        assert_eq!(
            check(connector.into()).await.expect("check"),
            ServingStatus::Serving
        );
        let over_tcp = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        assert_eq!(
            check(over_tcp.into()).await.expect("check"),
            ServingStatus::Serving
        );
        server.abort();
    }

    #[tokio::test]
    async fn calls_after_the_server_stopped_are_refused() {
        let (connector, mount) = pair();
        mount.serve(serving_health().await);
        assert_eq!(
            check(connector.clone().into()).await.expect("serving"),
            ServingStatus::Serving
        );
        drop(mount);
        let refused = check(connector.into()).await.expect_err("stopped");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    }

    #[tokio::test]
    async fn a_call_to_a_server_that_never_started_is_refused() {
        let (connector, mount) = pair();
        drop(mount);
        let refused = check(connector.into()).await.expect_err("no server");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    }

    /// What a call with a 50 ms deadline ends with, when nothing answers it.
    async fn past_its_deadline(connector: Connector) -> tonic::Status {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        request.set_timeout(Duration::from_millis(50));
        HealthClient::new(Channel::from(connector))
            .check(request)
            .await
            .expect_err("nothing answers")
    }

    #[tokio::test]
    async fn the_deadline_covers_waiting_for_the_server_to_serve() {
        let (connector, _mount) = pair();
        let expired = past_its_deadline(connector).await;
        assert_eq!(expired.code(), tonic::Code::Cancelled, "{expired:?}");
    }

    #[tokio::test]
    async fn a_panicking_handler_fails_its_call_and_not_the_caller() {
        let (connector, mount) = pair();
        mount.serve(tower::service_fn(|_: Request<Body>| async {
            if true {
                panic!("a handler's bug");
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }));
        let failed = check(connector.into()).await.expect_err("the handler panicked");
        assert_eq!(failed.code(), tonic::Code::Internal, "{failed:?}");
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_cancelled_as_a_network_server_would() {
        let (connector, mount) = pair();
        mount.serve(tower::service_fn(|_: Request<Body>| {
            std::future::pending::<Result<Response<Body>, std::convert::Infallible>>()
        }));
        let expired = past_its_deadline(connector).await;
        assert_eq!(expired.code(), tonic::Code::Cancelled, "{expired:?}");
        assert_eq!(expired.message(), "Timeout expired");
    }

    #[test]
    fn grpc_timeouts_are_read_as_the_protocol_writes_them() {
        let timeout = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_static(value));
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("12345678u"), Some(Duration::from_micros(12_345_678)));
        assert_eq!(timeout("123456789n"), None, "more than 8 digits");
        assert_eq!(timeout("S"), None);
        assert_eq!(timeout("5x"), None);
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
