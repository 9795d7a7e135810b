//! Where a gRPC service is served: its listener, TLS on accepted
//! connections when configured, and the mount through which callers in the
//! same process (the all-in-one) reach the same service stack directly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http::{Request, Response};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::transport::Server;
use tower::Service;

use crate::inproc::{self, BoxError};
use crate::tls::ServerTls;

/// A bound gRPC endpoint, ready to serve.
pub struct Endpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    in_process: (inproc::Connector, inproc::Mount),
}

impl Endpoint {
    /// Binds `addr`; accepted connections go through `tls` when it is set.
    pub async fn bind(addr: SocketAddr, tls: Option<Arc<ServerTls>>) -> anyhow::Result<Self> {
        let (listener, local_addr) = crate::net::bind(addr).await?;
        Ok(Self {
            listener,
            local_addr,
            tls,
            in_process: inproc::pair(),
        })
    }

    /// The address it listens on (the actual port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether accepted connections speak TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// How a caller in this process reaches the service directly.
    pub fn in_process(&self) -> inproc::Connector {
        self.in_process.0.clone()
    }

    /// Serves `service` to the network and to this process's callers until
    /// `stop` completes. Then in-process calls are refused, `then` runs
    /// (while network connections are still open), and the server drains.
    pub async fn serve<S, B>(
        self,
        server: Server,
        service: S,
        stop: impl Future<Output = ()> + Send + 'static,
        then: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()>
    where
        S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + Send,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Self {
            listener,
            tls,
            in_process: (_, mount),
            ..
        } = self;
        mount.serve(service.clone());
        let stopped = async move {
            stop.await;
            drop(mount);
            then.await;
        };
        match tls {
            Some(tls) => server
                .serve_with_incoming_shutdown(service, tls.incoming(listener), stopped)
                .await
                .context("gRPC server failed"),
            None => server
                .serve_with_incoming_shutdown(service, crate::net::incoming(listener), stopped)
                .await
                .context("gRPC server failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tonic_health::pb::health_check_response::ServingStatus;

    use super::*;
    use crate::inproc::tests::{check, serving_health};

    /// From the stop on, callers in the process are refused while `then`
    /// runs with the network still served (chat-core releases its runs
    /// there); then the server drains and returns.
    #[tokio::test]
    async fn the_stop_refuses_in_process_callers_before_the_network_drains() {
        let endpoint = Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0)), None)
            .await
            .expect("bind");
        let (addr, connector) = (endpoint.local_addr(), endpoint.in_process());
        let (stop, stopped) = oneshot::channel::<()>();
        let (then_started, then_running) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let server = tokio::spawn(endpoint.serve(
            Server::builder(),
            serving_health().await,
            async move {
                let _ = stopped.await;
            },
            async move {
                let _ = then_started.send(());
                let _ = released.await;
            },
        ));
        let network = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        for channel in [connector.clone().into(), network.clone().into()] {
            assert_eq!(check(channel).await.expect("serving"), ServingStatus::Serving);
        }

        stop.send(()).expect("server running");
        then_running.await.expect("then runs after the stop");
        let refused = check(connector.into()).await.expect_err("stopped in process");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert_eq!(
            check(network.into()).await.expect("the network is still served"),
            ServingStatus::Serving
        );

        release.send(()).expect("then waiting");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server drains")
            .expect("server task")
            .expect("served");
    }
}
