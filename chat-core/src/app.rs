//! Builds chat-core from its settings and serves it until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_common::token::TokenKeys;
use chat_proto::chat::v1::chat_service_server::ChatServiceServer;
use chat_proto::chat::v1::user_service_server::UserServiceServer;
use migration::{Migrator, MigratorTrait};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::api::{AuthInterceptor, ChatApi, Passwords, UserApi};
use crate::bus::{EventBus, InProcessBus, RedisBus};
use crate::dispatch::{DispatchConfig, Dispatcher, WorkerPool};
use crate::service::{ChatCore, Concurrency, Limits};
use crate::settings::Settings;
use crate::store::{self, ChatStore, SeaStore};

/// Name under which gRPC health reports the chat service.
const HEALTH_SERVICE: &str = "chat.v1.ChatService";

/// A built chat-core, listening but not yet serving.
pub struct Application {
    listener: TcpListener,
    core: ChatCore,
    keys: Arc<TokenKeys>,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let secret = settings
            .jwt_secret
            .clone()
            .filter(|s| !s.is_empty())
            .context("JWT_SECRET is required")?;
        let keys = Arc::new(TokenKeys::new(secret.as_bytes()));
        let db = store::connect(
            &settings.database_url,
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
        let store: Arc<dyn ChatStore> = Arc::new(SeaStore::new(db));
        let bus: Arc<dyn EventBus> = match settings.redis_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => Arc::new(RedisBus::connect(url).await?),
            None => Arc::new(InProcessBus::default()),
        };
        let workers = WorkerPool::new(
            &settings.agent_worker_urls,
            Duration::from_secs(settings.agent_worker_resolve_secs.max(1)),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let dispatcher = Dispatcher::new(
            store.clone(),
            bus.clone(),
            workers,
            DispatchConfig {
                history_window: settings.history_window,
                run_timeout: Duration::from_secs(settings.run_timeout_secs),
                lease: Duration::from_millis(settings.run_lease_ms),
                max_attempts: settings.run_max_attempts.max(1),
                dispatch_timeout: Duration::from_millis(settings.dispatch_timeout_ms.max(1)),
            },
        );
        let core = ChatCore::new(
            store,
            bus,
            dispatcher,
            Limits {
                max_content_bytes: settings.max_content_bytes,
                max_sessions_per_user: settings.max_sessions_per_user,
                default_concurrency: Concurrency::parse(&settings.default_concurrency)
                    .context("DEFAULT_CONCURRENCY must be enqueue, reject or interrupt")?,
                agent_concurrency: agent_policies(&settings.agent_concurrency)?,
            },
            settings.default_agent.clone(),
        );
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("failed to listen on {}", settings.listen))?;
        Ok(Self {
            listener,
            core,
            keys,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// Serves until `shutdown` completes, then stops runners and drains calls.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            core,
            keys,
            settings,
        } = self;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        // Known (not serving) from the first call on; the probe turns it green.
        health_reporter
            .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
            .await;
        let probe = tokio::spawn(probe_database(
            core.store().clone(),
            health_reporter,
            Duration::from_millis(settings.health_interval_ms.max(50)),
        ));
        core.dispatcher.spawn_orphan_scan();
        let sweeper = (settings.session_ttl_secs > 0).then(|| {
            tokio::spawn(sweep_idle_sessions(
                core.store().clone(),
                Duration::from_secs(settings.session_ttl_secs),
                Duration::from_millis(settings.session_sweep_interval_ms.max(10)),
            ))
        });
        let policy = settings.password_policy();
        let passwords = Arc::new(
            tokio::task::spawn_blocking(move || Passwords::new(policy))
                .await
                .context("password set-up failed")?
                .map_err(anyhow::Error::msg)?,
        );
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("failed to build reflection service")?;
        let interceptor = AuthInterceptor::new(keys);
        let chat = ChatServiceServer::with_interceptor(ChatApi::new(core.clone()), interceptor.clone());
        let users =
            UserServiceServer::with_interceptor(UserApi::new(core.store().clone(), passwords), interceptor);
        let dispatcher = core.dispatcher.clone();
        info!(addr = %listener.local_addr()?, "chat-core listening");
        let result = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(1 << 20))
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(chat)
            .add_service(users)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                shutdown.await;
                dispatcher.shutdown().await;
            })
            .await;
        probe.abort();
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        result.context("gRPC server failed")
    }
}

/// Reports SERVING while the database answers, NOT_SERVING otherwise.
async fn probe_database(
    store: Arc<dyn ChatStore>,
    reporter: tonic_health::server::HealthReporter,
    every: Duration,
) {
    let mut serving = None;
    loop {
        let ok = tokio::time::timeout(every.max(Duration::from_secs(2)), store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if serving != Some(ok) {
            let status = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status(HEALTH_SERVICE, status).await;
            reporter.set_service_status("", status).await;
            if ok {
                info!("database reachable: serving");
            } else {
                warn!("database unreachable: not serving");
            }
            serving = Some(ok);
        }
        tokio::time::sleep(every).await;
    }
}

/// Expires sessions idle for longer than `ttl`.
async fn sweep_idle_sessions(store: Arc<dyn ChatStore>, ttl: Duration, every: Duration) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    loop {
        match store
            .expire_idle_sessions(crate::domain::now_ms().saturating_sub(ttl_ms))
            .await
        {
            Ok(expired) if !expired.is_empty() => info!(count = expired.len(), "expired idle sessions"),
            Ok(_) => {}
            Err(error) => warn!(%error, "session sweep failed"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Parses `agent=policy` entries of AGENT_CONCURRENCY.
fn agent_policies(entries: &[String]) -> anyhow::Result<std::collections::HashMap<String, Concurrency>> {
    entries
        .iter()
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            entry
                .split_once('=')
                .and_then(|(agent, policy)| {
                    Some((agent.trim().to_owned(), Concurrency::parse(policy.trim())?))
                })
                .with_context(|| {
                    format!("AGENT_CONCURRENCY entry `{entry}` is not agent=enqueue|reject|interrupt")
                })
        })
        .collect()
}
