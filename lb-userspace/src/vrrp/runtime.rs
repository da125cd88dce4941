//! The tokio event loop of one virtual router: feeds packets, timer expiries,
//! tracking changes and shutdown into the [`Machine`] and performs its actions.
//!
//! Everything runs on one task so actions are applied in the order the machine
//! returned them; only the gratuitous-ARP burst (which sleeps between packets) and
//! notify commands run on their own tasks.

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, error, info, warn};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::counters::Counters;
use super::net::{self, Announcer, Incoming, Link, VrrpSocket};
use super::packet::{self, Advert};
use super::state::{Action, Event, Machine, Params, State};
use super::{FaultReason, Role, TrackInputs, Tracker, VrrpConfig, sys};

/// How often the interface's carrier is polled for `track_interface`. Polling (vs a
/// netlink subscription) keeps this simple; 100 ms is far below any useful
/// Master_Down_Interval and costs one ioctl.
const IFACE_POLL: Duration = Duration::from_millis(100);
/// How long startup waits for the interface to get its source address (an IPv6
/// link-local stays tentative for ~1 s of DAD after the link comes up).
const SOURCE_WAIT: Duration = Duration::from_secs(10);
/// Bound on a notify command; a hung script must not pile up.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest VRRP message (255 IPv6 addresses) plus an IPv4 header with options.
const RECV_BUF: usize = packet::HEADER_LEN + 255 * 16 + 60;

struct Runtime {
    cfg: VrrpConfig,
    tracker: Tracker,
    link: Link,
    sock: VrrpSocket,
    announcer: Arc<Announcer>,
    machine: Machine,
    timer: Option<Instant>,
    burst: Option<JoinHandle<()>>,
    notify: Option<mpsc::UnboundedSender<State>>,
    fault: Option<FaultReason>,
    own_addrs: HashSet<IpAddr>,
    vip_set: HashSet<IpAddr>,
    warned_addr_mismatch: bool,
}

/// Finds the advert source: `unicast_src`, else the first IPv4 address that is not a
/// VIP, else the IPv6 link-local address (section 5.1.2.1 requires link-local).
fn pick_source(cfg: &VrrpConfig) -> Option<IpAddr> {
    if let Some(src) = cfg.unicast_src {
        return Some(src);
    }
    let addrs = sys::if_addrs(&cfg.interface).ok()?;
    addrs.into_iter().find(|a| match a {
        IpAddr::V4(_) => cfg.is_ipv4() && !cfg.vips.contains(a),
        IpAddr::V6(v6) => !cfg.is_ipv4() && sys::is_link_local(*v6),
    })
}

async fn open_socket(cfg: &VrrpConfig, link: &Link) -> anyhow::Result<VrrpSocket> {
    let deadline = Instant::now() + SOURCE_WAIT;
    loop {
        let attempt = match pick_source(cfg) {
            Some(src) => VrrpSocket::open(link, src, &cfg.unicast_peers)
                .with_context(|| format!("opening VRRP sockets on {} from {src}", link.name)),
            None => Err(anyhow::anyhow!(
                "no {} source address on {} (set `unicast_src` or add an address)",
                if cfg.is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6 link-local"
                },
                link.name
            )),
        };
        match attempt {
            Ok(s) => return Ok(s),
            // EADDRNOTAVAIL while an IPv6 address is tentative: wait for DAD.
            Err(e) if Instant::now() < deadline => {
                debug!("VRRP socket not ready yet: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e.context("hint: raw sockets need CAP_NET_RAW (run as root)"));
            }
        }
    }
}

pub(super) async fn run(
    cfg: VrrpConfig,
    tracker: Tracker,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let link = Link::lookup(&cfg.interface)?;
    // A node (re)starting is not master: drop VIPs a crashed predecessor left behind
    // (section 6.4.2: a Backup MUST NOT accept packets for the VIPs).
    if let Err(e) = net::del_vips(&link.name, &cfg.vips).await {
        warn!("removing leftover VIPs: {e:#}");
    }
    let sock = open_socket(&cfg, &link).await?;
    let announcer = Arc::new(
        Announcer::open(&link, &cfg.vips)
            .context("opening the gratuitous ARP / NA socket (needs CAP_NET_RAW)")?,
    );
    let machine = Machine::new(Params {
        priority: cfg.priority,
        advert_interval_cs: cfg.advert_interval_cs(),
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay(),
        primary: sock.src(),
    });
    info!(
        "VRRP vrid {} on {} from {}: priority {}, advert interval {} ms, {}, VIPs {:?}",
        cfg.vrid,
        link.name,
        sock.src(),
        cfg.priority,
        cfg.advert_interval_ms,
        if cfg.unicast_peers.is_empty() {
            "multicast".to_owned()
        } else {
            format!("unicast to {:?}", cfg.unicast_peers)
        },
        cfg.vips
    );
    let notify = cfg.notify.clone().map(|cmd| spawn_notifier(cmd, cfg.vrid));
    let mut rt = Runtime {
        own_addrs: HashSet::from([sock.src()]),
        vip_set: cfg.vips.iter().copied().collect(),
        cfg,
        tracker,
        link,
        sock,
        announcer,
        machine,
        timer: None,
        burst: None,
        notify,
        fault: None,
        warned_addr_mismatch: false,
    };
    let res = rt.event_loop(shutdown).await;
    rt.stop().await;
    res
}

impl Runtime {
    fn evaluate_fault(&self, inputs: TrackInputs) -> Option<FaultReason> {
        if self.cfg.track_interface && !sys::if_is_running(&self.link.name) {
            Some(FaultReason::InterfaceDown)
        } else if !inputs.xdp_attached {
            Some(FaultReason::XdpDetached)
        } else if self.cfg.fault_on_no_backend && !inputs.healthy_backends {
            Some(FaultReason::NoHealthyBackend)
        } else {
            None
        }
    }

    async fn event_loop(&mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut inputs = self.tracker.inputs();
        self.fault = self.evaluate_fault(*inputs.borrow_and_update());
        let first = match self.fault {
            Some(reason) => {
                warn!("VRRP starts in FAULT: {reason:?}");
                Event::Tracking { ok: false }
            }
            None => Event::Startup,
        };
        self.feed(first).await;

        tokio::pin!(shutdown);
        let mut poll = tokio::time::interval(IFACE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let refresh_every = self
            .cfg
            .garp_refresh_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        let mut refresh = tokio::time::interval(refresh_every.unwrap_or(Duration::from_secs(3600)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.reset();
        let mut buf = vec![0u8; RECV_BUF];
        let mut inputs_open = true;
        loop {
            let timer = self.timer;
            tokio::select! {
                // Shutdown first: a stopping node must not take over on the way out.
                biased;
                () = &mut shutdown => return Ok(()),
                () = sleep_until(timer), if timer.is_some() => self.feed(Event::Timer).await,
                r = self.sock.recv(&mut buf) => match r {
                    Ok(incoming) => self.on_packet(incoming, &buf).await,
                    Err(e) => {
                        error!("receiving VRRP: {e}");
                        // Do not spin on a persistent socket error.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                r = inputs.changed(), if inputs_open => {
                    // All trackers dropped: the last reported inputs stand.
                    inputs_open = r.is_ok();
                    self.retrack(*inputs.borrow_and_update()).await;
                }
                _ = poll.tick(), if self.cfg.track_interface => {
                    self.retrack(*inputs.borrow()).await;
                }
                _ = refresh.tick(), if refresh_every.is_some() => {
                    if self.machine.state() == State::Master {
                        self.announce_once();
                    }
                }
            }
        }
    }

    async fn retrack(&mut self, inputs: TrackInputs) {
        let fault = self.evaluate_fault(inputs);
        if fault == self.fault {
            return;
        }
        match fault {
            Some(r) => warn!("VRRP tracking: fault ({r:?})"),
            None => info!("VRRP tracking: recovered from {:?}", self.fault),
        }
        self.fault = fault;
        self.feed(Event::Tracking {
            ok: fault.is_none(),
        })
        .await;
    }

    async fn on_packet(&mut self, incoming: Incoming, buf: &[u8]) {
        let c = self.tracker.counters();
        let Incoming::Packet {
            src,
            dst,
            ttl,
            start,
            end,
        } = incoming
        else {
            Counters::inc(&c.malformed_ip);
            return;
        };
        if self.own_addrs.contains(&src) {
            return;
        }
        // Section 7.1: the TTL / hop limit MUST be 255 (proves the sender is on-link).
        if ttl != Some(packet::TTL) {
            Counters::inc(&c.bad_ttl);
            debug!("VRRP from {src}: TTL {ttl:?}, dropped");
            return;
        }
        let advert = match Advert::decode(&buf[start..end], src, dst) {
            Ok(a) => a,
            Err(e) => {
                c.malformed(&e);
                debug!("malformed VRRP from {src}: {e}");
                return;
            }
        };
        if advert.vrid != self.cfg.vrid {
            Counters::inc(&c.foreign_vrid);
            return;
        }
        if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&src) {
            Counters::inc(&c.unknown_peer);
            debug!("VRRP from {src}, not a unicast peer: dropped");
            return;
        }
        let theirs: HashSet<IpAddr> = advert.addrs.iter().copied().collect();
        if theirs != self.vip_set || theirs.len() != advert.addrs.len() {
            // Section 7.1 "MAY verify": a misconfiguration worth a log, not a drop.
            Counters::inc(&c.addr_mismatch);
            if !self.warned_addr_mismatch {
                self.warned_addr_mismatch = true;
                warn!(
                    "VRRP vrid {} from {src} lists {:?}, we have {:?} (logged once)",
                    self.cfg.vrid, advert.addrs, self.cfg.vips
                );
            }
        }
        Counters::inc(&c.adverts_rx);
        if advert.priority == 0 {
            Counters::inc(&c.priority_zero_rx);
        }
        self.feed(Event::Advert {
            src,
            priority: advert.priority,
            max_advert_int_cs: advert.max_advert_int_cs,
        })
        .await;
    }

    async fn feed(&mut self, event: Event) {
        let actions = self.machine.handle(event, Instant::now());
        for action in actions {
            self.apply(action).await;
        }
        self.tracker.publish(Role {
            state: self.machine.state(),
            master: self.machine.master(),
            fault: self.fault.filter(|_| self.machine.state() == State::Fault),
        });
    }

    async fn apply(&mut self, action: Action) {
        let c = self.tracker.counters();
        match action {
            Action::SendAdvert { priority } => {
                let advert = Advert {
                    vrid: self.cfg.vrid,
                    priority,
                    max_advert_int_cs: self.cfg.advert_interval_cs(),
                    addrs: self.cfg.vips.clone(),
                };
                let (sent, err) = self.sock.send(&advert);
                for _ in 0..sent {
                    Counters::inc(&c.adverts_tx);
                    if priority == 0 {
                        Counters::inc(&c.priority_zero_tx);
                    }
                }
                if let Some(e) = err {
                    Counters::inc(&c.send_errors);
                    debug!("sending VRRP advert: {e}");
                }
            }
            Action::TakeVips => {
                if let Err(e) = net::add_vips(&self.link.name, &self.cfg.vips).await {
                    error!("adding VIPs: {e:#}");
                }
                self.start_burst();
            }
            Action::ReleaseVips => {
                if let Some(b) = self.burst.take() {
                    b.abort();
                }
                if let Err(e) = net::del_vips(&self.link.name, &self.cfg.vips).await {
                    error!("removing VIPs: {e:#}");
                }
            }
            Action::SetTimer(at) => self.timer = Some(at),
            Action::CancelTimer => self.timer = None,
            Action::Transition { from, to } => {
                Counters::inc(&c.transitions);
                let master = self
                    .machine
                    .master()
                    .map_or_else(|| "unknown".to_owned(), |m| m.to_string());
                info!(
                    "VRRP vrid {} transition {from} -> {to} (master {master}, priority {})",
                    self.cfg.vrid, self.cfg.priority
                );
                if let Some(n) = &self.notify {
                    let _ = n.send(to);
                }
            }
        }
    }

    fn announce_once(&self) {
        announce(&self.announcer, self.tracker.counters());
    }

    /// The first announcement goes out now, the rest on a task so the event loop
    /// keeps answering adverts.
    fn start_burst(&mut self) {
        if let Some(b) = self.burst.take() {
            b.abort();
        }
        if self.cfg.garp_count == 0 {
            return;
        }
        self.announce_once();
        let remaining = self.cfg.garp_count - 1;
        if remaining == 0 {
            return;
        }
        let announcer = Arc::clone(&self.announcer);
        let tracker = self.tracker.clone();
        let gap = Duration::from_millis(u64::from(self.cfg.garp_interval_ms));
        self.burst = Some(tokio::spawn(async move {
            for _ in 0..remaining {
                tokio::time::sleep(gap).await;
                announce(&announcer, tracker.counters());
            }
        }));
    }

    /// Graceful stop: priority 0 if master, VIPs removed in every case.
    async fn stop(&mut self) {
        self.feed(Event::Shutdown).await;
        if let Some(b) = self.burst.take() {
            b.abort();
        }
        if let Err(e) = net::del_vips(&self.link.name, &self.cfg.vips).await {
            error!("removing VIPs on stop: {e:#}");
        }
        info!("VRRP vrid {} stopped", self.cfg.vrid);
    }
}

fn announce(announcer: &Announcer, c: &Counters) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let (sent, err) = announcer.announce();
    let counter = if announcer.is_v4() {
        &c.garp_tx
    } else {
        &c.na_tx
    };
    counter.fetch_add(sent as u64, Relaxed);
    if let Some(e) = err {
        Counters::inc(&c.send_errors);
        if !WARNED.swap(true, Relaxed) {
            warn!("sending gratuitous ARP / NA: {e} (logged once)");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Runs the notify command for each transition, one at a time and in order, so a
/// script sees MASTER then BACKUP, never the reverse.
fn spawn_notifier(cmd: String, vrid: u8) -> mpsc::UnboundedSender<State> {
    let (tx, mut rx) = mpsc::unbounded_channel::<State>();
    tokio::spawn(async move {
        while let Some(state) = rx.recv().await {
            // `sh -c 'CMD "$@"' sh STATE VRID`: CMD may carry its own arguments and
            // receives state and VRID as its last two.
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{cmd} \"$@\""))
                .arg("sh")
                .arg(state.name())
                .arg(vrid.to_string())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(NOTIFY_TIMEOUT, child).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => warn!("notify `{cmd}` {state}: {s}"),
                Ok(Err(e)) => warn!("notify `{cmd}`: {e}"),
                Err(_) => warn!("notify `{cmd}` {state}: killed after {NOTIFY_TIMEOUT:?}"),
            }
        }
    });
    tx
}
