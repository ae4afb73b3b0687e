//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (alive) and
//! `/readyz` (database and SQS reachable, not shutting down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;

/// What `/readyz` reports. The consumer and the probes update it; shutdown clears it first.
#[derive(Debug, Default)]
pub struct Readiness {
    database_reachable: AtomicBool,
    queue_reachable: AtomicBool,
    writes_paused: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn set_database_reachable(&self, reachable: bool) {
        self.database_reachable.store(reachable, Ordering::Relaxed);
    }

    pub fn set_queue_reachable(&self, reachable: bool) {
        self.queue_reachable.store(reachable, Ordering::Relaxed);
    }

    /// While writes fail systemically, the instance takes no work: not ready.
    pub fn set_writes_paused(&self, paused: bool) {
        self.writes_paused.store(paused, Ordering::Relaxed);
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// `Err` names what is wrong.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Err("shutting down")
        } else if !self.database_reachable.load(Ordering::Relaxed) {
            Err("database unreachable")
        } else if !self.queue_reachable.load(Ordering::Relaxed) {
            Err("SQS unreachable")
        } else if self.writes_paused.load(Ordering::Relaxed) {
            Err("writes paused: the database refuses them (see the log)")
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct Endpoints {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` is cancelled.
/// Binds before returning, so a taken port fails the start, not a later request.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Endpoints { metrics, readiness });
    Ok((
        bound,
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(message = "Metrics server failed; metrics and health checks are unavailable.", %error);
            }
        }),
    ))
}

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let ready = endpoints.readiness.check().is_ok();
    endpoints.metrics.set_ready(ready);
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        endpoints.metrics.render(),
    )
}

async fn ready(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match endpoints.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reports_the_first_problem() {
        let readiness = Readiness::default();
        assert_eq!(readiness.check(), Err("database unreachable"));
        readiness.set_database_reachable(true);
        assert_eq!(readiness.check(), Err("SQS unreachable"));
        readiness.set_queue_reachable(true);
        assert_eq!(readiness.check(), Ok(()));
        readiness.set_writes_paused(true);
        assert_eq!(
            readiness.check(),
            Err("writes paused: the database refuses them (see the log)")
        );
        readiness.set_writes_paused(false);
        readiness.begin_shutdown();
        assert_eq!(readiness.check(), Err("shutting down"));
    }
}
