//! The server side of a gRPC hop: a span per call that continues the
//! caller's trace and carries its request id, and one access log line per
//! call when it ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tracing::field::Empty;

use crate::grpc_call::{CallBody, CallEnd, code_of};
use crate::metrics::grpc_code_name;

/// Level of the per-call access line (target `access`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Debug,
    Info,
}

/// The request id of a call (its `x-request-id` metadata), put in the
/// request's extensions by [`GrpcTraceLayer`] for handlers to pass on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Longest request id taken from metadata; longer ones are ignored.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Services that get no span (probes and tooling): only their access line.
const UNTRACED_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Tower layer for tonic servers: each call gets an info span named after
/// its method, child of the `traceparent` in its metadata when traces are
/// exported, with the `x-request-id` as `request_id`; the handler runs in it
/// and the span ends when the response starts (streams live on in the spans
/// their handlers create). When the call ends, including a stream's end, a
/// line with method, status, duration and request id is logged at the
/// chosen level.
#[derive(Clone, Copy, Debug)]
pub struct GrpcTraceLayer {
    access_log: AccessLog,
    root_spans: bool,
}

impl GrpcTraceLayer {
    pub fn new(access_log: AccessLog) -> Self {
        Self {
            access_log,
            root_spans: true,
        }
    }

    /// Calls that carry no trace context get no span while traces are
    /// exported, so periodic calls from untraced background work (a pool
    /// refreshing what workers serve) do not each start a trace.
    pub fn continued_traces_only(mut self) -> Self {
        self.root_spans = false;
        self
    }
}

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTraced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTraced { inner, layer: *self }
    }
}

/// See [`GrpcTraceLayer`].
#[derive(Clone, Debug)]
pub struct GrpcTraced<S> {
    inner: S,
    layer: GrpcTraceLayer,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcTraced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let request_id = request
            .headers()
            .get(super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN)
            .map(str::to_owned);
        let span = self.span(&path, request.headers(), request_id.as_deref());
        if let Some(id) = &request_id {
            request.extensions_mut().insert(RequestId(id.clone()));
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TracedFuture {
            inner,
            span: Some(span),
            call: Some(Call {
                path,
                request_id,
                started: Instant::now(),
                access_log: self.layer.access_log,
            }),
        }
    }
}

impl<S> GrpcTraced<S> {
    fn span(&self, path: &str, headers: &http::HeaderMap, request_id: Option<&str>) -> tracing::Span {
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        if UNTRACED_SERVICES.contains(&service)
            || !self.layer.root_spans && super::enabled() && !headers.contains_key("traceparent")
        {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "grpc",
            otel.name = %path,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            request_id = Empty,
        );
        super::continue_from_headers(&span, headers);
        if let Some(id) = request_id {
            span.record("request_id", id);
        }
        span
    }
}

/// A response body that logs its call when it ends.
pub type LoggedBody<B> = CallBody<B, Call>;

/// A call in progress, logged when it ends.
#[derive(Debug)]
pub struct Call {
    path: String,
    request_id: Option<String>,
    started: Instant,
    access_log: AccessLog,
}

impl Call {
    fn log(self, code: tonic::Code) {
        let code = grpc_code_name(code);
        let duration_ms = super::millis(self.started.elapsed());
        let request_id = self.request_id.as_deref().unwrap_or("");
        match self.access_log {
            AccessLog::Debug => {
                tracing::debug!(target: "access", rpc = %self.path, code, duration_ms, request_id, "grpc call")
            }
            AccessLog::Info => {
                tracing::info!(target: "access", rpc = %self.path, code, duration_ms, request_id, "grpc call")
            }
        }
    }
}

impl CallEnd for Call {
    fn ended(self, code: tonic::Code) {
        self.log(code);
    }
}

/// Whether a server reports `code` as its own failure (OpenTelemetry's
/// gRPC conventions), rather than the caller's.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcTraced`].
    pub struct TracedFuture<F> {
        #[pin]
        inner: F,
        span: Option<tracing::Span>,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<LoggedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.as_ref().map(tracing::Span::enter);
            ready!(this.inner.poll(cx))
        };
        let span = this.span.take();
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only response (an error) carries its status in the headers.
                if let Some(code) = code_of(response.headers()) {
                    if let Some(span) = &span {
                        span.record("rpc.grpc.status_code", code as i32);
                        if is_server_error(code) {
                            span.record("otel.status_code", "ERROR");
                        }
                    }
                    if let Some(call) = call.take() {
                        call.log(code);
                    }
                }
                Ok(response.map(|inner| CallBody::new(inner, call)))
            }
            Err(error) => {
                if let Some(call) = call {
                    call.log(tonic::Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_from_grpc_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(code_of(&headers), Some(tonic::Code::Unavailable));
        assert!(is_server_error(tonic::Code::Unavailable));
        assert!(!is_server_error(tonic::Code::NotFound));
    }
}
