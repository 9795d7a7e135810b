//! One session's runner: claims queued runs oldest first and executes each
//! attempt on an agent-worker. The worker's events drive an [`Attempt`];
//! the runner relays what it reports and records the outcome through the
//! [`RunLifecycle`](crate::lifecycle::RunLifecycle).

use std::sync::Arc;
use std::time::Duration;

use chat_proto::agent::v1 as agent;
use chat_proto::chat::v1::{self as pb, session_event::Event};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use super::attempt::{Attempt, Outcome, Reply, Step, retryable};
use super::workers::RunStream;
use super::{Dispatcher, InflightRun, RunOrigin};
use crate::bus::DeltaLog;
use crate::domain::{Run, RunErrorCode, RunFailure, RunStatus, SessionId, ToolCallRecord};
use crate::lifecycle::{AfterReply, SessionEffect};
use crate::service::event;
use crate::store::{MessageQuery, RunCompletion, StoreError};

/// Most worker events relayed in one publish.
const MAX_RELAY_BATCH: usize = 256;

impl Dispatcher {
    /// Works through the session's queue until it is empty: the runs handed
    /// to it, the run each reply's commit claimed next, then the store's.
    pub(super) async fn run_queue(self: Arc<Self>, session_id: SessionId) {
        let mut backoff = Duration::from_millis(100);
        let mut after = AfterReply::Unknown;
        loop {
            if self.shutdown.is_cancelled() {
                self.runners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(session_id.as_str());
                return;
            }
            let next = match std::mem::replace(&mut after, AfterReply::Unknown) {
                AfterReply::Next(run) => Ok(Some(*run)),
                // The reply's commit saw the queue empty: only what arrived
                // since (handed over, or a wake) needs a look.
                AfterReply::QueueEmpty => match self.take_claimed(&session_id) {
                    Some(run) => Ok(Some(run)),
                    None if self.runner_idle(&session_id) => continue,
                    None => return,
                },
                AfterReply::Unknown => match self.take_claimed(&session_id) {
                    Some(run) => Ok(Some(run)),
                    None => self.store.claim_next_run(&session_id, &self.lease()).await,
                },
            };
            match next {
                Ok(Some(run)) => {
                    backoff = Duration::from_millis(100);
                    after = self.execute(run).await;
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
    async fn execute(&self, run: Run) -> AfterReply {
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
        self.execute_attempts(run, &origin).instrument(span).await
    }

    async fn execute_attempts(&self, mut run: Run, origin: &RunOrigin) -> AfterReply {
        let in_flight = metrics::gauge!("chat_runs_in_flight");
        in_flight.increment(1.0);
        let _in_flight = scopeguard(move || in_flight.decrement(1.0));
        let cancel = self.shutdown.child_token();
        self.cancels.insert(run.id.clone(), cancel.clone());
        let after = loop {
            let attempt = run.attempt.max(1);
            let inflight = Arc::new(InflightRun::new(run.id.clone(), run.agent.clone(), attempt));
            self.inflight.insert(run.session_id.clone(), inflight.clone());
            let announce = async {
                if attempt > 1 {
                    // A new attempt: clients drop the earlier attempt's partial
                    // reply and take this one from delta 0.
                    self.runs.publish(&run, RunStatus::Retrying, "").await;
                }
                self.runs.publish(&run, RunStatus::Running, "").await;
            };
            let outcome = self.run_attempt(&run, &inflight, &cancel, origin, announce).await;
            match outcome {
                Outcome::Failed {
                    failure,
                    retryable: true,
                } if attempt < self.config.max_attempts && !cancel.is_cancelled() => {
                    // The next attempt streams from delta 0 under its own log.
                    self.bus.clear_deltas(&run.id, attempt).await;
                    warn!(run_id = %run.id, attempt, code = %failure.code, detail = %failure.detail, "run attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    match self.store.next_attempt(&run.id, &self.lease()).await {
                        Ok(true) => {
                            run.attempt += 1;
                            run.started_at = Some(crate::domain::now_ms());
                        }
                        Ok(false) => break AfterReply::Unknown,
                        Err(e) => {
                            let failure = RunFailure::new(
                                RunErrorCode::Internal,
                                format!("{} (then {e})", failure.detail),
                            );
                            break self
                                .conclude(&run, attempt, Outcome::failed(failure, false))
                                .await;
                        }
                    }
                }
                outcome => break self.conclude(&run, attempt, outcome).await,
            }
        };
        self.inflight
            .remove_if(&run.session_id, |_, r| r.run_id == run.id);
        self.cancels.remove(&run.id);
        after
    }

    /// Records and announces how a run ended, then drops the attempt's
    /// recorded deltas (only once the outcome is stored: a subscriber
    /// catching up meanwhile still finds them); with a reply, what its
    /// commit found next in the session's queue.
    async fn conclude(&self, run: &Run, attempt: u32, outcome: Outcome) -> AfterReply {
        match outcome {
            Outcome::LostLease => {
                info!(run_id = %run.id, "run lease lost; another replica or a cancel owns it now");
            }
            Outcome::Cancelled if self.shutdown.is_cancelled() => {
                // Left `running`: taken over once its lease is released.
                info!(run_id = %run.id, "run interrupted by shutdown");
            }
            Outcome::Reply(reply) => {
                // The completion drops the deltas itself, with its last publish.
                let effect = self.session_effect(run, &reply).await;
                let completion = RunCompletion {
                    run_id: run.id.clone(),
                    session_id: run.session_id.clone(),
                    agent: reply.agent,
                    content: reply.content,
                    first_delta_at: reply.first_delta_at,
                    started_at: run.started_at,
                    lease: self.lease(),
                    tool_calls: ToolCallRecord::encode(&reply.tool_calls),
                };
                return self.runs.complete(run, attempt, completion, effect).await;
            }
            Outcome::Failed { failure, .. } => {
                // The detail stays in the logs (with the run's request id
                // from its span); clients get the code and its message.
                warn!(run_id = %run.id, code = %failure.code, detail = %failure.detail, "run failed");
                self.runs
                    .record_end(run, RunStatus::Failed, &failure.public(), &self.lease().owner)
                    .await;
            }
            Outcome::Cancelled => {
                self.runs
                    .record_end(run, RunStatus::Cancelled, "", &self.lease().owner)
                    .await;
            }
        }
        self.bus.clear_deltas(&run.id, attempt).await;
        AfterReply::Unknown
    }

    /// What a reply's handoffs do to its session: an escalation waits for a
    /// human; a handoff by a non-router agent makes the new agent the
    /// session's (a router picks afresh for every message).
    async fn session_effect(&self, run: &Run, reply: &Reply) -> SessionEffect {
        if reply.escalated {
            SessionEffect::Escalate
        } else if reply.agent != run.agent && !self.is_router(&run.agent).await {
            SessionEffect::SetAgent(reply.agent.clone())
        } else {
            SessionEffect::None
        }
    }

    async fn is_router(&self, agent: &str) -> bool {
        self.workers.list_agents().await.is_ok_and(|agents| {
            agents
                .iter()
                .any(|a| a.name == agent && a.kind == chat_proto::ROUTER_KIND)
        })
    }

    /// One attempt: announces it (`announce`, while the request is
    /// prepared), opens the worker's stream, then follows it.
    async fn run_attempt(
        &self,
        run: &Run,
        inflight: &InflightRun,
        cancel: &CancellationToken,
        origin: &RunOrigin,
        announce: impl Future<Output = ()>,
    ) -> Outcome {
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.run_timeout;
        // The announcement goes out before any of the attempt's events.
        let request = self.request(run, inflight.attempt, origin.session_metadata.as_deref());
        let (request, ()) = tokio::join!(request, announce);
        let opened = match request {
            Ok(request) => {
                self.open_stream(request, cancel, origin.request_id.as_deref())
                    .await
            }
            Err(outcome) => Err(outcome),
        };
        match opened {
            Ok(stream) => {
                self.follow(run, inflight, cancel, stream, deadline, started)
                    .await
            }
            Err(outcome) => outcome,
        }
    }

    /// What the worker gets: the run with its history and its session's
    /// metadata (fixed at creation: the send's copy when it has one, else
    /// read with the history).
    async fn request(
        &self,
        run: &Run,
        attempt: u32,
        metadata: Option<&str>,
    ) -> Result<agent::RunRequest, Outcome> {
        let metadata = async {
            match metadata {
                Some(metadata) => Ok(metadata.to_owned()),
                None => self
                    .store
                    .get_session(&run.session_id)
                    .await
                    .map(|session| session.map(|s| s.metadata).unwrap_or_default()),
            }
        };
        let (history, metadata_json) = tokio::join!(self.history(run), metadata);
        let history = history.map_err(|error| internal(format!("failed to load history: {error}")))?;
        let metadata_json =
            metadata_json.map_err(|error| internal(format!("failed to load the session: {error}")))?;
        Ok(agent::RunRequest {
            run_id: run.id.to_string(),
            session_id: run.session_id.to_string(),
            agent: run.agent.clone(),
            attempt,
            history,
            metadata_json,
        })
    }

    /// Sends the run to a worker, within the dispatch timeout.
    async fn open_stream(
        &self,
        request: agent::RunRequest,
        cancel: &CancellationToken,
        request_id: Option<&str>,
    ) -> Result<RunStream, Outcome> {
        let dispatch = self.workers.run(request, self.config.run_timeout, request_id);
        tokio::select! {
            result = tokio::time::timeout(self.config.dispatch_timeout, dispatch) => match result {
                Ok(Ok(stream)) => Ok(stream),
                Err(_) => Err(Outcome::failed(
                    RunFailure::new(RunErrorCode::WorkerUnavailable, "no agent-worker accepted the run in time"),
                    true,
                )),
                Ok(Err(status)) => Err(Outcome::failed(
                    RunFailure::new(
                        RunErrorCode::WorkerUnavailable,
                        format!("agent-worker unavailable: {:?}: {}", status.code(), status.message()),
                    ),
                    retryable(&status),
                )),
            },
            () = cancel.cancelled() => Err(Outcome::Cancelled),
        }
    }

    /// Feeds the worker's events to the attempt, relaying what each means,
    /// while renewing the lease; stops at the outcome, a cancel, a lost
    /// lease or the run timeout.
    async fn follow(
        &self,
        run: &Run,
        inflight: &InflightRun,
        cancel: &CancellationToken,
        mut stream: RunStream,
        deadline: tokio::time::Instant,
        started: std::time::Instant,
    ) -> Outcome {
        let mut attempt = Attempt::new(&run.agent);
        let lease = self.lease();
        // The first renewal is due a period from now. (An interval's first
        // tick, due at once, is still a timer: Tokio rounds its deadline up
        // to the next millisecond, so awaiting it held every run's first
        // event for about a millisecond.)
        let every = (self.config.lease / 3).max(Duration::from_millis(10));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer for the whole attempt, not one registered per event.
        let mut timeout = std::pin::pin!(tokio::time::sleep_until(deadline));
        loop {
            let item = tokio::select! {
                biased;
                _ = renew.tick() => {
                    match self.store.renew_lease(&run.id, &lease).await {
                        Ok(true) => {}
                        Ok(false) => return Outcome::LostLease,
                        Err(error) => warn!(run_id = %run.id, %error, "failed to renew run lease"),
                    }
                    continue;
                }
                item = stream.events.next() => item,
                () = cancel.cancelled() => return Outcome::Cancelled,
                () = &mut timeout => {
                    return Outcome::failed(RunFailure::new(RunErrorCode::Timeout, "run timed out"), false);
                }
            };
            // Whatever else the worker has already sent goes out with this
            // item, in one publish: many deltas a second cost one round trip
            // to the bus per batch, not per delta.
            let mut steps = Vec::new();
            let mut step = attempt.on_item(item);
            loop {
                match step {
                    Step::Done(outcome) => {
                        self.relay(run, inflight, steps, started).await;
                        return outcome;
                    }
                    Step::Nothing => {}
                    step => steps.push(step),
                }
                if steps.len() >= MAX_RELAY_BATCH {
                    break;
                }
                match stream.events.next().now_or_never() {
                    Some(item) => step = attempt.on_item(item),
                    None => break,
                }
            }
            self.relay(run, inflight, steps, started).await;
        }
    }

    /// Publishes what worker events meant to the session's subscribers, in
    /// order, recording the deltas among them.
    async fn relay(&self, run: &Run, inflight: &InflightRun, steps: Vec<Step>, started: std::time::Instant) {
        if steps.is_empty() {
            return;
        }
        let mut events = Vec::with_capacity(steps.len());
        let mut log = DeltaLog {
            run_id: run.id.as_str(),
            attempt: inflight.attempt,
            first_index: 0,
            texts: Vec::new(),
        };
        for step in steps {
            let (session_id, run_id) = (run.session_id.to_string(), run.id.to_string());
            let update = match step {
                Step::Delta { text, first } => {
                    if first {
                        metrics::histogram!("chat_run_first_delta_seconds", "agent" => run.agent.clone())
                            .record(started.elapsed().as_secs_f64());
                    }
                    let index = inflight.push(text.clone());
                    if log.texts.is_empty() {
                        log.first_index = index;
                    }
                    log.texts.push(text.clone());
                    Event::Delta(pb::Delta {
                        session_id,
                        run_id,
                        index,
                        text,
                        attempt: inflight.attempt,
                    })
                }
                Step::Handoff { from, to, reason } => Event::Handoff(pb::Handoff {
                    session_id,
                    run_id,
                    from_agent: from,
                    to_agent: to,
                    reason,
                }),
                Step::ToolCall {
                    call_id,
                    name,
                    arguments_json,
                } => Event::ToolCall(pb::ToolCall {
                    session_id,
                    run_id,
                    call_id,
                    name,
                    arguments_json,
                }),
                Step::ToolResult { call_id, content } => Event::ToolResult(pb::ToolResult {
                    session_id,
                    run_id,
                    call_id,
                    content,
                }),
                Step::Nothing | Step::Done(_) => continue,
            };
            events.push(event(update));
        }
        let deltas = (!log.texts.is_empty()).then_some(log);
        self.bus.publish_batch(&run.session_id, events, deltas).await;
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
}

/// A failure of chat-core's own while preparing a run (retryable).
fn internal(detail: String) -> Outcome {
    Outcome::failed(RunFailure::new(RunErrorCode::Internal, detail), true)
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
