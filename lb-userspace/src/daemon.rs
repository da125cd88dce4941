//! `lb run`: the controller daemon.
//!
//! Attaches (or adopts) the data plane, applies the config, runs health checks, the
//! admin socket, the Prometheus endpoint and VRRP failover, and reacts to:
//! - health transitions: rebuild the affected rings;
//! - SIGHUP or `lb reload`: re-read the file; a bad file, or one that changes a
//!   setting fixed at start ([`restart_fields`]), is rejected whole and the running
//!   config stays;
//! - SIGTERM/SIGINT: clean shutdown (detach and unpin unless `--keep-pins`);
//! - `kill -9`: nothing to do: the pinned link keeps forwarding, and the next `lb run`
//!   adopts the pins without flushing rings or the connection table;
//! - a start that fails after attaching: detach and unpin what this run attached,
//!   leave what it adopted.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    config::{Config, parse_mac},
    dataplane::{AttachMode, Dataplane, LoadOptions, sum},
    health,
    reconcile::{AdminState, Reconciler, Runtime},
};

/// Options of `lb run` beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub xdp_mode: Option<AttachMode>,
    /// Leave the data plane attached and pinned on a clean shutdown.
    pub keep_pins: bool,
}

/// Everything the admin API and metrics read, behind one lock.
pub struct State {
    pub cfg: Config,
    pub path: PathBuf,
    pub rt: Runtime,
    pub rec: Reconciler,
    pub dp: Dataplane,
    pub checks: Option<health::Checks>,
    pub reloads: u64,
    pub reload_failures: u64,
    pub vrrp: Option<crate::vrrp::Tracker>,
    /// `lb run --xdp-mode`, which wins over the file's `xdp_mode` on reload too.
    pub xdp_mode_override: Option<AttachMode>,
}

type Shared = Arc<Mutex<State>>;

/// Longest admin request line; a longer one gets an error and its connection closed
/// (a request is a few dozen bytes: this only bounds what a client can make us hold).
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Admin requests (one JSON object per line on the Unix socket). Unknown fields are
/// refused, as in config files: a misspelt field must not be silently ignored.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    // Braces, not unit variants: serde lets a unit variant of an internally tagged
    // enum through with any other fields, deny_unknown_fields or not.
    Status {},
    Drain { backend: IpAddr },
    Enable { backend: IpAddr },
    Weight { backend: IpAddr, weight: u32 },
    Reload {},
}

/// Resolves backend MACs: from the config, else from the neighbour table after
/// provoking resolution with a datagram to the discard port.
pub async fn resolve_macs(cfg: &Config) -> anyhow::Result<BTreeMap<IpAddr, [u8; 6]>> {
    let mut out = BTreeMap::new();
    for s in cfg.services() {
        for b in &s.backends {
            if out.contains_key(&b.address) {
                continue;
            }
            if let Some(m) = b.mac.as_deref().and_then(parse_mac) {
                out.insert(b.address, m);
                continue;
            }
            out.insert(b.address, neighbour_mac(b.address).await?);
        }
    }
    Ok(out)
}

async fn neighbour_mac(addr: IpAddr) -> anyhow::Result<[u8; 6]> {
    for _ in 0..50 {
        let out = tokio::process::Command::new("ip")
            .args(["neigh", "show", "to", &addr.to_string()])
            .output()
            .await
            .context("running ip neigh")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        if words.any(|w| w == "lladdr")
            && let Some(mac) = words.next().and_then(parse_mac)
        {
            return Ok(mac);
        }
        // Make the kernel resolve it: any datagram to the address will do.
        let bind: IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        if let Ok(sock) = tokio::net::UdpSocket::bind((bind, 0)).await {
            let _ = sock.send_to(b"arp", (addr, 9)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "could not resolve the MAC of backend {addr}: set `mac` in the config or check that it is on-link"
    )
}

fn ifindexes(cfg: &Config) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for s in cfg.services() {
        for b in &s.backends {
            if let Some(ifname) = &b.interface
                && !out.contains_key(ifname)
            {
                let c = std::ffi::CString::new(ifname.as_str()).context("interface name")?;
                // SAFETY: if_nametoindex reads a NUL-terminated string.
                let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
                if idx == 0 {
                    bail!("interface {ifname} (backend {}) does not exist", b.address);
                }
                out.insert(ifname.clone(), idx);
            }
        }
    }
    Ok(out)
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(path: &Path, opts: RunOptions) -> anyhow::Result<()> {
    let mut cfg = Config::load(path)?;
    if let Some(m) = opts.xdp_mode {
        cfg.xdp_mode = m;
    }
    // The interface first: resolving backend MACs can take seconds per backend, and
    // is pointless when there is nothing to attach to.
    let lb_mac = crate::dataplane::iface_mac(&cfg.interface).with_context(|| {
        format!(
            "interface {:?} (`interface` in {}): does it exist in this network namespace?",
            cfg.interface,
            path.display()
        )
    })?;
    let rt = Runtime {
        macs: resolve_macs(&cfg).await?,
        ifindex: ifindexes(&cfg)?,
        lb_mac,
        ..Runtime::default()
    };
    // Signal handlers before attaching, so nothing can fail between attaching and
    // serving except what `abandon` below cleans up after.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut dp = Dataplane::attach_or_adopt(
        &cfg.instance,
        &cfg.interface,
        cfg.xdp_mode,
        &LoadOptions {
            conntrack_size: cfg.conntrack_size,
            max_services: lb_common::MAX_SERVICES,
        },
    )?;
    let mut rec = Reconciler::default();
    let first = if dp.adopted {
        rec.adopt(&dp.maps, &cfg)
            .context("reading the adopted data plane")
    } else {
        Ok(())
    }
    .and_then(|()| rec.apply(&mut dp.maps, &cfg, &rt));
    let n = match first {
        Ok(n) => n,
        Err(e) => return Err(abandon(&mut dp, e)),
    };
    log::info!(
        "{} on {} ({:?}): {} services, {n} rings written{}",
        cfg.instance,
        cfg.interface,
        cfg.xdp_mode,
        cfg.services.len(),
        if dp.adopted {
            ", adopted pinned state"
        } else {
            ""
        }
    );
    // Debug events of the XDP program (aya-log) into env_logger (RUST_LOG=debug).
    let xdp_log = dp.program_id().map(|id| tokio::spawn(forward_xdp_log(id)));
    let (htx, mut hrx) = mpsc::channel(64);
    let checks = health::start(&cfg, htx.clone());
    let socket = cfg.admin_socket();
    let metrics_addr = cfg.metrics;
    let failover = cfg.failover.clone();
    let state: Shared = Arc::new(Mutex::new(State {
        cfg,
        path: path.to_owned(),
        rt,
        rec,
        dp,
        checks: Some(checks),
        reloads: 0,
        reload_failures: 0,
        vrrp: None,
        xdp_mode_override: opts.xdp_mode,
    }));

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut vrrp_task = None;
    if let Some(vc) = failover {
        let tracker = crate::vrrp::Tracker::new();
        tracker.set_xdp_attached(true);
        let mut rx = shutdown_rx.clone();
        lock(&state).vrrp = Some(tracker.clone());
        track_backends(&lock(&state));
        let mut roles = tracker.subscribe();
        // What ended the VRRP runtime, if it ends before running (setup failed:
        // interface missing, no source address, sockets refused).
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
        // VRRP gets a thread and a runtime of its own: adverts and takeover timers
        // must not wait behind ring rebuilds or admin requests on the main runtime.
        let spawned = std::thread::Builder::new()
            .name("vrrp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = failed_tx.send(anyhow::Error::new(e).context("VRRP runtime"));
                        return;
                    }
                };
                rt.block_on(async move {
                    if let Err(e) = crate::vrrp::run(vc, tracker, async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await
                        && let Err(e) = failed_tx.send(e)
                    {
                        log::error!("VRRP: {e:#}");
                    }
                });
            });
        // Serve only once VRRP runs: a node whose failover cannot start would serve
        // without ever taking (or giving up) its VIPs, looking healthy all the while.
        let started = match spawned {
            Ok(t) => {
                vrrp_task = Some(t);
                tokio::select! {
                    r = roles.wait_for(|r| r.state != crate::vrrp::State::Initialize) => {
                        r.map(drop).map_err(|_| anyhow::anyhow!("the VRRP thread ended"))
                    }
                    r = failed_rx => Err(r.unwrap_or_else(|_| anyhow::anyhow!("the VRRP thread ended"))),
                }
            }
            Err(e) => Err(anyhow::Error::new(e)),
        };
        if let Err(e) = started {
            let e = e.context("starting VRRP failover (`[failover]`)");
            let _ = shutdown_tx.send(true);
            if let Some(t) = vrrp_task.take() {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            let mut st = lock(&state);
            st.checks = None;
            return Err(abandon(&mut st.dp, e));
        }
    }

    let admin = tokio::spawn(admin_server(socket.clone(), state.clone(), htx.clone()));
    let metrics = tokio::spawn(metrics_server(metrics_addr, state.clone()));

    // Whether xdp_lb is still attached, for VRRP's tracking (a node whose data plane
    // is gone must not hold the VIP).
    let mut xdp_check = tokio::time::interval(Duration::from_secs(1));
    xdp_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(t) = hrx.recv() => {
                let mut st = lock(&state);
                if t.up { st.rt.down.remove(&t.address); } else { st.rt.down.insert(t.address); }
                if let Err(e) = apply(&mut st) {
                    log::error!("applying health change of {}: {e:#}", t.address);
                }
            }
            _ = xdp_check.tick() => {
                let (tracker, iface, dir) = {
                    let st = lock(&state);
                    (st.vrrp.clone(), st.cfg.interface.clone(), Dataplane::pin_dir(&st.cfg.instance))
                };
                if let Some(t) = tracker {
                    let attached = xdp_attached(&iface, &dir).await;
                    t.set_xdp_attached(attached);
                }
            }
            _ = hup.recv() => {
                if let Err(e) = reload(&state, &htx).await {
                    log::error!("reload rejected, the running config stays: {e:#}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    log::info!("shutting down");
    let _ = shutdown_tx.send(true);
    if let Some(t) = vrrp_task {
        // VRRP sends priority 0 and removes the VIPs before we detach.
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    admin.abort();
    metrics.abort();
    if let Some(t) = xdp_log {
        t.abort();
    }
    // Aborted tasks release their share of the state once awaited.
    let _ = admin.await;
    let _ = metrics.await;
    let _ = std::fs::remove_file(&socket);
    // Admin connections may still hold the state; shut down through the lock.
    let mut st = lock(&state);
    st.checks = None;
    st.dp.shutdown(opts.keep_pins)
}

/// `lb run` failed after `attach_or_adopt`: undo what this run created and return
/// the error. A data plane this run attached is detached and its pins removed (the
/// next `lb run` starts clean instead of adopting half-written maps); one it adopted
/// belongs to the earlier controller and keeps forwarding untouched.
fn abandon(dp: &mut Dataplane, e: anyhow::Error) -> anyhow::Error {
    if dp.adopted {
        log::error!("startup failed; the adopted data plane is left attached and pinned as it was");
        return e;
    }
    match dp.shutdown(false) {
        Ok(()) => e.context("startup failed; the XDP program was detached and its pins removed"),
        Err(c) => e.context(format!(
            "startup failed, and cleaning up after it too ({c:#}): remove the pin directory by hand"
        )),
    }
}

/// Drains the aya-log ring buffer of program `id` into the `log` crate.
async fn forward_xdp_log(id: u32) {
    let logger = match aya_log::EbpfLogger::init_from_id(id) {
        Ok(l) => l,
        Err(e) => return log::debug!("no aya-log records from the XDP program: {e}"),
    };
    // SAFETY: the logger owns its ring-buffer fd for its whole life and always reports
    // the same one; the AsyncFd owns the logger.
    let mut fd = match unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    } {
        Ok(fd) => fd,
        Err(e) => return log::warn!("aya-log: {e}"),
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// The pinned link still exists and the interface reports an XDP program.
async fn xdp_attached(iface: &str, pin_dir: &Path) -> bool {
    if !pin_dir.join("link").exists() {
        return false;
    }
    match tokio::process::Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", iface])
        .output()
        .await
    {
        Ok(o) => reports_xdp(&o),
        // Cannot tell: do not fault the node on a missing tool.
        Err(_) => true,
    }
}

/// Whether `ip -j -d link show dev X` leaves the interface's XDP program in place: it
/// ran, and did not report the interface without one. Output it cannot read (several
/// programs, say) counts as attached, as a missing tool does.
fn reports_xdp(out: &std::process::Output) -> bool {
    out.status.success() && !matches!(crate::dataplane::attached_xdp(&out.stdout), Ok(None))
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn apply(st: &mut State) -> anyhow::Result<usize> {
    let State {
        cfg, rt, rec, dp, ..
    } = st;
    let n = rec.apply(&mut dp.maps, cfg, rt)?;
    track_backends(st);
    Ok(n)
}

/// Tells VRRP whether every service still has a backend to send to (used when the
/// failover section sets `fault_on_no_backend`).
fn track_backends(st: &State) {
    if let Some(t) = &st.vrrp {
        let all = st
            .cfg
            .services()
            .all(|s| s.backends.iter().any(|b| st.rt.effective_weight(b) > 0));
        t.set_healthy_backends(all);
    }
}

/// Re-reads the config; applies it only if all of it is valid.
async fn reload(state: &Shared, htx: &mpsc::Sender<health::Transition>) -> anyhow::Result<()> {
    let path = lock(state).path.clone();
    let result = async {
        let new = Config::load(&path)?;
        let macs = resolve_macs(&new).await?;
        let ifindex = ifindexes(&new)?;
        Ok::<_, anyhow::Error>((new, macs, ifindex))
    }
    .await;
    let mut st = lock(state);
    let (mut new, macs, ifindex) = match result {
        Ok(v) => v,
        Err(e) => {
            st.reload_failures += 1;
            return Err(e);
        }
    };
    if let Some(m) = st.xdp_mode_override {
        new.xdp_mode = m;
    }
    let fixed = restart_fields(&st.cfg, &new);
    if !fixed.is_empty() {
        st.reload_failures += 1;
        bail!(
            "{}: changing {} needs a restart (fixed when `lb run` starts); nothing was \
             reloaded (restart the controller, or put the running values back)",
            path.display(),
            fixed.join(", ")
        );
    }
    let old = std::mem::replace(&mut st.cfg, new);
    let old_rt = st.rt.clone();
    st.rt.macs = macs;
    st.rt.ifindex = ifindex;
    if let Err(e) = apply(&mut st) {
        // Put the old config back (and re-apply it) rather than run half of each.
        st.cfg = old;
        st.rt = old_rt;
        let _ = apply(&mut st);
        st.reload_failures += 1;
        return Err(e);
    }
    st.reloads += 1;
    st.checks = None;
    st.checks = Some(health::start(&st.cfg, htx.clone()));
    log::info!("reloaded {}", path.display());
    Ok(())
}

/// The fields of `new` that differ from the running `old` but are fixed for the life
/// of `lb run`: the attached interface and mode, the pin directory, the map sizes, the
/// listening sockets and the VRRP instance. A reload that changes any of them is
/// refused whole, so what runs is always what `lb status` says and the file says.
pub fn restart_fields(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if new.instance != old.instance {
        out.push("instance");
    }
    if new.interface != old.interface {
        out.push("interface");
    }
    if new.xdp_mode != old.xdp_mode {
        out.push("xdp_mode");
    }
    if new.conntrack_size != old.conntrack_size {
        out.push("conntrack_size");
    }
    if new.metrics != old.metrics {
        out.push("metrics");
    }
    if new.admin_socket() != old.admin_socket() {
        out.push("admin_socket");
    }
    if new.failover != old.failover {
        out.push("failover");
    }
    out
}

async fn admin_server(path: PathBuf, state: Shared, htx: mpsc::Sender<health::Transition>) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            log::error!("admin socket {}: {e}", path.display());
            return;
        }
    };
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let htx = htx.clone();
        tokio::spawn(async move {
            let (r, w) = conn.into_split();
            serve_conn(r, w, |req| {
                let (state, htx) = (state.clone(), htx.clone());
                async move { handle(&state, &htx, req).await }
            })
            .await;
        });
    }
}

/// Answers the request lines of one admin connection until it closes: one JSON reply
/// per line. A line that is not UTF-8 or not a request gets an error reply and the
/// next line is served; a line longer than [`MAX_REQUEST_LINE`] gets an error reply
/// and the connection is closed (the rest of it cannot be framed without reading it).
pub async fn serve_conn<R, W, H, F>(r: R, mut w: W, mut handle: H)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
    H: FnMut(Request) -> F,
    F: std::future::Future<Output = serde_json::Value>,
{
    use tokio::io::AsyncReadExt as _;
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        // One byte past the limit tells a line of exactly the limit from a longer one.
        let limit = MAX_REQUEST_LINE as u64 + 1;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_REQUEST_LINE {
            let e = format!("request line longer than {MAX_REQUEST_LINE} bytes; closing");
            let _ = reply(&mut w, &error_reply(e)).await;
            return;
        }
        let answer = match std::str::from_utf8(&line) {
            Err(e) => error_reply(format!("bad request: not UTF-8 ({e})")),
            Ok(text) => match serde_json::from_str::<Request>(text) {
                Ok(req) => handle(req).await,
                Err(e) => error_reply(format!("bad request: {e}")),
            },
        };
        if reply(&mut w, &answer).await.is_err() {
            return;
        }
    }
}

/// The reply to a request that failed: `{"ok": false, "error": ...}`.
fn error_reply(message: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({"ok": false, "error": message.to_string()})
}

async fn reply<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    v: &serde_json::Value,
) -> std::io::Result<()> {
    let mut out = v.to_string();
    out.push('\n');
    w.write_all(out.as_bytes()).await
}

async fn handle(
    state: &Shared,
    htx: &mpsc::Sender<health::Transition>,
    req: Request,
) -> serde_json::Value {
    let err = |e: anyhow::Error| error_reply(format!("{e:#}"));
    match req {
        Request::Status {} => match status(&lock(state)) {
            Ok(s) => serde_json::json!({"ok": true, "status": s}),
            Err(e) => err(e),
        },
        Request::Reload {} => match reload(state, htx).await {
            Ok(()) => serde_json::json!({"ok": true}),
            Err(e) => err(e),
        },
        Request::Drain { backend }
        | Request::Enable { backend }
        | Request::Weight { backend, .. } => {
            let mut st = lock(state);
            if !st
                .cfg
                .services()
                .any(|s| s.backends.iter().any(|b| b.address == backend))
            {
                return err(anyhow::anyhow!("no backend {backend} in the config"));
            }
            let before = st.rt.admin.get(&backend).copied();
            match req {
                Request::Drain { .. } => {
                    st.rt.admin.insert(backend, AdminState::Drained);
                }
                Request::Enable { .. } => {
                    st.rt.admin.remove(&backend);
                }
                Request::Weight { weight, .. } => {
                    if weight > 1_000_000 {
                        return err(anyhow::anyhow!("weight must be at most 1000000"));
                    }
                    st.rt.admin.insert(backend, AdminState::Weight(weight));
                }
                _ => {}
            }
            match apply(&mut st) {
                Ok(n) => serde_json::json!({"ok": true, "rings_rewritten": n}),
                Err(e) => {
                    match before {
                        Some(b) => st.rt.admin.insert(backend, b),
                        None => st.rt.admin.remove(&backend),
                    };
                    let _ = apply(&mut st);
                    err(e)
                }
            }
        }
    }
}

/// The status document `lb status --json` prints and the metrics are built from.
pub fn status(st: &State) -> anyhow::Result<serde_json::Value> {
    let maps = &st.dp.maps;
    let mut services = Vec::new();
    for s in st.cfg.services() {
        let (id, _) = st
            .rec
            .service_ids
            .get(&s.name)
            .copied()
            .context("service without id")?;
        let c = sum(&maps.stats_service.get(&id, 0)?);
        let ring = st.rec.ring(id).unwrap_or(&[]);
        let mut backends = Vec::new();
        for b in &s.backends {
            let bid = st.rec.backend_ids.get(&b.address).copied().unwrap_or(0);
            let bc = sum(&maps.stats_backend.get(&bid, 0)?);
            let checks = st.checks.as_ref().and_then(|c| c.counters.get(&b.address));
            backends.push(serde_json::json!({
                "address": b.address,
                "id": bid,
                "weight": b.weight,
                "effective_weight": st.rt.effective_weight(b),
                "health": if st.rt.down.contains(&b.address) { "down" } else { "up" },
                "admin": st.rt.admin.get(&b.address).map(|a| match a {
                    AdminState::Drained => "drained".to_owned(),
                    AdminState::Weight(w) => format!("weight {w}"),
                }),
                "ring_slots": ring.iter().filter(|x| **x == bid).count(),
                "packets": bc.packets,
                "bytes": bc.bytes,
                "checks_ok": checks.map(|c| c.ok.load(std::sync::atomic::Ordering::Relaxed)),
                "checks_failed": checks.map(|c| c.failed.load(std::sync::atomic::Ordering::Relaxed)),
                "transitions": checks.map(|c| c.transitions.load(std::sync::atomic::Ordering::Relaxed)),
            }));
        }
        services.push(serde_json::json!({
            "name": s.name, "vip": s.vip, "proto": s.proto, "port": s.port, "mode": s.mode,
            "id": id, "ring_size": ring.len(), "packets": c.packets, "bytes": c.bytes,
            "backends": backends,
        }));
    }
    let mut reasons = serde_json::Map::new();
    for (i, name) in lb_common::reason::NAMES.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        let c = sum(&maps.stats_reason.get(&(i as u32), 0)?);
        reasons.insert(
            (*name).into(),
            serde_json::json!({"packets": c.packets, "bytes": c.bytes}),
        );
    }
    Ok(serde_json::json!({
        "instance": st.cfg.instance,
        "interface": st.cfg.interface,
        "adopted": st.dp.adopted,
        "services": services,
        "reasons": reasons,
        "conntrack_entries": maps.conntrack_len(),
        "conntrack_size": maps.conntrack_size()?,
        "ring_rebuilds": st.rec.ring_rebuilds,
        "reloads": st.reloads,
        "reload_failures": st.reload_failures,
        "failover": st.vrrp.as_ref().map(|t| serde_json::to_value(t.status()).unwrap_or_default()),
    }))
}

/// Prometheus text exposition of [`status`].
pub fn metrics_text(st: &State) -> anyhow::Result<String> {
    Ok(render_metrics(&status(st)?))
}

/// A label value as the Prometheus text format writes it: backslash, `"` and newline
/// escaped, so no value can end its label or its line and forge another series.
/// (Service names are also limited to `[A-Za-z0-9_.-]` by config validation; this
/// holds whatever a value contains.)
pub fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The metrics of a [`status`] document.
pub fn render_metrics(s: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| label_value(v.as_str().unwrap_or(""));
    let mut o = String::new();
    let _ = writeln!(o, "# TYPE lb_service_packets_total counter");
    let _ = writeln!(o, "# TYPE lb_service_bytes_total counter");
    let _ = writeln!(o, "# TYPE lb_backend_packets_total counter");
    let _ = writeln!(o, "# TYPE lb_backend_bytes_total counter");
    let _ = writeln!(o, "# TYPE lb_backend_up gauge");
    let _ = writeln!(o, "# TYPE lb_backend_ring_slots gauge");
    let _ = writeln!(o, "# TYPE lb_health_transitions_total counter");
    for svc in s["services"].as_array().into_iter().flatten() {
        let name = text(&svc["name"]);
        let _ = writeln!(
            o,
            "lb_service_packets_total{{service=\"{name}\"}} {}",
            svc["packets"]
        );
        let _ = writeln!(
            o,
            "lb_service_bytes_total{{service=\"{name}\"}} {}",
            svc["bytes"]
        );
        for b in svc["backends"].as_array().into_iter().flatten() {
            let l = format!("service=\"{name}\",backend=\"{}\"", text(&b["address"]));
            let _ = writeln!(o, "lb_backend_packets_total{{{l}}} {}", b["packets"]);
            let _ = writeln!(o, "lb_backend_bytes_total{{{l}}} {}", b["bytes"]);
            let _ = writeln!(o, "lb_backend_up{{{l}}} {}", u8::from(b["health"] == "up"));
            let _ = writeln!(o, "lb_backend_ring_slots{{{l}}} {}", b["ring_slots"]);
            let _ = writeln!(
                o,
                "lb_health_transitions_total{{{l}}} {}",
                b["transitions"].as_u64().unwrap_or(0)
            );
        }
    }
    let _ = writeln!(o, "# TYPE lb_exit_packets_total counter");
    for (reason, c) in s["reasons"].as_object().into_iter().flatten() {
        let _ = writeln!(
            o,
            "lb_exit_packets_total{{reason=\"{}\"}} {}",
            label_value(reason),
            c["packets"]
        );
    }
    let _ = writeln!(
        o,
        "# TYPE lb_conntrack_entries gauge\nlb_conntrack_entries {}",
        s["conntrack_entries"]
    );
    let _ = writeln!(
        o,
        "# TYPE lb_conntrack_size gauge\nlb_conntrack_size {}",
        s["conntrack_size"]
    );
    let _ = writeln!(
        o,
        "# TYPE lb_ring_rebuilds_total counter\nlb_ring_rebuilds_total {}",
        s["ring_rebuilds"]
    );
    let _ = writeln!(
        o,
        "# TYPE lb_reloads_total counter\nlb_reloads_total {}",
        s["reloads"]
    );
    let _ = writeln!(
        o,
        "# TYPE lb_reload_failures_total counter\nlb_reload_failures_total {}",
        s["reload_failures"]
    );
    if let Some(f) = s["failover"].as_object() {
        let _ = writeln!(o, "# TYPE lb_vrrp_state gauge");
        let state = f.get("state").map(text).unwrap_or_default();
        let _ = writeln!(o, "lb_vrrp_state{{state=\"{state}\"}} 1");
        for (k, v) in f
            .get("counters")
            .and_then(|c| c.as_object())
            .into_iter()
            .flatten()
        {
            let _ = writeln!(o, "lb_vrrp_{k} {v}");
        }
    }
    o
}

async fn metrics_server(addr: std::net::SocketAddr, state: Shared) {
    use axum::{Router, http::StatusCode, routing::get};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let state = state.clone();
            async move {
                match metrics_text(&lock(&state)) {
                    Ok(t) => (StatusCode::OK, t),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")),
                }
            }
        }),
    );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            if let Err(e) = axum::serve(l, app).await {
                log::error!("metrics server: {e}");
            }
        }
        Err(e) => log::error!("metrics on {addr}: {e}"),
    }
}

/// Sends one admin request and returns the reply (the CLI side).
pub async fn request(socket: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    let conn = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "connecting to {} (is `lb run` running for this instance?)",
                socket.display()
            )
        })?;
    let (r, mut w) = conn.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(r).lines();
    let reply = lines
        .next_line()
        .await?
        .context("the controller closed the connection")?;
    let v: serde_json::Value = serde_json::from_str(&reply)?;
    if v["ok"] != true {
        bail!("{}", v["error"].as_str().unwrap_or("request failed"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("web"), "web");
        assert_eq!(label_value(r#"a"b"#), r#"a\"b"#);
        assert_eq!(label_value("a\\b"), r"a\\b");
        assert_eq!(label_value("a\nb"), r"a\nb");
    }

    /// A service name carrying `"`, `}` and a newline cannot end its label or line and
    /// forge a series (config validation refuses such names too; this is the second
    /// line of defence).
    #[test]
    fn metrics_cannot_be_forged_through_a_label() {
        let evil = "x\"} 1\nlb_backend_up{service=\"forged\",backend=\"10.0.0.9\"} 1\n#";
        let status = serde_json::json!({
            "services": [{
                "name": evil, "packets": 1, "bytes": 2,
                "backends": [{"address": "10.0.0.1", "packets": 3, "bytes": 4,
                              "health": "up", "ring_slots": 5, "transitions": 0}],
            }],
            "reasons": {"tx_l2": {"packets": 7}},
            "conntrack_entries": 0, "conntrack_size": 64, "ring_rebuilds": 0,
            "reloads": 0, "reload_failures": 0,
            "failover": {"state": "Master", "counters": {"adverts_rx": 1}},
        });
        let text = render_metrics(&status);
        for line in text.lines() {
            assert!(
                !line.starts_with("lb_backend_up{service=\"forged\""),
                "forged series:\n{text}"
            );
            if line.starts_with('#') {
                assert!(line.starts_with("# TYPE "), "stray comment line: {line:?}");
                continue;
            }
            // name{labels} value, or name value: one sample per line.
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line:?} in\n{text}");
        }
        let escaped = r#"x\"} 1\nlb_backend_up{service=\"forged\",backend=\"10.0.0.9\"} 1\n#"#;
        assert!(
            text.contains(&format!(
                "lb_service_packets_total{{service=\"{escaped}\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("lb_vrrp_state{state=\"Master\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lb_exit_packets_total{reason=\"tx_l2\"} 7\n"),
            "{text}"
        );
    }

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!("instance = \"t\"\ninterface = \"eth0\"\n{extra}\n"),
            "t.toml",
        )
        .unwrap()
    }

    /// `lb reload` used to compare only interface and instance and report success
    /// while the rest of these kept their start-up values.
    #[test]
    fn reload_names_every_field_fixed_at_start() {
        let base = config("");
        assert!(restart_fields(&base, &config("")).is_empty());
        // Applied by a reload: not listed.
        assert!(restart_fields(&base, &config("hash_seed = 9\nudp_timeout_ms = 5000")).is_empty());
        let cases = [
            ("conntrack_size = 4096", "conntrack_size"),
            ("metrics = \"127.0.0.1:9200\"", "metrics"),
            ("admin_socket = \"/run/lb/other.sock\"", "admin_socket"),
            ("xdp_mode = \"skb\"", "xdp_mode"),
            (
                "[failover]\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nadvert_interval_ms = 100\nvips = [\"10.0.0.1\"]",
                "failover",
            ),
        ];
        for (extra, field) in cases {
            assert_eq!(restart_fields(&base, &config(extra)), [field], "{extra}");
        }
        let moved = Config::parse("instance = \"u\"\ninterface = \"eth1\"\n", "t.toml").unwrap();
        // The admin socket follows the instance: both are named.
        assert_eq!(
            restart_fields(&base, &moved),
            ["instance", "interface", "admin_socket"]
        );
        // The default admin socket written out explicitly changes nothing.
        assert!(restart_fields(&base, &config("admin_socket = \"/run/lb/t.sock\"")).is_empty());
    }

    /// Runs `serve_conn` over an in-memory pipe with a handler that answers
    /// `{"ok": true, "cmd": ...}`; returns the client's ends.
    fn serve() -> (
        tokio::io::WriteHalf<tokio::io::DuplexStream>,
        tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    ) {
        let (client, server) = tokio::io::duplex(4096);
        let (sr, sw) = tokio::io::split(server);
        tokio::spawn(serve_conn(sr, sw, |req| async move {
            serde_json::json!({"ok": true, "cmd": format!("{req:?}")})
        }));
        let (cr, cw) = tokio::io::split(client);
        (cw, tokio::io::BufReader::new(cr).lines())
    }

    async fn answer(
        lines: &mut tokio::io::Lines<
            tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        >,
    ) -> Option<serde_json::Value> {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an answer within 10 s")
            .expect("reading the answer")?;
        Some(serde_json::from_str(&line).expect("JSON answer"))
    }

    #[test]
    fn the_watchdog_reads_ip_link_show() {
        use std::os::unix::process::ExitStatusExt as _;
        let out = |code: i32, stdout: &str| std::process::Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        };
        assert!(reports_xdp(&out(
            0,
            r#"[{"xdp":{"mode":1,"prog":{"id":3}}}]"#
        )));
        assert!(!reports_xdp(&out(0, r#"[{"ifname":"eth0"}]"#)));
        // The interface is gone.
        assert!(!reports_xdp(&out(1, "")));
        // Several programs: cannot tell, not a fault.
        assert!(reports_xdp(&out(
            0,
            r#"[{"xdp":{"mode":4,"attached":[]}}]"#
        )));
    }

    #[tokio::test]
    async fn invalid_utf8_gets_an_error_and_the_next_line_is_served() {
        let (mut w, mut lines) = serve();
        w.write_all(b"{\"cmd\":\"st\xffatus\"}\n{\"cmd\":\"status\"}\n")
            .await
            .unwrap();
        let a = answer(&mut lines).await.unwrap();
        assert_eq!(a["ok"], false, "{a}");
        assert!(a["error"].as_str().unwrap().contains("UTF-8"), "{a}");
        let b = answer(&mut lines).await.unwrap();
        assert_eq!(b["ok"], true, "{b}");
        assert_eq!(b["cmd"], "Status");
    }

    #[tokio::test]
    async fn an_overlong_line_gets_an_error_and_the_connection_closes() {
        let (mut w, mut lines) = serve();
        // A line of exactly the limit is read (and refused as JSON, not for size).
        let mut exact = vec![b' '; MAX_REQUEST_LINE];
        exact.push(b'\n');
        w.write_all(&exact).await.unwrap();
        let a = answer(&mut lines).await.unwrap();
        assert!(a["error"].as_str().unwrap().contains("bad request"), "{a}");
        // One byte more, and no newline in sight: the writer is still sending when
        // the server gives up, so write from a task.
        let writer = tokio::spawn(async move {
            let big = vec![b'x'; 4 * MAX_REQUEST_LINE];
            let _ = w.write_all(&big).await;
            w
        });
        let b = answer(&mut lines).await.unwrap();
        assert_eq!(b["ok"], false, "{b}");
        assert!(
            b["error"].as_str().unwrap().contains("longer than 65536"),
            "{b}"
        );
        assert!(
            answer(&mut lines).await.is_none(),
            "the connection stays open"
        );
        drop(writer.await);
    }

    #[tokio::test]
    async fn unknown_request_fields_are_refused() {
        let (mut w, mut lines) = serve();
        for req in [
            r#"{"cmd":"status","verbose":true}"#,
            r#"{"cmd":"drain","backend":"10.0.0.1","force":true}"#,
            r#"{"cmd":"reload","path":"/etc/other.toml"}"#,
        ] {
            w.write_all(format!("{req}\n").as_bytes()).await.unwrap();
            let a = answer(&mut lines).await.unwrap();
            assert_eq!(a["ok"], false, "{req}: {a}");
            assert!(
                a["error"].as_str().unwrap().contains("unknown field"),
                "{req}: {a}"
            );
        }
        w.write_all(b"{\"cmd\":\"drain\",\"backend\":\"10.0.0.1\"}\n")
            .await
            .unwrap();
        assert_eq!(answer(&mut lines).await.unwrap()["ok"], true);
    }
}
