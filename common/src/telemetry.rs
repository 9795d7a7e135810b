//! Logging and trace export set-up shared by every binary.
//!
//! Logs go to standard output as JSON or readable text ([`LogFormat`]),
//! filtered by `RUST_LOG`. Spans are exported over OTLP only when an endpoint
//! is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); otherwise no exporter, no
//! OpenTelemetry layer and no propagation work exist ([`crate::trace`]
//! checks one flag). The variables honoured are listed in docs/operations.md
//! ("Traces and logs").

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when standard output is not a terminal (containers, log
    /// collectors), readable text when it is.
    #[default]
    Auto,
    Pretty,
    Json,
}

impl LogFormat {
    /// `Auto` decided by whether standard output is a terminal.
    pub fn resolve(self) -> Self {
        use std::io::IsTerminal;
        match self {
            Self::Auto if std::io::stdout().is_terminal() => Self::Pretty,
            Self::Auto => Self::Json,
            other => other,
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}` (expected auto, pretty or json)"
            )),
        }
    }
}

/// How long flushing spans may hold up the end of the process.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps telemetry running: dropping it (or [`Telemetry::shutdown`]) flushes
/// the spans not yet exported and stops the exporter.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct Telemetry {
    service: &'static str,
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the spans not yet exported and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        crate::trace::disable();
        // The batch processor exports from its own thread, the gRPC exporter
        // through the Tokio runtime: wait for it without holding a worker
        // thread the runtime may need, and never past the deadline.
        let stop = move || provider.shutdown_with_timeout(FLUSH_TIMEOUT);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(stop)
            }
            Ok(_) => std::thread::spawn(stop).join().unwrap_or_else(|_| {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "flush panicked".into(),
                ))
            }),
            Err(_) => stop(),
        };
        if let Err(error) = result {
            tracing::warn!(service = self.service, %error, "failed to flush spans");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// Installs the global subscriber for `service`: `RUST_LOG` overrides
/// `default_filter`, and spans are exported over OTLP when an endpoint is
/// configured. Call from within the Tokio runtime.
pub fn init(service: &'static str, format: LogFormat, default_filter: &str) -> Telemetry {
    let (config, problem) = match Otlp::from_env(|name| std::env::var(name).ok()) {
        Ok(config) => (config, None),
        Err(problem) => (None, Some(problem)),
    };
    let mut provider = None;
    let mut build_error = None;
    if let Some(config) = &config {
        match config.provider(service) {
            Ok(built) => provider = Some(built),
            Err(error) => build_error = Some(error.to_string()),
        }
    }
    let installed = install(format, default_filter, provider.as_ref());
    if let Some(problem) = problem.or(build_error) {
        tracing::error!(%problem, "OTLP trace export disabled");
    }
    let provider = match (provider, config) {
        (Some(provider), Some(config)) if installed => {
            crate::trace::enable();
            tracing::info!(service, endpoint = %config.endpoint, protocol = ?config.protocol, "exporting traces over OTLP");
            Some(provider)
        }
        (Some(provider), _) => {
            // Another subscriber was installed first (tests); it stays.
            let _ = provider.shutdown_with_timeout(FLUSH_TIMEOUT);
            None
        }
        _ => None,
    };
    Telemetry { service, provider }
}

/// Installs the subscriber; false when one was installed already.
fn install(format: LogFormat, default_filter: &str, provider: Option<&SdkTracerProvider>) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let output = match format.resolve() {
        LogFormat::Pretty | LogFormat::Auto => fmt::layer().with_target(true).boxed(),
        LogFormat::Json => fmt::layer().json().flatten_event(true).boxed(),
    };
    let spans =
        provider.map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("chat-backend")));
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(spans)
        .try_init()
        .is_ok()
}

/// Installs a subscriber for tests when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        install(LogFormat::Pretty, "info", None);
    }
}

// === impl Otlp ===

/// Wire protocol of the OTLP exporter (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// OTLP export settings read from the standard `OTEL_*` variables. The
/// endpoint, headers, timeout and compression, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)` and `OTEL_BSP_*`
/// are read by the OpenTelemetry SDK itself when the pipeline is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Otlp {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// `OTEL_SERVICE_NAME` names the service instead of its own name.
    pub service_name_set: bool,
}

impl Otlp {
    /// The export settings, `None` when traces are not exported: no endpoint,
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let set = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER `{other}` is not supported (otlp or none)"
                ));
            }
        }
        let Some(endpoint) =
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            // The specification's default.
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported (grpc or http/protobuf)"
                ));
            }
        };
        Ok(Some(Self {
            endpoint,
            protocol,
            service_name_set: set("OTEL_SERVICE_NAME").is_some(),
        }))
    }

    /// The tracer provider exporting to the endpoint in batches.
    fn provider(
        &self,
        service: &'static str,
    ) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if self.endpoint.starts_with("https://") {
                    builder
                        .with_tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
                        .build()?
                } else {
                    builder.build()?
                }
            }
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()?,
        };
        let mut resource = Resource::builder();
        if !self.service_name_set {
            resource = resource.with_service_name(service);
        }
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn otlp(vars: &[(&str, &str)]) -> Result<Option<Otlp>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Otlp::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        assert_eq!(otlp(&[]), Ok(None));
        assert_eq!(otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        assert_eq!(
            otlp(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "x")
            ]),
            Ok(None)
        );
    }

    #[test]
    fn an_endpoint_turns_export_on_unless_disabled() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            otlp(&[endpoint]),
            Ok(Some(Otlp {
                endpoint: "http://collector:4318".into(),
                protocol: OtlpProtocol::HttpProtobuf,
                service_name_set: false,
            }))
        );
        assert_eq!(otlp(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(otlp(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
        assert!(otlp(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).is_err());
        let traces_only = otlp(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]);
        assert!(traces_only.is_ok_and(|o| o.is_some()));
    }

    #[test]
    fn the_protocol_and_service_name_variables_are_honoured() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let grpc = otlp(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "edge"),
        ]);
        assert_eq!(
            grpc,
            Ok(Some(Otlp {
                endpoint: "http://collector:4317".into(),
                protocol: OtlpProtocol::Grpc,
                service_name_set: true,
            }))
        );
        let per_signal = otlp(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            per_signal.map(|o| o.map(|o| o.protocol)),
            Ok(Some(OtlpProtocol::HttpProtobuf))
        );
        assert!(otlp(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_an_endpoint_init_installs_no_exporter() {
        // The test process has no OTLP endpoint configured (see `Otlp::from_env`).
        if Otlp::from_env(|name| std::env::var(name).ok()).is_ok_and(|o| o.is_some()) {
            return;
        }
        let telemetry = init("test", LogFormat::Json, "off");
        assert!(!telemetry.is_exporting());
        assert!(!crate::trace::enabled(), "propagation stays off");
        let mut headers = http::HeaderMap::new();
        crate::trace::inject_headers(&mut headers);
        assert!(headers.is_empty(), "nothing injected: {headers:?}");
    }
}
