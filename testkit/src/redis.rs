//! A `redis-server` of a test's own, so stopping or restarting it disturbs
//! no other test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A private `redis-server` on a free loopback port, killed when dropped.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one; `None` when `redis-server` is not installed (which fails
    /// the test under [`crate::needs::REQUIRE_ALL`]).
    ///
    /// # Panics
    /// When `redis-server` is installed but does not start.
    pub async fn start() -> Option<Self> {
        crate::needs::program("redis-server", &["--version"], "install redis-server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self { port, child: None };
        redis.resume().await.expect("a private redis-server starts");
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on its port, empty, once it accepts
    /// connections.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("redis-server does not start")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("redis-server on port {} accepts no connection", self.port)
    }

    /// Stops the server and starts it again, empty.
    ///
    /// # Panics
    /// When it does not start again.
    pub async fn restart(&mut self) {
        self.resume().await.expect("redis-server restarts");
    }
}
