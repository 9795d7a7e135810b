//! The run lifecycle: a per-session runner claims queued runs in order,
//! streams each from an agent-worker, relays its deltas, commits the reply
//! and reports every status change. At most one run per session executes at
//! a time; later messages wait in the queue.

mod inflight;
mod runner;
mod workers;

pub use inflight::InflightRun;
pub use workers::WorkerPool;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::EventBus;
use crate::store::{ChatStore, Lease};

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

/// Owns the session runners of this process.
pub struct Dispatcher {
    store: Arc<dyn ChatStore>,
    bus: Arc<dyn EventBus>,
    workers: WorkerPool,
    config: DispatchConfig,
    /// Sessions with a live runner; `true` when new work arrived while it ran.
    runners: Mutex<HashMap<String, bool>>,
    /// The run in flight of each session, with the deltas streamed so far.
    inflight: DashMap<String, Arc<InflightRun>>,
    /// Cancellation handle of each running run.
    cancels: DashMap<String, CancellationToken>,
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
            store,
            bus,
            workers,
            config,
            runners: Mutex::default(),
            inflight: DashMap::new(),
            cancels: DashMap::new(),
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
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = this.shutdown.cancelled() => return,
                }
            }
        });
    }

    pub fn workers(&self) -> &WorkerPool {
        &self.workers
    }

    /// Makes sure a runner is working through the session's queue.
    pub fn wake(self: &Arc<Self>, session_id: &str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        {
            let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(dirty) = runners.get_mut(session_id) {
                *dirty = true;
                return;
            }
            runners.insert(session_id.to_owned(), false);
        }
        let this = self.clone();
        let session_id = session_id.to_owned();
        self.tasks.spawn(async move { this.run_queue(session_id).await });
    }

    /// Called by a runner that found its queue empty: returns whether it must
    /// look again (work arrived meanwhile) or may stop.
    fn runner_idle(&self, session_id: &str) -> bool {
        let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        match runners.get_mut(session_id) {
            Some(dirty) if *dirty => {
                *dirty = false;
                true
            }
            _ => {
                runners.remove(session_id);
                false
            }
        }
    }

    /// The run in flight in a session, if any.
    pub fn inflight(&self, session_id: &str) -> Option<Arc<InflightRun>> {
        self.inflight.get(session_id).map(|r| r.clone())
    }

    /// Stops a running run; returns whether one was running here.
    pub fn cancel_running(&self, run_id: &str) -> bool {
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
