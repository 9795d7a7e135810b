//! Test support: a fresh database per test, SQLite by default and Postgres
//! when `TEST_DATABASE_URL` is set.

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new() -> anyhow::Result<Self> {
        match crate::needs::shared_postgres() {
            Some(admin_url) => Self::postgres(&admin_url).await,
            None => Self::sqlite(),
        }
    }

    /// Whether tests run against Postgres.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("failed to create temp dir")?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());
        Ok(Self { url, _dir: Some(dir) })
    }

    async fn postgres(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(admin_url)
            .await
            .context("failed to connect to TEST_DATABASE_URL")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        admin.close().await?;
        Ok(Self {
            url: with_database(admin_url, &name),
            _dir: None,
        })
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://h/test?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}

/// A TCP proxy in front of a real server whose link can be cut (or stalled)
/// and restored, to test what happens when a server goes away, or hangs, and
/// comes back.
pub struct CuttableProxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: tokio::sync::watch::Sender<bool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stalled, _) = tokio::sync::watch::channel(false);
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let accept = {
            let cut = cut.clone();
            let stalled = stalled.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let stalled = stalled.subscribe();
                    let task = tokio::spawn(async move {
                        if let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let (from_client, to_client) = inbound.into_split();
                            let (from_server, to_server) = outbound.into_split();
                            tokio::join!(
                                pump(from_client, to_server, stalled.clone()),
                                pump(from_server, to_client, stalled),
                            );
                        }
                    });
                    connections
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(task.abort_handle());
                }
            })
        };
        Ok(Self {
            addr,
            cut,
            stalled,
            connections,
            accept,
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    /// Stops forwarding bytes on every link, open and new, without closing
    /// any: the server seems to hang.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again: new connections after a cut, held bytes after a stall.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        self.stalled.send_replace(false);
    }
}

/// Copies one direction of a link, holding what it reads while stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled.wait_for(|stalled| !stalled).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `url` with its `host:port` replaced by `addr`.
pub fn with_host(url: &str, addr: std::net::SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = authority.rfind('@').map_or("", |i| &authority[..=i]);
    format!("{}{userinfo}{addr}{}", &url[..scheme_end], &rest[authority_end..])
}

/// The `host:port` a URL points at (port defaulting to Postgres's 5432).
pub fn socket_addr_of(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    address_of(url, 5432)
}

/// The `host:port` a URL points at, with `default_port` when it names none.
pub(crate) fn address_of(url: &str, default_port: u16) -> anyhow::Result<std::net::SocketAddr> {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    use std::net::ToSocketAddrs;
    host_port
        .to_socket_addrs()?
        .next()
        .context("database host does not resolve")
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn host_is_replaced_and_read() {
        let addr: std::net::SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(
            with_host("postgres://postgres@127.0.0.1:5432/db", addr),
            "postgres://postgres@127.0.0.1:9999/db"
        );
        assert_eq!(
            socket_addr_of("postgres://postgres@127.0.0.1:5432/db")
                .unwrap()
                .port(),
            5432
        );
    }
}
