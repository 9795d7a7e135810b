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
        match std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
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
        let admin = Database::connect(admin_url).await.context("failed to connect to TEST_DATABASE_URL")?;
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
        admin.close().await?;
        Ok(Self { url: with_database(admin_url, &name), _dir: None })
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
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
        assert_eq!(with_database("postgres://postgres@127.0.0.1:5432/test", "x"), "postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://h/test?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
