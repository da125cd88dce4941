//! [`Infra`]: the whole stack in network namespaces, up in one call and torn down on
//! drop (processes by PID, then namespaces through the harness [`Topology`], bpffs
//! pins, admin sockets, the temporary directory with MariaDB's data).
//!
//! Every process is one of the workspace's real binaries (`lb run`, `web-tier`,
//! `app-tier`) or `mariadbd`, started inside its node's namespace with `nsenter`,
//! logging to a file in the run's directory.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lb_tests::{BpfPins, NS_PREFIX, Ns, Proc, Topology, lbnet::TempDir};
use serde_json::Value;

use crate::{db::Db, firewall, http, netns, plan};

/// How long one start-up step may take before `up` gives up.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// What to build and where the binaries are.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Directory holding `lb`, `web-tier` and `app-tier`.
    pub bin_dir: PathBuf,
    /// Directory whose `static/` subdirectory the web tier serves at `/static/`
    /// (the app tier's crate directory).
    pub site_root: PathBuf,
    /// Short name in namespace names (letters and digits).
    pub tag: String,
    /// Health-check interval of the LBs.
    pub health_interval_ms: u64,
}

impl Opts {
    /// Binaries next to the running executable (`target/<profile>/lb-demo`).
    pub fn beside_current_exe(tag: &str) -> anyhow::Result<Opts> {
        let exe = std::env::current_exe().context("current_exe")?;
        let dir = exe.parent().context("executable without a directory")?;
        Ok(Self::with_bin_dir(dir, tag))
    }

    /// Binaries in `dir`.
    pub fn with_bin_dir(dir: &Path, tag: &str) -> Opts {
        Opts {
            bin_dir: dir.to_owned(),
            site_root: Path::new(env!("CARGO_MANIFEST_DIR")).join("../app-tier"),
            tag: tag.to_owned(),
            health_interval_ms: 250,
        }
    }

    fn bin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.bin_dir.join(name);
        if !p.is_file() {
            bail!(
                "{} not built: run `cargo build --workspace --bins` (`cargo xtask demo` builds in release)",
                p.display()
            );
        }
        Ok(p)
    }
}

/// Start-up progress for a display: `Begin` then `Done` for each step.
#[derive(Debug, Clone)]
pub enum Progress {
    Begin {
        step: usize,
        total: usize,
        what: String,
    },
    Done {
        step: usize,
        elapsed: Duration,
    },
}

const STEPS: usize = 10;

/// A long-running process of one node, restartable.
pub struct Service {
    pub name: String,
    pub ns: Ns,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub log: PathBuf,
    proc: Option<Proc>,
}

impl Service {
    fn new(name: &str, ns: &Ns, program: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Service {
            name: name.to_owned(),
            ns: ns.clone(),
            program,
            args,
            env: Vec::new(),
            log,
            proc: None,
        }
    }

    /// Starts the process (no-op while it runs).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = self.ns.cmd(self.program.to_str().context("utf-8 path")?);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Own process group: Ctrl-C in the demo's terminal must reach the demo
            // (which tears down in order), not every server at once.
            .process_group(0)
            .stdout(log.try_clone()?)
            .stderr(log);
        self.proc = Some(self.ns.spawn_cmd(&mut cmd)?);
        Ok(())
    }

    /// SIGKILL by PID (a crash), reaped.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(libc::SIGKILL);
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `limit`.
    pub fn terminate(&mut self, limit: Duration) {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGTERM);
            if p.wait_exit(limit).is_none() {
                p.stop(libc::SIGKILL);
            }
        }
    }

    pub fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::alive)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The last lines of the log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

/// One load-balancer node: `lb run` with the service and the `[failover]` section.
pub struct Lb {
    pub svc: Service,
    pub instance: String,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Lb {
    /// The controller's status document (`lb status --json`), straight from its admin
    /// socket with a bounded wait.
    pub fn status(&self) -> Option<Value> {
        admin_request(&self.socket, "status").ok()
    }

    /// VRRP state (`Master`, `Backup`, ...) while the controller answers.
    pub fn vrrp_state(&self) -> Option<String> {
        self.status()?
            .get("failover")?
            .get("state")?
            .as_str()
            .map(str::to_owned)
    }
}

/// One request on the controller's admin socket (`{"cmd": ...}` per line).
pub fn admin_request(socket: &Path, cmd: &str) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let v: Value = serde_json::from_str(&line).context("parsing the admin reply")?;
    if v["ok"] != true {
        bail!("admin request {cmd}: {}", v["error"]);
    }
    Ok(v["status"].clone())
}

/// A web node's health and traffic as the master LB sees it.
#[derive(Debug, Clone)]
pub struct BackendView {
    pub name: &'static str,
    pub address: Ipv4Addr,
    pub health: String,
    pub packets: u64,
    pub ring_slots: u64,
}

/// What the live view shows, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Per LB: running, VRRP state.
    pub lbs: Vec<(&'static str, bool, Option<String>)>,
    /// Index of the LB in MASTER, if exactly one.
    pub master: Option<usize>,
    /// Backends from the master's status (empty without a master).
    pub backends: Vec<BackendView>,
    /// Other processes: name, running.
    pub procs: Vec<(String, bool)>,
}

/// The whole stack. Dropping it tears everything down.
pub struct Infra {
    pub lbs: Vec<Lb>,
    pub webs: Vec<Service>,
    pub apps: Vec<Service>,
    pub db: Option<Db>,
    pub client: Ns,
    pub sw: Ns,
    pub lb_ns: Vec<Ns>,
    pub web_ns: Vec<Ns>,
    pub app_ns: Vec<Ns>,
    pub db_ns: Ns,
    /// The run's directory: configs, logs, MariaDB's data.
    pub dir: PathBuf,
    pub opts: Opts,
    // Dropped last, in this order: namespaces, pins, directory.
    topo: Topology,
    pins: BpfPins,
    _dir: TempDir,
}

impl Infra {
    /// Builds and starts everything, reporting each step to `progress`. On error,
    /// whatever was created is removed before returning.
    pub fn up(opts: &Opts, progress: &mut dyn FnMut(Progress)) -> anyhow::Result<Infra> {
        lb_tests::require_root();
        // Fail before creating anything if a binary is missing.
        for b in ["lb", "web-tier", "app-tier"] {
            opts.bin(b)?;
        }
        let mut step = 0;
        let mut run_step =
            |what: &str, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<()> {
                step += 1;
                progress(Progress::Begin {
                    step,
                    total: STEPS,
                    what: what.to_owned(),
                });
                let t = Instant::now();
                f().with_context(|| what.to_owned())?;
                progress(Progress::Done {
                    step,
                    elapsed: t.elapsed(),
                });
                Ok(())
            };

        let mut infra = None;
        run_step(
            "namespaces, bridges and links (front, back, data)",
            &mut || {
                infra = Some(Infra::topology(opts)?);
                Ok(())
            },
        )?;
        let mut infra = infra.context("topology")?;
        run_step(
            "xdp_pass on the LBs' switch ports (XDP_TX on veth)",
            &mut || infra.xdp_pass_on_switch(),
        )?;
        run_step("nftables access control in every node", &mut || {
            infra.firewall()
        })?;
        run_step("MariaDB in db (own data directory)", &mut || {
            infra.start_db()
        })?;
        run_step(
            "schema and sample data (states, cities, places, reviews)",
            &mut || infra.migrate_and_seed(),
        )?;
        run_step("app tier: app1, app2", &mut || {
            for i in 0..2 {
                infra.start_app(i)?;
            }
            Ok(())
        })?;
        run_step("web tier: web1, web2", &mut || {
            for i in 0..2 {
                infra.start_web(i)?;
            }
            Ok(())
        })?;
        run_step("lb1 (priority 150): XDP + VRRP -> MASTER", &mut || {
            infra.start_lb(0)?;
            infra.wait_vrrp(0, "Master", STEP_LIMIT)
        })?;
        run_step("lb2 (priority 100): XDP + VRRP -> BACKUP", &mut || {
            infra.start_lb(1)?;
            infra.wait_vrrp(1, "Backup", STEP_LIMIT)
        })?;
        run_step(
            "health checks green, first page through the VIP",
            &mut || {
                infra.wait_backends_up(0, STEP_LIMIT)?;
                infra.wait_vip_serves(STEP_LIMIT)
            },
        )?;
        Ok(infra)
    }

    fn topology(opts: &Opts) -> anyhow::Result<Infra> {
        let mut topo = Topology::new(&opts.tag)?;
        let pins = BpfPins::new(&opts.tag)?;
        let dir = TempDir::new(&opts.tag)?;
        let sw = topo.ns("sw")?;
        for br in ["brfront", "brback", "brdata"] {
            topo.bridge(&sw, br)?;
        }
        let cidr = |a: Ipv4Addr| format!("{a}/{}", plan::PREFIX_LEN);
        let client = topo.ns("client")?;
        topo.plug(&client, "eth0", &sw, "brfront", "fclient")?;
        client.addr("eth0", &cidr(plan::CLIENT))?;
        // The client's frames cross xdp_lb (XDP_TX): checksums must be on the wire.
        client.sw_checksums("eth0")?;

        let mut lb_ns = Vec::new();
        for (i, name) in plan::LB_NAMES.iter().enumerate() {
            let ns = topo.ns(name)?;
            topo.plug(&ns, "eth0", &sw, "brfront", &format!("f{name}"))?;
            ns.addr("eth0", &cidr(plan::LB_FRONT[i]))?;
            lb_ns.push(ns);
        }
        let mut web_ns = Vec::new();
        for (i, name) in plan::WEB_NAMES.iter().enumerate() {
            let ns = topo.ns(name)?;
            topo.plug(&ns, "eth0", &sw, "brfront", &format!("f{name}"))?;
            topo.plug(&ns, "eth1", &sw, "brback", &format!("b{name}"))?;
            ns.addr("eth0", &cidr(plan::WEB_FRONT[i]))?;
            ns.addr("eth1", &cidr(plan::WEB_BACK[i]))?;
            // DSR: the web node owns the VIP but never answers ARP for it.
            ns.addr("lo", &format!("{}/32", plan::VIP))?;
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
            web_ns.push(ns);
        }
        let mut app_ns = Vec::new();
        for (i, name) in plan::APP_NAMES.iter().enumerate() {
            let ns = topo.ns(name)?;
            topo.plug(&ns, "eth0", &sw, "brback", &format!("b{name}"))?;
            topo.plug(&ns, "eth1", &sw, "brdata", &format!("d{name}"))?;
            ns.addr("eth0", &cidr(plan::APP_BACK[i]))?;
            ns.addr("eth1", &cidr(plan::APP_DATA[i]))?;
            app_ns.push(ns);
        }
        let db_ns = topo.ns("db")?;
        topo.plug(&db_ns, "eth0", &sw, "brdata", "ddb")?;
        db_ns.addr("eth0", &cidr(plan::DB))?;

        Ok(Infra {
            lbs: Vec::new(),
            webs: Vec::new(),
            apps: Vec::new(),
            db: None,
            client,
            sw,
            lb_ns,
            web_ns,
            app_ns,
            db_ns,
            dir: dir.0.clone(),
            opts: opts.clone(),
            topo,
            pins,
            _dir: dir,
        })
    }

    fn xdp_pass_on_switch(&self) -> anyhow::Result<()> {
        let lb = self.opts.bin("lb")?;
        for name in plan::LB_NAMES {
            let port = format!("f{name}");
            let pin = self.pins.dir.join(format!("{port}_pass"));
            self.sw.run(&[
                lb.to_str().context("path")?,
                "xdp",
                "attach",
                "--prog",
                "xdp_pass",
                "--iface",
                &port,
                "--pin",
                pin.to_str().context("path")?,
            ])?;
        }
        Ok(())
    }

    fn apply_nft(&self, ns: &Ns, name: &str, rules: &str) -> anyhow::Result<()> {
        let path = self.dir.join(format!("{name}.nft"));
        std::fs::write(&path, rules)?;
        ns.run(&["nft", "-f", path.to_str().context("path")?])
            .with_context(|| {
                format!("loading nftables rules in {name} (is nftables installed?)")
            })?;
        Ok(())
    }

    fn firewall(&self) -> anyhow::Result<()> {
        self.apply_nft(&self.client, "client", &firewall::client())?;
        for (i, ns) in self.lb_ns.iter().enumerate() {
            self.apply_nft(ns, plan::LB_NAMES[i], &firewall::lb())?;
        }
        for (i, ns) in self.web_ns.iter().enumerate() {
            self.apply_nft(ns, plan::WEB_NAMES[i], &firewall::web(plan::WEB_FRONT[i]))?;
        }
        for (i, ns) in self.app_ns.iter().enumerate() {
            self.apply_nft(ns, plan::APP_NAMES[i], &firewall::app())?;
        }
        self.apply_nft(&self.db_ns, "db", &firewall::db())
    }

    fn start_db(&mut self) -> anyhow::Result<()> {
        let mut db = Db::init(&self.db_ns, &self.dir.join("db"), plan::DB)?;
        db.start()?;
        db.bootstrap()?;
        self.db = Some(db);
        Ok(())
    }

    fn db_url(&self) -> anyhow::Result<String> {
        Ok(self.db.as_ref().context("no database")?.url())
    }

    fn app_config(&self, i: usize) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{}.toml", plan::APP_NAMES[i]));
        std::fs::write(
            &path,
            format!(
                "listen = \"{}:{}\"\nrequest_timeout_ms = 10000\nmax_body_bytes = 65536\n\
                 shutdown_grace_ms = 2000\n\n[database]\nurl = \"{}\"\nmax_connections = 8\n\
                 min_connections = 0\nacquire_timeout_ms = 2000\nretry_interval_ms = 250\n",
                plan::APP_BACK[i],
                plan::APP_PORT,
                self.db_url()?
            ),
        )?;
        Ok(path)
    }

    fn migrate_and_seed(&self) -> anyhow::Result<()> {
        let app = self.opts.bin("app-tier")?;
        let cfg = self.app_config(0)?;
        for cmd in ["migrate", "seed"] {
            lb_tests::run(
                self.app_ns[0]
                    .cmd(app.to_str().context("path")?)
                    .args([cmd, "--config", cfg.to_str().context("path")?])
                    .env("RUST_LOG", "warn"),
            )
            .with_context(|| format!("app-tier {cmd}"))?;
        }
        Ok(())
    }

    /// Starts app node `i` (creating its service on first use) and waits until it
    /// answers `/healthz`.
    pub fn start_app(&mut self, i: usize) -> anyhow::Result<()> {
        if self.apps.len() <= i {
            let cfg = self.app_config(i)?;
            let mut s = Service::new(
                plan::APP_NAMES[i],
                &self.app_ns[i],
                self.opts.bin("app-tier")?,
                vec![
                    "serve".into(),
                    "--config".into(),
                    cfg.to_string_lossy().into_owned(),
                ],
                self.dir.join(format!("{}.log", plan::APP_NAMES[i])),
            );
            s.env.push(("RUST_LOG".into(), "warn".into()));
            self.apps.push(s);
        }
        self.apps[i].start()?;
        let addr = SocketAddr::from((plan::APP_BACK[i], plan::APP_PORT));
        self.wait_http(&self.app_ns[i].clone(), i, addr, "/healthz", Tier::App)
    }

    fn web_config(&self, i: usize) -> anyhow::Result<PathBuf> {
        let name = plan::WEB_NAMES[i];
        // The node's own small site: a landing page, the LBs' health-check target and
        // a file naming the node (tests tell the web nodes apart with it).
        let site = self.dir.join(format!("site-{name}"));
        std::fs::create_dir_all(&site)?;
        std::fs::write(
            site.join("index.html"),
            format!(
                "<!DOCTYPE html>\n<html><head><title>xdp-webstack demo</title></head><body>\n\
                 <h1>xdp-webstack demo</h1><p>Served by {name} through the VIP.</p>\n\
                 <p><a href=\"/hbnb\">HBNB places</a> | <a href=\"/api/v1/places\">API</a></p>\n\
                 </body></html>\n"
            ),
        )?;
        std::fs::write(site.join("healthz"), "ok\n")?;
        std::fs::write(site.join("node"), name)?;
        let static_root = self.opts.site_root.canonicalize().with_context(|| {
            format!(
                "{} (the app tier's static files)",
                self.opts.site_root.display()
            )
        })?;
        let path = self.dir.join(format!("{name}.toml"));
        let ups: Vec<String> = plan::APP_BACK
            .iter()
            .map(|a| format!("{{ addr = \"{a}:{}\" }}", plan::APP_PORT))
            .collect();
        std::fs::write(
            &path,
            format!(
                r#"[[listen]]
addr = "0.0.0.0:{port}"

[limits]
header_timeout = "60s"
drain_timeout = "2s"

[log]
access = "off"
error = "{err}"

[upstream.app]
balance = "round_robin"
keepalive = 16
connect_timeout = "1s"
read_timeout = "10s"
max_fails = 1
fail_timeout = "3s"
server = [ {ups} ]

[[server]]
default = true

[[server.location]]
prefix = "/"
root = "{site}"
index = ["index.html"]

[[server.location]]
prefix = "/static/"
root = "{static_root}"
cache_control = "public, max-age=60"

[[server.location]]
prefix = "/api/"
proxy = "app"

[[server.location]]
prefix = "/hbnb"
proxy = "app"
"#,
                port = plan::HTTP_PORT,
                err = self.dir.join(format!("{name}-error.log")).display(),
                ups = ups.join(", "),
                site = site.display(),
                static_root = static_root.display(),
            ),
        )?;
        Ok(path)
    }

    /// Starts web node `i` and waits until it answers `/healthz` on its front address.
    pub fn start_web(&mut self, i: usize) -> anyhow::Result<()> {
        if self.webs.len() <= i {
            let cfg = self.web_config(i)?;
            let mut s = Service::new(
                plan::WEB_NAMES[i],
                &self.web_ns[i],
                self.opts.bin("web-tier")?,
                vec!["--config".into(), cfg.to_string_lossy().into_owned()],
                self.dir.join(format!("{}.log", plan::WEB_NAMES[i])),
            );
            s.env.push(("RUST_LOG".into(), "warn".into()));
            self.webs.push(s);
        }
        self.webs[i].start()?;
        let addr = SocketAddr::from((plan::WEB_FRONT[i], plan::HTTP_PORT));
        self.wait_http(&self.web_ns[i].clone(), i, addr, "/healthz", Tier::Web)
    }

    fn lb_config(&self, i: usize, instance: &str) -> anyhow::Result<PathBuf> {
        let name = plan::LB_NAMES[i];
        let mut backends = Vec::new();
        for (w, ns) in self.web_ns.iter().enumerate() {
            backends.push(format!(
                "{{ address = \"{}\", mac = \"{}\" }}",
                plan::WEB_FRONT[w],
                ns.mac("eth0")?
            ));
        }
        let path = self.dir.join(format!("{name}.toml"));
        let iv = self.opts.health_interval_ms;
        std::fs::write(
            &path,
            format!(
                r#"instance = "{instance}"
interface = "eth0"
xdp_mode = "drv"
# Identical on both LBs: the same flow hashes to the same web node on either.
hash_seed = 7
metrics = "127.0.0.1:9100"

[[services]]
name = "web"
vip = "{vip}"
proto = "tcp"
port = {port}
mode = "l2"
ring_size = 4099
health = {{ kind = "http", path = "/healthz", interval_ms = {iv}, timeout_ms = {iv}, rise = 2, fall = 2 }}
backends = [ {backends} ]

[failover]
interface = "eth0"
vrid = {vrid}
priority = {prio}
advert_interval_ms = 100
vips = ["{vip}"]
"#,
                vip = plan::VIP,
                port = plan::HTTP_PORT,
                backends = backends.join(", "),
                vrid = plan::VRID,
                prio = plan::LB_PRIORITY[i],
            ),
        )?;
        Ok(path)
    }

    /// Starts LB `i` (`lb run`); waits until its admin socket answers. A node that was
    /// killed gets its link back up and its stale VIP removed first (what a rebooted
    /// machine would look like); its pinned program is adopted by the new controller.
    pub fn start_lb(&mut self, i: usize) -> anyhow::Result<()> {
        if self.lbs.len() <= i {
            let instance = format!(
                "{NS_PREFIX}-{}-{}-{}",
                std::process::id(),
                lb_tests::next_seq(),
                plan::LB_NAMES[i]
            );
            let config = self.lb_config(i, &instance)?;
            let mut svc = Service::new(
                plan::LB_NAMES[i],
                &self.lb_ns[i],
                self.opts.bin("lb")?,
                vec![
                    "run".into(),
                    "--config".into(),
                    config.to_string_lossy().into_owned(),
                ],
                self.dir.join(format!("{}.log", plan::LB_NAMES[i])),
            );
            svc.env.push(("RUST_LOG".into(), "info".into()));
            self.lbs.push(Lb {
                svc,
                socket: PathBuf::from(format!("/run/lb/{instance}.sock")),
                instance,
                config,
            });
        }
        if self.lbs[i].svc.running() {
            return Ok(());
        }
        let ns = self.lb_ns[i].clone();
        ns.up("eth0")?;
        let _ = ns.output(&[
            "ip",
            "addr",
            "del",
            &format!("{}/32", plan::VIP),
            "dev",
            "eth0",
        ]);
        let lb = &mut self.lbs[i];
        let _ = std::fs::remove_file(&lb.socket);
        lb.svc.start()?;
        let start = Instant::now();
        loop {
            if !lb.svc.running() {
                bail!(
                    "lb run on {} exited; its log:\n{}",
                    lb.svc.name,
                    lb.svc.log_tail()
                );
            }
            if lb.status().is_some() {
                return Ok(());
            }
            if start.elapsed() > STEP_LIMIT {
                bail!(
                    "{}'s admin socket did not answer within {STEP_LIMIT:?}; log:\n{}",
                    lb.svc.name,
                    lb.svc.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills LB `i` like a machine dying: SIGKILL to the controller and its link down
    /// (so the stale VIP it still holds cannot answer ARP).
    pub fn kill_lb(&mut self, i: usize) {
        if let Some(lb) = self.lbs.get_mut(i) {
            lb.svc.kill();
        }
        let _ = self.lb_ns[i].run(&["ip", "link", "set", "eth0", "down"]);
    }

    pub fn kill_web(&mut self, i: usize) {
        if let Some(s) = self.webs.get_mut(i) {
            s.kill();
        }
    }

    pub fn kill_app(&mut self, i: usize) {
        if let Some(s) = self.apps.get_mut(i) {
            s.kill();
        }
    }

    /// Crashes the database (SIGKILL); [`Infra::start_db_again`] brings it back.
    pub fn kill_db(&mut self) {
        if let Some(db) = &mut self.db {
            db.kill();
        }
    }

    pub fn start_db_again(&mut self) -> anyhow::Result<()> {
        self.db.as_mut().context("no database")?.start()
    }

    /// Kill and start again (same data directory).
    pub fn restart_db(&mut self) -> anyhow::Result<()> {
        self.kill_db();
        self.start_db_again()
    }

    /// The LB in MASTER (the first one if, briefly, both claim it).
    pub fn master(&self) -> Option<usize> {
        (0..self.lbs.len()).find(|&i| self.lbs[i].vrrp_state().as_deref() == Some("Master"))
    }

    /// Waits until LB `i` reports VRRP `state`.
    pub fn wait_vrrp(&self, i: usize, state: &str, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let now = self.lbs[i].vrrp_state();
            if now.as_deref() == Some(state) {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "{} is {now:?}, not {state}, after {limit:?}; log:\n{}",
                    plan::LB_NAMES[i],
                    self.lbs[i].svc.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Health of each web node as LB `i` sees it.
    pub fn backends(&self, i: usize) -> Vec<BackendView> {
        let Some(st) = self.lbs.get(i).and_then(Lb::status) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for b in st["services"][0]["backends"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let addr: Option<Ipv4Addr> = b["address"].as_str().and_then(|a| a.parse().ok());
            let Some(w) = addr.and_then(|a| plan::WEB_FRONT.iter().position(|x| *x == a)) else {
                continue;
            };
            out.push(BackendView {
                name: plan::WEB_NAMES[w],
                address: plan::WEB_FRONT[w],
                health: b["health"].as_str().unwrap_or("?").to_owned(),
                packets: b["packets"].as_u64().unwrap_or(0),
                ring_slots: b["ring_slots"].as_u64().unwrap_or(0),
            });
        }
        out
    }

    /// Waits until LB `i` sees every web node up.
    pub fn wait_backends_up(&self, i: usize, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let b = self.backends(i);
            if b.len() == 2 && b.iter().all(|b| b.health == "up") {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "web nodes not healthy on {} after {limit:?}: {b:?}",
                    plan::LB_NAMES[i]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until LB `i` sees web node `w` with `health` ("up" or "down").
    pub fn wait_backend(
        &self,
        i: usize,
        w: usize,
        health: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let b = self.backends(i);
            if b.iter()
                .any(|b| b.name == plan::WEB_NAMES[w] && b.health == health)
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "{} not {health} on {} after {limit:?}: {b:?}",
                    plan::WEB_NAMES[w],
                    plan::LB_NAMES[i]
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `/hbnb` through the VIP answers 200 from the client.
    pub fn wait_vip_serves(&self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let r = netns::run_in(&self.client, || {
                http::get(plan::vip_http(), "/hbnb", Duration::from_secs(2))
            })?;
            match r {
                Ok(resp) if resp.status == 200 => return Ok(()),
                other => {
                    if start.elapsed() > limit {
                        bail!("the VIP does not serve /hbnb after {limit:?}: last {other:?}");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `addr` + `path` from inside the node's own namespace (its firewall admits
    /// loopback) until it answers 200, while the process is alive.
    fn wait_http(
        &mut self,
        ns: &Ns,
        i: usize,
        addr: SocketAddr,
        path: &'static str,
        tier: Tier,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let svc = match tier {
                Tier::App => &mut self.apps[i],
                Tier::Web => &mut self.webs[i],
            };
            if !svc.running() {
                bail!(
                    "{} exited during start-up; its log:\n{}",
                    svc.name,
                    svc.log_tail()
                );
            }
            let r = netns::run_in(ns, move || http::get(addr, path, Duration::from_secs(1)))?;
            if r.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if start.elapsed() > STEP_LIMIT {
                bail!(
                    "{} did not answer {path} within {STEP_LIMIT:?}; its log:\n{}",
                    svc.name,
                    svc.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts whatever is down (LBs, web and app nodes, the database); returns what it
    /// restarted.
    pub fn restart_down(&mut self) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        if self.db.as_mut().is_some_and(|d| !d.running()) {
            self.start_db_again()?;
            done.push("db".to_owned());
        }
        for i in 0..self.apps.len() {
            if !self.apps[i].running() {
                self.start_app(i)?;
                done.push(plan::APP_NAMES[i].to_owned());
            }
        }
        for i in 0..self.webs.len() {
            if !self.webs[i].running() {
                self.start_web(i)?;
                done.push(plan::WEB_NAMES[i].to_owned());
            }
        }
        for i in 0..self.lbs.len() {
            if !self.lbs[i].svc.running() {
                self.start_lb(i)?;
                done.push(plan::LB_NAMES[i].to_owned());
            }
        }
        Ok(done)
    }

    /// The state of everything, for the live view.
    pub fn snapshot(&mut self) -> Snapshot {
        let mut lbs = Vec::new();
        let mut masters = Vec::new();
        for (i, lb) in self.lbs.iter_mut().enumerate() {
            let running = lb.svc.running();
            let state = if running { lb.vrrp_state() } else { None };
            if state.as_deref() == Some("Master") {
                masters.push(i);
            }
            lbs.push((plan::LB_NAMES[i], running, state));
        }
        let master = masters.first().copied();
        let backends = master.map(|m| self.backends(m)).unwrap_or_default();
        let mut procs = Vec::new();
        for s in self.webs.iter_mut().chain(self.apps.iter_mut()) {
            procs.push((s.name.clone(), s.running()));
        }
        if let Some(db) = &mut self.db {
            procs.push(("db".to_owned(), db.running()));
        }
        Snapshot {
            lbs,
            master,
            backends,
            procs,
        }
    }

    /// Names of the namespaces (for the state file of a run).
    pub fn namespaces(&self) -> Vec<String> {
        self.topo
            .namespaces()
            .iter()
            .map(|n| n.name().to_owned())
            .collect()
    }

    /// PIDs of every process started, with their program names.
    pub fn pids(&self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for s in self
            .lbs
            .iter()
            .map(|l| &l.svc)
            .chain(self.webs.iter())
            .chain(self.apps.iter())
        {
            if let Some(p) = s.pid() {
                out.push((p, s.program.to_string_lossy().into_owned()));
            }
        }
        if let Some(p) = self.db.as_ref().and_then(Db::pid) {
            out.push((p, "mariadbd".to_owned()));
        }
        out
    }

    /// bpffs paths this run pinned (its own directory and each controller's).
    pub fn pin_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.pins.dir.clone()];
        for lb in &self.lbs {
            v.push(PathBuf::from(format!("/sys/fs/bpf/lb-{}", lb.instance)));
        }
        v
    }

    /// Admin sockets of the controllers.
    pub fn sockets(&self) -> Vec<PathBuf> {
        self.lbs.iter().map(|l| l.socket.clone()).collect()
    }
}

#[derive(Clone, Copy)]
enum Tier {
    App,
    Web,
}

impl Drop for Infra {
    fn drop(&mut self) {
        // Controllers first, cleanly: VRRP sends priority 0 and the XDP program is
        // detached and unpinned. A killed one left its pins: remove them below.
        for lb in &mut self.lbs {
            lb.svc.terminate(Duration::from_secs(5));
        }
        for s in self.webs.iter_mut().chain(self.apps.iter_mut()) {
            s.kill();
        }
        if let Some(mut db) = self.db.take() {
            db.kill();
        }
        for p in self.pin_paths() {
            let _ = std::fs::remove_dir_all(p);
        }
        for s in self.sockets() {
            let _ = std::fs::remove_file(s);
        }
        // Then the fields drop: namespaces (the topology), pins, the directory.
    }
}
