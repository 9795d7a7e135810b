//! The sea-orm connection behind [`SeaStore`]: one implementation for
//! Postgres and SQLite.
//!
//! On SQLite every write transaction starts with a write (the `last_seq`
//! bump), so it takes the write lock first and waits on `busy_timeout`
//! rather than failing to upgrade a read lock. On Postgres a turn's two
//! writes are function calls ([`SeaStore::call_turn_function`]).

use std::time::Duration;

use async_trait::async_trait;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult, Statement,
};

use super::{ChatStore, StoreError};

/// How long a pooled connection may sit idle before it is pinged when it
/// is next taken.
const POOL_PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How often SQLite's write-ahead log is copied into the database file, in
/// the background ([`spawn_wal_checkpoints`]).
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL pages after which a committing connection checkpoints the log itself
/// (SQLite's default is 1,000): a backstop for when the background
/// checkpoints fall behind. A checkpoint inside a commit copies the whole log
/// and syncs the file; every turn that landed on one waited for it.
const WAL_AUTOCHECKPOINT_PAGES: &str = "16384";

/// Connections in a SQLite request pool, whatever `max_connections` asks.
/// SQLite runs one writer at a time: with more connections, concurrent
/// writers wait in SQLite's busy handler, which sleeps and retries (turns at
/// 16 concurrent sessions had a p99 of 250-370 ms with eight, 60-100 ms with
/// one), and each connection drops its page cache whenever another one has
/// written. One connection queues requests in the pool instead, in order,
/// and keeps its cache. The WAL checkpoints have a connection of their own
/// ([`spawn_wal_checkpoints`]).
const SQLITE_CONNECTIONS: u32 = 1;

/// Opens a pool for `url`, creating the SQLite file (owner-only, before
/// SQLite opens it, so it never exists with wider permissions; its WAL and
/// shared-memory files take the same mode) and its folder when needed.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<DatabaseConnection, StoreError> {
    let sqlite = url.starts_with("sqlite:");
    if sqlite
        && let Some(parent) =
            sqlite_path(url).and_then(|p| std::path::Path::new(p).parent().map(|p| p.to_owned()))
        && !parent.as_os_str().is_empty()
    {
        chat_common::files::create_dir_owner_only(&parent).map_err(|e| {
            StoreError::Unavailable(sea_orm::DbErr::Custom(format!(
                "failed to create {}: {e}",
                parent.display()
            )))
        })?;
    }
    if sqlite && let Some(path) = sqlite_path(url).filter(|_| creates_file(url)) {
        chat_common::files::ensure_owner_only(std::path::Path::new(path)).map_err(|e| {
            StoreError::Unavailable(sea_orm::DbErr::Custom(format!("failed to create {path}: {e}")))
        })?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if sqlite {
            SQLITE_CONNECTIONS
        } else {
            max_connections
        })
        .min_connections(1)
        .connect_timeout(acquire_timeout)
        .acquire_timeout(acquire_timeout)
        // A ping on every checkout is a round trip more for each query and
        // transaction; a connection in use within the last second is taken
        // as it is (one that broke meanwhile fails its query, is dropped,
        // and that error is `unavailable`, as for any outage).
        .test_before_acquire_if_idle_for(POOL_PING_IF_IDLE_FOR)
        .sqlx_logging(false);
    if sqlite {
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        });
    }
    Ok(Database::connect(options).await?)
}

/// Checkpoints SQLite's write-ahead log every [`WAL_CHECKPOINT_EVERY`], so
/// commits do not: a commit that crosses SQLite's threshold would otherwise
/// copy the log into the database and sync it before returning. The
/// checkpoints run on a connection of their own, outside `url`'s request
/// pool, so no request waits for a pooled connection busy copying the log.
/// Nothing to do on Postgres or an in-memory SQLite database (`None`).
pub async fn spawn_wal_checkpoints(url: &str) -> Result<Option<tokio::task::JoinHandle<()>>, StoreError> {
    if sqlite_path(url).is_none() {
        return Ok(None);
    }
    let db = connect(url, SQLITE_CONNECTIONS, Duration::from_secs(10)).await?;
    Ok(Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(WAL_CHECKPOINT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match checkpoint(&db).await {
                Ok(Checkpointed { log, copied }) => tracing::trace!(log, copied, "WAL checkpoint"),
                Err(error) => tracing::debug!(%error, "WAL checkpoint failed; trying again later"),
            }
        }
    })))
}

/// What a WAL checkpoint did: frames in the log, and frames of them copied
/// into the database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checkpointed {
    log: i64,
    copied: i64,
}

/// One passive checkpoint: copies as much of the log as no reader still
/// needs, waiting on no one (writers go on meanwhile).
async fn checkpoint(db: &DatabaseConnection) -> Result<Checkpointed, StoreError> {
    let statement = Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
    let row = db
        .query_one_raw(statement)
        .await?
        .ok_or_else(|| StoreError::Other(sea_orm::DbErr::Custom("no checkpoint result".into())))?;
    Ok(Checkpointed {
        log: row.try_get("", "log").map_err(StoreError::Other)?,
        copied: row.try_get("", "checkpointed").map_err(StoreError::Other)?,
    })
}

/// Whether SQLite would create the file of `url` (`mode=rwc`).
fn creates_file(url: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair == "mode=rwc"))
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// The sea-orm store.
#[derive(Clone, Debug)]
pub struct SeaStore {
    pub(super) db: DatabaseConnection,
}

impl SeaStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

#[async_trait]
impl ChatStore for SeaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }

    fn record_pool_metrics(&self) {
        let (size, idle) = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => return,
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        metrics::gauge!("chat_db_pool_connections", "state" => "idle").set(f64::from(idle));
        metrics::gauge!("chat_db_pool_connections", "state" => "in_use")
            .set(f64::from(size.saturating_sub(idle)));
    }
}

impl SeaStore {
    /// Runs `SELECT … FROM` one of the Postgres turn functions (migration
    /// `m20261201_000007`) and returns its row with the `outcome` it
    /// reports.
    pub(super) async fn call_turn_function(
        &self,
        sql: &str,
        values: impl IntoIterator<Item = sea_orm::Value>,
    ) -> Result<(QueryResult, String), StoreError> {
        let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
        let row = self
            .db
            .query_one_raw(statement)
            .await?
            .ok_or_else(|| StoreError::Other(sea_orm::DbErr::Custom(format!("no row from `{sql}`"))))?;
        let outcome = column(&row, "outcome")?;
        Ok((row, outcome))
    }
}

/// Column `name` of a raw row.
pub(super) fn column<T: sea_orm::TryGetable>(row: &QueryResult, name: &str) -> Result<T, StoreError> {
    row.try_get("", name).map_err(StoreError::Other)
}

/// Reports which database family a URL points at, for logs.
pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::TransactionTrait;

    use super::*;

    /// A commit past SQLite's default threshold (1,000 pages) leaves the log
    /// as it is; the background checkpoints copy it into the database file.
    #[tokio::test]
    async fn sqlite_commits_leave_the_log_to_background_checkpoints() {
        let dir = std::env::temp_dir().join(format!("chat-core-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("wal.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let db = connect(&url, 2, Duration::from_secs(5)).await.expect("connect");
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        db.execute_unprepared("CREATE TABLE blobs (v BLOB)")
            .await
            .expect("create");
        // About 5 MB in one commit: some 1,250 pages.
        db.execute_unprepared(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) \
             INSERT INTO blobs SELECT randomblob(4000) FROM n",
        )
        .await
        .expect("insert");
        let before = size();
        assert!(
            before < 1024 * 1024,
            "the commit checkpointed the log itself: the database file has {before} bytes"
        );

        // The request pool's only connection stays busy meanwhile: the
        // checkpoints must not need it.
        let busy = db.begin().await.expect("begin");
        busy.execute_unprepared("SELECT count(*) FROM blobs")
            .await
            .expect("read");
        let checkpoints = spawn_wal_checkpoints(&url)
            .await
            .expect("checkpoint connection")
            .expect("SQLite checkpoints");
        let copied = tokio::time::timeout(Duration::from_secs(10), async {
            while size() < 4 * 1024 * 1024 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        checkpoints.abort();
        busy.rollback().await.expect("rollback");
        let after = size();
        db.close().await.expect("close");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(copied.is_ok(), "no checkpoint copied the log: {after} bytes");
    }

    /// Whatever the pool size asked, SQLite gets one request connection,
    /// and inserts return their rows in the same statement.
    #[tokio::test]
    async fn a_sqlite_pool_is_one_connection_that_inserts_with_returning() {
        let db = connect("sqlite::memory:", 16, Duration::from_secs(5))
            .await
            .expect("connect");
        let options = db.get_sqlite_connection_pool().options();
        assert_eq!(options.get_max_connections(), SQLITE_CONNECTIONS);
        assert!(
            db.support_returning(),
            "SQLite inserts would need a second statement"
        );
        db.close().await.expect("close");
    }

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite://data/chat.db?mode=rwc"),
            Some("data/chat.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
