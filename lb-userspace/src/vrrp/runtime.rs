//! The tokio event loop of one virtual router: feeds packets, timer expiries,
//! tracking changes and shutdown into the [`Machine`] and performs its actions.
//!
//! Everything runs on one task so actions are applied in the order the machine
//! returned them; only the gratuitous-ARP burst (which sleeps between packets) and
//! notify commands run on their own tasks.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, error, info, warn};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::counters::Counters;
use super::net::{self, Announcer, Incoming, Link, VrrpSocket};
use super::packet::{self, Advert, DecodeError};
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
/// Dropped packets are logged at most once per this interval per reason (the first
/// at once), with the count of those not logged: a flood cannot fill the log.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

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
    filter: Filter,
    drop_log: DropLog,
}

/// Why a received packet never reaches the state machine. Section 7.1: none of them
/// may change the node's state; each is counted and logged (rate-limited).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rejected {
    /// The IP header was unusable.
    IpHeader,
    /// Sent from this node's own advert source.
    OwnSource,
    /// TTL / hop limit not 255 (section 7.1): sent from off-link or forged.
    Ttl(Option<u8>),
    Malformed(DecodeError),
    /// Another virtual router on the link: normal on a shared LAN, so debug only.
    ForeignVrid(u8),
    /// Unicast mode: not one of the configured peers.
    UnknownPeer,
    /// Our VRID, but not our address list (section 7.1 "MAY verify"; keepalived
    /// drops these, and so do we: acting on one let it take the VIPs away).
    AddrList(Vec<IpAddr>),
}

impl Rejected {
    /// The rate limiter's key and the log's word for it.
    fn reason(&self) -> &'static str {
        match self {
            Rejected::IpHeader => "ip_header",
            Rejected::OwnSource => "own_src",
            Rejected::Ttl(_) => "ttl",
            Rejected::Malformed(DecodeError::NoAddrs) | Rejected::AddrList(_) => "addr_list",
            Rejected::Malformed(e) => e.reason(),
            Rejected::ForeignVrid(_) => "foreign_vrid",
            Rejected::UnknownPeer => "unknown_peer",
        }
    }

    fn counter<'a>(&self, c: &'a Counters) -> &'a AtomicU64 {
        match self {
            Rejected::IpHeader => &c.malformed_ip,
            Rejected::OwnSource => &c.own_src,
            Rejected::Ttl(_) => &c.bad_ttl,
            Rejected::Malformed(e) => c.malformed_counter(e),
            Rejected::ForeignVrid(_) => &c.foreign_vrid,
            Rejected::UnknownPeer => &c.unknown_peer,
            Rejected::AddrList(_) => &c.addr_list_err,
        }
    }

    fn level(&self) -> log::Level {
        match self {
            Rejected::ForeignVrid(_) => log::Level::Debug,
            _ => log::Level::Info,
        }
    }

    fn describe(&self, vips: &[IpAddr]) -> String {
        match self {
            Rejected::IpHeader => "unusable IP header".into(),
            Rejected::OwnSource => "our own advert source address as its source".into(),
            Rejected::Ttl(ttl) => format!("TTL {ttl:?}, not 255 (off-link or forged)"),
            Rejected::Malformed(e) => format!("malformed: {e}"),
            Rejected::ForeignVrid(v) => format!("VRID {v}, not ours"),
            Rejected::UnknownPeer => "not a configured unicast peer".into(),
            Rejected::AddrList(theirs) => {
                format!("address list {theirs:?} is not ours {vips:?}")
            }
        }
    }
}

/// The receive checks of section 7.1 that need this node's configuration, as a pure
/// function of the packet (unit-tested without sockets).
#[derive(Debug, Clone)]
struct Filter {
    vrid: u8,
    own_addrs: HashSet<IpAddr>,
    vips: HashSet<IpAddr>,
    unicast_peers: Vec<IpAddr>,
}

impl Filter {
    fn new(cfg: &VrrpConfig, src: IpAddr) -> Filter {
        Filter {
            vrid: cfg.vrid,
            own_addrs: HashSet::from([src]),
            vips: cfg.vips.iter().copied().collect(),
            unicast_peers: cfg.unicast_peers.clone(),
        }
    }

    /// The advert in VRRP message `msg` from `src` to `dst`, if it may reach the
    /// state machine.
    fn check(
        &self,
        src: IpAddr,
        dst: IpAddr,
        ttl: Option<u8>,
        msg: &[u8],
    ) -> Result<Advert, Rejected> {
        if self.own_addrs.contains(&src) {
            return Err(Rejected::OwnSource);
        }
        // Section 7.1: the TTL / hop limit MUST be 255 (proves the sender is on-link).
        if ttl != Some(packet::TTL) {
            return Err(Rejected::Ttl(ttl));
        }
        let advert = Advert::decode(msg, src, dst).map_err(Rejected::Malformed)?;
        if advert.vrid != self.vrid {
            return Err(Rejected::ForeignVrid(advert.vrid));
        }
        if !self.unicast_peers.is_empty() && !self.unicast_peers.contains(&src) {
            return Err(Rejected::UnknownPeer);
        }
        // Exactly our VIPs, each once, in any order (keepalived checks the count, then
        // that each of its VIPs is present).
        let theirs: HashSet<IpAddr> = advert.addrs.iter().copied().collect();
        if theirs != self.vips || advert.addrs.len() != self.vips.len() {
            return Err(Rejected::AddrList(advert.addrs));
        }
        Ok(advert)
    }

    /// The state-machine event of the packet, if it passes [`Filter::check`].
    fn event(
        &self,
        src: IpAddr,
        dst: IpAddr,
        ttl: Option<u8>,
        msg: &[u8],
    ) -> Result<Event, Rejected> {
        let advert = self.check(src, dst, ttl, msg)?;
        Ok(Event::Advert {
            src,
            priority: advert.priority,
            max_advert_int_cs: advert.max_advert_int_cs,
        })
    }
}

/// Rate limit of drop logs: the first drop of each reason is logged at once, then at
/// most one line per reason per `every`, saying how many of that reason went unlogged
/// since the line before. Clock-injected for the tests.
#[derive(Debug)]
struct DropLog {
    every: Duration,
    /// reason -> (when last logged, drops since then not logged)
    last: HashMap<&'static str, (Instant, u64)>,
}

impl DropLog {
    fn new(every: Duration) -> DropLog {
        DropLog {
            every,
            last: HashMap::new(),
        }
    }

    /// `Some(unlogged)` when a drop of `reason` at `now` is to be logged, with the
    /// number of drops of that reason suppressed since the last line; `None` when it
    /// is to be counted only.
    fn admit(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(reason) {
            None => {
                self.last.insert(reason, (now, 0));
                Some(0)
            }
            Some((at, skipped)) if now.saturating_duration_since(*at) >= self.every => {
                *at = now;
                Some(std::mem::take(skipped))
            }
            Some((_, skipped)) => {
                *skipped += 1;
                None
            }
        }
    }
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
        filter: Filter::new(&cfg, sock.src()),
        drop_log: DropLog::new(DROP_LOG_EVERY),
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
        let (src, checked) = match incoming {
            Incoming::Packet {
                src,
                dst,
                ttl,
                start,
                end,
            } => (src, self.filter.event(src, dst, ttl, &buf[start..end])),
            Incoming::BadIpHeader => (IpAddr::from([0, 0, 0, 0]), Err(Rejected::IpHeader)),
        };
        let event = match checked {
            Ok(e) => e,
            Err(r) => return self.dropped(src, &r),
        };
        let c = self.tracker.counters();
        Counters::inc(&c.adverts_rx);
        if matches!(event, Event::Advert { priority: 0, .. }) {
            Counters::inc(&c.priority_zero_rx);
        }
        self.feed(event).await;
    }

    /// Counts a dropped packet and logs it, rate-limited per reason.
    fn dropped(&mut self, src: IpAddr, r: &Rejected) {
        Counters::inc(r.counter(self.tracker.counters()));
        let level = r.level();
        if !log::log_enabled!(level) {
            return;
        }
        if let Some(unlogged) = self.drop_log.admit(r.reason(), Instant::now()) {
            let from = match r {
                Rejected::IpHeader => String::new(),
                _ => format!(" from {src}"),
            };
            let more = if unlogged > 0 {
                format!(
                    " (and {unlogged} more {} drops since the last such line)",
                    r.reason()
                )
            } else {
                String::new()
            };
            log::log!(
                level,
                "VRRP vrid {}: dropped a packet{from} ({}): {}{more}",
                self.cfg.vrid,
                r.reason(),
                r.describe(&self.cfg.vips)
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const GROUP: IpAddr = IpAddr::V4(packet::GROUP_V4);
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
    const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101));

    fn config(vips: &[IpAddr]) -> VrrpConfig {
        let mut c: VrrpConfig = toml::from_str(
            "interface = \"eth0\"\nvrid = 51\npriority = 100\nadvert_interval_ms = 100\nvips = [\"10.0.0.100\"]\n",
        )
        .unwrap();
        c.vips = vips.to_vec();
        c
    }

    /// A well-formed advert from `src` (checksum right) listing `addrs`.
    fn advert(src: IpAddr, vrid: u8, priority: u8, addrs: &[IpAddr]) -> Vec<u8> {
        Advert {
            vrid,
            priority,
            max_advert_int_cs: 10,
            addrs: addrs.to_vec(),
        }
        .encode(src, GROUP)
        .unwrap()
    }

    /// A node of priority 100 that has become master.
    fn master(t0: Instant) -> Machine {
        let mut m = Machine::new(Params {
            priority: 100,
            advert_interval_cs: 10,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: ME,
        });
        m.handle(Event::Startup, t0);
        let t = m.timer().unwrap();
        m.handle(Event::Timer, t);
        assert_eq!(m.state(), State::Master);
        m
    }

    /// Higher-priority adverts whose address list is not ours (none at all, a
    /// foreign address, our VIP twice, one of ours missing) never reach the state
    /// machine, so the master keeps its VIPs; a correct one makes it yield. They used
    /// to be counted and then acted on.
    #[test]
    fn adverts_with_a_wrong_address_list_never_reach_the_machine() {
        let f = Filter::new(&config(&[VIP, VIP2]), ME);
        let other: IpAddr = "10.9.9.9".parse().unwrap();
        let bad: [(&str, Vec<IpAddr>); 5] = [
            ("no address", vec![]),
            ("a foreign address", vec![VIP, other]),
            ("our VIP twice", vec![VIP, VIP]),
            ("one of ours missing", vec![VIP]),
            ("ours and one more", vec![VIP, VIP2, other]),
        ];
        let t0 = Instant::now();
        for (what, addrs) in &bad {
            let mut m = master(t0);
            let msg = advert(PEER, 51, 254, addrs);
            let r = f.event(PEER, GROUP, Some(255), &msg);
            let Err(r) = r else {
                panic!("{what}: accepted {r:?}");
            };
            assert_eq!(r.reason(), "addr_list", "{what}: {r:?}");
            let c = Counters::default();
            Counters::inc(r.counter(&c));
            assert_eq!(c.snapshot().addr_list_err, 1, "{what}");
            assert_eq!(r.level(), log::Level::Info, "{what}");
            assert_eq!(m.state(), State::Master, "{what}");
            // What on_packet would have fed without the check: the master yields.
            let ev = Event::Advert {
                src: PEER,
                priority: 254,
                max_advert_int_cs: 10,
            };
            assert!(m.handle(ev, t0).contains(&Action::ReleaseVips), "{what}");
        }
        // Any order of exactly our VIPs is ours, and is acted on.
        let mut m = master(t0);
        let ev = f
            .event(PEER, GROUP, Some(255), &advert(PEER, 51, 254, &[VIP2, VIP]))
            .unwrap();
        assert!(m.handle(ev, t0).contains(&Action::ReleaseVips));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn every_other_drop_has_its_reason_and_counter() {
        let f = Filter::new(&config(&[VIP]), ME);
        let good = advert(PEER, 51, 100, &[VIP]);
        /// What, source, TTL, message, expected reason.
        type Case = (&'static str, IpAddr, Option<u8>, Vec<u8>, &'static str);
        let cases: [Case; 5] = [
            (
                "our own source",
                ME,
                Some(255),
                advert(ME, 51, 100, &[VIP]),
                "own_src",
            ),
            ("TTL 64", PEER, Some(64), good.clone(), "ttl"),
            ("no TTL", PEER, None, good.clone(), "ttl"),
            (
                "bad checksum",
                PEER,
                Some(255),
                {
                    let mut b = good.clone();
                    b[7] ^= 1;
                    b
                },
                "checksum",
            ),
            (
                "another VRID",
                PEER,
                Some(255),
                advert(PEER, 52, 100, &[VIP]),
                "foreign_vrid",
            ),
        ];
        for (what, src, ttl, msg, reason) in cases {
            let r = f.check(src, GROUP, ttl, &msg).unwrap_err();
            assert_eq!(r.reason(), reason, "{what}");
        }
        let c = Counters::default();
        Counters::inc(Rejected::OwnSource.counter(&c));
        assert_eq!(c.snapshot().own_src, 1);
        assert_eq!(Rejected::ForeignVrid(52).level(), log::Level::Debug);
        let peers = Filter {
            unicast_peers: vec!["10.0.0.3".parse().unwrap()],
            ..f.clone()
        };
        assert_eq!(
            peers.check(PEER, GROUP, Some(255), &good).unwrap_err(),
            Rejected::UnknownPeer
        );
        assert!(f.check(PEER, GROUP, Some(255), &good).is_ok());
    }

    #[test]
    fn drop_log_is_rate_limited_per_reason() {
        let mut l = DropLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // The first of each reason at once.
        assert_eq!(l.admit("ttl", at(0)), Some(0));
        assert_eq!(l.admit("checksum", at(1)), Some(0));
        // A flood of one reason: nothing more for a second, then one line with the
        // count of those not logged.
        for i in 0..10_000 {
            assert_eq!(l.admit("ttl", at(1 + i / 100)), None);
        }
        assert_eq!(l.admit("ttl", at(1000)), Some(10_000));
        assert_eq!(l.admit("ttl", at(1500)), None);
        // Another reason is limited on its own clock.
        assert_eq!(l.admit("checksum", at(1001)), Some(0));
        assert_eq!(l.admit("ttl", at(2000)), Some(1));
        assert_eq!(l.admit("ttl", at(5000)), Some(0));
    }
}
