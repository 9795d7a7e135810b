//! What the gRPC server layers ([`crate::metrics::GrpcMetricsLayer`] and
//! [`crate::trace::grpc::GrpcTraceLayer`]) share: reading a call's status
//! from `grpc-status`, and a response body that reports the call's end once,
//! when its trailers pass, when it fails or ends without them, or when the
//! client drops it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};

/// A call in progress that is told, once, how it ended.
pub trait CallEnd {
    fn ended(self, code: tonic::Code);
}

/// The status code in `grpc-status`, if the headers or trailers carry one.
pub fn code_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(code))
}

/// Ends `call` with the status of a response's headers, if they carry one
/// (a trailers-only response); otherwise gives the call back for the body.
pub fn end_on_headers<C: CallEnd>(headers: &http::HeaderMap, call: Option<C>) -> Option<C> {
    match (code_of(headers), call) {
        (Some(code), Some(call)) => {
            call.ended(code);
            None
        }
        (_, call) => call,
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its call when the trailers pass by (`OK`
    /// when they carry no status), on an error (`UNKNOWN`), at the end of a
    /// body without trailers (`OK`), or when dropped before (`CANCELLED`).
    pub struct CallBody<B, C: CallEnd> {
        #[pin]
        inner: B,
        call: Option<C>,
    }

    impl<B, C: CallEnd> PinnedDrop for CallBody<B, C> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.ended(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B, C: CallEnd> CallBody<B, C> {
    pub fn new(inner: B, call: Option<C>) -> Self {
        Self { inner, call }
    }
}

impl<B: Body, C: CallEnd> Body for CallBody<B, C> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| code_of(trailers).unwrap_or(tonic::Code::Ok)),
            Some(Err(_)) => Some(tonic::Code::Unknown),
            None => Some(tonic::Code::Ok),
        };
        if let Some(code) = ended
            && let Some(call) = this.call.take()
        {
            call.ended(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
