//! The admin listener every service runs beside its API: `/healthz`
//! (alive), `/readyz` (ready for traffic) and `/metrics` (Prometheus text).
//! It keeps answering while the service drains, so probes see it turn red.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::Context as _;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::health::Health;

/// An admin listener, bound and ready to serve.
pub struct Admin {
    listener: TcpListener,
    services: Vec<Health>,
}

impl Admin {
    /// Binds `addr` for the admin routes of `services` (one per service;
    /// the all-in-one passes all three). Installs the metrics recorder.
    pub async fn bind(addr: SocketAddr, services: Vec<Health>) -> anyhow::Result<Self> {
        crate::metrics::install();
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to bind the admin listener on {addr}"))?;
        Ok(Self { listener, services })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves in the background until the returned handle is aborted or dropped with the runtime.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "admin listening");
        let app = router(self.services);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(self.listener, app).await {
                tracing::warn!(%error, "admin listener failed");
            }
        })
    }
}

/// What stops a service run by [`until_signal`]: SIGTERM or Ctrl-C.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a built service as its binary does: trims the heap now and then
/// ([`crate::alloc::spawn_trim`]), serves the admin routes of `health` on
/// `addr` while `serve` runs (a service until it has drained after SIGTERM or
/// Ctrl-C), then stops them.
pub async fn until_signal<F>(
    addr: SocketAddr,
    health: Health,
    serve: impl FnOnce(Stop) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    crate::alloc::spawn_trim().map_err(anyhow::Error::msg)?;
    let admin = Admin::bind(addr, vec![health]).await?.spawn();
    let result = serve(Box::pin(crate::shutdown::signal())).await;
    admin.abort();
    result
}

/// The admin routes over `services`.
pub fn router(services: Vec<Health>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(move || readyz(services.clone())))
        .route("/metrics", get(metrics))
}

async fn readyz(services: Vec<Health>) -> Response {
    let reports: Vec<_> = services.iter().map(Health::report).collect();
    let ready = reports.iter().all(|r| r.ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "services": reports,
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::render(),
    )
        .into_response()
}
