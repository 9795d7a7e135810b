//! Run leases (which chat-core replica runs a run, until when), reply timing
//! on messages, and per-session concurrency policy.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    LeaseOwner,
    LeaseExpiresAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    FirstDeltaMs,
    DurationMs,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Concurrency,
    EndedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        let add =
            |table: TableRef, column: ColumnDef| Table::alter().table(table).add_column(column).to_owned();
        manager
            .alter_table(add(
                Runs::Table.into_table_ref(),
                ColumnDef::new(Runs::LeaseOwner).string_len(64).null().to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                Runs::Table.into_table_ref(),
                ColumnDef::new(Runs::LeaseExpiresAt)
                    .big_integer()
                    .null()
                    .to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                Messages::Table.into_table_ref(),
                ColumnDef::new(Messages::FirstDeltaMs)
                    .big_integer()
                    .null()
                    .to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                Messages::Table.into_table_ref(),
                ColumnDef::new(Messages::DurationMs)
                    .big_integer()
                    .null()
                    .to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                Sessions::Table.into_table_ref(),
                ColumnDef::new(Sessions::Concurrency)
                    .string_len(16)
                    .null()
                    .to_owned(),
            ))
            .await?;
        manager
            .alter_table(add(
                Sessions::Table.into_table_ref(),
                ColumnDef::new(Sessions::EndedAt).big_integer().null().to_owned(),
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let drop =
            |table: TableRef, column: DynIden| Table::alter().table(table).drop_column(column).to_owned();
        manager
            .alter_table(drop(Runs::Table.into_table_ref(), Runs::LeaseOwner.into_iden()))
            .await?;
        manager
            .alter_table(drop(
                Runs::Table.into_table_ref(),
                Runs::LeaseExpiresAt.into_iden(),
            ))
            .await?;
        manager
            .alter_table(drop(
                Messages::Table.into_table_ref(),
                Messages::FirstDeltaMs.into_iden(),
            ))
            .await?;
        manager
            .alter_table(drop(
                Messages::Table.into_table_ref(),
                Messages::DurationMs.into_iden(),
            ))
            .await?;
        manager
            .alter_table(drop(
                Sessions::Table.into_table_ref(),
                Sessions::Concurrency.into_iden(),
            ))
            .await?;
        manager
            .alter_table(drop(
                Sessions::Table.into_table_ref(),
                Sessions::EndedAt.into_iden(),
            ))
            .await?;
        Ok(())
    }
}
