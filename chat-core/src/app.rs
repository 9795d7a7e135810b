//! Builds chat-core from its settings and serves it until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_common::token::{Audience, Scope, SelfSigned, TokenKeys};
use chat_proto::chat::v1::chat_service_server::ChatServiceServer;
use chat_proto::chat::v1::operator_service_server::OperatorServiceServer;
use chat_proto::chat::v1::user_service_server::UserServiceServer;
use migration::{Migrator, MigratorTrait};
use tonic::service::interceptor::InterceptedService;
use tracing::{info, warn};

use chat_common::grpc_server::Endpoint;
use chat_common::trace::AccessLog;
use chat_common::{Health, inproc};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::api::{AuthInterceptor, ChatApi, OperatorApi, Passwords, StreamLimits, UserApi, UserLimits};
use crate::bus::{EventBus, InProcessBus, RedisBus};
use crate::dispatch::{DispatchConfig, Dispatcher, WorkerLink, WorkerPool};
use crate::service::{Accounts, ChatCore, Limits, ReplayBudget};
use crate::settings::Settings;
use crate::store::{self, ChatStore, SeaStore};

/// Lifetime of the service tokens chat-core signs for agent-workers.
const WORKER_TOKEN_TTL: Duration = Duration::from_secs(300);

/// Name under which gRPC health reports the chat service.
const HEALTH_SERVICE: &str = "chat.v1.ChatService";

/// A built chat-core, listening but not yet serving.
pub struct Application {
    /// The gRPC listener (with TLS kept current with its files) and the
    /// mount a gateway in this process (the all-in-one) calls through.
    endpoint: Endpoint,
    core: ChatCore,
    keys: Arc<TokenKeys>,
    health: Health,
    settings: Settings,
    /// SQLite's log checkpoints, in the background while the application lives.
    wal_checkpoints: Option<AbortOnDropHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, None).await
    }

    /// [`Application::build`], calling the agent-worker of this process
    /// directly through `worker` instead of `AGENT_WORKER_URLS` (the
    /// all-in-one).
    pub async fn build_with_worker(settings: Settings, worker: inproc::Connector) -> anyhow::Result<Self> {
        Self::build_with(settings, Some(worker)).await
    }

    async fn build_with(mut settings: Settings, worker: Option<inproc::Connector>) -> anyhow::Result<Self> {
        settings.load_secret_files().map_err(anyhow::Error::msg)?;
        settings.validate().map_err(anyhow::Error::msg)?;
        let secret = settings
            .jwt_secret
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .context("JWT_SECRET is required")?;
        let keys = Arc::new(TokenKeys::new(secret.as_bytes()));
        let db = store::connect(
            settings.database_url(),
            settings.database_max_connections,
            Duration::from_secs(settings.database_acquire_timeout_secs),
        )
        .await
        .context("failed to connect to the database")?;
        if settings.migrate {
            Migrator::up(&db, None)
                .await
                .context("failed to run migrations")?;
        }
        info!(backend = store::backend_name(&db), "database connected");
        let wal_checkpoints = store::spawn_wal_checkpoints(settings.database_url())
            .await
            .context("failed to open the WAL checkpoint connection")?
            .map(AbortOnDropHandle::new);
        let store: Arc<dyn ChatStore> = Arc::new(SeaStore::new(db));
        let bus: Arc<dyn EventBus> = match settings.redis_url() {
            Some(url) => Arc::new(RedisBus::connect(url, settings.subscriber_buffer_batches).await?),
            None => Arc::new(InProcessBus::new(settings.subscriber_buffer_batches)),
        };
        let worker_tls = settings
            .agent_worker_tls()
            .and_then(|files| {
                files
                    .map(|f| f.config(settings.agent_worker_urls.first().map_or("", String::as_str)))
                    .transpose()
            })
            .map_err(anyhow::Error::msg)?;
        let link = WorkerLink {
            token: SelfSigned::new(
                keys.clone(),
                "chat-core",
                &[Audience::AgentWorker],
                WORKER_TOKEN_TTL,
            ),
            tls: worker_tls,
        };
        let resolve_every = Duration::from_secs(settings.agent_worker_resolve_secs);
        let workers = match worker {
            Some(worker) => WorkerPool::in_process(worker, resolve_every, link),
            None => WorkerPool::new(&settings.agent_worker_urls, resolve_every, link)
                .await
                .map_err(anyhow::Error::msg)?,
        };
        let dispatcher = Dispatcher::new(
            store.clone(),
            bus.clone(),
            workers,
            DispatchConfig {
                history_window: settings.history_window,
                run_timeout: Duration::from_secs(settings.run_timeout_secs),
                lease: Duration::from_millis(settings.run_lease_ms),
                max_attempts: settings.run_max_attempts,
                dispatch_timeout: Duration::from_millis(settings.dispatch_timeout_ms),
            },
        );
        let core = ChatCore::new(
            store,
            bus,
            dispatcher,
            Limits {
                max_content_bytes: settings.max_content_bytes,
                max_sessions_per_user: settings.max_sessions_per_user,
                default_concurrency: settings.default_concurrency,
                agent_concurrency: settings
                    .agent_concurrency
                    .iter()
                    .map(|p| (p.agent.clone(), p.policy))
                    .collect(),
                session_ttl_ms: i64::try_from(settings.session_ttl_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
            },
            settings.default_agent.clone(),
        )
        .with_replay_budget(ReplayBudget::new(settings.replay_rate_limit));
        let tls = settings.tls.load().map_err(anyhow::Error::msg)?;
        let endpoint = Endpoint::bind(settings.listen, tls).await?;
        let health = Health::new("chat-core");
        health.set("database", false);
        Ok(Self {
            endpoint,
            core,
            keys,
            health,
            settings,
            wal_checkpoints,
        })
    }

    /// How a gateway in this process calls chat-core directly, beside the
    /// listener (the all-in-one).
    pub fn in_process(&self) -> inproc::Connector {
        self.endpoint.in_process()
    }

    /// Readiness: database (and Redis, when configured) reachable, not draining.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Serves until `stop` completes, then drains: readiness turns red,
    /// client streams end (gateways reconnect their clients elsewhere), no
    /// new runs are claimed, and the runs held are released for another
    /// replica to take over, all within the shutdown deadline.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (core, health, settings) = (self.core, self.health, self.settings);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let mirror =
            chat_common::health::mirror_to_grpc(health.clone(), health_reporter, HEALTH_SERVICE).await;
        let probe = tokio::spawn(probe_dependencies(
            core.store().clone(),
            core.bus().clone(),
            health.clone(),
            Duration::from_millis(settings.health_interval_ms),
        ));
        core.dispatcher.spawn_orphan_scan();
        core.dispatcher.spawn_cancel_listener();
        let sweeper = (settings.session_ttl_secs > 0).then(|| {
            tokio::spawn(sweep_idle_sessions(
                core.sessions().clone(),
                Duration::from_secs(settings.session_ttl_secs),
                Duration::from_millis(settings.session_sweep_interval_ms),
            ))
        });
        let policy = settings.password_policy();
        let passwords = Arc::new(
            tokio::task::spawn_blocking(move || Passwords::new(policy))
                .await
                .context("password set-up failed")?
                .map_err(anyhow::Error::msg)?,
        );
        let draining = CancellationToken::new();
        let user_limits = Arc::new(UserLimits::new(
            (
                settings.rate_limit_max_requests,
                Duration::from_secs(settings.rate_limit_window_secs),
            ),
            (
                settings.message_rate_limit,
                Duration::from_secs(settings.message_rate_limit_window_secs),
            ),
        ));
        let pruning = {
            let limits = Arc::downgrade(&user_limits);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let Some(limits) = limits.upgrade() else { return };
                    limits.prune();
                }
            })
        };
        let interceptor = AuthInterceptor::new(self.keys, settings.accept_user_tokens)
            .with_user_limits(user_limits.clone())
            .with_sign_outs(core.streams().clone());
        // Reflection is off unless asked for, and then for services only.
        let reflection = if settings.grpc_reflection {
            let service = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .context("failed to build reflection service")?;
            Some(InterceptedService::new(
                service,
                interceptor.services_only(Scope::Reflection),
            ))
        } else {
            None
        };
        let stream_limits = StreamLimits {
            token_grace: Duration::from_secs(settings.stream_token_grace_secs),
            max_streams_per_user: settings.max_streams_per_user,
        };
        let chat = ChatServiceServer::with_interceptor(
            ChatApi::new(core.clone(), draining.clone(), stream_limits, user_limits),
            interceptor.clone(),
        );
        let operators =
            OperatorServiceServer::with_interceptor(OperatorApi::new(core.clone()), interceptor.clone());
        let users = UserServiceServer::with_interceptor(
            UserApi::new(Accounts::new(
                core.store().clone(),
                passwords,
                core.bus().clone(),
                core.streams().clone(),
            )),
            interceptor.for_scope(Scope::Users),
        );
        // Sign-ins revoked before this replica started are refused here too.
        let revocations = core.streams().follow(core.bus().as_ref()).await;
        let dispatcher = core.dispatcher.clone();
        info!(addr = %self.endpoint.local_addr(), tls = self.endpoint.tls(), "chat-core listening");
        let stopping = draining.clone();
        // One service stack answers the network and, directly, a gateway of
        // this process (the all-in-one).
        let mut routes = tonic::service::Routes::new(health_service)
            .add_service(chat)
            .add_service(operators)
            .add_service(users);
        if let Some(reflection) = reflection {
            routes = routes.add_service(reflection);
        }
        let service = tower::ServiceBuilder::new()
            .layer(chat_common::metrics::GrpcMetricsLayer)
            // Per-call access lines at debug: chat-core serves every client
            // call, so an info line each would dominate the logs.
            .layer(chat_common::trace::GrpcTraceLayer::new(AccessLog::Debug))
            .service(routes.prepare());
        let server = self.endpoint.serve(
            tonic::transport::Server::builder().max_concurrent_streams(Some(1 << 20)),
            service,
            async move { stopping.cancelled().await },
            async move { dispatcher.shutdown().await },
        );
        let result = chat_common::shutdown::drain(
            stop,
            &health,
            Duration::from_secs(settings.shutdown_timeout_secs),
            draining,
            server,
        )
        .await;
        probe.abort();
        mirror.abort();
        revocations.abort();
        pruning.abort();
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        drop(self.wal_checkpoints);
        info!("chat-core stopped");
        result
    }
}

/// Keeps the `database` and `redis` readiness checks current.
async fn probe_dependencies(
    store: Arc<dyn ChatStore>,
    bus: Arc<dyn EventBus>,
    health: Health,
    every: Duration,
) {
    let mut database_ok = None;
    loop {
        let ok = tokio::time::timeout(every.max(Duration::from_secs(2)), store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        health.set("database", ok);
        if database_ok != Some(ok) {
            if ok {
                info!("database reachable");
            } else {
                warn!("database unreachable: not ready");
            }
            database_ok = Some(ok);
        }
        if let Some(connected) = bus.is_connected() {
            health.set("redis", connected);
            metrics::gauge!("chat_redis_up").set(if connected { 1.0 } else { 0.0 });
        }
        store.record_pool_metrics();
        if ok && let Ok(queued) = store.count_queued_runs().await {
            metrics::gauge!("chat_runs_queued").set(queued as f64);
        }
        tokio::time::sleep(every).await;
    }
}

/// Expires sessions idle for longer than `ttl`.
async fn sweep_idle_sessions(sessions: crate::lifecycle::SessionLifecycle, ttl: Duration, every: Duration) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    loop {
        match sessions
            .expire_idle(crate::domain::now_ms().saturating_sub(ttl_ms))
            .await
        {
            Ok(expired) if expired > 0 => info!(count = expired, "expired idle sessions"),
            Ok(_) => {}
            Err(error) => warn!(%error, "session sweep failed"),
        }
        tokio::time::sleep(every).await;
    }
}
