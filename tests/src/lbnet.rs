//! A ready load-balancer topology: one L2 segment (a bridge in its own namespace) with a
//! client, a load-balancer node and N backends, plus real TCP servers on the backends
//! and the real `lb` controller on the LB node.
//!
//! ```text
//!   client ──┐
//!   lb ──────┤ br0 (namespace "sw")
//!   b1..bN ──┘
//! ```
//! The client routes the VIP via the LB's address; the LB's `xdp_lb` steers to a
//! backend (MAC rewrite, or IP-in-IP with `xdp_decap` on the backends); backends own
//! the VIP on `lo` and answer the client directly (DSR).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;

use crate::{BpfPins, Ns, Proc, Topology, bin_path, in_netns, wait_for};

/// Shape of the topology.
#[derive(Clone, Debug)]
pub struct Opts {
    pub v6: bool,
    pub backends: usize,
    /// "l2" or "encap".
    pub mode: &'static str,
    /// Maglev ring size.
    pub ring_size: u32,
    /// Extra TOML appended to the service section (health settings, ...).
    pub service_extra: String,
    /// A second LB node with VRRP between the two: the VIP is owned by the master
    /// (the client ARPs for it) instead of routed via the single LB.
    pub failover: bool,
    /// The controller's `xdp_mode`: "drv" (native) or "skb" (generic).
    pub xdp_mode: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            v6: false,
            backends: 3,
            mode: "l2",
            ring_size: 65537,
            service_extra: "health = { kind = \"tcp\", interval_ms = 100, timeout_ms = 80, rise = 2, fall = 2 }".into(),
            failover: false,
            xdp_mode: "drv",
        }
    }
}

/// Port of the "name" service on each backend: answers every connection with its
/// backend name, 16 KiB of it, then closes.
pub const NAME_PORT: u16 = 80;
/// Port of the echo service: echoes each line prefixed by the backend name, keeping
/// the connection open.
pub const ECHO_PORT: u16 = 7;
/// Port of a minimal HTTP/1.1 keep-alive responder: every request on a connection is
/// answered `200` with the backend name as the body.
pub const HTTP_PORT: u16 = 8080;

/// The second LB node of a failover topology.
pub struct Standby {
    pub ns: Ns,
    pub addr: IpAddr,
    pub instance: String,
    pub config: PathBuf,
    pub controller: Option<Proc>,
}

pub struct LbNet {
    pub topo: Topology,
    pub pins: BpfPins,
    pub client: Ns,
    pub lb: Ns,
    pub sw: Ns,
    pub backends: Vec<Ns>,
    pub vip: IpAddr,
    pub client_addr: IpAddr,
    pub lb_addr: IpAddr,
    pub backend_addrs: Vec<IpAddr>,
    pub backend_macs: Vec<String>,
    pub opts: Opts,
    pub instance: String,
    pub config: PathBuf,
    pub controller: Option<Proc>,
    /// lb2, with `Opts::failover`.
    pub standby: Option<Standby>,
    servers: Vec<Server>,
    _dir: TempDir,
}

/// A server thread pair (name + echo) on one backend; stops when dropped.
struct Server {
    stop: Arc<AtomicBool>,
    name_addr: SocketAddr,
    echo_addr: SocketAddr,
    http_addr: SocketAddr,
    ns: Ns,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loops (through loopback: they listen on every address).
        let ns = self.ns.clone();
        let lo = |a: SocketAddr| {
            let ip: IpAddr = if a.is_ipv6() {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            };
            SocketAddr::new(ip, a.port())
        };
        let addrs = [lo(self.name_addr), lo(self.echo_addr), lo(self.http_addr)];
        let _ = in_netns(&ns, move || {
            for a in addrs {
                let _ = TcpStream::connect_timeout(&a, Duration::from_millis(200));
            }
        });
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!(
            "lbt-{}-{tag}-{}",
            std::process::id(),
            crate::next_seq()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Name,
    Echo,
    Http,
}

/// Answers HTTP/1.1 requests (no bodies) on one connection until the client closes it.
fn http_keepalive(c: &mut TcpStream, name: &str) {
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    loop {
        // The request head ends with an empty line.
        let mut seen = 0;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim_end().is_empty() && seen > 0 => break,
                Ok(_) => seen += 1,
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{name}",
            name.len()
        );
        if c.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn serve(
    ns: &Ns,
    name: String,
    addr: SocketAddr,
    kind: Kind,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let l = in_netns(ns, move || TcpListener::bind(addr))??;
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut c) = conn else { continue };
            let name = name.clone();
            std::thread::spawn(move || {
                if kind == Kind::Http {
                    http_keepalive(&mut c, &name);
                } else if kind == Kind::Echo {
                    let mut r = BufReader::new(c.try_clone().expect("clone"));
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if c.write_all(format!("{name}:{line}").as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                } else {
                    let chunk = format!("{name};").repeat(1024);
                    for _ in 0..4 {
                        if c.write_all(chunk.as_bytes()).is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

impl LbNet {
    /// Builds the topology and starts the backend servers (not the controller).
    pub fn new(tag: &str, opts: Opts) -> anyhow::Result<Self> {
        let mut topo = Topology::new(tag)?;
        let pins = BpfPins::new(tag)?;
        let sw = topo.ns("sw")?;
        topo.bridge(&sw, "br0")?;
        let client = topo.ns("client")?;
        let lb = topo.ns("lb")?;
        let mut backends = Vec::new();
        for i in 0..opts.backends {
            backends.push(topo.ns(&format!("b{}", i + 1))?);
        }
        let (prefix, plen) = if opts.v6 {
            ("fd00:77::", 64)
        } else {
            ("10.77.0.", 24)
        };
        let addr = |host: u32| -> IpAddr {
            if opts.v6 {
                format!("{prefix}{host:x}").parse().expect("v6")
            } else {
                format!("{prefix}{host}").parse().expect("v4")
            }
        };
        let vip = addr(100);
        let client_addr = addr(1);
        let lb_addr = addr(2);
        for (ns, port, a) in [(&client, "pc", client_addr), (&lb, "plb", lb_addr)] {
            topo.plug(ns, "eth0", &sw, "br0", port)?;
            ns.addr("eth0", &format!("{a}/{plen}"))?;
        }
        // The client's frames cross xdp_lb: their checksums must be on the wire.
        client.sw_checksums("eth0")?;
        let standby_ns = if opts.failover {
            let lb2 = topo.ns("lb2")?;
            topo.plug(&lb2, "eth0", &sw, "br0", "plb2")?;
            lb2.addr("eth0", &format!("{}/{plen}", addr(3)))?;
            Some(lb2)
        } else {
            None
        };
        let mut backend_addrs = Vec::new();
        let mut backend_macs = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            topo.plug(b, "eth0", &sw, "br0", &format!("pb{}", i + 1))?;
            let a = addr(11 + i as u32);
            b.addr("eth0", &format!("{a}/{plen}"))?;
            // DSR: the backend owns the VIP locally but must not answer ARP/ND for it.
            b.addr("lo", &format!("{vip}/{}", if opts.v6 { 128 } else { 32 }))?;
            b.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            b.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            b.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            b.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
            backend_addrs.push(a);
            backend_macs.push(b.mac("eth0")?);
        }
        // The client reaches the VIP through the LB; with failover, through whichever
        // LB owns it (VRRP adds it there and announces it by gratuitous ARP).
        if !opts.failover {
            client.route(&[
                &format!("{vip}/{}", if opts.v6 { 128 } else { 32 }),
                "via",
                &lb_addr.to_string(),
            ])?;
        }
        // XDP_TX on a veth only delivers when the peer end runs XDP too (generic XDP
        // transmits through the stack and needs no help).
        let ports: &[&str] = match (opts.xdp_mode, opts.failover) {
            ("skb", _) => &[],
            (_, true) => &["plb", "plb2"],
            (_, false) => &["plb"],
        };
        for port in ports {
            let pin = pins.dir.join(format!("{port}_pass"));
            sw.run(&[
                bin_path("lb").to_str().context("path")?,
                "xdp",
                "attach",
                "--prog",
                "xdp_pass",
                "--iface",
                port,
                "--pin",
                pin.to_str().context("path")?,
            ])?;
        }
        if opts.mode == "encap" {
            for (i, b) in backends.iter().enumerate() {
                let pin = pins.dir.join(format!("decap{i}"));
                b.run(&[
                    bin_path("lb").to_str().context("path")?,
                    "xdp",
                    "attach",
                    "--prog",
                    "xdp_decap",
                    "--iface",
                    "eth0",
                    "--pin",
                    pin.to_str().context("path")?,
                ])?;
            }
        }
        // Neighbours resolved before traffic starts (no ARP/ND races in the counts).
        for a in &backend_addrs {
            lb.output(&["ping", "-c", "1", "-W", "1", &a.to_string()])?;
        }
        client.output(&["ping", "-c", "1", "-W", "1", &lb_addr.to_string()])?;
        if let Some(lb2) = &standby_ns {
            for a in &backend_addrs {
                lb2.output(&["ping", "-c", "1", "-W", "1", &a.to_string()])?;
            }
        }
        let dir = TempDir::new(tag)?;
        let instance = format!("lbt-{}-{}", std::process::id(), crate::next_seq());
        let config = dir.0.join("lb.toml");
        let standby = standby_ns.map(|ns| Standby {
            ns,
            addr: addr(3),
            instance: format!("lbt-{}-{}", std::process::id(), crate::next_seq()),
            config: dir.0.join("lb2.toml"),
            controller: None,
        });
        let mut net = Self {
            topo,
            pins,
            client,
            lb,
            sw,
            backends,
            vip,
            client_addr,
            lb_addr,
            backend_addrs,
            backend_macs,
            opts,
            instance,
            config,
            controller: None,
            standby,
            servers: Vec::new(),
            _dir: dir,
        };
        for i in 0..net.backends.len() {
            net.start_server(i)?;
        }
        net.write_config(&(0..net.backends.len()).collect::<Vec<_>>())?;
        Ok(net)
    }

    /// Starts (again) the name and echo servers of backend `i`.
    pub fn start_server(&mut self, i: usize) -> anyhow::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let name = format!("b{}", i + 1);
        let ns = self.backends[i].clone();
        // Bound to every local address: the VIP on lo (client traffic) and the
        // backend's own address (the LB's health checks), like a real DSR backend.
        let any: IpAddr = if self.opts.v6 {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let name_addr = SocketAddr::new(any, NAME_PORT);
        let echo_addr = SocketAddr::new(any, ECHO_PORT);
        let http_addr = SocketAddr::new(any, HTTP_PORT);
        serve(&ns, name.clone(), name_addr, Kind::Name, stop.clone())?;
        serve(&ns, name.clone(), echo_addr, Kind::Echo, stop.clone())?;
        serve(&ns, name, http_addr, Kind::Http, stop.clone())?;
        self.servers.retain(|s| s.ns.name() != ns.name());
        self.servers.push(Server {
            stop,
            name_addr,
            echo_addr,
            http_addr,
            ns,
        });
        Ok(())
    }

    /// Stops the servers of backend `i` (its health checks start failing).
    pub fn stop_server(&mut self, i: usize) {
        let name = self.backends[i].name().to_owned();
        self.servers.retain(|s| s.ns.name() != name);
    }

    /// The controller config with backends `which`, services name, echo and http.
    pub fn config_text(&self, which: &[usize]) -> String {
        self.node_config_text(which, 0)
    }

    /// The config of LB node `node` (0 = lb1, 1 = lb2): identical services (so both
    /// build identical rings), its own instance, and with failover its VRRP section.
    pub fn node_config_text(&self, which: &[usize], node: usize) -> String {
        let backends: Vec<String> = which
            .iter()
            .map(|&i| {
                format!(
                    "{{ address = \"{}\", mac = \"{}\" }}",
                    self.backend_addrs[i], self.backend_macs[i]
                )
            })
            .collect();
        let svc = |name: &str, port: u16| {
            format!(
                "[[services]]\nname = \"{name}\"\nvip = \"{}\"\nproto = \"tcp\"\nport = {port}\nmode = \"{}\"\nring_size = {}\n{}\nbackends = [ {} ]\n",
                self.vip,
                self.opts.mode,
                self.opts.ring_size,
                self.opts.service_extra.replace("{port}", &port.to_string()),
                backends.join(", ")
            )
        };
        let instance = match (node, &self.standby) {
            (1, Some(s)) => &s.instance,
            _ => &self.instance,
        };
        let mut text = format!(
            "instance = \"{instance}\"\ninterface = \"eth0\"\nxdp_mode = \"{}\"\nhash_seed = 7\nconntrack_size = 65536\n\n{}\n{}\n{}",
            self.opts.xdp_mode,
            svc("name", NAME_PORT),
            svc("echo", ECHO_PORT),
            svc("http", HTTP_PORT)
        );
        if self.standby.is_some() {
            text.push_str(&format!(
                "\n[failover]\ninterface = \"eth0\"\nvrid = 42\npriority = {}\nadvert_interval_ms = 100\nvips = [\"{}\"]\n",
                if node == 0 { 150 } else { 100 },
                self.vip
            ));
        }
        text
    }

    pub fn write_config(&self, which: &[usize]) -> anyhow::Result<()> {
        std::fs::write(&self.config, self.config_text(which)).context("writing lb.toml")?;
        if let Some(s) = &self.standby {
            std::fs::write(&s.config, self.node_config_text(which, 1))
                .context("writing lb2.toml")?;
        }
        Ok(())
    }

    /// Admin socket of the controller.
    pub fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/lb/{}.sock", self.instance))
    }

    /// Starts `lb run` on the LB node and waits until it answers `lb status`.
    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        let p = spawn_controller(&self.lb, &self.config)?;
        self.controller = Some(wait_ready(p, &self.lb, &self.socket())?);
        Ok(())
    }

    /// Starts `lb run` on lb2 (failover topologies).
    pub fn start_standby(&mut self) -> anyhow::Result<()> {
        let s = self
            .standby
            .as_mut()
            .context("no standby in this topology")?;
        let sock = PathBuf::from(format!("/run/lb/{}.sock", s.instance));
        let p = spawn_controller(&s.ns, &s.config)?;
        s.controller = Some(wait_ready(p, &s.ns, &sock)?);
        Ok(())
    }

    /// `lb status --json` of lb2.
    pub fn standby_status(&self) -> anyhow::Result<serde_json::Value> {
        let s = self.standby.as_ref().context("no standby")?;
        let sock = format!("/run/lb/{}.sock", s.instance);
        let out = s.ns.run(&[
            bin_path("lb").to_str().context("path")?,
            "status",
            "--json",
            "--socket",
            &sock,
        ])?;
        serde_json::from_str(&out).context("parsing lb status --json")
    }

    /// Runs `lb <args> --socket <this instance>` on the LB node.
    pub fn lb_cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let lb = bin_path("lb");
        let sock = self.socket();
        let mut all: Vec<&str> = vec![lb.to_str().context("path")?];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--socket", sock.to_str().context("path")?]);
        self.lb.run(&all)
    }

    /// `lb status --json`, parsed.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.lb_cmd(&["status", "--json"])?)
            .context("parsing lb status --json")
    }

    /// Opens one connection from the client to VIP:NAME_PORT and returns which
    /// backend answered; fails if the bytes came from more than one backend.
    pub fn fetch_name(&self) -> anyhow::Result<String> {
        self.fetch_names(1)?.pop().context("no answer")
    }

    /// `n` connections one after the other; the backend of each.
    pub fn fetch_names(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let vip = self.vip;
        in_netns(&self.client, move || -> anyhow::Result<Vec<String>> {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(fetch_one(vip).with_context(|| format!("connection {i} to {vip}"))?);
            }
            Ok(out)
        })?
    }

    /// Opens a persistent echo connection from the client (created in the client
    /// namespace; usable from any thread).
    pub fn echo_conn(&self) -> anyhow::Result<EchoConn> {
        let vip = self.vip;
        let s = in_netns(&self.client, move || {
            TcpStream::connect_timeout(&SocketAddr::new(vip, ECHO_PORT), Duration::from_secs(3))
        })??;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(EchoConn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }
}

/// Starts `lb run` with its log (RUST_LOG=debug, so the XDP program's aya-log events
/// too) going to `<config>.log`, which [`LbNet`] prints if the test fails.
fn spawn_controller(ns: &Ns, config: &std::path::Path) -> anyhow::Result<Proc> {
    let lb = bin_path("lb");
    let log = std::fs::File::create(config.with_extension("log"))
        .context("creating the controller log")?;
    let mut cmd = ns.cmd(lb.to_str().context("path")?);
    // The attach mode comes from the config (`Opts::xdp_mode`).
    cmd.args(["run", "--config", config.to_str().context("path")?])
        .env("RUST_LOG", "info,lb=debug,lb_ebpf=debug")
        .stderr(log);
    ns.spawn_cmd(&mut cmd)
}

fn wait_ready(mut p: Proc, ns: &Ns, sock: &std::path::Path) -> anyhow::Result<Proc> {
    let lb = bin_path("lb");
    wait_for(
        "the controller's admin socket",
        Duration::from_secs(20),
        || {
            assert!(p.alive(), "lb run exited early");
            ns.run(&[lb.to_str()?, "status", "--json", "--socket", sock.to_str()?])
                .ok()
                .map(drop)
        },
    );
    Ok(p)
}

fn fetch_one(vip: IpAddr) -> anyhow::Result<String> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::new(vip, NAME_PORT), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let mut names = buf.split(';').filter(|x| !x.is_empty());
    let first = names.next().context("empty response")?.to_owned();
    anyhow::ensure!(
        names.all(|n| n == first),
        "bytes from more than one backend: {buf:.80}"
    );
    anyhow::ensure!(
        buf.len() == (first.len() + 1) * 4096,
        "short response ({} bytes)",
        buf.len()
    );
    Ok(first)
}

impl LbNet {
    /// What the controller on lb1 logged so far.
    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for LbNet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.controller_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- lb1 controller log (last 40 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut c) = self.controller.take() {
            // A clean stop removes the controller's pins; kill -9 if it hangs.
            c.terminate(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/lb-{}", self.instance));
        let _ = std::fs::remove_file(self.socket());
        if let Some(s) = self.standby.as_mut()
            && let Some(mut c) = s.controller.take()
        {
            c.terminate(Duration::from_secs(5));
        }
        if let Some(s) = &self.standby {
            let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/lb-{}", s.instance));
            let _ = std::fs::remove_file(format!("/run/lb/{}.sock", s.instance));
        }
        self.servers.clear();
    }
}

/// A persistent HTTP/1.1 keep-alive client connection to VIP:HTTP_PORT.
pub struct HttpConn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl LbNet {
    pub fn http_conn(&self) -> anyhow::Result<HttpConn> {
        let vip = self.vip;
        let s = in_netns(&self.client, move || {
            TcpStream::connect_timeout(&SocketAddr::new(vip, HTTP_PORT), Duration::from_secs(3))
        })??;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(HttpConn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }
}

impl HttpConn {
    /// One `GET /` on the kept-alive connection; returns the body (backend name).
    pub fn get(&mut self) -> anyhow::Result<String> {
        self.w.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        let mut status = String::new();
        self.r.read_line(&mut status)?;
        anyhow::ensure!(status.starts_with("HTTP/1.1 200"), "status line {status:?}");
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h)?;
            if h.trim_end().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body)?;
        Ok(String::from_utf8(body)?)
    }
}

/// A persistent client connection to the echo service.
pub struct EchoConn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl EchoConn {
    /// Sends `msg` and returns the name of the backend that echoed it.
    pub fn roundtrip(&mut self, msg: &str) -> anyhow::Result<String> {
        self.w.write_all(format!("{msg}\n").as_bytes())?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let (name, rest) = line.trim_end().split_once(':').context("bad echo")?;
        anyhow::ensure!(rest == msg, "echo mismatch: {line:?}");
        Ok(name.to_owned())
    }
}
