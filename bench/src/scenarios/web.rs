//! `web`: the web tier beside nginx, same files, same upstream, same worker count,
//! driven by wrk in the same round: 1 KiB and 100 KiB static files and a proxied request.
//!
//! Also home of the small `/proc` helpers the `app` scenario shares ([`proc_cpu_ticks`]).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lb_tests::{Ns, Proc, Topology};

use super::Scenario;
use crate::{
    ctx::{Check, Ctx, Row, clock_ticks},
    support::{TempDir, wait_port},
    wrk::{children_cpu_secs, error_note, wrk_run},
};

pub const SCENARIO: Scenario = Scenario {
    name: "web",
    description: "web-tier vs nginx with wrk: 1 KiB and 100 KiB static files, a proxied request",
    method: "\
One network namespace of its own, everything on 127.0.0.1. Debian's nginx 1.22 and the
`web-tier` binary serve the same directory (a 1 KiB and a 100 KiB file) and proxy
`/proxy/` to the same upstream, with keep-alive to it on both (nginx: `upstream` with
`keepalive 32`, `proxy_http_version 1.1`, `Connection \"\"`; web-tier: `keepalive = 32`).
Both send the upstream the same request: the client's `Host`, and `X-Forwarded-For`,
`X-Real-IP` and `X-Forwarded-Proto`, which web-tier always sets and nginx sets with the
usual `proxy_set_header` lines (122 bytes from either here; without those lines nginx
would send 35).
Same worker count: nginx `worker_processes 1` (plus its idle master), web-tier with
`TOKIO_WORKER_THREADS=1` (plus tokio's blocking pool, which serves file reads on a cache
miss). Access logs off on both. nginx keeps its usual `sendfile on`; web-tier runs with
its defaults: its file cache on (files revalidated with a stat on every request) and
`sendfile` from the cache for files of 16 KiB and more (see its README). The upstream is
a third process, an nginx worker answering a fixed 64-byte
`return 200`. Both servers are pinned with `taskset` to the measured CPU (`--cpu`,
default the last); wrk and the upstream to the other cores.
`wrk -tN -c50 --latency`, one thread per core wrk has (N = 1 here: two threads on one
core take turns, and the connections of the one waiting for its turn add the
scheduler's slice to their latency), runs 10 s (3 s under `--quick`) after a 1 s
warm-up, nginx first then web-tier, per row. Server CPU per request is the server's own processes'
user + system time (from `/proc/<pid>/stat`; for nginx the master and its worker) over
the run, divided by the requests served; the upstream's and wrk's time is not counted.
The client (wrk) CPU share is wrk's own user + system time over the run, in percent of
the one core it has here: near 100%, wrk is the bound and the row compares how much
client work each server's responses cause, not the servers' speed (100 KiB responses).
The proxied request is measured twice. With 50 connections, more requests can be in
flight than the 32 idle upstream connections either server keeps, and the servers open
new ones: measured with `nstat` here, nginx one per six requests, web-tier one per
eighty. With 10 connections (`-c10`) that drops to one per forty and one per five
hundred, and the row compares mostly the proxying itself.
Target (from the issue): at least nginx's req/s and at most its p99 on every row.",
    pinned: false,
    run,
};

const NGINX_PORT: u16 = 8081;
const WEB_PORT: u16 = 8082;
const UPSTREAM_PORT: u16 = 8090;

/// The rows: label, request path and wrk's connection count.
const ROWS: [(&str, &str, u32); 4] = [
    ("1 KiB", "/1k.bin", 50),
    ("100 KiB", "/100k.bin", 50),
    ("proxied", "/proxy/x", 50),
    // Fewer requests in flight than the upstream pools hold: no connection churn on
    // either side, so this row compares the proxying itself.
    ("proxied, 10 conns", "/proxy/x", 10),
];

/// User + system clock ticks of `pid` (all its threads), from `/proc/<pid>/stat`.
pub fn proc_cpu_ticks(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// `pid` and its direct children (nginx's master and workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.filter_map(Result::ok) {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                all.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    all
}

/// CPU ticks of `pids` together.
pub fn ticks_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| proc_cpu_ticks(p)).sum()
}

/// Microseconds of CPU per request from a tick difference.
pub fn us_per_request(ticks: u64, requests: u64) -> f64 {
    ticks as f64 / clock_ticks() * 1e6 / requests.max(1) as f64
}

/// CPU lists for `taskset -c`: the measured CPU, and every other one.
pub fn cpu_sets(ctx: &Ctx) -> (String, String) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others: Vec<String> = (0..n)
        .filter(|&c| c != ctx.cpu)
        .map(|c| c.to_string())
        .collect();
    let others = if others.is_empty() {
        ctx.cpu.to_string()
    } else {
        others.join(",")
    };
    (ctx.cpu.to_string(), others)
}

/// An nginx configuration for one server in `dir`; `body` goes inside `http {}`.
/// worker_processes, daemon and master_process come from `-g`.
fn nginx_conf(dir: &Path, body: &str) -> String {
    let d = dir.display();
    format!(
        "user root;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  keepalive_timeout 65;\n\
           default_type application/octet-stream;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {body}\n}}\n"
    )
}

/// Starts nginx in `ns` pinned to `cpus`, with its own prefix directory under `dir`.
fn start_nginx(ns: &Ns, dir: &Path, name: &str, cpus: &str, body: &str) -> anyhow::Result<Proc> {
    let nd = dir.join(name);
    std::fs::create_dir_all(&nd)?;
    let conf = nd.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&nd, body))?;
    ns.spawn(&[
        "taskset",
        "-c",
        cpus,
        "nginx",
        "-p",
        nd.to_str().context("path")?,
        "-e",
        nd.join("error.log").to_str().context("path")?,
        "-c",
        conf.to_str().context("path")?,
        "-g",
        "daemon off; master_process on; worker_processes 1;",
    ])
}

fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(10, 3);
    let (server_cpu, other_cpus) = cpu_sets(ctx);
    let mut topo = Topology::new("web")?;
    let ns = topo.ns("web")?;
    let dir = TempDir::new("web")?;
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("1k.bin"), vec![b'x'; 1024])?;
    std::fs::write(www.join("100k.bin"), vec![b'x'; 100 * 1024])?;
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // The shared upstream: a fixed 64-byte answer, on the other cores.
    let upstream = start_nginx(
        &ns,
        &dir.0,
        "upstream",
        &other_cpus,
        &format!(
            "  server {{ listen 127.0.0.1:{UPSTREAM_PORT}; location / {{ return 200 \"{}\"; }} }}",
            "u".repeat(64)
        ),
    )?;
    topo.adopt(upstream);
    wait_port(
        &ns,
        SocketAddr::new(lo, UPSTREAM_PORT),
        Duration::from_secs(10),
    )
    .context("the upstream nginx did not start (is Debian's nginx installed?)")?;

    let www_s = www.display();
    let nginx = start_nginx(
        &ns,
        &dir.0,
        "nginx",
        &server_cpu,
        &format!(
            "  upstream up {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 32; }}\n\
             server {{\n    listen 127.0.0.1:{NGINX_PORT};\n    root {www_s};\n    location / {{ }}\n\
             location /proxy/ {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
               proxy_set_header Host $http_host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_set_header X-Real-IP $remote_addr;\n\
               proxy_set_header X-Forwarded-Proto $scheme; }}\n  }}"
        ),
    )?;
    let nginx_pid = nginx.pid();
    // Kept outside the topology so it can be stopped on its own; the topology still
    // kills anything left in the namespace.
    let nginx = ProcGuard(Some(nginx));
    wait_port(
        &ns,
        SocketAddr::new(lo, NGINX_PORT),
        Duration::from_secs(10),
    )
    .context("nginx did not start")?;

    let web_conf = dir.0.join("web.toml");
    std::fs::write(
        &web_conf,
        format!(
            "[[listen]]\naddr = \"127.0.0.1:{WEB_PORT}\"\n\n[log]\naccess = \"off\"\nerror = \"{}\"\n\n\
             [upstream.up]\nkeepalive = 32\nserver = [ {{ addr = \"127.0.0.1:{UPSTREAM_PORT}\" }} ]\n\n\
             [[server]]\nnames = [\"localhost\"]\ndefault = true\n\n\
             [[server.location]]\nprefix = \"/\"\nroot = \"{www_s}\"\n\n\
             [[server.location]]\nprefix = \"/proxy/\"\nproxy = \"up\"\n",
            dir.0.join("web-error.log").display()
        ),
    )?;
    let web_bin = ctx.lb.with_file_name("web-tier");
    if !web_bin.exists() {
        bail!(
            "{} not found: `cargo build --release --workspace --bins`",
            web_bin.display()
        );
    }
    let mut cmd = ns.cmd("taskset");
    cmd.args(["-c", &server_cpu])
        .arg(&web_bin)
        .arg("--config")
        .arg(&web_conf)
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn");
    let web = ProcGuard(Some(ns.spawn_cmd(&mut cmd)?));
    let web_pid = web.0.as_ref().map_or(0, Proc::pid);
    wait_port(&ns, SocketAddr::new(lo, WEB_PORT), Duration::from_secs(10))
        .context("web-tier did not start")?;

    let netns = format!("--net=/run/netns/{}", ns.name());
    let prefix = [
        "nsenter",
        netns.as_str(),
        "--",
        "taskset",
        "-c",
        &other_cpus,
    ];
    let dur = format!("-d{secs}s");
    // One wrk thread per core it is pinned to.
    let threads = format!("-t{}", other_cpus.split(',').count());
    let measure = |who: &str, port: u16, pids: &dyn Fn() -> Vec<u32>, path: &str, conns: u32| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let conns = format!("-c{conns}");
        if !ctx.quick {
            wrk_run(&prefix, &[&threads, &conns, "-d1s"], &url)?;
        }
        let p = pids();
        let before = ticks_of(&p);
        let (client0, t0) = (children_cpu_secs(), Instant::now());
        let (w, out) = wrk_run(&prefix, &[&threads, &conns, &dur], &url)?;
        // wrk's share of its core: near 100%, the client is the bound, not the server.
        let client = 100.0 * (children_cpu_secs() - client0) / t0.elapsed().as_secs_f64();
        let cpu = us_per_request(ticks_of(&p).saturating_sub(before), w.requests);
        ctx.progress(format!(
            "{who} {path} ({conns}): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {cpu:.1} us server CPU/request, \
             wrk at {client:.0}% of its core{}",
            w.rps,
            w.p50_ms,
            w.p99_ms,
            error_note(&w, &out)
        ));
        anyhow::Ok((w, cpu, client))
    };

    let mut rows = Vec::new();
    for (label, path, conns) in ROWS {
        let (n, n_cpu, n_client) = measure(
            "nginx",
            NGINX_PORT,
            &|| with_children(nginx_pid),
            path,
            conns,
        )?;
        let (w, w_cpu, w_client) = measure("web-tier", WEB_PORT, &|| vec![web_pid], path, conns)?;
        rows.push(
            Row::new(format!("{label} req/s"), w.rps, "req/s")
                .vs("nginx", n.rps)
                .target(Check::RatioAtLeast(1.0), ">= nginx"),
        );
        rows.push(Row::new(format!("{label} p50"), w.p50_ms, "ms").vs("nginx", n.p50_ms));
        rows.push(
            Row::new(format!("{label} p99"), w.p99_ms, "ms")
                .vs("nginx", n.p99_ms)
                .target(Check::RatioAtMost(1.0), "<= nginx"),
        );
        rows.push(Row::new(format!("{label} server CPU/request"), w_cpu, "us").vs("nginx", n_cpu));
        rows.push(
            Row::new(
                format!("{label} client (wrk) CPU share"),
                w_client,
                "% of a core",
            )
            .vs("nginx", n_client),
        );
        if w.errors + n.errors > 0 {
            rows.push(
                Row::new(format!("{label} errors"), w.errors as f64, "count")
                    .vs("nginx", n.errors as f64),
            );
        }
    }
    drop(web);
    drop(nginx);
    drop(topo);
    Ok(rows)
}

/// Stops its process gracefully on drop (nginx's master then stops its workers).
struct ProcGuard(Option<Proc>);

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if let Some(mut p) = self.0.take() {
            p.terminate(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_ticks() {
        // Burn a little CPU so the count is positive.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(proc_cpu_ticks(std::process::id()) > 0);
    }
}
