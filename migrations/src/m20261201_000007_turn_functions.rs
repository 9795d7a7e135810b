//! Postgres only: a turn's two writes as functions, so each is one round
//! trip and one implicit transaction instead of a `BEGIN`, three statements
//! and a `COMMIT`. chat-core's store calls them on Postgres
//! (`chat-core/src/store/messages.rs`, `store/runs.rs`) and runs the same
//! steps as separate statements on SQLite, which has no functions.
//!
//! The rules stay in chat-core: which statuses accept messages, start runs,
//! count as active or may complete are passed in as arrays of stored names,
//! and every id and timestamp is chosen by the caller. A function only orders
//! the statements, under the session row's lock (`FOR NO KEY UPDATE`, the
//! lock an `UPDATE` of the row takes, which leaves foreign-key checks of
//! inserts into `messages` and `runs` free). It is `VOLATILE` (the
//! default), so under READ COMMITTED each statement in it reads a snapshot
//! of its own start: the count of active runs, read after the lock is
//! granted, sees every run committed by whoever held the lock before.
//! Nothing is written when a function answers with a refusal.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Stores a message and, for a user message in a session that starts runs,
/// its run (claimed under `p_claim_owner`'s lease when nothing else is
/// active in the session, otherwise queued). `outcome` is `not_found`,
/// `refused` (the session does not take messages; `status` says why),
/// `busy` (`p_reject_if_busy` and a run is active), `stored` (no run),
/// `queued` or `claimed`.
const APPEND_MESSAGE: &str = r#"
CREATE OR REPLACE FUNCTION chat_append_message(
    p_session_id text, p_now bigint,
    p_accepting text[], p_starting text[], p_active text[],
    p_title text,
    p_message_id text, p_role text, p_author text, p_content text,
    p_client_msg_id text, p_metadata text,
    p_start_run boolean, p_reject_if_busy boolean,
    p_run_id text, p_queued text, p_running text, p_claim_owner text, p_lease_ms bigint,
    OUT seq bigint, OUT agent text, OUT status text, OUT outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_active bigint;
    v_start boolean;
    v_claim boolean;
BEGIN
    SELECT s.agent, s.status INTO agent, status
        FROM sessions s WHERE s.id = p_session_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    IF NOT (status = ANY (p_accepting)) THEN
        outcome := 'refused';
        RETURN;
    END IF;
    v_start := p_start_run AND status = ANY (p_starting);
    SELECT count(*) INTO v_active
        FROM runs r WHERE r.session_id = p_session_id AND r.status = ANY (p_active);
    IF v_start AND p_reject_if_busy AND v_active > 0 THEN
        outcome := 'busy';
        RETURN;
    END IF;
    UPDATE sessions s
        SET last_seq = s.last_seq + 1,
            updated_at = p_now,
            title = CASE WHEN s.last_seq = 0 AND s.title = '' THEN p_title ELSE s.title END
        WHERE s.id = p_session_id
        RETURNING s.last_seq INTO seq;
    INSERT INTO messages (id, session_id, seq, role, agent, content, client_msg_id, run_id,
                          created_at, first_delta_ms, duration_ms, tool_calls, metadata)
        VALUES (p_message_id, p_session_id, seq, p_role, p_author, p_content, p_client_msg_id,
                NULL, p_now, NULL, NULL, NULL, p_metadata);
    IF NOT v_start THEN
        outcome := 'stored';
        RETURN;
    END IF;
    v_claim := v_active = 0 AND p_claim_owner IS NOT NULL;
    INSERT INTO runs (id, session_id, user_message_id, user_seq, agent, status, attempt, error,
                      reply_message_id, created_at, started_at, first_delta_at, finished_at,
                      lease_owner, lease_expires_at)
        VALUES (p_run_id, p_session_id, p_message_id, seq, agent,
                CASE WHEN v_claim THEN p_running ELSE p_queued END,
                CASE WHEN v_claim THEN 1 ELSE 0 END,
                NULL, NULL, p_now,
                CASE WHEN v_claim THEN p_now END,
                NULL, NULL,
                CASE WHEN v_claim THEN p_claim_owner END,
                CASE WHEN v_claim THEN p_now + p_lease_ms END);
    outcome := CASE WHEN v_claim THEN 'claimed' ELSE 'queued' END;
END
$$
"#;

/// Stores a run's reply and completes the run, while `p_owner` holds its
/// lease. `outcome` is `not_found` (no such session), `lost` (the run is no
/// longer running under that lease) or `completed`; `active_runs` counts
/// the session's active runs before this one completed.
const COMPLETE_RUN: &str = r#"
CREATE OR REPLACE FUNCTION chat_complete_run(
    p_session_id text, p_run_id text, p_owner text, p_now bigint,
    p_active text[], p_completable text[], p_completed text,
    p_reply_id text, p_role text, p_agent text, p_content text,
    p_first_delta_ms bigint, p_duration_ms bigint, p_tool_calls text, p_first_delta_at bigint,
    OUT seq bigint, OUT active_runs bigint, OUT outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM sessions s WHERE s.id = p_session_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    SELECT count(*) INTO active_runs
        FROM runs r WHERE r.session_id = p_session_id AND r.status = ANY (p_active);
    UPDATE runs r
        SET status = p_completed, reply_message_id = p_reply_id, finished_at = p_now,
            first_delta_at = p_first_delta_at
        WHERE r.id = p_run_id AND r.status = ANY (p_completable) AND r.lease_owner = p_owner;
    IF NOT FOUND THEN
        outcome := 'lost';
        RETURN;
    END IF;
    UPDATE sessions s SET last_seq = s.last_seq + 1, updated_at = p_now
        WHERE s.id = p_session_id
        RETURNING s.last_seq INTO seq;
    INSERT INTO messages (id, session_id, seq, role, agent, content, client_msg_id, run_id,
                          created_at, first_delta_ms, duration_ms, tool_calls, metadata)
        VALUES (p_reply_id, p_session_id, seq, p_role, p_agent, p_content, NULL, p_run_id,
                p_now, p_first_delta_ms, p_duration_ms, p_tool_calls, NULL);
    outcome := 'completed';
END
$$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(APPEND_MESSAGE).await?;
        db.execute_unprepared(COMPLETE_RUN).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "DROP FUNCTION IF EXISTS chat_append_message; DROP FUNCTION IF EXISTS chat_complete_run",
            )
            .await?;
        Ok(())
    }
}
