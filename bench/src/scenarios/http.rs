//! `http`: wrk through the VIP: direct to one backend vs through the XDP LB vs through
//! HAProxy in TCP mode, same backends (nginx), 1 KiB and 100 KiB responses.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use lb_tests::{BpfPins, Ns, Topology};

use super::Scenario;
use crate::{
    ctx::{Check, Ctx, Row, clock_ticks, cpu_times},
    support::{Controller, TempDir, attach_helper, instance_name, wait_port},
};

pub const SCENARIO: Scenario = Scenario {
    name: "http",
    description: "HTTP through the VIP with wrk: direct vs XDP LB vs HAProxy (TCP mode), 1 KiB and 100 KiB",
    method: "\
One L2 segment (a bridge in its own namespace) with a client, an LB node and one backend,
each in its own namespace. The backend runs Debian's nginx (2 workers, `sendfile`,
keep-alive, no access log) serving a 1 KiB and a 100 KiB file on port 8080, and owns the
VIP on `lo` (direct server return: replies go straight to the client).
`wrk -t2 -c50 --latency` runs in the client namespace against:
- **direct**: the backend's own address (the baseline of every row);
- **xdp**: the VIP, routed via the LB node, where `lb run` attaches `xdp_lb` (L2 DSR,
  TCP health checks once a second);
- **haproxy**: HAProxy 2.6 on the LB node's address, `mode tcp`, `balance roundrobin`
  to the same backend (a full proxy: both directions cross it); the controller is
  stopped (`xdp_lb` detached) while it runs, and so is the `xdp_pass` that the XDP LB
  needs on the bridge end of its veth (XDP_TX on a veth only arrives when the peer runs
  XDP; with it, every frame the LB node sends is copied, which would tax HAProxy's
  responses, not the DSR replies of the XDP LB).
One backend for all three, so the only difference is the box in the middle: with two
backends behind the middle boxes and one for direct, the extra nginx workers on these
2 shared cores changed req/s and p99 by more than the middle box did. (The data-plane
scenario covers several backends.)
For each response size the three runs follow each other (direct, xdp, haproxy), each
10 s (3 s under `--quick`) after a 1 s warm-up. CPU per request is the
machine's busy time from `/proc/stat` (every state except idle and iowait: user, system,
softirq included) over the run, divided by the requests served; it counts wrk, nginx,
HAProxy and the kernel alike, so differences between rows are what the middle box costs.
During the measured xdp runs the kernel's BPF run-time statistics are on
(BPF_ENABLE_STATS, held by the benchmark for that run only; it adds two clock reads to
every BPF program run, counted against xdp): `xdp_lb time/request` is the program's own
run time per request, beside the whole gap (the difference shown in the xdp
`CPU/request` row), and `frames through
xdp_lb/request` how many client frames it forwarded per request. The rest of the gap
is the path through the LB node in this lab: a second veth crossing and bridge pass
per client frame, with the frame converted for XDP and back.
Everything shares 2 cores, so absolute req/s are far below a real deployment's; the
ratios to direct are the result. The client sends with software checksums
(`ethtool -K eth0 tx off`, as frames that cross `xdp_lb` must carry them) in all three
cases.",
    pinned: false,
    run,
};

const PORT: u16 = 8080;
const NET: &str = "10.88.0.";

fn ip(host: u8) -> IpAddr {
    format!("{NET}{host}").parse().expect("constant address")
}

/// Backends behind the LB and HAProxy (and the first is "direct").
const BACKENDS: usize = 1;

/// The topology with nginx running on the backends.
struct Net {
    client: Ns,
    lb: Ns,
    sw: Ns,
    dir: TempDir,
    vip: IpAddr,
    lb_addr: IpAddr,
    backends: Vec<(IpAddr, String)>,
    pins: BpfPins,
    _topo: Topology,
}

fn nginx_conf(dir: &Path, www: &Path) -> String {
    let d = dir.display();
    format!(
        "user root;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  keepalive_timeout 65;\n\
           default_type application/octet-stream;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{ listen {PORT}; root {}; location / {{ }} }}\n}}\n",
        www.display()
    )
}

fn net() -> anyhow::Result<Net> {
    let mut topo = Topology::new("http")?;
    let pins = BpfPins::new("http")?;
    let sw = topo.ns("sw")?;
    topo.bridge(&sw, "br0")?;
    let client = topo.ns("client")?;
    let lb = topo.ns("lb")?;
    let mut bns = Vec::new();
    for i in 1..=BACKENDS {
        bns.push(topo.ns(&format!("b{i}"))?);
    }
    let vip = ip(100);
    let lb_addr = ip(2);
    topo.plug(&client, "eth0", &sw, "br0", "pc")?;
    client.addr("eth0", &format!("{}/24", ip(1)))?;
    topo.plug(&lb, "eth0", &sw, "br0", "plb")?;
    lb.addr("eth0", &format!("{lb_addr}/24"))?;
    // Frames that cross xdp_lb keep no checksum-offload note: send them complete.
    client.sw_checksums("eth0")?;
    client.route(&[&format!("{vip}/32"), "via", &lb_addr.to_string()])?;

    let dir = TempDir::new("http")?;
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("1k.bin"), vec![b'x'; 1024])?;
    std::fs::write(www.join("100k.bin"), vec![b'x'; 100 * 1024])?;
    let mut backends = Vec::new();
    for (i, b) in bns.iter().enumerate() {
        topo.plug(b, "eth0", &sw, "br0", &format!("pb{}", i + 1))?;
        let a = ip(11 + i as u8);
        b.addr("eth0", &format!("{a}/24"))?;
        b.addr("lo", &format!("{vip}/32"))?;
        b.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        b.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        b.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        b.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
        let nd = dir.0.join(format!("nginx{}", i + 1));
        std::fs::create_dir_all(&nd)?;
        let conf = nd.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&nd, &www))?;
        let p = b.spawn(&[
            "nginx",
            "-p",
            nd.to_str().context("path")?,
            "-e",
            nd.join("error.log").to_str().context("path")?,
            "-c",
            conf.to_str().context("path")?,
        ])?;
        topo.adopt(p);
        wait_port(b, SocketAddr::new(a, PORT), Duration::from_secs(10))
            .context("nginx did not start (is Debian's nginx installed? cargo xtask setup)")?;
        backends.push((a, b.mac("eth0")?));
    }
    // Neighbours resolved before traffic starts.
    for (a, _) in &backends {
        lb.output(&["ping", "-c", "1", "-W", "1", &a.to_string()])?;
        client.output(&["ping", "-c", "1", "-W", "1", &a.to_string()])?;
    }
    client.output(&["ping", "-c", "1", "-W", "1", &lb_addr.to_string()])?;
    Ok(Net {
        client,
        lb,
        dir,
        vip,
        lb_addr,
        backends,
        sw,
        pins,
        _topo: topo,
    })
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
}

fn wrk(ctx: &Ctx, client: &Ns, url: &str, secs: u64) -> anyhow::Result<Measured> {
    let d = format!("{secs}s");
    let before = cpu_times()?.0;
    let out = client.run(&["wrk", "-t2", "-c50", &format!("-d{d}"), "--latency", url])?;
    let after = cpu_times()?.0;
    let crate::wrk::Wrk {
        requests,
        rps,
        p50_ms,
        p99_ms,
        ..
    } = crate::wrk::parse_wrk(&out)?;
    if let Some(l) = out
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        ctx.progress(format!("warning: {url}: {}", l.trim()));
    }
    let busy = after.busy.saturating_sub(before.busy) + after.steal.saturating_sub(before.steal);
    let cpu_us_per_req = busy as f64 / clock_ticks() * 1e6 / requests.max(1) as f64;
    Ok(Measured {
        requests,
        rps,
        p50_ms,
        p99_ms,
        cpu_us_per_req,
    })
}

const SIZES: [(&str, &str); 2] = [("1 KiB", "1k.bin"), ("100 KiB", "100k.bin")];

/// Removes a bpffs pin on drop (detaching the program whose link it holds).
struct Unpin(std::path::PathBuf);

impl Drop for Unpin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Run time and runs of every loaded BPF program named `name` (the kernel counts them
/// only while BPF_ENABLE_STATS is held).
fn prog_runs(name: &str) -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .fold((0, 0), |(t, n), p| {
            (
                t + u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX),
                n + p.run_count(),
            )
        })
}

/// What `xdp_lb` itself did during a measured run, per request.
#[derive(Debug, Clone, Copy)]
struct ProgTime {
    /// Its run time (the kernel's BPF run-time statistics).
    us_per_req: f64,
    /// Frames it ran on.
    frames_per_req: f64,
}

/// One warm-up (not under `--quick`) and one measured wrk run against `host`; with
/// `probe`, also `xdp_lb`'s own run time over the measured run.
fn one(
    ctx: &Ctx,
    n: &Net,
    who: &str,
    host: IpAddr,
    size: (&str, &str),
    secs: u64,
    probe: bool,
) -> anyhow::Result<(Measured, Option<ProgTime>)> {
    let (label, file) = size;
    let url = format!("http://{host}:{PORT}/{file}");
    if !ctx.quick {
        wrk(ctx, &n.client, &url, 1)?;
    }
    // Held for the measured run only: while it is, every BPF program run on the machine
    // also reads the clock twice.
    let stats = if probe {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("enabling BPF run-time statistics")?,
        )
    } else {
        None
    };
    let before = prog_runs(lb_common::PROG_LB);
    let w = wrk(ctx, &n.client, &url, secs)?;
    let prog = stats.map(|_fd| {
        let after = prog_runs(lb_common::PROG_LB);
        let requests = w.requests.max(1) as f64;
        ProgTime {
            us_per_req: after.0.saturating_sub(before.0) as f64 / 1e3 / requests,
            frames_per_req: after.1.saturating_sub(before.1) as f64 / requests,
        }
    });
    ctx.progress(format!(
        "{who} {label}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} us CPU/request{}",
        w.rps,
        w.p50_ms,
        w.p99_ms,
        w.cpu_us_per_req,
        prog.map_or_else(String::new, |p| format!(
            "; xdp_lb ran on {:.2} frames/request for {:.3} us/request",
            p.frames_per_req, p.us_per_req
        ))
    ));
    Ok((w, prog))
}

fn controller_config(n: &Net, instance: &str) -> String {
    let backends: Vec<String> = n
        .backends
        .iter()
        .map(|(a, mac)| format!("{{ address = \"{a}\", mac = \"{mac}\" }}"))
        .collect();
    format!(
        "instance = \"{instance}\"\ninterface = \"eth0\"\nhash_seed = 7\nconntrack_size = 262144\n\n\
         [[services]]\nname = \"web\"\nvip = \"{}\"\nproto = \"tcp\"\nport = {PORT}\nmode = \"l2\"\n\
         health = {{ kind = \"tcp\", interval_ms = 1000, timeout_ms = 500 }}\nbackends = [ {} ]\n",
        n.vip,
        backends.join(", ")
    )
}

/// Starts HAProxy on the LB node; killed when the returned guard drops.
fn start_haproxy(n: &Net) -> anyhow::Result<lb_tests::Proc> {
    let cfg = n.dir.0.join("haproxy.cfg");
    let servers: String = n
        .backends
        .iter()
        .enumerate()
        .map(|(i, (a, _))| format!("  server b{} {a}:{PORT}\n", i + 1))
        .collect();
    // maxconn bounds the file descriptors HAProxy asks for (the limit here is 20000).
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\n\
             frontend fe\n  bind {}:{PORT}\n  default_backend be\n\nbackend be\n  balance roundrobin\n{servers}",
            n.lb_addr
        ),
    )?;
    let mut p =
        n.lb.spawn(&["haproxy", "-db", "-f", cfg.to_str().context("path")?])?;
    if let Err(e) = wait_port(
        &n.client,
        SocketAddr::new(n.lb_addr, PORT),
        Duration::from_secs(10),
    ) {
        let exited = !p.alive();
        p.stop(libc::SIGKILL);
        return Err(e).context(if exited {
            "haproxy exited at start (its messages are above)"
        } else {
            "haproxy did not start listening (is Debian's haproxy installed? cargo xtask setup)"
        });
    }
    Ok(p)
}

fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(10, 3);
    let n = net()?;
    let mut rows = Vec::new();
    // Per size the three runs follow each other, so drift on this shared machine hits
    // the candidate and its baseline alike. Only one middle box is up at a time.
    for size in SIZES {
        let label = size.0;
        let (d, _) = one(ctx, &n, "direct", n.backends[0].0, size, secs, false)?;
        let (xdp, prog) = {
            // XDP_TX on a veth only delivers when the peer end runs XDP too: the bridge
            // port of the LB gets an xdp_pass, only while the XDP LB runs (on a veth it
            // costs every frame the LB node sends a copy, which would tax HAProxy's
            // responses).
            let pass = n.pins.dir.join("plb");
            attach_helper(&n.sw, &ctx.lb, "xdp_pass", "plb", &pass)?;
            let _detach = Unpin(pass);
            let instance = instance_name();
            let _ctl = Controller::start(
                &n.lb,
                &ctx.lb,
                &n.dir.0,
                &instance,
                &controller_config(&n, &instance),
            )?;
            one(ctx, &n, "xdp", n.vip, size, secs, true)?
        };
        let haproxy = {
            let mut p = start_haproxy(&n)?;
            let w = one(ctx, &n, "haproxy", n.lb_addr, size, secs, false);
            p.stop(libc::SIGTERM);
            w?.0
        };
        for (who, w) in [("xdp", xdp), ("haproxy", haproxy)] {
            let mut rps =
                Row::new(format!("{who} {label} req/s"), w.rps, "req/s").vs("direct", d.rps);
            let p50 = Row::new(format!("{who} {label} p50"), w.p50_ms, "ms").vs("direct", d.p50_ms);
            let mut p99 =
                Row::new(format!("{who} {label} p99"), w.p99_ms, "ms").vs("direct", d.p99_ms);
            let mut cpu = Row::new(format!("{who} {label} CPU/request"), w.cpu_us_per_req, "us")
                .vs("direct", d.cpu_us_per_req);
            if who == "xdp" {
                rps = rps.target(Check::RatioAtLeast(0.95), ">= 0.95x direct");
                p99 = p99.target(Check::RatioAtMost(1.2), "<= 1.2x direct");
                cpu = cpu.target(Check::DiffAtMost(1.0), "<= direct + 1 us");
            }
            rows.extend([rps, p50, p99, cpu]);
        }
        if let Some(p) = prog {
            // How much of the CPU per request the LB program itself is, beside the
            // whole gap to direct (the CPU/request row's per-round difference): the rest
            // is the path through the LB node.
            rows.push(Row::new(
                format!("xdp {label} xdp_lb time/request"),
                p.us_per_req,
                "us",
            ));
            rows.push(Row::new(
                format!("xdp {label} frames through xdp_lb/request"),
                p.frames_per_req,
                "frames",
            ));
        }
    }
    Ok(rows)
}
