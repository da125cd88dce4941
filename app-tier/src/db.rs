//! Connection pools and read/write routing.
//!
//! [`Db`] owns one [`Pool`] for the primary and one per replica (plus, per database, a
//! lazily connecting sqlx pool for migrations, seeding and tests). A request talks to it
//! through a [`DbSession`], which enforces the routing rules:
//!
//! - writes always go to the primary, inside a transaction when they take more than
//!   one statement;
//! - reads go to a replica (round-robin), unless this request has already written, in
//!   which case they go to the primary so the request sees its own write (replication
//!   is asynchronous);
//! - a replica that cannot hand out a connection is skipped and the read falls back to
//!   the primary (counted in `app_db_replica_fallbacks_total`).
//!
//! Failing fast: each target has a small circuit breaker: after a failed connect (or a
//! connect or idle connection's ping that got no answer within `acquire_timeout_ms`) it
//! answers "unavailable" at once for `retry_interval_ms`, instead of letting every
//! request make its own attempt against a dead database, then lets requests try again.
//! A failure only trips the breaker if nothing succeeded since that attempt began: an
//! acquire that started during an outage can time out after the database is back, and
//! its stale verdict must not take a recovered target down again. A pool that had no
//! free connection in time ([`AcquireError::Busy`]: every one in use, say waiting on a
//! row lock) answers that request 503 ("database busy") but trips nothing: the
//! database is answering, and the next request may well find a free connection.
//! Recovery needs no restart: the pools discard broken connections and test the rest
//! (see [`crate::pool`]), and open new ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::config::{ConfigError, DatabaseConfig};
use crate::error::ApiError;
use crate::metrics::{Metrics, PoolSample};
use crate::pool::{AcquireError, Conn, Pool, PoolConfig, Tx};

/// One database server: its pools and its breaker.
pub struct Target {
    name: String,
    /// The request path's connections.
    conns: Pool,
    /// For migrations, seeding, tests, and `/readyz` while `conns` is full: connects
    /// only when used.
    pool: MySqlPool,
    breaker: Breaker,
}

/// A target's circuit breaker; times are milliseconds since `Db::epoch`.
#[derive(Debug, Default)]
struct Breaker {
    /// Until when the target is considered down (0: up).
    down_until_ms: AtomicU64,
    /// One past when an acquire last succeeded (0: never).
    last_ok_end_ms: AtomicU64,
}

impl Breaker {
    /// Whether requests may try the target at `now`.
    fn allows(&self, now: u64) -> bool {
        now >= self.down_until_ms.load(Ordering::Relaxed)
    }

    fn record_ok(&self, now: u64) {
        self.last_ok_end_ms
            .fetch_max(now.saturating_add(1), Ordering::Relaxed);
        self.down_until_ms.store(0, Ordering::Relaxed);
    }

    /// An attempt that began at `started` failed at `now`. It trips the breaker for
    /// `retry_ms` unless another attempt succeeded since it began (a stale failure).
    /// Returns whether it tripped.
    fn record_failure(&self, started: u64, now: u64, retry_ms: u64) -> bool {
        if self.last_ok_end_ms.load(Ordering::Relaxed) > started {
            return false;
        }
        self.down_until_ms
            .fetch_max(now.saturating_add(retry_ms), Ordering::Relaxed);
        true
    }
}

impl Target {
    /// `primary`, `replica0`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sqlx pool (for migrations, seeding and tests; requests use their own).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }
}

/// The primary, the replicas and the routing state.
pub struct Db {
    primary: Target,
    replicas: Vec<Target>,
    next_replica: AtomicUsize,
    retry_interval: Duration,
    epoch: Instant,
    metrics: Arc<Metrics>,
}

/// Builds the driver options for `url`, with the separate password applied if set.
pub fn connect_options(
    config: &DatabaseConfig,
    url: &crate::config::DbUrl,
    key: &'static str,
) -> Result<MySqlConnectOptions, ConfigError> {
    let mut options = url.connect_options(key)?;
    if let Some(password) = &config.password {
        options = options.password(password.expose());
    }
    // sqlx logs every statement at debug and slow ones at warn; statements carry only
    // `?` placeholders (values are bound), so no user data reaches the log either way.
    Ok(options)
}

impl Target {
    /// `replica`: reads can fall back from it, so its connections are tested before
    /// every use (a dead replica must fail the acquire, not the read).
    fn new(
        name: String,
        config: &DatabaseConfig,
        options: MySqlConnectOptions,
        replica: bool,
    ) -> Target {
        let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
        let conns = Pool::new(
            options.clone(),
            PoolConfig {
                max_connections: config.max_connections,
                min_connections: config.min_connections,
                acquire_timeout: config.acquire_timeout(),
                idle_timeout,
                ping_every_acquire: replica,
            },
        );
        // Idle for a minute at most: it serves the start-up schema check, tools and
        // `/readyz` while `conns` is full, and should not hold a connection for the
        // life of the server.
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout())
            .idle_timeout(Some(idle_timeout.min(Duration::from_secs(60))))
            .connect_lazy_with(options);
        Target {
            name,
            conns,
            pool,
            breaker: Breaker::default(),
        }
    }
}

impl Db {
    /// Creates the pools without connecting: the server can start (and answer 503 with
    /// `/readyz` failing) while a database is still down.
    pub fn connect_lazy(config: &DatabaseConfig, metrics: Arc<Metrics>) -> Result<Db, ConfigError> {
        let primary = Target::new(
            "primary".into(),
            config,
            connect_options(config, &config.url, "database.url")?,
            false,
        );
        let replicas = config
            .replica_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Ok(Target::new(
                    format!("replica{i}"),
                    config,
                    connect_options(config, url, "database.replica_urls")?,
                    true,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Db {
            primary,
            replicas,
            next_replica: AtomicUsize::new(0),
            retry_interval: Duration::from_millis(config.retry_interval_ms),
            epoch: Instant::now(),
            metrics,
        })
    }

    /// The primary's sqlx pool (for migrations, seeding and tests).
    pub fn primary(&self) -> &MySqlPool {
        &self.primary.pool
    }

    /// The replicas, in configuration order.
    pub fn replicas(&self) -> &[Target] {
        &self.replicas
    }

    /// Opens a routing session for one request.
    pub fn session(self: &Arc<Self>) -> DbSession {
        DbSession {
            db: Arc::clone(self),
            wrote: false,
        }
    }

    /// The primary, then the replicas.
    fn targets(&self) -> impl Iterator<Item = &Target> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    /// A request failed for want of a database: every pool tests its idle connections
    /// before their next use (see [`Pool::suspect_idle`]).
    pub fn suspect_idle_connections(&self) {
        for t in self.targets() {
            t.conns.suspect_idle();
        }
    }

    /// Occupancy of every pool, for `/metrics`.
    pub fn pool_samples(&self) -> Vec<PoolSample> {
        self.targets()
            .map(|t| PoolSample {
                target: t.name.clone(),
                size: t.conns.size(),
                idle: u32::try_from(t.conns.num_idle()).unwrap_or(u32::MAX),
                max: t.conns.max_connections(),
            })
            .collect()
    }

    /// Closes every pool (waits for connections in use to come back).
    pub async fn close(&self) {
        for t in self.targets() {
            t.conns.close().await;
            t.pool.close().await;
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A connection from `target`, honouring its breaker.
    async fn acquire_from(&self, target: &Target) -> Result<Conn, ApiError> {
        let started = self.now_ms();
        if !target.breaker.allows(started) {
            return Err(ApiError::DatabaseUnavailable {
                detail: format!("{} marked down after a recent failure", target.name),
            });
        }
        let err = match target.conns.acquire().await {
            Ok(conn) => {
                target.breaker.record_ok(self.now_ms());
                self.metrics.observe_acquire(&target.name);
                return Ok(conn);
            }
            Err(e @ AcquireError::Busy { .. }) => {
                return Err(ApiError::DatabaseBusy {
                    detail: format!("{}: {e}", target.name),
                });
            }
            Err(AcquireError::Closed) => {
                return Err(ApiError::DatabaseUnavailable {
                    detail: format!("{}: {}", target.name, AcquireError::Closed),
                });
            }
            // Refused, reset, or the server said it cannot take us (too many
            // connections, shutting down): unavailable. A refused login is a 500.
            Err(AcquireError::Connect(e)) => ApiError::from(e),
            Err(e @ AcquireError::NoAnswer { .. }) => ApiError::DatabaseUnavailable {
                detail: format!("{}: {e}", target.name),
            },
        };
        if err.is_unavailable() {
            let retry = u64::try_from(self.retry_interval.as_millis()).unwrap_or(u64::MAX);
            target.breaker.record_failure(started, self.now_ms(), retry);
        }
        Err(err)
    }

    /// A primary connection; counts the refusal when the primary is down or full.
    async fn acquire_primary(&self) -> Result<Conn, ApiError> {
        let result = self.acquire_from(&self.primary).await;
        match &result {
            Err(ApiError::DatabaseUnavailable { .. }) => self.metrics.observe_db_unavailable(),
            Err(ApiError::DatabaseBusy { .. }) => self.metrics.observe_db_busy(),
            _ => {}
        }
        result
    }

    /// A connection for reading: a replica if one is up, else the primary.
    async fn acquire_replica_or_primary(&self) -> Result<Conn, ApiError> {
        let n = self.replicas.len();
        if n > 0 {
            let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
            for i in 0..n {
                let target = &self.replicas[(start + i) % n];
                match self.acquire_from(target).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        log::warn!(target: "app_tier::db", "replica={} unavailable, trying next: {e}", target.name)
                    }
                }
            }
            self.metrics.observe_replica_fallback();
        }
        self.acquire_primary().await
    }

    /// Pings the primary (for `/readyz`). When every request connection is busy, the
    /// ping goes over the side pool's connection instead: a full pool means this server
    /// is busy, not that the primary is down, and a readiness check that waited for a
    /// request connection would fail (and take the server out of its load balancer)
    /// exactly when it is busiest.
    pub async fn ping_primary(&self) -> Result<(), ApiError> {
        let t = &self.primary;
        if !t.conns.is_full() {
            match self.acquire_primary().await {
                Ok(mut conn) => {
                    sqlx::query("SELECT 1").execute(&mut *conn).await?;
                    return Ok(());
                }
                Err(ApiError::DatabaseBusy { .. }) => {}
                Err(e) => return Err(e),
            }
        } else if !t.breaker.allows(self.now_ms()) {
            return Err(ApiError::DatabaseUnavailable {
                detail: format!("{} marked down after a recent failure", t.name),
            });
        }
        sqlx::query("SELECT 1").execute(&t.pool).await?;
        Ok(())
    }
}

/// One request's view of the database; see the module docs for the routing rules.
pub struct DbSession {
    db: Arc<Db>,
    wrote: bool,
}

impl DbSession {
    /// A connection for reads: a replica, or the primary once this request has written.
    pub async fn read(&mut self) -> Result<Conn, ApiError> {
        if self.wrote {
            self.db.acquire_primary().await
        } else {
            self.db.acquire_replica_or_primary().await
        }
    }

    /// A primary connection for a write that is one statement (autocommit: it commits
    /// on its own). Everything read through this session afterwards also comes from the
    /// primary.
    pub async fn write(&mut self) -> Result<Conn, ApiError> {
        self.wrote = true;
        self.db.acquire_primary().await
    }

    /// A transaction on the primary. Everything read through this session afterwards
    /// also comes from the primary. Dropped without [`Tx::commit`], it rolls back.
    pub async fn begin(&mut self) -> Result<Tx, ApiError> {
        let conn = self.write().await?;
        Ok(Tx::begin(conn).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DbUrl;

    #[tokio::test]
    async fn a_full_pool_answers_busy_and_trips_nothing() {
        // Nothing listens on port 1: a connect, once tried, is refused.
        let mut config = DatabaseConfig::new(DbUrl::new("mysql://u@127.0.0.1:1/x"));
        config.max_connections = 1;
        config.acquire_timeout_ms = 50;
        config.retry_interval_ms = 60_000;
        let metrics = Arc::new(Metrics::default());
        let db = Db::connect_lazy(&config, Arc::clone(&metrics)).unwrap();
        let held = db.primary.conns.hold_every_slot();
        for _ in 0..3 {
            let err = db.acquire_primary().await.err().unwrap();
            assert!(matches!(err, ApiError::DatabaseBusy { .. }), "{err:?}");
            assert!(db.primary.breaker.allows(db.now_ms()), "tripped by {err:?}");
        }
        drop(held);
        // A real connect failure still trips it.
        let err = db.acquire_primary().await.err().unwrap();
        assert!(
            matches!(err, ApiError::DatabaseUnavailable { .. }),
            "{err:?}"
        );
        assert!(!db.primary.breaker.allows(db.now_ms()));
        let text = metrics.render(&[]);
        assert!(text.contains("app_db_busy_total 3"), "{text}");
        assert!(text.contains("app_db_unavailable_total 1"), "{text}");
    }

    #[test]
    fn a_failure_trips_the_breaker_for_the_retry_interval() {
        let b = Breaker::default();
        assert!(b.allows(0));
        assert!(b.record_failure(100, 120, 250));
        assert!(!b.allows(121));
        assert!(!b.allows(369));
        assert!(b.allows(370));
    }

    #[test]
    fn a_success_closes_the_breaker() {
        let b = Breaker::default();
        b.record_failure(0, 10, 250);
        assert!(!b.allows(20));
        b.record_ok(30);
        assert!(b.allows(31));
    }

    #[test]
    fn a_failure_that_began_before_a_later_success_is_stale() {
        // An acquire began during the outage (t=100) and timed out at t=2100; another,
        // begun after the restart, succeeded at t=1500. The target stays up.
        let b = Breaker::default();
        b.record_ok(1500);
        assert!(!b.record_failure(100, 2100, 250));
        assert!(b.allows(2101));
        // A failure that began after the last success still trips it.
        assert!(b.record_failure(1600, 2200, 250));
        assert!(!b.allows(2201));
    }

    #[test]
    fn a_success_at_the_start_millisecond_makes_the_failure_stale() {
        let b = Breaker::default();
        b.record_ok(0);
        assert!(!b.record_failure(0, 5, 250));
        assert!(b.allows(6));
    }

    #[test]
    fn concurrent_failures_keep_the_latest_deadline() {
        let b = Breaker::default();
        b.record_failure(0, 500, 250);
        b.record_failure(0, 100, 250);
        assert!(!b.allows(700));
        assert!(b.allows(750));
    }
}
