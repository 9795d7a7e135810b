//! Accepted and dialled sockets on the request path: every one has
//! `TCP_NODELAY` set. A turn is a handful of small frames (an ack, then
//! deltas); with Nagle's algorithm on, a small frame written while the
//! previous one is unacknowledged waits for the peer's delayed ACK (40 ms on
//! Linux), which once dominated a turn's latency.

use std::io;
use std::net::SocketAddr;

use anyhow::Context as _;
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

/// Binds a service's listener on `addr`, with the address it got (the
/// actual port when port 0 was asked for).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {addr}"))?;
    let local_addr = listener
        .local_addr()
        .context("failed to read the bound address")?;
    Ok((listener, local_addr))
}

/// The connections accepted on `listener`, each with `TCP_NODELAY` set.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "failed to set TCP_NODELAY");
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut accepted = Box::pin(incoming(listener));
        let _client = TcpStream::connect(addr).await.expect("connect");
        let stream = accepted.next().await.expect("a connection").expect("accepted");
        assert!(stream.nodelay().expect("nodelay readable"));
    }
}
