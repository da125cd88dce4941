//! The HTTP server: shared state, the full router ([`app`]), and [`run`], which serves
//! a listener until a shutdown future resolves and then lets in-flight requests finish.
//!
//! Middleware, outermost first: access log and metrics (so they see every status,
//! including the timeout's 503; a 503 that may mean the database went away also has
//! the pools test their idle connections), then the request timeout, then the
//! body-size limit (a declared `Content-Length` over it is refused before the body is
//! read; a body without one is cut off where it passes the limit).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::db::Db;
use crate::error::{ApiError, DatabaseTrouble};
use crate::metrics::Metrics;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Pools and routing.
    pub db: Arc<Db>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `request_timeout_ms`.
    pub request_timeout: Duration,
    /// `max_body_bytes`.
    pub max_body_bytes: usize,
}

impl AppState {
    /// Builds the state from a validated config. Pools are lazy: nothing connects yet.
    pub fn new(config: &Config) -> Result<AppState, ConfigError> {
        let metrics = Arc::new(Metrics::default());
        let db = Db::connect_lazy(&config.database, Arc::clone(&metrics))?;
        Ok(AppState {
            db: Arc::new(db),
            metrics,
            request_timeout: config.request_timeout(),
            max_body_bytes: config.max_body_bytes,
        })
    }
}

/// The whole application: `/api/v1/...`, `/hbnb`, `/healthz`, `/readyz`, `/metrics`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1", crate::api::router())
        .route("/hbnb", get(crate::page::hbnb))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound })
        // After every route: it applies to the routes registered so far. The router
        // still adds `Allow` to what it answers.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            declared_length,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits for the
/// requests in flight (bounded by the request timeout, which still applies to them).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    log::info!(target: "app_tier::server", "listening addr={addr}");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    log::info!(target: "app_tier::server", "stopped addr={addr}: in-flight requests finished");
    Ok(())
}

/// Process is up (no database involved): the load balancer's liveness check.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

/// The primary answers a query: the web tier's readiness check. 503 otherwise.
async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.db.ping_primary().await?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(&s.db.pool_samples()),
    )
}

/// Answers 503 when the handler runs past `request_timeout` (the handler's future is
/// dropped, which rolls back any open transaction). Handlers run inside
/// [`crate::pool::in_handler`], so the pool knows which connections came back from a
/// handler that finished and which from one that was cut off.
async fn timeout(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(s.request_timeout, crate::pool::in_handler(next.run(req))).await {
        Ok(response) => response,
        Err(_) => {
            s.metrics.observe_timeout();
            ApiError::Timeout.into_response()
        }
    }
}

/// 413 at once for a body declared longer than `max_body_bytes`, rather than after
/// reading that much of it (the limit on the body itself only trips once it has).
async fn declared_length(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(s.max_body_bytes).unwrap_or(u64::MAX)) {
        return ApiError::TooLarge.into_response();
    }
    next.run(req).await
}

/// Access log line and request metrics, labelled by route template.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status();
    s.metrics
        .observe_request(&method, &route, status.as_u16(), elapsed);
    // logfmt: one line per request, greppable and parseable.
    log::info!(
        target: "app_tier::access",
        "method={method} path={path:?} route={route:?} status={} duration_ms={:.3}",
        status.as_u16(),
        elapsed.as_secs_f64() * 1000.0
    );
    if response.extensions().get::<DatabaseTrouble>().is_some() {
        // The handler's connection is back in its pool by now; if the database went
        // away, it and its idle siblings must be tested before anyone uses them.
        s.db.suspect_idle_connections();
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        log::error!(target: "app_tier::error", "method={method} path={path:?} status=500");
    }
    response
}
