//! Logging set-up shared by every binary.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

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

/// Keeps telemetry running; dropped when the process ends.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct Telemetry {
    _service: &'static str,
}

/// Installs the global subscriber for `service`. `RUST_LOG` overrides `default_filter`.
pub fn init(service: &'static str, format: LogFormat, default_filter: &str) -> Telemetry {
    install(format, default_filter);
    Telemetry { _service: service }
}

fn install(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format.resolve() {
        LogFormat::Pretty | LogFormat::Auto => registry.with(fmt::layer().with_target(true)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true)).try_init(),
    };
    // A second init (tests, the all-in-one) keeps the first subscriber.
    drop(result);
}

/// Installs a subscriber for tests when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        install(LogFormat::Pretty, "info");
    }
}
