//! In-process connections: the same gRPC over HTTP/2 between services of one
//! process (the all-in-one), carried by an in-memory pipe instead of a
//! loopback socket.
//!
//! A server makes a [`pair`], hands the [`Connector`] to the clients in its
//! process and serves the [`Incoming`] beside its network listener
//! ([`with_in_process`]). A frame written into the pipe wakes the task that
//! reads it directly, usually on the same worker thread; over loopback TCP
//! each frame costs a `write`, an `epoll` wake-up and a `read`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// Bytes either side of a connection may write ahead of the reader before
/// its writes wait: room for a full HTTP/2 frame and more.
const PIPE_BYTES: usize = 1 << 20;

/// Where a client in this process connects: each connection is a new pipe,
/// whose other end the server's [`Incoming`] yields.
#[derive(Clone, Debug)]
pub struct Connector {
    accept: mpsc::UnboundedSender<DuplexStream>,
}

/// The server's end of the connections its [`Connector`] makes.
#[derive(Debug)]
pub struct Incoming {
    connections: mpsc::UnboundedReceiver<DuplexStream>,
}

/// A connector and the incoming connections it makes.
pub fn pair() -> (Connector, Incoming) {
    let (accept, connections) = mpsc::unbounded_channel();
    (Connector { accept }, Incoming { connections })
}

impl Connector {
    /// A lazily connected channel to the server, configured as `endpoint`
    /// (windows, keep-alive, timeouts); its URL only names the server in
    /// the `:authority` of calls.
    pub fn channel(&self, endpoint: &Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.clone())
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<DuplexStream>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let connected = match self.accept.send(server) {
            Ok(()) => Ok(TokioIo::new(client)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the in-process server has stopped",
            )),
        };
        std::future::ready(connected)
    }
}

/// A connection a server accepted: from its network listener, or from a
/// client in this process.
#[derive(Debug)]
pub enum Accepted<T> {
    Network(T),
    InProcess(DuplexStream),
}

/// `network`'s connections, and those `incoming` brings from this process.
pub fn with_in_process<T, S>(
    network: S,
    incoming: Incoming,
) -> impl Stream<Item = io::Result<Accepted<T>>> + Send + 'static
where
    S: Stream<Item = io::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let local = UnboundedReceiverStream::new(incoming.connections).map(|pipe| Ok(Accepted::InProcess(pipe)));
    futures::stream::select(network.map(|accepted| accepted.map(Accepted::Network)), local)
}

impl<T: Connected> Connected for Accepted<T> {
    /// The network connection's information; none for a pipe.
    type ConnectInfo = Option<T::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Self::Network(stream) => Some(stream.connect_info()),
            Self::InProcess(_) => None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Accepted<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Network(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::InProcess(pipe) => Pin::new(pipe).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Accepted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Network(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::InProcess(pipe) => Pin::new(pipe).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Network(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::InProcess(pipe) => Pin::new(pipe).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Network(stream) => stream.is_write_vectored(),
            Self::InProcess(pipe) => pipe.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Network(stream) => Pin::new(stream).poll_flush(cx),
            Self::InProcess(pipe) => Pin::new(pipe).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Network(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::InProcess(pipe) => Pin::new(pipe).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    async fn check(channel: Channel) -> ServingStatus {
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect("health check")
            .into_inner()
            .status()
    }

    #[tokio::test]
    async fn a_server_answers_its_process_in_memory_and_the_network_as_before() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (connector, incoming) = pair();
        let network = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(with_in_process::<TcpStream, _>(network, incoming)),
        );

        let endpoint = Endpoint::from_static("http://in-process");
        assert_eq!(check(connector.channel(&endpoint)).await, ServingStatus::Serving);
        let over_tcp = Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        assert_eq!(check(over_tcp).await, ServingStatus::Serving);
        server.abort();
    }

    #[tokio::test]
    async fn connecting_to_a_stopped_server_is_refused() {
        let (mut connector, incoming) = pair();
        drop(incoming);
        let refused = tower::Service::call(&mut connector, http::Uri::from_static("http://in-process"))
            .await
            .expect_err("no server");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
