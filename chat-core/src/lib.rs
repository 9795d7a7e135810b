//! chat-core: the service that owns state.
//!
//! A send commits the user message and its run in one transaction, acks,
//! then the [`dispatch`] module runs the session's queue one run at a time on
//! an agent-worker, relaying deltas through the [`bus`] and committing the
//! reply. [`api`] holds the gRPC handlers, [`store`] the database.

pub mod api;
pub mod bus;
pub mod dispatch;
pub mod domain;
pub mod service;
pub mod settings;
pub mod store;
pub mod testing;

mod app;

pub use app::Application;
pub use settings::Settings;

/// Applies pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    use migration::MigratorTrait;
    let db = store::connect(&settings.database_url, 1, std::time::Duration::from_secs(10))
        .await
        .context("failed to connect to the database")?;
    migration::Migrator::up(&db, None)
        .await
        .context("failed to run migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}
