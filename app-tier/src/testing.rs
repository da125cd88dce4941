//! Throwaway MariaDB servers for tests (feature `testing`).
//!
//! [`MariaDb::start`] creates a data directory with `mariadb-install-db` in a fresh
//! temporary directory, and runs `mariadbd` on it as `--user=root`, on a free port of
//! 127.0.0.1 and its own socket, with the binary log on (GTID replication needs it on
//! the primary, and any instance may become one). The system's own MariaDB service is
//! neither used nor needed. Dropping the value kills the server by PID and deletes the
//! directory; servers still alive when the test process exits (a `static` shared one,
//! a leaked one) are killed and deleted by an `atexit` hook.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use app_tier::testing::MariaDb;
//! let db = MariaDb::shared();                 // one server per test binary
//! let name = db.create_database().await?;     // one database per test
//! let url = db.url(&name);                    // mysql://app:...@127.0.0.1:PORT/NAME
//! # Ok(()) }
//! ```
//!
//! The lifecycle calls ([`MariaDb::start`], [`MariaDb::stop`], [`MariaDb::start_again`],
//! [`MariaDb::start_replica_of`]) block; from async code call them through
//! `tokio::task::spawn_blocking`. They run their own SQL on a private runtime, so they
//! work from any context. The SQL helpers ([`MariaDb::admin`],
//! [`MariaDb::create_database`]) are async and use the caller's runtime.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection};

/// The account the application connects as (all privileges, password auth over TCP).
pub const APP_USER: &str = "app";
/// Its password. Deliberately distinctive so tests can grep logs for leaks.
pub const APP_PASSWORD: &str = "app-Secret-7f3a";
/// The account replicas replicate as.
pub const REPL_USER: &str = "repl";
/// Its password.
pub const REPL_PASSWORD: &str = "repl-Secret-91c2";

/// How long a server may take to come up or shut down before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What went wrong starting or driving a test server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A MariaDB binary is missing.
    #[error(
        "{path} not found: install Debian's `mariadb-server` package (apt-get install mariadb-server), or set {env}"
    )]
    NotInstalled {
        /// Where it was looked for.
        path: PathBuf,
        /// The variable that overrides the path.
        env: &'static str,
    },
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `mariadb-install-db` failed.
    #[error("mariadb-install-db failed ({status}):\n{output}")]
    InstallDb {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },
    /// The server exited or did not become ready in time.
    #[error("mariadbd {what}; last lines of its error log:\n{log}")]
    Server {
        /// What happened.
        what: String,
        /// Tail of the server's error log.
        log: String,
    },
    /// A statement failed.
    #[error("SQL on the test server failed ({what}): {source}")]
    Sql {
        /// What it was for.
        what: String,
        /// The driver error.
        source: sqlx::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Sql { what, source }
}

fn binary(env: &'static str, default: &str) -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::NotInstalled { path, env })
    }
}

/// Processes and directories to remove when the test process exits.
static AT_EXIT: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();
static SERVER_IDS: AtomicU32 = AtomicU32::new(1);
static DATABASES: AtomicU32 = AtomicU32::new(1);

extern "C" fn cleanup_at_exit() {
    // Runs from libc `exit`, after the test harness is done: best effort, no panics.
    let entries = match AT_EXIT.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(_) => return,
    };
    for (pid, dir) in entries {
        kill_and_reap(pid);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn register(pid: u32, dir: &Path) {
    HOOK.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` that only touches a static mutex,
        // signals a child and removes files.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
    });
    if let Ok(mut g) = AT_EXIT.lock() {
        g.push((pid, dir.to_owned()));
    }
}

fn unregister(pid: u32) {
    if let Ok(mut g) = AT_EXIT.lock() {
        g.retain(|(p, _)| *p != pid);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a PID this process spawned and has not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn kill_and_reap(pid: u32) {
    signal(pid, libc::SIGKILL);
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        let mut status = 0;
        // SAFETY: waits for our own child; a PID already reaped just returns ECHILD.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
    }
}

/// Runs a future to completion on a private runtime in a scoped thread, so blocking
/// harness calls work both from plain tests and from inside a tokio runtime.
fn block_on<C, F>(make: C) -> F::Output
where
    C: FnOnce() -> F + Send,
    F: Future,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the harness runtime")
                .block_on(make())
        })
        .join()
        .expect("harness thread panicked")
    })
}

/// One MariaDB server with its own data directory, port and socket.
pub struct MariaDb {
    root: tempfile::TempDir,
    port: u16,
    server_id: u32,
    child: Mutex<Option<Child>>,
}

impl MariaDb {
    /// One server per test process, started on first use and killed at exit.
    /// Panics with the harness error (e.g. "install mariadb-server") if it cannot start.
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(|| {
            MariaDb::start().unwrap_or_else(|e| panic!("starting the shared test MariaDB: {e}"))
        })
    }

    /// Creates a data directory and starts a server on it.
    pub fn start() -> Result<MariaDb, HarnessError> {
        // Both binaries are checked up front so a missing package is reported clearly.
        binary("MARIADBD", "/usr/sbin/mariadbd")?;
        let install_db = binary("MARIADB_INSTALL_DB", "/usr/bin/mariadb-install-db")?;
        // Short prefix: the socket path must fit in sun_path (108 bytes).
        let root = tempfile::Builder::new()
            .prefix("mdb")
            .tempdir()
            .map_err(io("creating the temporary directory"))?;
        let out = Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", root.path().join("data").display()))
            .arg("--user=root")
            // root@localhost without a password over the socket: the harness bootstraps
            // through it; the application uses its own password-protected account.
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            // Passed on to the bootstrap server: its temporary tables in this directory,
            // not in the /tmp every other process shares.
            .arg(format!("--tmpdir={}", root.path().display()))
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("running {}", install_db.display())))?;
        if !out.status.success() {
            return Err(HarnessError::InstallDb {
                status: out.status,
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let port = free_port()?;
        let db = MariaDb {
            root,
            port,
            server_id: SERVER_IDS.fetch_add(1, Ordering::Relaxed),
            child: Mutex::new(None),
        };
        db.start_again()?;
        db.bootstrap()?;
        Ok(db)
    }

    /// Starts a fresh server replicating from `primary` with GTID (`MASTER_USE_GTID =
    /// slave_pos`, from the start of the primary's binary log), and waits until it has
    /// caught up.
    pub fn start_replica_of(primary: &MariaDb) -> Result<MariaDb, HarnessError> {
        let replica = MariaDb::start()?;
        let change = format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = '{REPL_USER}', \
             MASTER_PASSWORD = '{REPL_PASSWORD}', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
            primary.port
        );
        replica.exec_blocking("configuring replication", &[&change, "START SLAVE"])?;
        replica.sync_with(primary)?;
        Ok(replica)
    }

    /// Waits (bounded) until this replica has applied everything `primary` has logged.
    pub fn sync_with(&self, primary: &MariaDb) -> Result<(), HarnessError> {
        block_on(|| async {
            let mut p = primary
                .admin()
                .await
                .map_err(sql("connecting to the primary"))?;
            let pos: String = sqlx::query_scalar("SELECT @@GLOBAL.gtid_binlog_pos")
                .fetch_one(&mut p)
                .await
                .map_err(sql("reading the primary's GTID position"))?;
            let mut r = self
                .admin()
                .await
                .map_err(sql("connecting to the replica"))?;
            let waited: Option<i64> = sqlx::query_scalar("SELECT MASTER_GTID_WAIT(?, ?)")
                .bind(&pos)
                .bind(START_TIMEOUT.as_secs_f64())
                .fetch_one(&mut r)
                .await
                .map_err(sql("waiting for the replica"))?;
            if waited == Some(0) {
                return Ok(());
            }
            Err(HarnessError::Server {
                what: format!("replica did not reach GTID {pos} in {START_TIMEOUT:?}"),
                log: self.error_log_tail(),
            })
        })
    }

    /// Creates the application and replication accounts. `sql_log_bin = 0`: they are
    /// per server, and must not replicate (the replica creates its own, and replaying
    /// the primary's CREATE USER would stop replication with a duplicate).
    fn bootstrap(&self) -> Result<(), HarnessError> {
        let create_app = format!("CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'");
        let grant_app = format!("GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'%'");
        let create_repl = format!("CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}'");
        let grant_repl = format!("GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'");
        self.exec_blocking(
            "creating accounts",
            &[
                "SET SESSION sql_log_bin = 0",
                &create_app,
                &grant_app,
                &create_repl,
                &grant_repl,
            ],
        )
    }

    fn exec_blocking(&self, what: &str, statements: &[&str]) -> Result<(), HarnessError> {
        block_on(|| async {
            let mut c = self.admin().await.map_err(sql(what))?;
            for s in statements {
                sqlx::raw_sql(s)
                    .execute(&mut c)
                    .await
                    .map_err(sql(format!("{what}: {s}")))?;
            }
            Ok(())
        })
    }

    /// (Re)starts the server on the same data directory, port and socket, and waits
    /// (bounded) until it accepts connections. No-op if it is running.
    pub fn start_again(&self) -> Result<(), HarnessError> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = guard.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        let mariadbd = binary("MARIADBD", "/usr/sbin/mariadbd")?;
        let dir = self.root.path();
        let child = Command::new(&mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--user=root")
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--tmpdir={}", dir.display()))
            .arg("--skip-name-resolve")
            .arg(format!("--server-id={}", self.server_id))
            .arg(format!(
                "--log-bin={}",
                dir.join("data").join("mysql-bin").display()
            ))
            .arg("--binlog-format=ROW")
            .arg("--max-connections=500")
            // Small and fast: tests need neither a big buffer pool nor doublewrite
            // protection against torn pages on power loss. Durability of committed
            // transactions (innodb_flush_log_at_trx_commit = 1) stays at the default,
            // so a killed server keeps every acknowledged write.
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-log-file-size=16M")
            .arg("--skip-innodb-doublewrite")
            .arg("--innodb-flush-method=fsync")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("spawning {}", mariadbd.display())))?;
        register(child.id(), dir);
        *guard = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = guard.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                unregister(child.id());
                *guard = None;
                return Err(HarnessError::Server {
                    what: format!("exited during start-up ({status})"),
                    log: self.error_log_tail(),
                });
            }
            // The server creates its socket only once it is ready for connections.
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Server {
                    what: format!("not ready after {START_TIMEOUT:?}"),
                    log: self.error_log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clean shutdown (SIGTERM to the PID), waiting for the process to exit; SIGKILL if
    /// it has not within the start-up timeout. The data directory stays.
    pub fn stop(&self) -> Result<(), HarnessError> {
        self.halt(libc::SIGTERM)
    }

    /// Crash (SIGKILL to the PID): committed transactions must survive, as on a real crash.
    pub fn kill(&self) -> Result<(), HarnessError> {
        self.halt(libc::SIGKILL)
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub fn restart(&self) -> Result<(), HarnessError> {
        self.stop()?;
        self.start_again()
    }

    fn halt(&self, sig: libc::c_int) -> Result<(), HarnessError> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = guard.take() else {
            return Ok(());
        };
        let pid = child.id();
        signal(pid, sig);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() > deadline => {
                    signal(pid, libc::SIGKILL);
                    child.wait().map_err(io("reaping mariadbd"))?;
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(io("waiting for mariadbd")(e)),
            }
        }
        unregister(pid);
        // A SIGKILLed server leaves its socket file behind; remove it so that
        // `start_again` does not mistake it for the new server being ready.
        let _ = std::fs::remove_file(self.socket());
        Ok(())
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// The `server_id` (unique within this process; `SELECT @@server_id` tells servers apart).
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Unix socket path.
    pub fn socket(&self) -> PathBuf {
        self.root.path().join("mysql.sock")
    }

    /// The temporary directory holding `data/`, the socket and `error.log`.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// `mysql://app:...@127.0.0.1:PORT/DATABASE`, what the application is configured with.
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The URL of `database` for the application account over the server's Unix
    /// socket (sqlx's `socket` parameter; the host part is then ignored).
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "mysql://{APP_USER}:{APP_PASSWORD}@localhost/{database}?socket={}",
            self.socket().display()
        )
    }

    /// A root connection over the socket, on the caller's runtime.
    pub async fn admin(&self) -> Result<MySqlConnection, sqlx::Error> {
        MySqlConnectOptions::new()
            .socket(self.socket())
            .username("root")
            .disable_statement_logging()
            .connect()
            .await
    }

    /// Creates a new, empty database with a unique name (for one test) and returns the name.
    pub async fn create_database(&self) -> Result<String, HarnessError> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = self.admin().await.map_err(sql("connecting as root"))?;
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .execute(&mut c)
        .await
        .map_err(sql("creating a test database"))?;
        let _ = c.close().await;
        Ok(name)
    }

    /// The last lines of the server's error log (for failure messages).
    pub fn error_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(child) = child {
            kill_and_reap(child.id());
            unregister(child.id());
        }
        // `root` (TempDir) removes the directory after this.
    }
}

/// A port that was free a moment ago. The window between dropping the probe and the
/// server binding it is tiny, and a clash shows up as a clear start-up error.
fn free_port() -> Result<u16, HarnessError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("probing for a free port"))?;
    Ok(l.local_addr()
        .map_err(io("probing for a free port"))?
        .port())
}
