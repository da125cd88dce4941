//! `web-tier`: the web servers behind the load balancer. Serves static files itself and
//! forwards dynamic requests to upstream groups, configured from one TOML file.
//!
//! # Layout
//! - [`config`]: the TOML schema and its validation (errors name the field).
//! - [`server`]: listeners, HTTP/1.1 and HTTP/2 (TLS or h2c), routing by Host and
//!   location prefix, reload and graceful drain.
//! - [`static_files`]: files under a root: validators, ranges, content coding, confinement.
//! - [`file_cache`]: small static files kept in memory, revalidated on every hit.
//! - [`sendfile`]: `sendfile(2)` for large cached files underneath hyper.
//! - [`conditional`]: the pure HTTP rules for conditional and range requests, and the
//!   list syntax of header fields.
//! - [`proxy`]: forwarding, header rewriting, retries and error classes.
//! - [`upstream`]: groups, balancing, passive health, keep-alive pools.
//! - [`h1client`]: the lean HTTP/1.1 client for proxied requests without a body.
//! - [`logs`]: the combined-format access log and the JSON error log.
//! - [`body`]: the response body type shared by all handlers.
//!
//! # Embedding
//! ```no_run
//! # async fn demo() -> Result<(), web_tier::Error> {
//! let config = web_tier::config::Config::from_file("web.toml")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! web_tier::serve(config, listener, async { /* shutdown signal */ }).await
//! # }
//! ```

pub mod body;
pub mod conditional;
pub mod config;
pub mod file_cache;
pub mod h1client;
pub mod logs;
pub mod proxy;
pub mod rt;
pub mod sendfile;
pub mod server;
pub mod static_files;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use server::Server;

/// Locks `m`. A panic while it was held leaves no half-made state behind in any of this
/// crate's mutexes (each guards a value replaced whole), so a poisoned lock is used as is.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors from building or running a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was rejected.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Something the configuration names could not be opened.
    #[error("`{field}`: cannot open {path}: {source}")]
    Open {
        /// The config field naming it.
        field: String,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves plain HTTP/1.1 and h2c on `listener` with `config` until `shutdown` completes,
/// then drains in-flight requests (up to `limits.drain_timeout`). The config's own
/// `[[listen]]` entries are ignored here. For TLS or reloads, use [`Server`].
pub async fn serve(
    config: config::Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Server::new(&config)?.serve(listener, None, shutdown).await
}
