//! Pieces the namespace scenarios share: the real `lb run` controller on a node, a
//! temporary directory, waiting for a TCP port.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lb_tests::{Ns, Proc, in_netns};

/// A running `lb run` controller; stopped (SIGTERM, then SIGKILL) and its pins removed
/// on drop.
pub struct Controller {
    proc: Option<Proc>,
    instance: String,
}

/// A controller instance name the harness's leftover cleanup recognises
/// (`lbt-<pid>-...`: pins of a dead run are removed by the next run).
pub fn instance_name() -> String {
    format!("lbt-{}-{}", std::process::id(), lb_tests::next_seq())
}

impl Controller {
    /// Writes `config` and starts `lb run` in `ns`; returns once `lb status` answers.
    pub fn start(
        ns: &Ns,
        lb: &Path,
        dir: &Path,
        instance: &str,
        config: &str,
    ) -> anyhow::Result<Self> {
        let path = dir.join(format!("{instance}.toml"));
        std::fs::write(&path, config).context("writing the controller config")?;
        let mut cmd = ns.cmd(lb.to_str().context("path")?);
        // The attach mode comes from the config (driver mode unless it says "skb").
        cmd.args(["run", "--config", path.to_str().context("path")?])
            .env("RUST_LOG", "error");
        let proc = ns.spawn_cmd(&mut cmd)?;
        let mut c = Self {
            proc: Some(proc),
            instance: instance.to_owned(),
        };
        let socket = c.socket();
        let start = Instant::now();
        loop {
            let ok = ns
                .output(&[
                    lb.to_str().context("path")?,
                    "status",
                    "--json",
                    "--socket",
                    socket.to_str().context("path")?,
                ])
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(c);
            }
            if !c.proc.as_mut().is_some_and(Proc::alive) {
                bail!("lb run exited early (config:\n{config})");
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("lb run did not answer on {} within 30 s", socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/lb/{}.sock", self.instance))
    }

    /// `lb status --json` of this controller.
    pub fn status(&self, ns: &Ns, lb: &Path) -> anyhow::Result<serde_json::Value> {
        let out = ns.run(&[
            lb.to_str().context("path")?,
            "status",
            "--json",
            "--socket",
            self.socket().to_str().context("path")?,
        ])?;
        serde_json::from_str(&out).context("parsing lb status --json")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // A clean stop detaches and unpins; SIGKILL if it hangs.
            p.terminate(Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/lb-{}", self.instance));
        let _ = std::fs::remove_file(self.socket());
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!(
            "lbt-{}-{}-{tag}",
            std::process::id(),
            lb_tests::next_seq()
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until a TCP connect from `ns` to `addr` succeeds.
pub fn wait_port(ns: &Ns, addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let ok = in_netns(ns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })?;
        if ok {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "nothing listens on {addr} (namespace {}) after {limit:?}",
                ns.name()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `lb xdp attach --prog <prog> --iface <iface> --pin <pin>` inside `ns`.
pub fn attach_helper(
    ns: &Ns,
    lb: &Path,
    prog: &str,
    iface: &str,
    pin: &Path,
) -> anyhow::Result<()> {
    ns.run(&[
        lb.to_str().context("path")?,
        "xdp",
        "attach",
        "--prog",
        prog,
        "--iface",
        iface,
        "--pin",
        pin.to_str().context("path")?,
    ])
    .map(drop)
}
