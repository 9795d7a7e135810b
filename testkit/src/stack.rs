//! Real services on loopback, configured in code: [`worker`], [`core`] and
//! [`gateway`] start one each; [`Stack`] starts a database, a worker, a
//! chat-core and (optionally) a gateway in front.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::db::TestDatabase;

/// Token secret every service of a test stack shares.
pub const SECRET: &str = "test-secret-of-thirty-two-bytes!";

/// Agents for tests that need a run to take a while.
pub const SLOW_AGENTS: &str = r#"
[[agents]]
name = "echo"
description = "echo"
kind = "echo"

[[agents]]
name = "slow"
description = "echo, one word every 150 ms"
kind = "echo"
delay_ms = 150
"#;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Writes an agents config (TOML) to a file that lives as long as the test process.
pub fn agents_file(toml: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("agents-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, toml).context("failed to write the agents config")?;
    Ok(path)
}

/// An agent-worker serving in this process.
pub struct Worker {
    pub addr: SocketAddr,
    /// `http://addr`, as chat-core is given it.
    pub url: String,
}

/// Starts an agent-worker with the agents of `agents` (TOML), or the built-in
/// ones, taking chat-core's tokens signed with [`SECRET`], after `configure`
/// had its say.
pub async fn worker(
    agents: Option<&str>,
    configure: impl FnOnce(&mut agent_worker::Settings),
) -> anyhow::Result<Worker> {
    chat_common::telemetry::init_for_tests();
    let mut settings = agent_worker::Settings {
        listen: loopback(),
        agents_config: agents.map(agents_file).transpose()?,
        jwt_secret: Some(SECRET.into()),
        ..Default::default()
    };
    configure(&mut settings);
    let app = agent_worker::Application::build(settings).await?;
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(Worker {
        addr,
        url: format!("http://{addr}"),
    })
}

/// A chat-core serving in this process, until [`Core::stop`].
pub struct Core {
    pub addr: SocketAddr,
    /// `http://addr`, as gateways are given it.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<anyhow::Result<()>>,
}

impl Core {
    /// Drains it as SIGTERM would, and waits until it has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), &mut self.done)
            .await
            .context("chat-core did not stop")?
            .context("chat-core task failed")?
    }
}

/// Starts a chat-core on `database_url` (migrated) in front of the workers at
/// `worker_urls`, with [`SECRET`], accepting user tokens, on the Redis of
/// `TEST_REDIS_URL` when it is set, after `configure` had its say.
pub async fn core(
    database_url: &str,
    worker_urls: &[&str],
    configure: impl FnOnce(&mut chat_core::Settings),
) -> anyhow::Result<Core> {
    chat_common::telemetry::init_for_tests();
    let mut settings = chat_core::Settings {
        listen: loopback(),
        database_url: Some(database_url.into()),
        migrate: true,
        agent_worker_urls: worker_urls.iter().map(|u| (*u).to_owned()).collect(),
        jwt_secret: Some(SECRET.into()),
        health_interval_ms: 100,
        // The core suites call chat-core as users, with their own tokens,
        // many at once: the limits on such users are set by the tests of them.
        accept_user_tokens: true,
        max_streams_per_user: 0,
        rate_limit_max_requests: std::num::NonZeroU32::MAX,
        message_rate_limit: std::num::NonZeroU32::MAX,
        // Every suite runs on Redis in the pass that provides it.
        redis_url: crate::needs::shared_redis().map(Into::into),
        ..Default::default()
    };
    configure(&mut settings);
    let app = chat_core::Application::build(settings).await?;
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    // Stops on `Core::stop` only: a dropped handle leaves it serving.
    let done = tokio::spawn(app.run_until_stopped(async move {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    Ok(Core {
        addr,
        url: format!("http://{addr}"),
        stop: Some(stop),
        done,
    })
}

/// A gateway serving in this process.
pub struct Gateway {
    pub addr: SocketAddr,
}

impl Gateway {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts a gateway in front of the chat-core at `core_url`, with
/// [`SECRET`], after `configure` had its say.
pub async fn gateway(
    core_url: &str,
    configure: impl FnOnce(&mut gateway::Settings),
) -> anyhow::Result<Gateway> {
    let mut settings = gateway::Settings {
        listen: loopback(),
        chat_core_url: core_url.to_owned(),
        jwt_secret: Some(SECRET.into()),
        ..Default::default()
    };
    configure(&mut settings);
    let app = gateway::Application::build(settings).await?;
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(Gateway { addr })
}

type Configure<T> = Box<dyn FnOnce(&mut T) + Send>;
/// Makes chat-core's database URL out of the test database's.
pub type Rewrite = Box<dyn FnOnce(&str) -> String + Send>;

/// A fresh database with a worker, a chat-core and, when asked for, a gateway.
pub struct Stack {
    pub db: TestDatabase,
    pub worker: Worker,
    pub core: Core,
    pub gateway: Option<Gateway>,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The gateway; panics when the stack was built without one.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("this stack has no gateway")
    }
}

/// Builds a [`Stack`]: each setter configures one service in code.
#[derive(Default)]
pub struct StackBuilder {
    agents: Option<String>,
    worker: Option<Configure<agent_worker::Settings>>,
    core: Option<Configure<chat_core::Settings>>,
    gateway: Option<Configure<gateway::Settings>>,
    database_url: Option<Rewrite>,
}

impl StackBuilder {
    /// The worker serves these agents (TOML) instead of the built-in ones.
    pub fn agents(mut self, toml: &str) -> Self {
        self.agents = Some(toml.to_owned());
        self
    }

    pub fn worker(mut self, configure: impl FnOnce(&mut agent_worker::Settings) + Send + 'static) -> Self {
        self.worker = Some(Box::new(configure));
        self
    }

    pub fn core(mut self, configure: impl FnOnce(&mut chat_core::Settings) + Send + 'static) -> Self {
        self.core = Some(Box::new(configure));
        self
    }

    /// Adds a gateway in front of chat-core, configured by `configure`.
    pub fn gateway(mut self, configure: impl FnOnce(&mut gateway::Settings) + Send + 'static) -> Self {
        self.gateway = Some(Box::new(configure));
        self
    }

    /// Adds a gateway with its defaults.
    pub fn with_gateway(self) -> Self {
        self.gateway(|_| {})
    }

    /// chat-core reaches the test database at the URL `rewrite` makes of its
    /// own (through a proxy, for example).
    pub fn database_url(mut self, rewrite: impl FnOnce(&str) -> String + Send + 'static) -> Self {
        self.database_url = Some(Box::new(rewrite));
        self
    }

    pub async fn start(self) -> anyhow::Result<Stack> {
        let worker = worker(
            self.agents.as_deref(),
            self.worker.unwrap_or_else(|| Box::new(|_| {})),
        )
        .await?;
        let db = TestDatabase::new().await?;
        let database_url = match self.database_url {
            Some(rewrite) => rewrite(&db.url),
            None => db.url.clone(),
        };
        let core = core(
            &database_url,
            &[&worker.url],
            self.core.unwrap_or_else(|| Box::new(|_| {})),
        )
        .await?;
        let gateway = match self.gateway {
            Some(configure) => Some(gateway(&core.url, configure).await?),
            None => None,
        };
        Ok(Stack {
            db,
            worker,
            core,
            gateway,
        })
    }
}
