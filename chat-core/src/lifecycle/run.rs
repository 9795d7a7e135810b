//! Run status changes, each checked against [`RunStatus::can_become`],
//! stored, and published as a `run` event (with its metrics).

use std::sync::Arc;
use std::time::Duration;

use chat_proto::chat::v1::session_event::Event;
use tracing::warn;

use super::SessionLifecycle;
use crate::bus::EventBus;
use crate::domain::{Actor, Run, RunErrorCode, RunFailure, RunStatus, SessionChange, now_ms};
use crate::service::{convert, event};
use crate::store::{ChatStore, Completed, NextRun, RunCompletion, StoreError};

/// What a reply's handoffs do to its session once the reply is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEffect {
    None,
    /// A person takes over.
    Escalate,
    /// The agent handed to becomes the session's.
    SetAgent(String),
}

/// What the commit of a reply found in its session's queue.
#[derive(Debug)]
pub enum AfterReply {
    /// The next run, claimed under the completion's lease.
    Next(Box<Run>),
    /// Nothing was queued when the reply was committed.
    QueueEmpty,
    /// The reply was not committed here, or the claim that follows its
    /// commit on Postgres failed: look in the store.
    Unknown,
}

/// Records and announces how runs move through their lifecycle.
#[derive(Clone)]
pub struct RunLifecycle {
    store: Arc<dyn ChatStore>,
    bus: Arc<dyn EventBus>,
    sessions: SessionLifecycle,
}

impl RunLifecycle {
    pub fn new(store: Arc<dyn ChatStore>, bus: Arc<dyn EventBus>) -> Self {
        Self {
            sessions: SessionLifecycle::new(store.clone(), bus.clone()),
            store,
            bus,
        }
    }

    pub fn sessions(&self) -> &SessionLifecycle {
        &self.sessions
    }

    /// Announces a status the run is in (queued, running, retrying), or one
    /// it ended in; terminal statuses are counted in the run metrics.
    pub async fn publish(&self, run: &Run, status: RunStatus, error: &str) {
        self.bus
            .publish(&run.session_id, status_event(run, status, error))
            .await;
    }

    /// Moves a run that has not ended to `failed` or `cancelled` and
    /// announces it (`error` is what clients see: [`RunFailure::public`]); returns whether it changed (a run that already ended
    /// stays as it was, and nothing is published). With `owner`, only while
    /// that replica holds the run's lease.
    pub async fn finish(
        &self,
        run: &Run,
        status: RunStatus,
        error: &str,
        owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .store
            .finish_run(
                &run.id,
                status,
                (!error.is_empty()).then(|| error.to_owned()),
                owner,
            )
            .await?;
        if changed {
            self.publish(run, status, error).await;
        }
        Ok(changed)
    }

    /// [`RunLifecycle::finish`] by the replica `owner` that runs it, logging
    /// a failure to store it (the run is then taken over once its lease
    /// expires).
    pub async fn record_end(&self, run: &Run, status: RunStatus, error: &str, owner: &str) {
        if let Err(e) = self.finish(run, status, error, Some(owner)).await {
            warn!(run_id = %run.id, error = %e, "failed to record the end of a run");
        }
    }

    /// Commits the reply with the run's completion, then announces the
    /// reply, its effect on the session and the `completed` status. A run
    /// cancelled or taken over meanwhile was announced by whoever did that,
    /// so nothing is published; a reply that cannot be stored fails the run.
    /// Either way the attempt's recorded deltas are dropped last (with the
    /// last publish, when there is one).
    pub async fn complete(
        &self,
        run: &Run,
        attempt: u32,
        completion: RunCompletion,
        effect: SessionEffect,
    ) -> AfterReply {
        let owner = completion.lease.owner.clone();
        match self.commit_reply(completion).await {
            Ok(Completed { message, next }) => {
                metrics::counter!("chat_messages_stored_total", "role" => message.role.as_str()).increment(1);
                let reply = event(Event::Message(Box::new(convert::message(&message))));
                if effect == SessionEffect::None {
                    // The reply and the run's end, in one publish.
                    let completed = status_event(run, RunStatus::Completed, "");
                    self.bus
                        .publish_ending(&run.session_id, vec![reply, completed], run.id.as_str(), attempt)
                        .await;
                } else {
                    // The session's change comes between them.
                    self.bus.publish(&run.session_id, reply).await;
                    self.apply_effect(run, effect).await;
                    self.publish(run, RunStatus::Completed, "").await;
                    self.bus.clear_deltas(&run.id, attempt).await;
                }
                return match next {
                    NextRun::Claimed(run) => AfterReply::Next(run),
                    NextRun::QueueEmpty => AfterReply::QueueEmpty,
                    NextRun::Unclaimed => AfterReply::Unknown,
                };
            }
            Err(StoreError::Conflict(_)) => {
                // Cancelled, or taken over by another replica, while the reply
                // was being committed: the canceller or the new owner tells
                // the clients how the run ends, not this replica.
                tracing::info!(run_id = %run.id, "run ended elsewhere before its reply was stored; reply dropped");
            }
            Err(error) => {
                warn!(run_id = %run.id, %error, "failed to store reply");
                let failure = RunFailure::new(RunErrorCode::Internal, "failed to store the reply");
                self.record_end(run, RunStatus::Failed, &failure.public(), &owner)
                    .await;
            }
        }
        self.bus.clear_deltas(&run.id, attempt).await;
        AfterReply::Unknown
    }

    async fn apply_effect(&self, run: &Run, effect: SessionEffect) {
        let changed = match effect {
            SessionEffect::None => return,
            SessionEffect::Escalate => {
                self.sessions
                    .change(&run.session_id, SessionChange::Escalate, Actor::System)
                    .await
            }
            SessionEffect::SetAgent(agent) => self.sessions.set_agent(&run.session_id, &agent).await,
        };
        if let Err(error) = changed {
            warn!(run_id = %run.id, %error, "failed to apply handoff to the session");
        }
    }

    /// Commits the reply, retrying while the database is unreachable.
    async fn commit_reply(&self, completion: RunCompletion) -> Result<Completed, StoreError> {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..8 {
            match self.store.complete_run(completion.clone()).await {
                Err(StoreError::Unavailable(error)) => {
                    warn!(run_id = %completion.run_id, %error, "database unavailable while storing reply; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
        self.store.complete_run(completion).await
    }
}

/// The `run` event of a status the run is in or ended in; a terminal one is
/// counted in the run metrics.
fn status_event(run: &Run, status: RunStatus, error: &str) -> chat_proto::chat::v1::SessionEvent {
    if status.is_terminal() {
        let agent = run.agent.clone();
        metrics::counter!("chat_runs_total", "agent" => agent.clone(), "status" => status.as_str())
            .increment(1);
        // From queued to the outcome: what the user waited for.
        let waited_ms = now_ms().saturating_sub(run.created_at).max(0);
        metrics::histogram!("chat_run_duration_seconds", "agent" => agent).record(waited_ms as f64 / 1000.0);
    }
    event(Event::Run(convert::run_update(run, status, error)))
}
