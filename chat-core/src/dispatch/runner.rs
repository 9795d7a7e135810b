//! One session's runner: claims queued runs oldest first and executes each.

use std::sync::Arc;
use std::time::Duration;

use chat_proto::agent::v1::{self as agent, run_event::Event as AgentEvent};
use chat_proto::chat::v1::{self as pb, session_event::Event};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use super::{Dispatcher, InflightRun};
use crate::domain::{Message, Run, RunStatus, SessionChange, SessionId, now_ms};
use crate::service::{convert, event};
use crate::store::{MessageQuery, RunCompletion, StoreError};

/// How a run ended, before it is recorded.
enum Outcome {
    Reply {
        content: String,
        first_delta_at: Option<i64>,
        /// The agent that answered: the run's, or the last one handed to.
        agent: String,
        /// The conversation was handed to a human.
        escalated: bool,
        /// The tool calls made for the reply, with their results.
        tool_calls: Vec<serde_json::Value>,
    },
    Failed {
        error: String,
        retryable: bool,
    },
    Cancelled,
    /// The lease was lost (taken over, or the run cancelled elsewhere).
    LostLease,
}

/// The handoff target that means "a person takes over".
const HUMAN: &str = "human";

impl Outcome {
    fn failed(error: impl Into<String>, retryable: bool) -> Self {
        Self::Failed {
            error: error.into(),
            retryable,
        }
    }
}

/// Whether a failed call to a worker may succeed on another attempt (or worker).
fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    !matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

impl Dispatcher {
    /// Works through the session's queue until it is empty.
    pub(super) async fn run_queue(self: Arc<Self>, session_id: SessionId) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.shutdown.is_cancelled() {
                self.runners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(session_id.as_str());
                return;
            }
            match self.store.claim_next_run(&session_id, &self.lease()).await {
                Ok(Some(run)) => {
                    backoff = Duration::from_millis(100);
                    self.execute(run).await;
                }
                Ok(None) => {
                    if !self.runner_idle(&session_id) {
                        return;
                    }
                }
                Err(error) => {
                    warn!(%session_id, %error, "failed to claim next run; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Executes a claimed run in its span: a child of the send that queued
    /// it when that send came to this replica, else the root of a new trace.
    async fn execute(&self, run: Run) {
        let origin = self.take_origin(&run.id);
        let span = tracing::info_span!(
            "run",
            otel.name = %format_args!("run {}", run.agent),
            session_id = %run.session_id,
            run_id = %run.id,
            agent = %run.agent,
            request_id = tracing::field::Empty,
        );
        origin.parent.adopt(&span);
        if let Some(id) = &origin.request_id {
            span.record("request_id", id.as_str());
        }
        self.execute_attempts(run, origin.request_id.as_deref())
            .instrument(span)
            .await;
    }

    async fn execute_attempts(&self, mut run: Run, request_id: Option<&str>) {
        let in_flight = metrics::gauge!("chat_runs_in_flight");
        in_flight.increment(1.0);
        let _in_flight = scopeguard(move || in_flight.decrement(1.0));
        let cancel = self.shutdown.child_token();
        self.cancels.insert(run.id.clone(), cancel.clone());
        loop {
            let attempt = run.attempt.max(1);
            let inflight = Arc::new(InflightRun::new(run.id.clone(), run.agent.clone(), attempt));
            self.inflight.insert(run.session_id.clone(), inflight.clone());
            if attempt > 1 {
                // A new attempt: clients drop the earlier attempt's partial
                // reply and take this one from delta 0.
                self.publish_status(&run, RunStatus::Retrying, "").await;
            }
            self.publish_status(&run, RunStatus::Running, "").await;
            let outcome = self
                .stream_from_worker(&run, &inflight, &cancel, request_id)
                .await;
            self.bus.clear_deltas(&run.id, attempt).await;
            match outcome {
                Outcome::Failed {
                    error,
                    retryable: true,
                } if attempt < self.config.max_attempts && !cancel.is_cancelled() => {
                    warn!(run_id = %run.id, attempt, %error, "run attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    match self.store.next_attempt(&run.id, &self.lease()).await {
                        Ok(true) => run.attempt += 1,
                        Ok(false) => break,
                        Err(e) => {
                            self.record_end(&run, RunStatus::Failed, &format!("{error} (then {e})"))
                                .await;
                            break;
                        }
                    }
                }
                outcome => {
                    self.conclude(&run, outcome).await;
                    break;
                }
            }
        }
        self.inflight
            .remove_if(&run.session_id, |_, r| r.run_id == run.id);
        self.cancels.remove(&run.id);
    }

    /// Applies a run's handoffs to its session: an escalation waits for a
    /// human; a handoff by a non-router agent makes the new agent the
    /// session's (a router picks afresh for every message).
    async fn after_handoff(&self, run: &Run, agent: &str, escalated: bool) {
        let changed = if escalated {
            self.sessions
                .change(&run.session_id, SessionChange::Escalate)
                .await
        } else if agent != run.agent && !self.is_router(&run.agent).await {
            self.sessions.set_agent(&run.session_id, agent).await
        } else {
            return;
        };
        if let Err(error) = changed {
            warn!(run_id = %run.id, %error, "failed to apply handoff to the session");
        }
    }

    async fn is_router(&self, agent: &str) -> bool {
        self.workers
            .list_agents()
            .await
            .is_ok_and(|agents| agents.iter().any(|a| a.name == agent && a.kind == "router"))
    }

    /// Records and announces how a run ended.
    async fn conclude(&self, run: &Run, outcome: Outcome) {
        match outcome {
            Outcome::LostLease => {
                info!(run_id = %run.id, "run lease lost; another replica or a cancel owns it now");
            }
            Outcome::Cancelled if self.shutdown.is_cancelled() => {
                // Left `running`: taken over once its lease is released.
                info!(run_id = %run.id, "run interrupted by shutdown");
            }
            Outcome::Reply {
                content,
                first_delta_at,
                agent,
                escalated,
                tool_calls,
            } => {
                let completion = RunCompletion {
                    run_id: run.id.clone(),
                    session_id: run.session_id.clone(),
                    agent: agent.clone(),
                    content,
                    first_delta_at,
                    lease_owner: self.lease().owner,
                    tool_calls: (!tool_calls.is_empty())
                        .then(|| serde_json::Value::Array(tool_calls).to_string()),
                };
                match self.commit_reply(completion).await {
                    Ok(message) => {
                        metrics::counter!("chat_messages_stored_total", "role" => message.role.as_str())
                            .increment(1);
                        self.bus
                            .publish(&run.session_id, event(Event::Message(convert::message(&message))))
                            .await;
                        self.after_handoff(run, &agent, escalated).await;
                        self.publish_status(run, RunStatus::Completed, "").await;
                    }
                    Err(StoreError::Conflict(_)) => {
                        // Cancelled (or taken over) while the reply was being committed.
                        self.publish_status(run, RunStatus::Cancelled, "").await;
                    }
                    Err(error) => {
                        warn!(run_id = %run.id, %error, "failed to store reply");
                        self.record_end(run, RunStatus::Failed, "failed to store the reply")
                            .await;
                    }
                }
            }
            Outcome::Failed { error, .. } => self.record_end(run, RunStatus::Failed, &error).await,
            Outcome::Cancelled => self.record_end(run, RunStatus::Cancelled, "").await,
        }
    }

    async fn stream_from_worker(
        &self,
        run: &Run,
        inflight: &InflightRun,
        cancel: &CancellationToken,
        request_id: Option<&str>,
    ) -> Outcome {
        let history = match self.history(run).await {
            Ok(history) => history,
            Err(error) => return Outcome::failed(format!("failed to load history: {error}"), true),
        };
        let request = agent::RunRequest {
            run_id: run.id.to_string(),
            session_id: run.session_id.to_string(),
            agent: run.agent.clone(),
            attempt: inflight.attempt,
            history,
            metadata_json: String::new(),
        };
        let deadline = tokio::time::Instant::now() + self.config.run_timeout;
        let attempt_started = std::time::Instant::now();
        let mut stream = tokio::select! {
            result = tokio::time::timeout(self.config.dispatch_timeout, self.workers.run(request, self.config.run_timeout, request_id)) => match result {
                Ok(Ok(stream)) => stream,
                Err(_) => return Outcome::failed("no agent-worker accepted the run in time", true),
                Ok(Err(status)) => {
                    let retryable = retryable(&status);
                    return Outcome::failed(format!("agent-worker unavailable: {}", status.message()), retryable);
                }
            },
            () = cancel.cancelled() => return Outcome::Cancelled,
        };
        let mut first_delta_at = None;
        let mut text = String::new();
        let mut answering = run.agent.clone();
        let mut escalated = false;
        let mut tool_calls: Vec<serde_json::Value> = Vec::new();
        let lease = self.lease();
        let mut renew = tokio::time::interval((self.config.lease / 3).max(Duration::from_millis(10)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            let next = tokio::select! {
                biased;
                _ = renew.tick() => {
                    match self.store.renew_lease(&run.id, &lease).await {
                        Ok(true) => {}
                        Ok(false) => return Outcome::LostLease,
                        Err(error) => warn!(run_id = %run.id, %error, "failed to renew run lease"),
                    }
                    continue;
                }
                next = stream.events.next() => next,
                () = cancel.cancelled() => return Outcome::Cancelled,
                () = tokio::time::sleep_until(deadline) => return Outcome::failed("run timed out", false),
            };
            match next {
                Some(Ok(agent::RunEvent {
                    event: Some(AgentEvent::Delta(delta)),
                })) => {
                    if delta.text.is_empty() {
                        continue;
                    }
                    if first_delta_at.is_none() {
                        metrics::histogram!("chat_run_first_delta_seconds", "agent" => run.agent.clone())
                            .record(attempt_started.elapsed().as_secs_f64());
                    }
                    first_delta_at.get_or_insert_with(now_ms);
                    text.push_str(&delta.text);
                    let index = inflight.push(delta.text.clone());
                    self.bus
                        .append_delta(&run.id, inflight.attempt, index, &delta.text)
                        .await;
                    let delta = pb::Delta {
                        session_id: run.session_id.to_string(),
                        run_id: run.id.to_string(),
                        index,
                        text: delta.text,
                        attempt: inflight.attempt,
                    };
                    self.bus
                        .publish(&run.session_id, event(Event::Delta(delta)))
                        .await;
                }
                Some(Ok(agent::RunEvent {
                    event: Some(AgentEvent::Final(done)),
                })) => {
                    let content = if done.content.is_empty() {
                        text
                    } else {
                        done.content
                    };
                    return Outcome::Reply {
                        content,
                        first_delta_at,
                        agent: answering,
                        escalated,
                        tool_calls,
                    };
                }
                Some(Ok(agent::RunEvent {
                    event: Some(AgentEvent::Error(error)),
                })) => {
                    return Outcome::failed(format!("{}: {}", error.code, error.message), error.retryable);
                }
                Some(Ok(agent::RunEvent {
                    event: Some(AgentEvent::Handoff(handoff)),
                })) => {
                    let to_human = handoff.to_agent == HUMAN;
                    let update = pb::Handoff {
                        session_id: run.session_id.to_string(),
                        run_id: run.id.to_string(),
                        from_agent: answering.clone(),
                        to_agent: handoff.to_agent.clone(),
                        reason: handoff.reason,
                    };
                    self.bus
                        .publish(&run.session_id, event(Event::Handoff(update)))
                        .await;
                    if to_human {
                        escalated = true;
                    } else {
                        answering = handoff.to_agent;
                    }
                }
                Some(Ok(agent::RunEvent {
                    event: Some(AgentEvent::ToolCall(call)),
                })) => {
                    let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments_json)
                        .unwrap_or_else(|_| serde_json::Value::String(call.arguments_json.clone()));
                    tool_calls.push(serde_json::json!({
                        "call_id": call.call_id,
                        "name": call.name,
                        "arguments": arguments,
                    }));
                    let update = pb::ToolCall {
                        session_id: run.session_id.to_string(),
                        run_id: run.id.to_string(),
                        call_id: call.call_id,
                        name: call.name,
                        arguments_json: call.arguments_json,
                    };
                    self.bus
                        .publish(&run.session_id, event(Event::ToolCall(update)))
                        .await;
                }
                Some(Ok(agent::RunEvent {
                    event: Some(AgentEvent::ToolResult(result)),
                })) => {
                    if let Some(call) = tool_calls
                        .iter_mut()
                        .rev()
                        .find(|c| c["call_id"] == result.call_id.as_str())
                    {
                        call["result"] = serde_json::Value::String(result.content.clone());
                    }
                    let update = pb::ToolResult {
                        session_id: run.session_id.to_string(),
                        run_id: run.id.to_string(),
                        call_id: result.call_id,
                        content: result.content,
                    };
                    self.bus
                        .publish(&run.session_id, event(Event::ToolResult(update)))
                        .await;
                }
                Some(Ok(_)) => {}
                Some(Err(status)) => {
                    return Outcome::failed(
                        format!("agent-worker failed: {}", status.message()),
                        retryable(&status),
                    );
                }
                None => return Outcome::failed("agent-worker ended the run without a reply", true),
            }
        }
    }

    async fn history(&self, run: &Run) -> Result<Vec<agent::HistoryMessage>, StoreError> {
        let messages = self
            .store
            .list_messages(MessageQuery {
                session_id: run.session_id.clone(),
                after_seq: None,
                before_seq: Some(run.user_seq + 1),
                limit: self.config.history_window.max(1),
            })
            .await?;
        Ok(messages
            .into_iter()
            .map(|m| agent::HistoryMessage {
                seq: m.seq,
                role: m.role.as_str().to_owned(),
                agent: m.agent.unwrap_or_default(),
                content: m.content,
            })
            .collect())
    }

    /// Commits the reply, retrying while the database is unreachable.
    async fn commit_reply(&self, completion: RunCompletion) -> Result<Message, StoreError> {
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

    async fn record_end(&self, run: &Run, status: RunStatus, error: &str) {
        let stored = self
            .store
            .finish_run(&run.id, status, (!error.is_empty()).then(|| error.to_owned()))
            .await;
        match stored {
            Ok(true) => self.publish_status(run, status, error).await,
            // Already ended elsewhere (for example cancelled before it started).
            Ok(false) => {}
            Err(e) => warn!(run_id = %run.id, error = %e, "failed to record the end of a run"),
        }
        if status == RunStatus::Failed {
            warn!(run_id = %run.id, %error, "run failed");
        }
    }

    async fn publish_status(&self, run: &Run, status: RunStatus, error: &str) {
        if status.is_terminal() {
            let agent = run.agent.clone();
            metrics::counter!("chat_runs_total", "agent" => agent.clone(), "status" => status.as_str())
                .increment(1);
            // From queued to the outcome: what the user waited for.
            let waited_ms = now_ms().saturating_sub(run.created_at).max(0);
            metrics::histogram!("chat_run_duration_seconds", "agent" => agent)
                .record(waited_ms as f64 / 1000.0);
        }
        let update = convert::run_update(run, status, error);
        self.bus.publish(&run.session_id, event(Event::Run(update))).await;
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
