//! agent-worker: a stateless runtime that serves `agent.v1.AgentWorker` for the agents in its config.
//!
//! A run arrives in [`service`], which finds the agent in the [`agents::Registry`] built from the
//! [`config`] file and streams the agent's events back. [`Application`] wires the gRPC server
//! (with health and reflection) around it; `main.rs` only parses [`Settings`] and runs it.

pub mod agents;
mod auth;
pub mod config;
pub mod service;
mod settings;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use chat_common::grpc_server::Endpoint;
use chat_common::trace::{AccessLog, GrpcTraceLayer};
use chat_common::{Health, inproc};
use chat_proto::agent::v1::agent_worker_server::AgentWorkerServer;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

pub use config::AgentsConfig;
pub use service::AgentWorkerService;
pub use settings::{ASSISTANT, Settings};

/// The router of the built-in banking demo, whose unplaced messages go to the llm assistant when there is one.
const BANK_ROUTER: &str = "bank";

/// A worker with its listener bound, ready to serve.
pub struct Application {
    endpoint: Endpoint,
    service: AgentWorkerService,
    health: Health,
    shutdown_timeout: std::time::Duration,
    auth: auth::RequireServiceToken,
    reflection: bool,
}

// === impl Application ===

impl Application {
    /// Loads the agents config and binds the listen address.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        settings.load_secret_files().map_err(anyhow::Error::msg)?;
        settings.validate().map_err(anyhow::Error::msg)?;
        let tls = settings.tls.load().map_err(anyhow::Error::msg)?;
        let mut config = AgentsConfig::load(settings.agents_config.as_deref()).with_context(|| {
            match &settings.agents_config {
                Some(path) => format!("invalid agents config {}", path.display()),
                None => "invalid built-in agents config".to_owned(),
            }
        })?;
        let env = |name: &str| match chat_common::secret::from_env(name) {
            Ok(value) => value.map(|v| secrecy::ExposeSecret::expose_secret(&v).to_owned()),
            Err(error) => {
                tracing::warn!(%error, "secret not read");
                None
            }
        };
        if let Some(assistant) = settings.llm_assistant(&env) {
            let default_of = settings.agents_config.is_none().then_some(BANK_ROUTER);
            config
                .add_llm_assistant(assistant, default_of)
                .context("failed to add the llm assistant")?;
        }
        let registry = agents::Registry::with_env(config, &env).context("failed to set up the agents")?;
        let names: Vec<&str> = registry.infos().iter().map(|info| info.name.as_str()).collect();
        tracing::info!(agents = ?names, "agents loaded");
        let endpoint = Endpoint::bind(settings.listen, tls).await?;
        let service = AgentWorkerService::new(registry, settings.max_concurrent_runs);
        Ok(Self {
            endpoint,
            service,
            health: Health::new("agent-worker"),
            shutdown_timeout: std::time::Duration::from_secs(settings.shutdown_timeout_secs),
            auth: auth::RequireServiceToken::new(settings.token_keys()),
            reflection: settings.grpc_reflection,
        })
    }

    /// How a chat-core in this process calls the worker directly, beside
    /// the listener (the all-in-one).
    pub fn in_process(&self) -> inproc::Connector {
        self.endpoint.in_process()
    }

    /// The address the server listens on (the actual port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Readiness: not draining.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves gRPC until `stop` completes, then drains: readiness turns red,
    /// no new runs are taken, and in-flight runs finish within the shutdown
    /// deadline.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mirror = chat_common::health::mirror_to_grpc(
            self.health.clone(),
            reporter,
            chat_proto::agent::v1::agent_worker_server::SERVICE_NAME,
        )
        .await;
        // Reflection only when enabled, and behind the same check as runs.
        let reflection = if self.reflection {
            let service = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(chat_proto::agent::v1::agent_worker_server::SERVICE_NAME)
                .with_service_name("grpc.health.v1.Health")
                .build_v1()
                .context("failed to build the reflection service")?;
            Some(InterceptedService::new(service, self.auth.clone()))
        } else {
            None
        };
        let worker = InterceptedService::new(
            AgentWorkerServer::new(self.service)
                .max_decoding_message_size(chat_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(chat_proto::MAX_MESSAGE_BYTES),
            self.auth,
        );

        let draining = CancellationToken::new();
        let stopping = draining.clone();
        let mut routes = tonic::service::Routes::new(health_service).add_service(worker);
        if let Some(reflection) = reflection {
            routes = routes.add_service(reflection);
        }
        // One service stack answers the network and, directly, a chat-core
        // of this process (the all-in-one).
        let service = tower::ServiceBuilder::new()
            .layer(chat_common::metrics::GrpcMetricsLayer)
            // Per-call access lines at debug (chat-core polls `ListAgents`);
            // each run logs its own start and end at info.
            .layer(GrpcTraceLayer::new(AccessLog::Debug).continued_traces_only())
            .service(routes.prepare());
        tracing::info!(addr = %self.endpoint.local_addr(), "agent-worker listening");
        let server = self.endpoint.serve(
            tonic::transport::Server::builder(),
            service,
            async move { stopping.cancelled().await },
            std::future::ready(()),
        );
        let result =
            chat_common::shutdown::drain(stop, &self.health, self.shutdown_timeout, draining, server).await;
        mirror.abort();
        tracing::info!("agent-worker stopped");
        result
    }
}

/// Log levels when `RUST_LOG` is unset.
pub const LOG_FILTER: &str = "info";

/// Runs a worker from its settings: logging, the admin listener, then the
/// server until SIGTERM or Ctrl-C. What the `agent-worker` binary and `chat
/// agent-worker` do.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("agent-worker", settings.log_format, LOG_FILTER);
    let admin_listen = settings.admin_listen;
    let app = Application::build(settings).await?;
    let health = app.health().clone();
    chat_common::admin::until_signal(admin_listen, health, |stop| app.run_until_stopped(stop)).await
}
