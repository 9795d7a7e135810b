//! Schema migrations. The same migrations run on Postgres and SQLite (one,
//! the turn's functions, on Postgres only); run them with `chat-core migrate`
//! or at start-up with `--migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_initial;
mod m20261126_000002_leases_and_timing;
mod m20261126_000003_refresh_tokens;
mod m20261126_000004_tool_calls;
mod m20261201_000005_operators;
mod m20261201_000006_message_metadata;
mod m20261201_000007_turn_functions;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_initial::Migration),
            Box::new(m20261126_000002_leases_and_timing::Migration),
            Box::new(m20261126_000003_refresh_tokens::Migration),
            Box::new(m20261126_000004_tool_calls::Migration),
            Box::new(m20261201_000005_operators::Migration),
            Box::new(m20261201_000006_message_metadata::Migration),
            Box::new(m20261201_000007_turn_functions::Migration),
        ]
    }
}
