//! Closes client connections that sit idle: no request in flight and no byte
//! read or written for `IDLE_TIMEOUT_SECS` (an HTTP/1 connection kept alive,
//! an HTTP/2 connection without streams). Connections upgraded to WebSocket
//! are left alone: their own token clock and slow-consumer rules apply.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one connection is doing.
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    upgraded: AtomicBool,
}

impl Activity {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn is_upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }
}

/// Wraps each accepted connection (inside `inner`'s) to close it when idle.
#[derive(Clone, Debug)]
pub struct IdleAcceptor<A> {
    inner: A,
    timeout: Duration,
}

impl<A> IdleAcceptor<A> {
    pub fn new(inner: A, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<A, I, S> Accept<I, S> for IdleAcceptor<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = IdleStream<A::Stream>;
    type Service = Tracked<A::Service>;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let timeout = self.timeout;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let activity = Arc::new(Activity::default());
            Ok((
                IdleStream {
                    inner: stream,
                    activity: activity.clone(),
                    deadline: Some(Box::pin(tokio::time::sleep(timeout))),
                    timeout,
                },
                Tracked {
                    inner: service,
                    activity,
                },
            ))
        })
    }
}

// === impl IdleStream ===

/// A connection's byte stream that reads as closed once it has been idle too long.
pub struct IdleStream<I> {
    inner: I,
    activity: Arc<Activity>,
    /// When the connection counts as idle; none once it is upgraded. The
    /// timer holds the waker of the last task that polled it (the HTTP
    /// connection's, whose memory a WebSocket would otherwise keep for as
    /// long as it lives), so an upgraded connection drops it.
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl<I> IdleStream<I> {
    /// The connection underneath.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    fn active(&mut self) {
        if self.activity.is_upgraded() {
            self.deadline = None;
        } else if let Some(deadline) = &mut self.deadline {
            deadline.as_mut().reset(Instant::now() + self.timeout);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleStream<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.activity.is_upgraded() || !self.activity.is_idle() => {
                self.active();
                Poll::Pending
            }
            Poll::Pending => match self.deadline.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
                // Reads as the end of the stream: the server closes the connection.
                Some(Poll::Ready(())) => Poll::Ready(Ok(())),
                Some(Poll::Pending) | None => Poll::Pending,
            },
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleStream<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === impl Tracked ===

/// A connection's service, counting its requests in flight until their
/// response bodies end, and noting an upgrade.
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B, RB> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<InFlight<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let guard = InFlightGuard::start(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                guard.0.upgraded.store(true, Ordering::Release);
            }
            Ok(response.map(|body| InFlight {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// One request in flight on a connection.
struct InFlightGuard(Arc<Activity>);

impl InFlightGuard {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is dropped.
pub struct InFlight<B> {
    inner: B,
    _guard: InFlightGuard,
}

impl<B: http_body::Body + Unpin> http_body::Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task's waker, counted by its `Arc`'s strong count.
    struct Task;

    impl std::task::Wake for Task {
        fn wake(self: Arc<Self>) {}
    }

    fn read_once<I: AsyncRead + Unpin>(stream: &mut IdleStream<I>, task: &Arc<Task>) -> Poll<io::Result<()>> {
        let waker = std::task::Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut bytes = [0u8; 16];
        let mut buf = ReadBuf::new(&mut bytes);
        Pin::new(stream).poll_read(&mut cx, &mut buf)
    }

    #[tokio::test]
    async fn an_upgraded_connection_lets_go_of_the_task_that_served_its_request() {
        // Arrange: the HTTP connection's task waits for a request on an idle connection.
        let (_client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut stream = IdleStream {
            inner: server,
            activity: activity.clone(),
            deadline: Some(Box::pin(tokio::time::sleep(Duration::from_secs(60)))),
            timeout: Duration::from_secs(60),
        };
        let http_task = Arc::new(Task);
        assert!(read_once(&mut stream, &http_task).is_pending());
        assert!(
            Arc::strong_count(&http_task) > 1,
            "the idle timer holds the HTTP task's waker"
        );

        // Act: the connection is upgraded, and the WebSocket's task reads from it.
        activity.upgraded.store(true, Ordering::Release);
        let socket_task = Arc::new(Task);
        let read = read_once(&mut stream, &socket_task);

        // Assert: nothing holds the HTTP task any more (its memory is freed),
        // and an upgraded connection never reads as idle.
        assert!(read.is_pending());
        assert_eq!(Arc::strong_count(&http_task), 1);
        assert!(stream.deadline.is_none());
    }
}
