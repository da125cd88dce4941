//! `http`: wrk through the VIP: direct to one backend vs through the XDP LB vs through
//! HAProxy in TCP mode, same backends (nginx), 1 KiB and 100 KiB responses.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
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
One L2 segment (a bridge in its own namespace) with a client, an LB node and two
backends, each in its own namespace. The backends run Debian's nginx (2 workers,
`sendfile`, keep-alive, no access log) serving a 1 KiB and a 100 KiB file on port 8080,
and own the VIP on `lo` (direct server return: replies go straight to the client).
`wrk -t2 -c50 --latency` runs in the client namespace against:
- **direct**: the first backend's own address (the baseline of every row);
- **xdp**: the VIP, routed via the LB node, where `lb run` attaches `xdp_lb` (L2 DSR,
  both backends, TCP health checks once a second);
- **haproxy**: HAProxy 2.6 on the LB node's address, `mode tcp`, `balance roundrobin`
  over the same two backends (a full proxy: both directions cross it); `xdp_lb` is
  detached while it runs.
Each run lasts 10 s (3 s under `--quick`) after a 1 s warm-up. CPU per request is the
machine's busy time from `/proc/stat` (every state except idle and iowait: user, system,
softirq included) over the run, divided by the requests served; it counts wrk, nginx,
HAProxy and the kernel alike, so differences between rows are what the middle box costs.
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

/// The topology with nginx running on both backends.
struct Net {
    client: Ns,
    lb: Ns,
    dir: TempDir,
    vip: IpAddr,
    lb_addr: IpAddr,
    backends: Vec<(IpAddr, String)>,
    _pins: BpfPins,
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

fn net(ctx: &Ctx) -> anyhow::Result<Net> {
    let mut topo = Topology::new("http")?;
    let pins = BpfPins::new("http")?;
    let sw = topo.ns("sw")?;
    topo.bridge(&sw, "br0")?;
    let client = topo.ns("client")?;
    let lb = topo.ns("lb")?;
    let b1 = topo.ns("b1")?;
    let b2 = topo.ns("b2")?;
    let vip = ip(100);
    let lb_addr = ip(2);
    topo.plug(&client, "eth0", &sw, "br0", "pc")?;
    client.addr("eth0", &format!("{}/24", ip(1)))?;
    topo.plug(&lb, "eth0", &sw, "br0", "plb")?;
    lb.addr("eth0", &format!("{lb_addr}/24"))?;
    // Frames that cross xdp_lb keep no checksum-offload note: send them complete.
    client.sw_checksums("eth0")?;
    client.route(&[&format!("{vip}/32"), "via", &lb_addr.to_string()])?;
    // XDP_TX on a veth only delivers when the peer end runs XDP too.
    attach_helper(&sw, &ctx.lb, "xdp_pass", "plb", &pins.dir.join("plb"))?;

    let dir = TempDir::new("http")?;
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("1k.bin"), vec![b'x'; 1024])?;
    std::fs::write(www.join("100k.bin"), vec![b'x'; 100 * 1024])?;
    let mut backends = Vec::new();
    for (i, b) in [&b1, &b2].into_iter().enumerate() {
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
        _pins: pins,
        _topo: topo,
    })
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
}

/// "1.23ms" / "870.00us" / "1.02s" -> milliseconds.
fn latency_ms(s: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mul)
}

/// Requests, req/s, p50 and p99 from wrk's `--latency` output.
fn parse_wrk(out: &str) -> anyhow::Result<(u64, f64, f64, f64)> {
    let mut requests = None;
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Requests/sec:", v, ..] => rps = v.parse().ok(),
            ["50%", v, ..] => p50 = latency_ms(v),
            ["99%", v, ..] => p99 = latency_ms(v),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            _ => {}
        }
    }
    match (requests, rps, p50, p99) {
        (Some(n), Some(r), Some(a), Some(b)) => Ok((n, r, a, b)),
        _ => bail!("could not parse wrk's output:\n{out}"),
    }
}

fn wrk(ctx: &Ctx, client: &Ns, url: &str, secs: u64) -> anyhow::Result<Wrk> {
    let d = format!("{secs}s");
    let before = cpu_times()?.0;
    let out = client.run(&["wrk", "-t2", "-c50", &format!("-d{d}"), "--latency", url])?;
    let after = cpu_times()?.0;
    let (requests, rps, p50_ms, p99_ms) = parse_wrk(&out)?;
    if let Some(l) = out
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        ctx.progress(format!("warning: {url}: {}", l.trim()));
    }
    let busy = after.busy.saturating_sub(before.busy) + after.steal.saturating_sub(before.steal);
    let cpu_us_per_req = busy as f64 / clock_ticks() * 1e6 / requests.max(1) as f64;
    Ok(Wrk {
        rps,
        p50_ms,
        p99_ms,
        cpu_us_per_req,
    })
}

const SIZES: [(&str, &str); 2] = [("1 KiB", "1k.bin"), ("100 KiB", "100k.bin")];

fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(10, 3);
    let n = net(ctx)?;
    let measure = |who: &str, host: IpAddr| -> anyhow::Result<Vec<Wrk>> {
        let mut out = Vec::new();
        for (label, file) in SIZES {
            let url = format!("http://{host}:{PORT}/{file}");
            if !ctx.quick {
                wrk(ctx, &n.client, &url, 1)?;
            }
            let w = wrk(ctx, &n.client, &url, secs)?;
            ctx.progress(format!(
                "{who} {label}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} us CPU/request",
                w.rps, w.p50_ms, w.p99_ms, w.cpu_us_per_req
            ));
            out.push(w);
        }
        Ok(out)
    };

    let direct = measure("direct", n.backends[0].0)?;

    let xdp = {
        let instance = instance_name();
        let backends: Vec<String> = n
            .backends
            .iter()
            .map(|(a, mac)| format!("{{ address = \"{a}\", mac = \"{mac}\" }}"))
            .collect();
        let config = format!(
            "instance = \"{instance}\"\ninterface = \"eth0\"\nhash_seed = 7\nconntrack_size = 262144\n\n\
             [[services]]\nname = \"web\"\nvip = \"{}\"\nproto = \"tcp\"\nport = {PORT}\nmode = \"l2\"\n\
             health = {{ kind = \"tcp\", interval_ms = 1000, timeout_ms = 500 }}\nbackends = [ {} ]\n",
            n.vip,
            backends.join(", ")
        );
        let _ctl = Controller::start(&n.lb, &ctx.lb, &n.dir.0, &instance, &config)?;
        measure("xdp", n.vip)?
    };

    let haproxy = {
        let cfg = n.dir.0.join("haproxy.cfg");
        let servers: String = n
            .backends
            .iter()
            .enumerate()
            .map(|(i, (a, _))| format!("  server b{} {a}:{PORT}\n", i + 1))
            .collect();
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\n\
                 frontend fe\n  bind {}:{PORT}\n  default_backend be\n\nbackend be\n  balance roundrobin\n{servers}",
                n.lb_addr
            ),
        )?;
        let mut p =
            n.lb.spawn(&["haproxy", "-db", "-f", cfg.to_str().context("path")?])?;
        let r = wait_port(
            &n.client,
            SocketAddr::new(n.lb_addr, PORT),
            Duration::from_secs(10),
        )
        .context("haproxy did not start (is Debian's haproxy installed? cargo xtask setup)")
        .and_then(|()| measure("haproxy", n.lb_addr));
        p.stop(libc::SIGTERM);
        r?
    };

    let mut rows = Vec::new();
    for (i, (label, _)) in SIZES.iter().enumerate() {
        let d = direct[i];
        for (who, w) in [("xdp", xdp[i]), ("haproxy", haproxy[i])] {
            let is_xdp = who == "xdp";
            let mut rps =
                Row::new(format!("{who} {label} req/s"), w.rps, "req/s").vs("direct", d.rps);
            let p50 = Row::new(format!("{who} {label} p50"), w.p50_ms, "ms").vs("direct", d.p50_ms);
            let mut p99 =
                Row::new(format!("{who} {label} p99"), w.p99_ms, "ms").vs("direct", d.p99_ms);
            let mut cpu = Row::new(format!("{who} {label} CPU/request"), w.cpu_us_per_req, "us")
                .vs("direct", d.cpu_us_per_req);
            if is_xdp {
                rps = rps.target(Check::RatioAtLeast(0.95), ">= 0.95x direct");
                p99 = p99.target(Check::RatioAtMost(1.2), "<= 1.2x direct");
                cpu = cpu.target(Check::DiffAtMost(1.0), "<= direct + 1 us");
            }
            rows.extend([rps, p50, p99, cpu]);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let out = "Running 10s test @ http://10.88.0.100:8080/1k.bin
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.03ms  503.43us  12.34ms   80.00%
    Req/Sec    24.00k     1.20k   27.00k    70.00%
  Latency Distribution
     50%  870.00us
     75%    1.22ms
     90%    1.60ms
     99%    2.50ms
  480000 requests in 10.00s, 560.00MB read
Requests/sec:  48000.12
Transfer/sec:     56.00MB
";
        let (n, rps, p50, p99) = parse_wrk(out).unwrap();
        assert_eq!(n, 480_000);
        assert!((rps - 48000.12).abs() < 1e-6);
        assert!((p50 - 0.87).abs() < 1e-9);
        assert!((p99 - 2.5).abs() < 1e-9);
        assert_eq!(latency_ms("1.50s"), Some(1500.0));
    }
}
