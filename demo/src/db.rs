//! MariaDB in the `db` namespace: its own data directory (made with
//! `mariadb-install-db`), bound to the data-segment address only, with the demo's
//! database and application account. Killed by PID; the directory goes with the
//! demo's temporary directory.
//!
//! Why not `app_tier::testing::MariaDb`: that harness binds 127.0.0.1 on a random port
//! of the calling process's namespace, and would pull sqlx into this crate; here the
//! server must start inside another namespace on a fixed address, and the `mariadb`
//! client over the Unix socket (a file, reachable from any namespace) is enough to
//! bootstrap it.

use std::{
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lb_tests::{Ns, Proc};

/// The database the app tier uses.
pub const DATABASE: &str = "hbnb";
/// The application's account (password auth over TCP from the app nodes).
pub const USER: &str = "hbnb";
pub const PASSWORD: &str = "hbnb-demo-pw";
pub const PORT: u16 = 3306;
/// Start-up and shutdown bound (install-db and InnoDB recovery on a busy machine).
const LIMIT: Duration = Duration::from_secs(90);

fn binary(env: &str, default: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !p.is_file() {
        bail!(
            "{} not found: install Debian's mariadb-server package (`cargo xtask setup`), or set {env}",
            p.display()
        );
    }
    Ok(p)
}

/// The server in its namespace.
pub struct Db {
    ns: Ns,
    dir: PathBuf,
    addr: Ipv4Addr,
    proc: Option<Proc>,
}

impl Db {
    /// Creates the data directory under `dir` (which the caller removes).
    pub fn init(ns: &Ns, dir: &Path, addr: Ipv4Addr) -> anyhow::Result<Db> {
        let install = binary("MARIADB_INSTALL_DB", "/usr/bin/mariadb-install-db")?;
        binary("MARIADBD", "/usr/sbin/mariadbd")?;
        std::fs::create_dir_all(dir).context("creating the database directory")?;
        let out = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            // Passed on to the bootstrap server: its temporary tables here, not in /tmp.
            .arg(format!("--tmpdir={}", dir.display()))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", install.display()))?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Db {
            ns: ns.clone(),
            dir: dir.to_owned(),
            addr,
            proc: None,
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysql.sock")
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// `mysql://user:password@addr:3306/hbnb`, what the app tier connects with.
    pub fn url(&self) -> String {
        format!("mysql://{USER}:{PASSWORD}@{}:{PORT}/{DATABASE}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    pub fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::alive)
    }

    /// Starts `mariadbd` in the namespace and waits (bounded) until it accepts
    /// connections on its socket. No-op while it runs.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        let mariadbd = binary("MARIADBD", "/usr/sbin/mariadbd")?;
        let d = &self.dir;
        // A socket file left by a killed server would look ready.
        let _ = std::fs::remove_file(self.socket());
        let mut cmd = self.ns.cmd(mariadbd.to_str().context("utf-8 path")?);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={PORT}"))
            .arg(format!("--bind-address={}", self.addr))
            .arg("--user=root")
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", self.error_log().display()))
            .arg(format!("--tmpdir={}", d.display()))
            .arg("--skip-name-resolve")
            .arg("--max-connections=500")
            // Small and quick to start; committed transactions stay durable
            // (innodb_flush_log_at_trx_commit = 1 is the default), so a killed server
            // keeps every acknowledged write.
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-log-file-size=16M")
            .arg("--skip-innodb-doublewrite")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut p = self.ns.spawn_cmd(&mut cmd)?;
        let start = Instant::now();
        loop {
            if !p.alive() {
                bail!(
                    "mariadbd exited during start-up; last lines of {}:\n{}",
                    self.error_log().display(),
                    self.log_tail()
                );
            }
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                break;
            }
            if start.elapsed() > LIMIT {
                bail!(
                    "mariadbd not ready after {LIMIT:?}; last lines of its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(p);
        Ok(())
    }

    /// Creates the database and the application's account (first start only).
    pub fn bootstrap(&self) -> anyhow::Result<()> {
        let sql = format!(
            "CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\
             CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';\
             GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'%';"
        );
        lb_tests::run(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-u", "root", "-e", &sql]),
        )
        .context("creating the database and its account (is mariadb-client installed?)")?;
        Ok(())
    }

    /// Crash: SIGKILL by PID and reap.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(libc::SIGKILL);
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Clean shutdown (SIGTERM), bounded; SIGKILL after the bound.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGTERM);
            if p.wait_exit(LIMIT).is_none() {
                p.stop(libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(self.socket());
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.error_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.kill();
    }
}
