//! The daemon's HTTP server on `listen`: health checks for the process
//! manager and load balancer, and the Prometheus metrics.
//!
//! `/healthz` answers while the process runs. `/readyz` answers 200 only
//! while the state store answers, the jobs folder has been read and the
//! daemon is not shutting down: on SIGTERM it turns 503 at once, so a load
//! balancer stops sending requests before the listener closes. The REST
//! API lives under `/api/v1` and the web UI at `/`.

pub mod api;
mod auth;
mod health;
mod ui;

pub use health::Health;

use crate::state::StateStore;
use sluice_core::config::Job;
use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// A request that takes longer is answered 408 and dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body accepted (a trigger's params, a clear).
const MAX_BODY: usize = 1 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub store: StateStore,
    pub jobs: Arc<JobsView>,
    /// `api_token`: what mutations (and closed reads) must present.
    pub api_token: Option<Arc<str>>,
    /// `api_read_public`: reads need no token.
    pub read_public: bool,
    /// This replica's id (the executor's worker id), shown by the API
    /// and the UI.
    pub replica: Arc<str>,
}

/// The jobs the daemon runs, as its last scan of the jobs folder left
/// them; the daemon's loop publishes, the handlers read.
#[derive(Debug, Default)]
pub struct JobsView {
    jobs: RwLock<BTreeMap<String, Arc<Job>>>,
}

impl JobsView {
    pub fn new() -> JobsView {
        JobsView::default()
    }

    pub fn set(&self, jobs: impl IntoIterator<Item = Arc<Job>>) {
        let jobs = jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
        *self.jobs.write().unwrap_or_else(|e| e.into_inner()) = jobs;
    }

    pub fn get(&self, name: &str) -> Option<Arc<Job>> {
        self.jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every job, by name.
    pub fn all(&self) -> Vec<Arc<Job>> {
        self.jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// The routes and the layers every request passes through: a request id
/// (taken from `x-request-id` or made up, and sent back), a span per
/// request with that id, a timeout, a body size limit and compression.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::router())
        .merge(ui::router())
        .with_state(state)
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Serves `router` on `listener` until `stop` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.not_ready() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
