//! Process shutdown: the stop signal and the drain that follows it.
//!
//! On SIGTERM (or Ctrl-C) a service turns its readiness red, stops taking new
//! work, finishes or hands back what it holds, and exits; whatever is still
//! running when the drain deadline passes is abandoned so the process exits
//! before the orchestrator's grace period ends.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Default drain deadline: inside Kubernetes' default 30 s grace period.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(25);

/// Completes when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

/// Runs a server until it ends on its own, or until `stop` completes and it
/// has drained.
///
/// When `stop` completes, `health` turns red and `draining` is cancelled; the
/// server (which watches `draining`) then has `deadline` to finish. Returns
/// the server's result, or `Ok` with a warning when the deadline cut the
/// drain short.
pub async fn drain(
    stop: impl Future<Output = ()> + Send + 'static,
    health: &Health,
    deadline: Duration,
    draining: CancellationToken,
    server: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let trigger = {
        let draining = draining.clone();
        let health = health.clone();
        tokio::spawn(async move {
            stop.await;
            health.start_draining();
            tracing::info!(
                service = health.service(),
                deadline_secs = deadline.as_secs_f64(),
                "draining"
            );
            draining.cancel();
        })
    };
    let overdue = async {
        draining.cancelled().await;
        tokio::time::sleep(deadline).await;
    };
    let result = tokio::select! {
        result = server => result,
        () = overdue => {
            tracing::warn!(service = health.service(), "drain deadline passed; stopping with work still open");
            Ok(())
        }
    };
    trigger.abort();
    result
}

/// What a binary prints when it fails: one line, the error chain joined.
pub fn exit_code(service: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{service} failed");
            eprintln!("{service}: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_turns_readiness_red_then_the_server_drains() {
        let health = Health::new("svc");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let seen_red = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let draining = CancellationToken::new();
        let server = {
            let (health, seen_red, draining) = (health.clone(), seen_red.clone(), draining.clone());
            async move {
                draining.cancelled().await;
                seen_red.store(!health.is_ready(), std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        };
        let result = drain(
            async move {
                let _ = stop_rx.await;
            },
            &health,
            Duration::from_secs(5),
            draining,
            server,
        );
        stop_tx.send(()).expect("receiver");
        result.await.expect("drained");
        assert!(seen_red.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn the_deadline_ends_a_drain_that_hangs() {
        let health = Health::new("svc");
        let started = std::time::Instant::now();
        let server = std::future::pending();
        let drained = drain(
            async {},
            &health,
            Duration::from_millis(200),
            CancellationToken::new(),
            server,
        );
        tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .expect("the deadline ends the drain")
            .expect("deadline is not an error");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(!health.is_ready());
    }
}
