//! W3C trace context across the services: injected into the gRPC metadata
//! and HTTP headers of outgoing calls, extracted from incoming ones, and
//! carried to work that runs later ([`Parent`]).
//!
//! Everything here is a no-op unless [`crate::telemetry::init`] installed an
//! OTLP exporter: one relaxed atomic load decides. An incoming `traceparent`
//! is then simply not continued, and outgoing calls carry none.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

mod grpc;

pub use grpc::{AccessLog, GrpcTraceLayer, GrpcTraced, RequestId};

/// Metadata key (and HTTP header) carrying the request id of the client
/// request behind a call.
pub const REQUEST_ID: &str = "x-request-id";

/// A duration in milliseconds to the microsecond, as access lines log it.
pub fn millis(duration: std::time::Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported, and trace context propagated.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub(crate) fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

// === injection ===

/// Writes the current span's context into gRPC metadata (`traceparent`,
/// `tracestate`).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    if enabled() {
        inject(&tracing::Span::current(), &mut MetadataCarrier(metadata));
    }
}

/// Writes the current span's context into HTTP headers, replacing any
/// `traceparent` already there.
pub fn inject_headers(headers: &mut http::HeaderMap) {
    if enabled() {
        inject(&tracing::Span::current(), &mut HeaderCarrier(headers));
    }
}

/// The current span's context as HTTP headers (empty when not tracing), for
/// calls made with a client that takes a header map, such as reqwest.
pub fn headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    inject_headers(&mut headers);
    headers
}

/// The current span's context as `traceparent`/`tracestate` entries (empty
/// when not tracing), for carriers that are plain maps (protobuf fields).
pub fn context_map() -> HashMap<String, String> {
    let mut map = HashMap::new();
    if enabled() {
        inject(&tracing::Span::current(), &mut map);
    }
    map
}

fn inject(span: &tracing::Span, carrier: &mut dyn Injector) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, carrier);
    }
}

// === extraction ===

/// Makes `span` continue the trace whose context `headers` carry (an
/// incoming `traceparent`). Call right after creating the span.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if enabled() {
        adopt(span, &HeaderCarrier::read(headers));
    }
}

/// Makes `span` continue the trace carried in a map of `traceparent` and
/// `tracestate` entries, as [`context_map`] writes it.
pub fn continue_from_map(span: &tracing::Span, map: &HashMap<String, String>) {
    if enabled() && !map.is_empty() {
        adopt(span, map);
    }
}

fn adopt(span: &tracing::Span, carrier: &dyn Extractor) {
    let context = TraceContextPropagator::new().extract(carrier);
    if context.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started.
        let _ = span.set_parent(context);
    }
}

// === Parent ===

/// The context of a span, kept to parent work that starts later, possibly
/// after the span ended (a run queued by a send). Holds nothing when not
/// tracing.
#[derive(Clone, Debug, Default)]
pub struct Parent(Option<SpanContext>);

impl Parent {
    /// The current span's context.
    pub fn current() -> Self {
        if !enabled() {
            return Self(None);
        }
        let context = tracing::Span::current().context();
        let span = context.span();
        let span_context = span.span_context();
        Self(span_context.is_valid().then(|| span_context.clone()))
    }

    /// Whether there is a context to continue.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Makes `span` a child of this context. Call right after creating the span.
    pub fn adopt(&self, span: &tracing::Span) {
        if let Some(parent) = &self.0 {
            let context = opentelemetry::Context::new().with_remote_span_context(parent.clone());
            let _ = span.set_parent(context);
        }
    }

    /// Links `span` to this context, for related work in another trace.
    pub fn link(&self, span: &tracing::Span) {
        if let Some(linked) = &self.0 {
            span.add_link(linked.clone());
        }
    }
}

// === carriers ===

struct MetadataCarrier<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::AsciiMetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderCarrier<'a>(&'a mut http::HeaderMap);

impl HeaderCarrier<'_> {
    fn read(headers: &http::HeaderMap) -> HeaderReader<'_> {
        HeaderReader(headers)
    }
}

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_propagated_while_not_tracing() {
        // No exporter is installed in unit tests.
        assert!(!enabled());
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject_metadata(&mut metadata);
        assert!(metadata.is_empty());
        assert!(headers().is_empty());
        assert!(context_map().is_empty());
        assert!(!Parent::current().is_some());
    }
}
