//! Users, sessions, messages and runs. Ids are UUID text, times are Unix
//! epoch milliseconds, so the schema is identical on every backend.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    PasswordHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    OwnerId,
    Title,
    Status,
    Agent,
    Metadata,
    ResolutionNotes,
    LastSeq,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    SessionId,
    Seq,
    Role,
    Agent,
    Content,
    ClientMsgId,
    RunId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    SessionId,
    UserMessageId,
    UserSeq,
    Agent,
    Status,
    Attempt,
    Error,
    ReplyMessageId,
    CreatedAt,
    StartedAt,
    FirstDeltaAt,
    FinishedAt,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .string_len(36)
        .not_null()
        .primary_key()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(id(Users::Id))
                    .col(
                        ColumnDef::new(Users::Username)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Users::PasswordHash).text().not_null())
                    .col(ColumnDef::new(Users::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(id(Sessions::Id))
                    .col(ColumnDef::new(Sessions::OwnerId).string_len(36).not_null())
                    .col(ColumnDef::new(Sessions::Title).text().not_null())
                    .col(ColumnDef::new(Sessions::Status).string_len(32).not_null())
                    .col(ColumnDef::new(Sessions::Agent).string_len(64).not_null())
                    .col(ColumnDef::new(Sessions::Metadata).text().not_null())
                    .col(ColumnDef::new(Sessions::ResolutionNotes).text().null())
                    .col(
                        ColumnDef::new(Sessions::LastSeq)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(Sessions::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Sessions::UpdatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Sessions::Table, Sessions::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_owner_updated")
                    .table(Sessions::Table)
                    .col(Sessions::OwnerId)
                    .col(Sessions::UpdatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(id(Messages::Id))
                    .col(ColumnDef::new(Messages::SessionId).string_len(36).not_null())
                    .col(ColumnDef::new(Messages::Seq).big_integer().not_null())
                    .col(ColumnDef::new(Messages::Role).string_len(16).not_null())
                    .col(ColumnDef::new(Messages::Agent).string_len(64).null())
                    .col(ColumnDef::new(Messages::Content).text().not_null())
                    .col(ColumnDef::new(Messages::ClientMsgId).string_len(128).null())
                    .col(ColumnDef::new(Messages::RunId).string_len(36).null())
                    .col(ColumnDef::new(Messages::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Messages::Table, Messages::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_messages_session_seq")
                    .table(Messages::Table)
                    .col(Messages::SessionId)
                    .col(Messages::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_messages_session_client_msg_id")
                    .table(Messages::Table)
                    .col(Messages::SessionId)
                    .col(Messages::ClientMsgId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .if_not_exists()
                    .col(id(Runs::Id))
                    .col(ColumnDef::new(Runs::SessionId).string_len(36).not_null())
                    .col(ColumnDef::new(Runs::UserMessageId).string_len(36).not_null())
                    .col(ColumnDef::new(Runs::UserSeq).big_integer().not_null())
                    .col(ColumnDef::new(Runs::Agent).string_len(64).not_null())
                    .col(ColumnDef::new(Runs::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Runs::Attempt).integer().not_null().default(0))
                    .col(ColumnDef::new(Runs::Error).text().null())
                    .col(ColumnDef::new(Runs::ReplyMessageId).string_len(36).null())
                    .col(ColumnDef::new(Runs::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Runs::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Runs::FirstDeltaAt).big_integer().null())
                    .col(ColumnDef::new(Runs::FinishedAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Runs::Table, Runs::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_runs_session_status_seq")
                    .table(Runs::Table)
                    .col(Runs::SessionId)
                    .col(Runs::Status)
                    .col(Runs::UserSeq)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_runs_status")
                    .table(Runs::Table)
                    .col(Runs::Status)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Runs::Table.into_iden(),
            Messages::Table.into_iden(),
            Sessions::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
