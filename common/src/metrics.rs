//! Prometheus metrics: one recorder per process, rendered by the admin
//! listener's `/metrics`, plus the gRPC request histogram as a tower layer.
//!
//! Services record with the `metrics` macros; names and labels are listed in
//! docs/operations.md. Histograms are in seconds with [`BUCKETS`].

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::grpc_call::{CallBody, CallEnd, code_of};

/// Histogram buckets, in seconds: 1 ms to 60 s.
pub const BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0,
];

/// How often recorded histogram samples are folded into their buckets when
/// nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

struct Recorder {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static RECORDER: OnceLock<Option<Recorder>> = OnceLock::new();

/// Installs the process's recorder (once; later calls are no-ops) and
/// describes the process metrics. Call from within a Tokio runtime.
pub fn install() {
    let recorder = RECORDER.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|error| tracing::warn!(%error, "metrics recorder not installed"))
            .ok()?;
        let process = metrics_process::Collector::default();
        process.describe();
        Some(Recorder { handle, process })
    });
    if let Some(recorder) = recorder {
        let handle = recorder.handle.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            static UPKEEP: OnceLock<()> = OnceLock::new();
            UPKEEP.get_or_init(|| {
                runtime.spawn(async move {
                    loop {
                        tokio::time::sleep(UPKEEP_EVERY).await;
                        handle.run_upkeep();
                    }
                });
            });
        }
    }
}

/// Every metric of the process in the Prometheus text format.
pub fn render() -> String {
    match RECORDER.get() {
        Some(Some(recorder)) => {
            recorder.process.collect();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // Tasks the process holds: each open socket or stream keeps
                // some, so a count that only grows is a leak.
                #[allow(clippy::cast_precision_loss)]
                let alive = runtime.metrics().num_alive_tasks() as f64;
                metrics::gauge!("chat_runtime_alive_tasks").set(alive);
            }
            recorder.handle.render()
        }
        _ => String::new(),
    }
}

/// The gRPC status name of a numeric code, as Prometheus dashboards expect it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Records `chat_grpc_request_duration_seconds{service, method, code}` for
/// every call a tonic server answers: unary calls when the response ends,
/// streams when the stream ends (a stream the client drops counts as
/// `CANCELLED`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(Call {
                service,
                method,
                started: Instant::now(),
            }),
        }
    }
}

/// `/pkg.Service/Method` taken apart; anything else is `unknown`.
fn split_path(path: &str) -> (String, String) {
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// A response body that records its call when it ends.
pub type MeteredBody<B> = CallBody<B, Call>;

/// A call being timed, recorded when it ends.
#[derive(Debug)]
pub struct Call {
    service: String,
    method: String,
    started: Instant,
}

impl Call {
    fn record(self, code: &'static str) {
        metrics::histogram!(
            "chat_grpc_request_duration_seconds",
            "service" => self.service,
            "method" => self.method,
            "code" => code,
        )
        .record(self.started.elapsed().as_secs_f64());
    }
}

impl CallEnd for Call {
    fn ended(self, code: tonic::Code) {
        self.record(grpc_code_name(code));
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<&'static str> {
    code_of(headers).map(grpc_code_name)
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetrics`].
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only response carries its status in the headers.
                if let Some(code) = status_of(response.headers())
                    && let Some(done) = call.take()
                {
                    done.record(code);
                }
                Ok(response.map(|body| CallBody::new(body, call)))
            }
            Err(error) => {
                if let Some(call) = call {
                    call.record("UNKNOWN");
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
    fn grpc_paths_are_split_into_service_and_method() {
        assert_eq!(
            split_path("/chat.v1.ChatService/Connect"),
            ("chat.v1.ChatService".to_owned(), "Connect".to_owned())
        );
        assert_eq!(split_path("/"), ("unknown".to_owned(), "unknown".to_owned()));
    }

    #[test]
    fn statuses_are_read_from_headers_or_trailers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_of(&headers), Some("NOT_FOUND"));
    }
}
