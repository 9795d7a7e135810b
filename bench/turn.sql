-- The ceiling the targets in BENCHMARKS.md are set against, for pgbench: a chat turn's database
-- work on Postgres as it was when they were set, three transactions (store the user's message
-- with a queued run; claim the run under a lease; store the reply and complete the run), with
-- the reads each one made. One pgbench "transaction" of this script is one turn. Each client
-- works in its own session, `pgb-<client_id>`, which bench/run creates beforehand.
--
--   pgbench -n -M prepared -c 16 -j 2 -T 20 -f bench/turn.sql <database>
--
-- chat-core now does less (chat-core/src/store/messages.rs, insert_message and append_message;
-- store/runs.rs, complete_run): a send to an idle session claims its run in its own commit, so a
-- turn is two commits, each one call of a function (migrations/src/m20261201_000007_turn_functions.rs),
-- and a resend is looked up only when the insert is refused. The script stays as it is,
-- so that the ceiling means the same in every run.

\set msg random(1, 9000000000000000000)
\set run random(1, 9000000000000000000)
\set reply random(1, 9000000000000000000)
\set now 1764000000000
\set lease_end :now + 15000

-- Is the client_msg_id a resend? (read before the first transaction)
SELECT id FROM messages WHERE session_id = 'pgb-' || :client_id AND client_msg_id = 'c' || :msg LIMIT 1;

-- 1. the user's message and its queued run
BEGIN;
UPDATE sessions SET last_seq = last_seq + 1, updated_at = :now
  WHERE id = 'pgb-' || :client_id RETURNING last_seq AS seq, title, agent, status \gset
INSERT INTO messages (id, session_id, seq, role, agent, content, client_msg_id, run_id, created_at)
  VALUES ('m' || :msg, 'pgb-' || :client_id, :seq, 'user', NULL, 'hello there', 'c' || :msg, NULL, :now);
INSERT INTO runs (id, session_id, user_message_id, user_seq, agent, status, attempt, created_at)
  VALUES ('r' || :run, 'pgb-' || :client_id, 'm' || :msg, :seq, 'echo', 'queued', 0, :now);
COMMIT;

-- 2. the claim: lock the session, read its active runs, take the oldest under a lease
BEGIN;
UPDATE sessions SET last_seq = last_seq WHERE id = 'pgb-' || :client_id;
SELECT id, status, attempt, lease_owner, lease_expires_at FROM runs
  WHERE session_id = 'pgb-' || :client_id AND status IN ('queued', 'running') ORDER BY user_seq;
UPDATE runs SET status = 'running', attempt = attempt + 1, started_at = :now,
  lease_owner = 'pgbench', lease_expires_at = :lease_end
  WHERE id = 'r' || :run;
COMMIT;

-- 3. the reply and the run's completion
BEGIN;
UPDATE sessions SET last_seq = last_seq + 1, updated_at = :now
  WHERE id = 'pgb-' || :client_id RETURNING last_seq AS seq, title, agent, status \gset
SELECT started_at FROM runs WHERE id = 'r' || :run;
INSERT INTO messages (id, session_id, seq, role, agent, content, client_msg_id, run_id, created_at,
                      first_delta_ms, duration_ms)
  VALUES ('a' || :reply, 'pgb-' || :client_id, :seq, 'assistant', 'echo', 'hello there', NULL,
          'r' || :run, :now, 0, 1);
UPDATE runs SET status = 'completed', reply_message_id = 'a' || :reply, finished_at = :now,
  first_delta_at = :now
  WHERE id = 'r' || :run AND status IN ('running', 'retrying') AND lease_owner = 'pgbench';
COMMIT;
