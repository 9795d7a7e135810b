//! The run lifecycle: a per-session runner claims queued runs in order,
//! streams each from an agent-worker, relays its deltas, commits the reply
//! and reports every status change. At most one run per session executes at
//! a time; later messages wait in the queue.

mod attempt;
mod inflight;
mod runner;
mod workers;

pub use inflight::InflightRun;
pub use workers::{WorkerLink, WorkerPool};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::EventBus;
use crate::domain::{Run, RunId, RunStatus, SessionId};
use crate::lifecycle::RunLifecycle;
use crate::store::{ChatStore, Lease, StoreError};

/// Settings of the run lifecycle.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    pub history_window: u64,
    pub run_timeout: Duration,
    /// How long a claimed run stays this replica's without renewal.
    pub lease: Duration,
    /// Attempts a run gets before it fails (workers dying, truncated streams).
    pub max_attempts: u32,
    /// How long a run may wait for an agent-worker to accept it.
    pub dispatch_timeout: Duration,
}

/// Where a run came from: the trace and the request id of the send that
/// queued it, so the run's spans join the sender's trace and its logs (and
/// the worker's) carry the request id; and the session's metadata as the
/// send read it, so the run's request needs no second read of the session.
///
/// Kept in memory only, from the send to the start of the run on this
/// replica. A run started elsewhere (another replica took it over, or this
/// one restarted) has no origin: its span starts a new trace, still tagged
/// with the session and run ids.
#[derive(Clone, Debug, Default)]
pub struct RunOrigin {
    pub request_id: Option<String>,
    pub parent: chat_common::trace::Parent,
    /// The session's metadata (fixed at creation).
    pub session_metadata: Option<String>,
}

impl RunOrigin {
    /// The current span's trace, with `request_id`.
    pub fn current(request_id: Option<String>) -> Self {
        Self {
            request_id,
            parent: chat_common::trace::Parent::current(),
            session_metadata: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.request_id.is_none() && !self.parent.is_some() && self.session_metadata.is_none()
    }
}

/// How long the origin of a run that does not start here is kept.
const ORIGIN_TTL: Duration = Duration::from_secs(600);
/// Most origins kept at once; beyond, runs start without one.
const MAX_ORIGINS: usize = 100_000;

/// What reached a session's runner while it was busy.
#[derive(Debug, Default)]
struct RunnerInbox {
    /// New work may be queued in the store: look before stopping.
    dirty: bool,
    /// Runs claimed for this replica by the sends that queued them.
    claimed: VecDeque<Run>,
}

/// Owns the session runners of this process.
pub struct Dispatcher {
    store: Arc<dyn ChatStore>,
    bus: Arc<dyn EventBus>,
    /// Every run status change (and a reply's effect on its session) goes through here.
    runs: RunLifecycle,
    workers: WorkerPool,
    config: DispatchConfig,
    /// Sessions with a live runner, and what was handed to each meanwhile.
    runners: Mutex<HashMap<SessionId, RunnerInbox>>,
    /// The run in flight of each session, with the deltas streamed so far.
    inflight: DashMap<SessionId, Arc<InflightRun>>,
    /// Cancellation handle of each running run.
    cancels: DashMap<RunId, CancellationToken>,
    /// Origins of the runs queued by sends to this replica, until they start.
    origins: DashMap<RunId, (Instant, RunOrigin)>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// This replica's identity in run leases.
    owner: String,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn ChatStore>,
        bus: Arc<dyn EventBus>,
        workers: WorkerPool,
        config: DispatchConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            runs: RunLifecycle::new(store.clone(), bus.clone()),
            store,
            bus,
            workers,
            config,
            runners: Mutex::default(),
            inflight: DashMap::new(),
            cancels: DashMap::new(),
            origins: DashMap::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            owner: format!("core-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// The lease this replica takes on the runs it claims.
    pub fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            duration_ms: i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The lease a send claims its run under when the session has nothing
    /// else to run, so the turn needs no separate claim; `None` once this
    /// replica is stopping (its runs are left to the others).
    pub fn send_lease(&self) -> Option<Lease> {
        (!self.shutdown.is_cancelled()).then(|| self.lease())
    }

    /// Periodically wakes sessions whose runs nobody is running: expired
    /// leases of a replica that died, or queued runs left behind.
    pub fn spawn_orphan_scan(self: &Arc<Self>) {
        let this = self.clone();
        let every = (self.config.lease / 2).max(Duration::from_millis(50));
        let stale_ms = i64::try_from(self.config.lease.as_millis() * 2).unwrap_or(i64::MAX);
        self.tasks.spawn(async move {
            loop {
                match this.store.orphaned_sessions(stale_ms).await {
                    Ok(sessions) => {
                        for session_id in sessions {
                            this.wake(&session_id);
                        }
                    }
                    Err(error) => tracing::debug!(%error, "orphan scan failed"),
                }
                this.origins.retain(|_, (at, _)| at.elapsed() < ORIGIN_TTL);
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = this.shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Stops a run executing here as soon as any replica announces it
    /// cancelled (a cancel or an interrupting message that reached
    /// another replica), rather than at its next lease renewal.
    pub fn spawn_cancel_listener(self: &Arc<Self>) {
        let this = self.clone();
        let cancelled = self
            .bus
            .cancellations()
            .take_until(self.shutdown.clone().cancelled_owned());
        self.tasks.spawn(async move {
            let mut cancelled = std::pin::pin!(cancelled);
            while let Some(run_id) = cancelled.next().await {
                this.cancel_running(&run_id);
            }
        });
    }

    pub fn workers(&self) -> &WorkerPool {
        &self.workers
    }

    /// Remembers where a queued run came from, for when it starts. Call
    /// before [`Dispatcher::wake`].
    pub fn queued(&self, run_id: &RunId, origin: RunOrigin) {
        if !origin.is_empty() && self.origins.len() < MAX_ORIGINS {
            self.origins.insert(run_id.clone(), (Instant::now(), origin));
        }
    }

    fn take_origin(&self, run_id: &RunId) -> RunOrigin {
        self.origins
            .remove(run_id)
            .map(|(_, (_, origin))| origin)
            .unwrap_or_default()
    }

    /// Makes sure a runner is working through the session's queue.
    pub fn wake(self: &Arc<Self>, session_id: &SessionId) {
        self.hand_over(session_id, None);
    }

    /// Hands a run claimed for this replica when it was queued (see
    /// [`Dispatcher::lease`]) to its session's runner.
    pub fn start_claimed(self: &Arc<Self>, run: Run) {
        let session_id = run.session_id.clone();
        self.hand_over(&session_id, Some(run));
    }

    fn hand_over(self: &Arc<Self>, session_id: &SessionId, claimed: Option<Run>) {
        if self.shutdown.is_cancelled() {
            // A claimed run stays `running` under this replica's lease, which
            // shutdown releases: another replica takes it over.
            return;
        }
        {
            let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(inbox) = runners.get_mut(session_id) {
                inbox.dirty = true;
                inbox.claimed.extend(claimed);
                return;
            }
            runners.insert(
                session_id.clone(),
                RunnerInbox {
                    dirty: false,
                    claimed: claimed.into_iter().collect(),
                },
            );
        }
        let this = self.clone();
        let session_id = session_id.clone();
        self.tasks.spawn(async move { this.run_queue(session_id).await });
    }

    /// The next run handed to the session's runner, if any.
    fn take_claimed(&self, session_id: &SessionId) -> Option<Run> {
        let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        runners.get_mut(session_id)?.claimed.pop_front()
    }

    /// Called by a runner that found its queue empty: returns whether it must
    /// look again (work arrived meanwhile) or may stop.
    fn runner_idle(&self, session_id: &SessionId) -> bool {
        let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        match runners.get_mut(session_id) {
            Some(inbox) if inbox.dirty || !inbox.claimed.is_empty() => {
                inbox.dirty = false;
                true
            }
            _ => {
                runners.remove(session_id);
                false
            }
        }
    }

    /// The run in flight in a session, if any.
    pub fn inflight(&self, session_id: &SessionId) -> Option<Arc<InflightRun>> {
        self.inflight.get(session_id).map(|r| r.clone())
    }

    /// The one way to cancel a run. A run executing on this replica is
    /// stopped and its runner records `cancelled`; any other unfinished run
    /// is stored `cancelled` and announced, to its session and to every
    /// replica (the one executing it stops it). A run that already ended
    /// stays as it was.
    pub async fn cancel(&self, run: &Run) -> Result<(), StoreError> {
        if self.cancel_running(run.id.as_str()) {
            return Ok(());
        }
        if self.runs.finish(run, RunStatus::Cancelled, "", None).await? {
            self.bus.publish_cancellation(run.id.as_str()).await;
        }
        Ok(())
    }

    /// Stops a run executing here; returns whether one was.
    fn cancel_running(&self, run_id: &str) -> bool {
        match self.cancels.get(run_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops every runner and releases their leases, so another replica (or
    /// the next start) takes the interrupted runs over at once.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(error) = self.store.release_leases(&self.owner).await {
            tracing::warn!(%error, "failed to release run leases; they expire on their own");
        }
    }
}
