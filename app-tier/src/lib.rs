//! `app-tier`: the application servers of the stack (what Gunicorn + Flask were), and
//! the only tier that talks to the database. It serves the HBNB places-and-reviews API
//! as JSON under `/api/v1`, one server-rendered page (`/hbnb`), health checks and
//! Prometheus metrics, against MariaDB (optionally a primary and read replicas).
//!
//! The binary (`src/main.rs`) only parses the command line and calls into here, so
//! tests and the workspace's end-to-end suite can build the same server in-process:
//! [`server::app`] gives the `Router`, [`server::run`] serves a listener until a
//! shutdown future resolves, [`serve`] does config -> schema check -> listen.
//!
//! # Layout
//! - [`config`]: TOML file + `APP_TIER_*` environment; the password never prints.
//! - [`db`]: primary/replica routing, fail-fast when a database is down.
//! - [`pool`]: the request path's connection pool (no round trip on a healthy connection).
//! - [`migrate`]: the embedded migrations and the start-up schema check.
//! - [`model`]: the resource kinds as data (fields, types, limits) and body validation.
//! - [`store`]: the SQL (prepared statements only) for those kinds.
//! - [`record`]: a row as the API shows it, decoded and serialized without a `Value` tree.
//! - [`input`]: extractors whose rejections are JSON errors.
//! - [`api`]: the `/api/v1` handlers.
//! - [`page`]: the `/hbnb` HTML page.
//! - [`error`]: the one HTTP error type and the database-error classification.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`server`]: state, router, middleware (timeout, access log), `run`.
//! - [`seed`]: the demo data set.
//! - `testing` (feature `testing`): a throwaway MariaDB server for tests.

pub mod api;
pub mod config;
pub mod db;
pub mod error;
pub mod input;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod page;
pub mod pool;
pub mod record;
pub mod seed;
pub mod server;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::Config;
pub use server::{AppState, app, run};

use std::future::Future;

/// Why [`serve`] could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The schema is behind this build, or could not be checked.
    #[error(transparent)]
    Schema(#[from] migrate::SchemaError),
    /// The listen address could not be bound, or the server failed.
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        /// The address from the config.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Everything `app-tier serve` does: build the state, refuse to start if the schema is
/// behind, bind `config.listen`, serve until `shutdown` resolves, then close the pools.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = AppState::new(config)?;
    migrate::check(state.db.primary()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    log::info!(
        target: "app_tier::server",
        "database={} replicas={} schema_version={}",
        config.database.url,
        config.database.replica_urls.len(),
        migrate::required_version()
    );
    let db = std::sync::Arc::clone(&state.db);
    run(listener, state, shutdown)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    db.close().await;
    Ok(())
}
