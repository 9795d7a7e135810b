//! Liveness and readiness of one service, shared by its admin listener and
//! its gRPC health service.
//!
//! A service is ready when every named check passes and it is not draining.
//! Draining starts when the process is asked to stop: readiness turns red
//! first, so load balancers move traffic away while in-flight work finishes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Readiness of one service: named checks plus a draining flag.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: &'static str,
    state: Mutex<State>,
    ready: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    draining: bool,
    checks: BTreeMap<&'static str, bool>,
}

impl State {
    fn ready(&self) -> bool {
        !self.draining && self.checks.values().all(|ok| *ok)
    }
}

/// What `/readyz` reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub service: &'static str,
    pub ready: bool,
    pub draining: bool,
    pub checks: BTreeMap<&'static str, bool>,
}

impl Health {
    /// A service with no checks yet: ready until a check says otherwise.
    pub fn new(service: &'static str) -> Self {
        let (ready, _) = watch::channel(true);
        Self {
            inner: Arc::new(Inner {
                service,
                state: Mutex::new(State::default()),
                ready,
            }),
        }
    }

    /// The service's name, as reported by `/readyz`.
    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    /// Records the outcome of the dependency check `name`.
    pub fn set(&self, name: &'static str, ok: bool) {
        self.update(|state| {
            state.checks.insert(name, ok);
        });
    }

    /// Turns readiness red for good: the process is stopping.
    pub fn start_draining(&self) {
        self.update(|state| state.draining = true);
    }

    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    pub fn is_ready(&self) -> bool {
        self.lock().ready()
    }

    /// Follows readiness: the receiver sees every change.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    pub fn report(&self) -> Report {
        let state = self.lock();
        Report {
            service: self.inner.service,
            ready: state.ready(),
            draining: state.draining,
            checks: state.checks.clone(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let ready = {
            let mut state = self.lock();
            change(&mut state);
            state.ready()
        };
        self.inner.ready.send_if_modified(|current| {
            let changed = *current != ready;
            *current = ready;
            changed
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Mirrors `health` into gRPC health for `grpc_service` and the server as a
/// whole (`""`), and keeps `liveness` serving for as long as the process
/// runs, so Kubernetes gRPC probes can ask for either. The statuses are set
/// before this returns (a server started afterwards answers every name at
/// once); the task it returns follows `health` from then on.
pub async fn mirror_to_grpc(
    health: Health,
    reporter: tonic_health::server::HealthReporter,
    grpc_service: &'static str,
) -> tokio::task::JoinHandle<()> {
    reporter
        .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    let mut ready = health.watch();
    let now = *ready.borrow_and_update();
    report(&reporter, grpc_service, now).await;
    tokio::spawn(async move {
        while ready.changed().await.is_ok() {
            let now = *ready.borrow_and_update();
            report(&reporter, grpc_service, now).await;
        }
    })
}

/// Sets `grpc_service` and the server as a whole to `ready`.
async fn report(reporter: &tonic_health::server::HealthReporter, grpc_service: &'static str, ready: bool) {
    let status = if ready {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    reporter.set_service_status(grpc_service, status).await;
    reporter.set_service_status("", status).await;
}

/// gRPC health service name that answers SERVING while the process is alive
/// (for liveness and startup probes); readiness uses the API's own name.
pub const LIVENESS_SERVICE: &str = "liveness";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes_and_not_draining() {
        let health = Health::new("svc");
        assert!(health.is_ready());
        health.set("database", false);
        assert!(!health.is_ready());
        health.set("database", true);
        health.set("redis", true);
        assert!(health.is_ready());
        health.start_draining();
        assert!(!health.is_ready());
        health.set("database", true);
        assert!(!health.is_ready(), "draining is for good");
        let report = health.report();
        assert!(report.draining);
        assert_eq!(report.checks.len(), 2);
    }

    #[tokio::test]
    async fn grpc_health_is_set_before_the_mirror_returns_and_follows_readiness() {
        use tonic_health::pb::health_check_response::ServingStatus as Status;
        use tonic_health::pb::health_server::Health as _;
        use tonic_health::server::{HealthReporter, HealthService};
        fn request(service: &str) -> tonic::Request<tonic_health::pb::HealthCheckRequest> {
            tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
        }
        async fn status(service: &str, grpc: &HealthService) -> Option<i32> {
            grpc.check(request(service))
                .await
                .ok()
                .map(|r| r.into_inner().status)
        }
        let health = Health::new("svc");
        let reporter = HealthReporter::new();
        let grpc = HealthService::from_health_reporter(reporter.clone());

        // Set on return, with nothing else run in between (one thread).
        let mirror = mirror_to_grpc(health.clone(), reporter, "svc").await;
        for service in ["svc", "", LIVENESS_SERVICE] {
            assert_eq!(
                status(service, &grpc).await,
                Some(Status::Serving as i32),
                "{service:?}"
            );
        }

        // Then it follows readiness; liveness stays serving.
        let mut updates = grpc.watch(request("svc")).await.expect("watch").into_inner();
        health.set("database", false);
        let turned = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(Ok(update)) = futures::StreamExt::next(&mut updates).await {
                if update.status == Status::NotServing as i32 {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(turned.ok(), Some(true), "never turned not serving");
        assert_eq!(status("", &grpc).await, Some(Status::NotServing as i32));
        assert_eq!(
            status(LIVENESS_SERVICE, &grpc).await,
            Some(Status::Serving as i32)
        );
        mirror.abort();
    }

    #[tokio::test]
    async fn watchers_see_changes() {
        let health = Health::new("svc");
        let mut ready = health.watch();
        health.set("database", false);
        ready.changed().await.expect("sender alive");
        assert!(!*ready.borrow());
    }
}
