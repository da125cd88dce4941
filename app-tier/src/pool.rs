//! The connection pool of the request path: at most `max_connections` MariaDB
//! connections per database, reused most-recently-used first, with no round trip of
//! its own on a healthy connection.
//!
//! Why not sqlx's pool: it pings every connection when it comes back (to flush a
//! dropped transaction's ROLLBACK and to catch a connection a cancelled query left
//! half-read), and, with `test_before_acquire`, again before handing it out. That is
//! two round trips per request on top of the request's own statements; on a small
//! machine they cost MariaDB and this server about as much CPU as a primary-key SELECT.
//! Here:
//!
//! - **On release** by the handler that used it (see [`in_handler`]), a connection is
//!   finished off without a round trip: `Connection::flush` reads what is still due
//!   (the end of a result `fetch_optional` stopped reading), usually already in the
//!   socket buffer, and returns at once when nothing is. A transaction dropped without
//!   a commit is rolled back first, and a connection whose handler was cut off (the
//!   request timeout, a client hanging up) is pinged first, by a background task
//!   during which it still counts against the limit. A connection that fails any of
//!   this is closed.
//! - **On acquire** a connection is pinged only if it has been idle for
//!   [`PING_AFTER_IDLE`] or longer, or was already idle when the pool last found a
//!   broken connection or failed to connect. A database restart breaks every pooled
//!   connection at once; the first broken one found (by a request that then answers
//!   503, or by the idle ping) makes the pool test all the others before use, so it
//!   recovers by itself without handing out dead connections afterwards. The price: a
//!   request that comes within [`PING_AFTER_IDLE`] of the previous one and finds that
//!   the database went down in between answers 503 (there was no database to answer
//!   it anyway), and so can the first few after a restart quicker than that. Pools of
//!   databases with a fallback (replicas) ping on every acquire instead
//!   ([`PoolConfig::ping_every_acquire`]), so a dead replica is skipped before the read.
//! - Connections idle longer than `idle_timeout_ms` are closed, down to
//!   `min_connections`.
//! - A connect that fails is not retried here: the caller's circuit breaker
//!   ([`crate::db`]) decides when to try again. An acquire that found every connection
//!   in use tells the caller so ([`AcquireError::Busy`]): that trips no breaker.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection as _, Executor as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection idle at least this long is pinged before use: it catches a server
/// restarted, or a connection dropped by the network or `wait_timeout`, while nobody
/// was using the pool. Under load connections are idle for microseconds and never
/// pinged; at one request a second every request pays the ping, which is then cheap.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How long the background clean-up of a returned connection (drain, ROLLBACK, ping)
/// may take before the connection is given up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`Pool::acquire`] gave no connection. Only [`AcquireError::Connect`] and
/// [`AcquireError::NoAnswer`] say anything about the database; [`AcquireError::Busy`]
/// says this server has more requests than connections.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Every connection stayed in use (or came free too late to be tested or opened in
    /// time) for `acquire_timeout`: the pool is full, the database may be fine.
    #[error("no connection came free within {timeout:?}: all in use")]
    Busy {
        /// The pool's `acquire_timeout`.
        timeout: std::time::Duration,
    },
    /// Connecting failed: refused, reset, the handshake or the login refused.
    #[error("connecting failed: {0}")]
    Connect(#[source] sqlx::Error),
    /// A connect or an idle connection's ping got no answer within the timeout.
    #[error("no answer within {timeout:?} while {doing}")]
    NoAnswer {
        /// `connecting` or `pinging an idle connection`.
        doing: &'static str,
        /// The pool's `acquire_timeout`.
        timeout: std::time::Duration,
    },
    /// The pool is closed (the server is shutting down).
    #[error("the pool is closed")]
    Closed,
}

/// Sizes and timeouts of one pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most connections open at once.
    pub max_connections: u32,
    /// Idle connections kept even past `idle_timeout`.
    pub min_connections: u32,
    /// Longest wait for a connection (a free slot plus, if needed, a connect).
    pub acquire_timeout: Duration,
    /// Idle connections beyond `min_connections` are closed after this long.
    pub idle_timeout: Duration,
    /// Ping every connection before handing it out, not only possibly stale ones: for
    /// a database the caller can fall back from (a replica), whose failure must show
    /// at acquire time rather than in the middle of the request.
    pub ping_every_acquire: bool,
}

/// A pool of connections to one database. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    options: MySqlConnectOptions,
    config: PoolConfig,
    /// One permit per connection in use (or being opened, or being cleaned up).
    permits: Arc<Semaphore>,
    /// Idle connections, least recently used first.
    idle: Mutex<Vec<Idle>>,
    /// Open connections, idle or not.
    size: AtomicU32,
    closed: AtomicBool,
    epoch: Instant,
    /// Connections last handed out before this (ms since `epoch`; 0: none) are pinged
    /// before their next use.
    suspect_before_ms: AtomicU64,
}

struct Idle {
    conn: MySqlConnection,
    /// Back in the pool since.
    since: Instant,
    /// When it was last handed out (fresh, pinged, or trusted then). A sign of trouble
    /// after this point may concern it even if it came back later: a statement that
    /// failed because the server died returns its connection "in step" but dead.
    handed_out: Instant,
}

/// One connection counted in `size` while an acquire tests or opens it; dropped (the
/// connection failed, or the acquire was dropped half-way), it is uncounted.
struct Counted<'a>(&'a Shared);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.size.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// A pool that connects on first use.
    pub fn new(options: MySqlConnectOptions, config: PoolConfig) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                options,
                permits: Arc::new(Semaphore::new(config.max_connections as usize)),
                config,
                idle: Mutex::new(Vec::new()),
                size: AtomicU32::new(0),
                closed: AtomicBool::new(false),
                epoch: Instant::now(),
                suspect_before_ms: AtomicU64::new(0),
            }),
        }
    }

    /// A connection: an idle one (pinged first if it may be stale), else a new one.
    /// Gives up after `acquire_timeout`; see [`AcquireError`] for how.
    pub async fn acquire(&self) -> Result<Conn, AcquireError> {
        let s = &self.shared;
        let timeout = s.config.acquire_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        if s.closed.load(Ordering::Acquire) {
            return Err(AcquireError::Closed);
        }
        let permit =
            match tokio::time::timeout_at(deadline, s.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(AcquireError::Closed),
                Err(_) => return Err(AcquireError::Busy { timeout }),
            };
        // What the deadline cut short was the database's to answer only if the wait
        // for a free slot left it a fair share of the time: under a full pool a slot
        // can come free a moment before the deadline.
        let fair = deadline.saturating_duration_since(tokio::time::Instant::now()) >= timeout / 2;
        let cut_short = |doing: &'static str| {
            if !fair {
                return AcquireError::Busy { timeout };
            }
            s.suspect_idle();
            AcquireError::NoAnswer { doing, timeout }
        };
        while let Some(mut idle) = s.pop_idle() {
            if !s.needs_ping(idle.since, idle.handed_out) {
                return Ok(self.hand_out(idle.conn, permit));
            }
            // Uncounts the connection if it fails, or if this acquire is dropped.
            let counted = Counted(s);
            match tokio::time::timeout_at(deadline, idle.conn.ping()).await {
                Ok(Ok(())) => {
                    std::mem::forget(counted);
                    return Ok(self.hand_out(idle.conn, permit));
                }
                Ok(Err(e)) => {
                    log::info!(target: "app_tier::pool", "idle connection failed its ping, closing it: {e}");
                    s.suspect_idle();
                }
                Err(_) => return Err(cut_short("pinging an idle connection")),
            }
        }
        s.size.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(s);
        match tokio::time::timeout_at(deadline, MySqlConnection::connect_with(&s.options)).await {
            Ok(Ok(conn)) => {
                std::mem::forget(counted);
                Ok(self.hand_out(conn, permit))
            }
            Ok(Err(e)) => {
                s.suspect_idle();
                Err(AcquireError::Connect(e))
            }
            Err(_) => Err(cut_short("connecting")),
        }
    }

    fn hand_out(&self, conn: MySqlConnection, permit: OwnedSemaphorePermit) -> Conn {
        Conn {
            conn: Some(conn),
            permit: Some(permit),
            shared: Arc::clone(&self.shared),
            rollback: false,
            handed_out: Instant::now(),
        }
    }

    /// Has every connection idle right now pinged before its next use: the caller saw
    /// a sign that the database went away (a request answered 503), and a connection
    /// that took an error packet on its way out (a shutdown, a KILL) looks healthy
    /// until its socket is used again.
    pub fn suspect_idle(&self) {
        self.shared.suspect_idle();
    }

    /// Open connections (idle or in use).
    pub fn size(&self) -> u32 {
        self.shared.size.load(Ordering::Acquire)
    }

    /// Idle connections.
    pub fn num_idle(&self) -> usize {
        self.shared.lock_idle().len()
    }

    /// The configured ceiling.
    pub fn max_connections(&self) -> u32 {
        self.shared.config.max_connections
    }

    /// Whether every slot is taken right now (connections in use, being opened or
    /// cleaned up): an acquire would have to wait.
    pub fn is_full(&self) -> bool {
        self.shared.permits.available_permits() == 0
    }

    /// Takes every slot, as requests holding all the connections would (tests).
    #[cfg(test)]
    pub(crate) fn hold_every_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        let n = self.shared.config.max_connections;
        Arc::clone(&self.shared.permits)
            .try_acquire_many_owned(n)
            .expect("every slot free")
    }

    /// Refuses new acquires, waits until every connection in use has come back, and
    /// closes them all.
    pub async fn close(&self) {
        let s = &self.shared;
        s.closed.store(true, Ordering::Release);
        // Every permit back means no connection is in use or being cleaned up.
        let all = s.config.max_connections;
        if let Ok(permits) = s.permits.acquire_many(all).await {
            permits.forget();
        }
        s.permits.close();
        let idle = std::mem::take(&mut *s.lock_idle());
        for i in idle {
            s.size.fetch_sub(1, Ordering::AcqRel);
            let _ = i.conn.close().await;
        }
    }
}

impl Shared {
    fn lock_idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.ms_of(Instant::now())
    }

    fn ms_of(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a connection idle since `since`, last handed out at `handed_out`, must
    /// be pinged before use.
    fn needs_ping(&self, since: Instant, handed_out: Instant) -> bool {
        self.config.ping_every_acquire
            || since.elapsed() >= PING_AFTER_IDLE
            || self.ms_of(handed_out) < self.suspect_before_ms.load(Ordering::Acquire)
    }

    /// Something is wrong with the database: every connection idle right now gets
    /// pinged before its next use.
    fn suspect_idle(&self) {
        // + 1: millisecond resolution, and a connection idle since this very
        // millisecond may be as broken as the others.
        self.suspect_before_ms
            .fetch_max(self.now_ms().saturating_add(1), Ordering::AcqRel);
    }

    /// The most recently used idle connection, closing any that have expired.
    fn pop_idle(&self) -> Option<Idle> {
        let mut idle = self.lock_idle();
        self.expire(&mut idle);
        idle.pop()
    }

    /// Closes the oldest idle connections past `idle_timeout`, keeping `min_connections`.
    fn expire(&self, idle: &mut Vec<Idle>) {
        let min = self.config.min_connections as usize;
        let mut n = 0;
        while n < idle.len()
            && idle.len() - n > min
            && idle[n].since.elapsed() > self.config.idle_timeout
        {
            n += 1;
        }
        for i in idle.drain(..n) {
            self.retire(i.conn);
        }
    }

    /// Uncounts a healthy connection and closes it politely in the background.
    fn retire(&self, conn: MySqlConnection) {
        self.size.fetch_sub(1, Ordering::AcqRel);
        spawn_or_drop(async move {
            let _ = conn.close().await;
        });
    }

    fn release(&self, conn: MySqlConnection, handed_out: Instant) {
        if self.closed.load(Ordering::Acquire) {
            self.retire(conn);
            return;
        }
        let mut idle = self.lock_idle();
        idle.push(Idle {
            conn,
            since: Instant::now(),
            handed_out,
        });
        self.expire(&mut idle);
    }

    /// Closes a broken connection (no goodbye: the socket may be dead) and marks the
    /// idle ones for a ping.
    fn discard(&self, conn: MySqlConnection) {
        self.size.fetch_sub(1, Ordering::AcqRel);
        self.suspect_idle();
        drop(conn);
    }
}

/// Runs `f` on the current tokio runtime; without one (the pool dropped after its
/// runtime), just drops it.
fn spawn_or_drop(f: impl Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(f);
    }
}

/// A connection checked out of a [`Pool`]; goes back when dropped.
pub struct Conn {
    conn: Option<MySqlConnection>,
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    /// A transaction may be open: roll it back before reuse.
    rollback: bool,
    handed_out: Instant,
}

impl std::ops::Deref for Conn {
    type Target = MySqlConnection;
    fn deref(&self) -> &MySqlConnection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut MySqlConnection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        if tokio::runtime::Handle::try_current().is_err() {
            // Dropped after its runtime: nothing can run the clean-up.
            shared.discard(conn);
            return;
        }
        let rollback = self.rollback;
        let handed_out = self.handed_out;
        // Handed back by its handler, after its last statement completed: the stream
        // sits between packets. Otherwise a statement may have been cut off anywhere,
        // even between a packet's header and its body, and only a round trip that gets
        // the answer it expects shows the stream is still in step.
        let in_step = IN_HANDLER.get();
        let cleanup = async move {
            let finish = async {
                // Reads what is still due (the end of a result `fetch_optional` left);
                // no I/O at all when nothing is.
                conn.flush().await?;
                if rollback {
                    conn.execute("ROLLBACK").await?;
                } else if !in_step {
                    conn.ping().await?;
                }
                Ok::<_, sqlx::Error>(())
            };
            match tokio::time::timeout(CLEANUP_TIMEOUT, finish).await {
                Ok(Ok(())) => shared.release(conn, handed_out),
                Ok(Err(e)) => {
                    log::info!(target: "app_tier::pool", "returned connection is broken, closing it: {e}");
                    shared.discard(conn);
                }
                Err(_) => shared.discard(conn),
            }
            drop(permit);
        };
        // The usual case finishes in this first poll, without a task or a round trip.
        let mut cleanup = Box::pin(cleanup);
        let mut cx = Context::from_waker(Waker::noop());
        if cleanup.as_mut().poll(&mut cx).is_pending() {
            spawn_or_drop(cleanup);
        }
    }
}

thread_local! {
    /// Whether this thread is inside [`in_handler`]'s poll of a request handler.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Runs a request handler so that the connections it returns when done are trusted
/// to be in step with the server (see [`Conn`]'s drop). A connection dropped while the
/// handler future itself is being dropped (the request timeout, a client hang-up) is
/// dropped outside this poll, and gets checked with a ping before reuse.
pub fn in_handler<F: Future>(handler: F) -> InHandler<F> {
    InHandler {
        inner: Box::pin(handler),
    }
}

/// The future of [`in_handler`].
pub struct InHandler<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for InHandler<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let outer = IN_HANDLER.replace(true);
        let out = self.inner.as_mut().poll(cx);
        IN_HANDLER.set(outer);
        out
    }
}

/// A transaction on a pooled connection: `BEGIN` on creation, `COMMIT` by
/// [`Tx::commit`]; dropped without a commit (an error, a cancelled request), it is
/// rolled back before the connection is used again.
pub struct Tx {
    conn: Conn,
}

impl Tx {
    /// Starts a transaction on `conn`.
    pub async fn begin(mut conn: Conn) -> Result<Tx, sqlx::Error> {
        // Set first: if BEGIN is cut off half-way, the clean-up still rolls back.
        conn.rollback = true;
        conn.execute("BEGIN").await?;
        Ok(Tx { conn })
    }

    /// Commits; the connection goes back to the pool.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.conn.execute("COMMIT").await?;
        self.conn.rollback = false;
        Ok(())
    }

    /// Rolls back now (rather than when dropped); the connection goes back to the pool.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.conn.execute("ROLLBACK").await?;
        self.conn.rollback = false;
        Ok(())
    }
}

impl std::ops::Deref for Tx {
    type Target = MySqlConnection;
    fn deref(&self) -> &MySqlConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut MySqlConnection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool::new(
            MySqlConnectOptions::new().port(1),
            PoolConfig {
                max_connections: 2,
                min_connections: 0,
                acquire_timeout: Duration::from_millis(200),
                idle_timeout: Duration::from_secs(60),
                ping_every_acquire: false,
            },
        )
    }

    #[test]
    fn fresh_connections_are_trusted_and_old_or_suspect_ones_pinged() {
        let p = pool();
        let s = &p.shared;
        let now = Instant::now();
        assert!(!s.needs_ping(now, now));
        assert!(s.needs_ping(now - PING_AFTER_IDLE, now - PING_AFTER_IDLE));
        // In use or idle before the database was found in trouble: pinged, however
        // fresh, even if it came back to the pool after the trouble was seen.
        std::thread::sleep(Duration::from_millis(3));
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(3));
        s.suspect_idle();
        assert!(s.needs_ping(before, before));
        std::thread::sleep(Duration::from_millis(3));
        let after = Instant::now();
        assert!(
            s.needs_ping(after, before),
            "handed out before, returned after"
        );
        assert!(!s.needs_ping(after, after), "handed out after the trouble");
    }

    #[tokio::test]
    async fn a_refused_connect_fails_at_once_and_frees_its_slot() {
        let p = pool();
        for _ in 0..3 {
            let err = p.acquire().await.err().expect("nothing listens on port 1");
            assert!(
                matches!(err, AcquireError::Connect(sqlx::Error::Io(_))),
                "{err:?}"
            );
        }
        assert_eq!(p.size(), 0);
        assert_eq!(p.shared.permits.available_permits(), 2);
    }

    #[tokio::test]
    async fn a_closed_pool_refuses() {
        let p = pool();
        p.close().await;
        assert!(matches!(p.acquire().await, Err(AcquireError::Closed)));
    }

    #[tokio::test]
    async fn a_full_pool_is_busy_not_unreachable() {
        let p = pool();
        let held = p.hold_every_slot();
        let started = Instant::now();
        let err = p.acquire().await.err().expect("no slot is free");
        assert!(matches!(err, AcquireError::Busy { .. }), "{err:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "waited its timeout"
        );
        drop(held);
        // A slot free again: the refused connect is what it reports now.
        assert!(matches!(p.acquire().await, Err(AcquireError::Connect(_))));
    }
}
