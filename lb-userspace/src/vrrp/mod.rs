//! VRRPv3 (RFC 5798) active-passive VIP failover between two load-balancer nodes.
//!
//! The master owns the VIPs on the data-plane interface and advertises; the backup
//! listens and takes the VIPs over when the adverts stop (Master_Down_Interval) or
//! when the master says it is stopping (priority 0, takeover after Skew_Time), then
//! announces them with gratuitous ARP / unsolicited neighbour advertisements. The wire
//! format is RFC 5798's exactly, so a node can share a virtual router with keepalived
//! (`vrrp_version 3`).
//!
//! Limits: no virtual MAC (like keepalived's default, the real MAC is used and GARP
//! moves the VIP), no accept-mode knob (the VIPs are added to the interface, so the
//! node always accepts traffic to them), one virtual router per [`run`], IPv4 or IPv6
//! per instance (not both), no authentication (VRRPv3 has none).
//!
//! # Layout
//! - [`packet`]: encode / decode the section 5 advertisement, checksum
//! - [`state`]: the section 6.4 state machine, pure and clock-injected
//! - [`counters`]: counters and the state gauge for metrics
//! - `net`: raw VRRP sockets, gratuitous ARP / unsolicited NA, VIP add/remove
//! - `sys`: the thin `libc` layer under `net`
//! - `runtime`: the tokio event loop tying them together, tracking, notify
//!
//! # Use
//! ```no_run
//! # async fn f(cfg: lb::vrrp::VrrpConfig) -> anyhow::Result<()> {
//! let tracker = lb::vrrp::Tracker::new();
//! let status = tracker.clone(); // e.g. for the metrics exporter: status.status()
//! tracker.set_xdp_attached(true);
//! lb::vrrp::run(cfg, tracker, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

pub mod counters;
mod net;
pub mod packet;
mod runtime;
pub mod state;
mod sys;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

pub use counters::{Counters, CountersSnapshot};
pub use state::State;

/// The `[failover]` section of the controller config, or the whole `lb-vrrp` file.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VrrpConfig {
    /// The data-plane interface the VIPs live on and adverts are sent from.
    pub interface: String,
    /// Virtual Router ID, 1..=255, shared by both nodes (section 5.2.3).
    pub vrid: u8,
    /// 1..=254 for a normal router, 255 for the address owner (section 5.2.4); 0 is
    /// reserved for "master stopping" and rejected.
    pub priority: u8,
    /// Advertisement_Interval; sent in centiseconds, so a multiple of 10 ms in
    /// 10..=40950 ms (12 bits of centiseconds, section 5.2.7).
    pub advert_interval_ms: u32,
    /// Preempt_Mode (section 6.1): a higher-priority backup takes over a lower master.
    #[serde(default = "default_true")]
    pub preempt: bool,
    /// With `preempt`, how long a backup tolerates a lower-priority master before
    /// preempting it (keepalived's `preempt_delay`); a dead master is still taken
    /// over after Master_Down_Interval.
    #[serde(default)]
    pub preempt_delay_ms: u32,
    /// The virtual addresses, all IPv4 or all IPv6.
    pub vips: Vec<IpAddr>,
    /// Send adverts to these addresses instead of the multicast group, and accept
    /// adverts only from them (for networks without multicast).
    #[serde(default)]
    pub unicast_peers: Vec<IpAddr>,
    /// Source address of adverts; default: the interface's first IPv4 address that is
    /// not a VIP, or its IPv6 link-local address (section 5.1.2.1).
    #[serde(default)]
    pub unicast_src: Option<IpAddr>,
    /// Gratuitous ARPs / unsolicited NAs sent per VIP on becoming master.
    #[serde(default = "default_garp_count")]
    pub garp_count: u32,
    /// Spacing of those announcements. Default 20 ms: the first goes out at once (it
    /// alone decides convergence when nothing is lost); the repeats cover a lost one
    /// within 20 ms, span 80 ms (longer than a typical queue micro-burst), and 5 in
    /// 80 ms stays under switch ARP rate limits such as Cisco DAI's 15 pps / 1 s burst.
    #[serde(default = "default_garp_interval_ms")]
    pub garp_interval_ms: u32,
    /// While master, announce the VIPs again this often (keeps caches of hosts that
    /// missed the burst, and MAC tables of switches, fresh). Off by default.
    #[serde(default)]
    pub garp_refresh_ms: Option<u32>,
    /// Command run through `sh -c` on every transition, with the state name (MASTER,
    /// BACKUP, FAULT, INIT) and the VRID appended as arguments.
    #[serde(default)]
    pub notify: Option<String>,
    /// Go to FAULT while the interface is down (no carrier or administratively down).
    #[serde(default = "default_true")]
    pub track_interface: bool,
    /// Go to FAULT while the controller reports no healthy backend
    /// ([`Tracker::set_healthy_backends`]).
    #[serde(default)]
    pub fault_on_no_backend: bool,
}

fn default_true() -> bool {
    true
}
fn default_garp_count() -> u32 {
    5
}
fn default_garp_interval_ms() -> u32 {
    20
}

/// A field of [`VrrpConfig`] that is invalid, named as in the config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VrrpConfigError {
    #[error(
        "interface: {name:?} is not an interface name (1..=15 bytes, no '/', ':' or whitespace)"
    )]
    Interface { name: String },
    #[error("vrid: 0 is not a valid Virtual Router ID (1..=255)")]
    Vrid,
    #[error(
        "priority: 0 is reserved for a stopping master; use 1..=254, or 255 for the address owner"
    )]
    Priority,
    #[error(
        "advert_interval_ms: {ms} ms must be a multiple of 10 ms in 10..=40950 (sent in centiseconds, 12 bits)"
    )]
    AdvertInterval { ms: u32 },
    #[error("vips: at least one VIP is needed")]
    NoVips,
    #[error("vips: {vip} is not a usable unicast address")]
    BadVip { vip: IpAddr },
    #[error("vips: mixes IPv4 and IPv6 ({a} and {b}); run one instance per family")]
    MixedFamilies { a: IpAddr, b: IpAddr },
    #[error("vips: more than 255 addresses do not fit an advert")]
    TooManyVips,
    #[error("vips: {vip} is listed twice")]
    DuplicateVip { vip: IpAddr },
    #[error("unicast_peers: {peer} is not of the VIPs' address family or not unicast")]
    UnicastPeer { peer: IpAddr },
    #[error("unicast_src: {src} is not of the VIPs' address family or not unicast")]
    UnicastSrc { src: IpAddr },
    #[error("garp_interval_ms: must be at least 1 ms when garp_count > 1")]
    GarpInterval,
    #[error("garp_count: {count} is more than 100; a few announcements are enough")]
    GarpCount { count: u32 },
    #[error("garp_refresh_ms: must be at least 100 ms when set")]
    GarpRefresh,
    #[error("notify: empty command")]
    Notify,
    #[error("preempt_delay_ms: {ms} ms is more than 1000 s")]
    PreemptDelay { ms: u32 },
}

impl VrrpConfig {
    /// Checks every field; the first problem found is returned, named by field.
    pub fn validate(&self) -> Result<(), VrrpConfigError> {
        let n = &self.interface;
        if !crate::config::valid_ifname(n) {
            return Err(VrrpConfigError::Interface { name: n.clone() });
        }
        if self.vrid == 0 {
            return Err(VrrpConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(VrrpConfigError::Priority);
        }
        let ms = self.advert_interval_ms;
        if !ms.is_multiple_of(10) || !(10..=40950).contains(&ms) {
            return Err(VrrpConfigError::AdvertInterval { ms });
        }
        if self.preempt_delay_ms > 1_000_000 {
            return Err(VrrpConfigError::PreemptDelay {
                ms: self.preempt_delay_ms,
            });
        }
        let Some(&first) = self.vips.first() else {
            return Err(VrrpConfigError::NoVips);
        };
        if self.vips.len() > 255 {
            return Err(VrrpConfigError::TooManyVips);
        }
        for (i, &vip) in self.vips.iter().enumerate() {
            if !crate::config::is_host_addr(vip) {
                return Err(VrrpConfigError::BadVip { vip });
            }
            if vip.is_ipv4() != first.is_ipv4() {
                return Err(VrrpConfigError::MixedFamilies { a: first, b: vip });
            }
            if self.vips[..i].contains(&vip) {
                return Err(VrrpConfigError::DuplicateVip { vip });
            }
        }
        for &peer in &self.unicast_peers {
            if !crate::config::is_host_addr(peer) || peer.is_ipv4() != first.is_ipv4() {
                return Err(VrrpConfigError::UnicastPeer { peer });
            }
        }
        if let Some(src) = self.unicast_src
            && (!crate::config::is_host_addr(src) || src.is_ipv4() != first.is_ipv4())
        {
            return Err(VrrpConfigError::UnicastSrc { src });
        }
        if self.garp_count > 100 {
            return Err(VrrpConfigError::GarpCount {
                count: self.garp_count,
            });
        }
        if self.garp_count > 1 && self.garp_interval_ms == 0 {
            return Err(VrrpConfigError::GarpInterval);
        }
        if self.garp_refresh_ms.is_some_and(|r| r < 100) {
            return Err(VrrpConfigError::GarpRefresh);
        }
        if self.notify.as_ref().is_some_and(|c| c.trim().is_empty()) {
            return Err(VrrpConfigError::Notify);
        }
        Ok(())
    }

    /// Advertisement_Interval in centiseconds (valid after [`Self::validate`]).
    pub fn advert_interval_cs(&self) -> u16 {
        u16::try_from(self.advert_interval_ms / 10).unwrap_or(packet::MAX_ADVERT_INT_CS)
    }

    fn is_ipv4(&self) -> bool {
        self.vips.first().is_none_or(|v| v.is_ipv4())
    }

    fn preempt_delay(&self) -> Duration {
        Duration::from_millis(u64::from(self.preempt_delay_ms))
    }
}

/// Why a node is in FAULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FaultReason {
    InterfaceDown,
    XdpDetached,
    NoHealthyBackend,
}

/// The role part of [`Status`], published on every change through
/// [`Tracker::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Role {
    pub state: State,
    /// The current master: this node in MASTER, the last accepted advert's sender in
    /// BACKUP, unknown otherwise.
    pub master: Option<IpAddr>,
    pub fault: Option<FaultReason>,
}

/// What the controller exports: role and counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub role: Role,
    pub counters: CountersSnapshot,
}

/// The inputs the controller reports; see [`Tracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrackInputs {
    pub xdp_attached: bool,
    pub healthy_backends: bool,
}

#[derive(Debug)]
struct Shared {
    inputs: watch::Sender<TrackInputs>,
    role: watch::Sender<Role>,
    counters: Counters,
}

/// A cheap clonable handle between the controller and the VRRP runtime: the
/// controller reports the data plane's health into it, and reads the VRRP status
/// out of it. One tracker serves one [`run`].
#[derive(Debug, Clone)]
pub struct Tracker {
    shared: Arc<Shared>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// A tracker that reports everything healthy (the XDP program attached, healthy
    /// backends present): right for `lb-vrrp`, which has no data plane. The
    /// controller sets the real values before and while [`run`] runs.
    pub fn new() -> Tracker {
        Tracker {
            shared: Arc::new(Shared {
                inputs: watch::Sender::new(TrackInputs {
                    xdp_attached: true,
                    healthy_backends: true,
                }),
                role: watch::Sender::new(Role {
                    state: State::Initialize,
                    master: None,
                    fault: None,
                }),
                counters: Counters::default(),
            }),
        }
    }

    /// Whether the XDP program is attached to the interface; while it is not, the
    /// node is in FAULT (a master without a data plane would black-hole the VIPs).
    pub fn set_xdp_attached(&self, attached: bool) {
        self.shared
            .inputs
            .send_if_modified(|i| std::mem::replace(&mut i.xdp_attached, attached) != attached);
    }

    /// Whether at least one backend is healthy (only acted on with
    /// `fault_on_no_backend`).
    pub fn set_healthy_backends(&self, healthy: bool) {
        self.shared
            .inputs
            .send_if_modified(|i| std::mem::replace(&mut i.healthy_backends, healthy) != healthy);
    }

    /// The current role and counters.
    pub fn status(&self) -> Status {
        Status {
            role: self.shared.role.borrow().clone(),
            counters: self.shared.counters.snapshot(),
        }
    }

    /// A receiver that wakes on every role change (state, master, fault reason).
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// The live counters (for an exporter that reads them without copying).
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub(crate) fn inputs(&self) -> watch::Receiver<TrackInputs> {
        self.shared.inputs.subscribe()
    }

    pub(crate) fn publish(&self, role: Role) {
        self.shared.counters.set_state(role.state);
        self.shared.role.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }
}

/// Runs one virtual router until `shutdown` completes, then resigns gracefully: a
/// master sends priority 0 (the backup takes over after Skew_Time instead of
/// Master_Down_Interval) and the VIPs are removed.
///
/// Fails only on setup (invalid config, interface missing, sockets refused - needs
/// CAP_NET_RAW and CAP_NET_ADMIN); once running, bad packets and send errors are
/// counted and logged, never fatal.
pub async fn run(
    cfg: VrrpConfig,
    tracker: Tracker,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    cfg.validate()?;
    runtime::run(cfg, tracker, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<VrrpConfig, toml::de::Error> {
        toml::from_str(s)
    }

    const MINIMAL: &str = r#"
        interface = "eth0"
        vrid = 51
        priority = 100
        advert_interval_ms = 1000
        vips = ["10.0.0.100"]
    "#;

    #[test]
    fn defaults() {
        let c = parse(MINIMAL).unwrap();
        c.validate().unwrap();
        assert!(c.preempt);
        assert_eq!(c.preempt_delay_ms, 0);
        assert_eq!(c.garp_count, 5);
        assert_eq!(c.garp_interval_ms, 20);
        assert_eq!(c.garp_refresh_ms, None);
        assert!(c.track_interface);
        assert!(!c.fault_on_no_backend);
        assert!(c.unicast_peers.is_empty());
        assert_eq!(c.advert_interval_cs(), 100);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = parse(&format!("{MINIMAL}\nadvert_int = 1")).unwrap_err();
        assert!(e.to_string().contains("advert_int"), "{e}");
    }

    fn check(edit: impl FnOnce(&mut VrrpConfig)) -> Result<(), VrrpConfigError> {
        let mut c = parse(MINIMAL).unwrap();
        edit(&mut c);
        c.validate()
    }

    #[test]
    fn every_field_is_validated() {
        use VrrpConfigError as E;
        assert!(matches!(
            check(|c| c.interface = String::new()),
            Err(E::Interface { .. })
        ));
        assert!(matches!(
            check(|c| c.interface = "a-very-long-ifname".into()),
            Err(E::Interface { .. })
        ));
        assert_eq!(check(|c| c.vrid = 0), Err(E::Vrid));
        assert_eq!(check(|c| c.priority = 0), Err(E::Priority));
        assert_eq!(check(|c| c.priority = 255), Ok(()));
        for ms in [0, 5, 15, 40960, 100_000] {
            assert_eq!(
                check(|c| c.advert_interval_ms = ms),
                Err(E::AdvertInterval { ms })
            );
        }
        for ms in [10, 40950] {
            assert_eq!(check(|c| c.advert_interval_ms = ms), Ok(()));
        }
        assert_eq!(check(|c| c.vips.clear()), Err(E::NoVips));
        assert!(matches!(
            check(|c| c.vips.push("fd00::1".parse().unwrap())),
            Err(E::MixedFamilies { .. })
        ));
        assert!(matches!(
            check(|c| c.vips.push("10.0.0.100".parse().unwrap())),
            Err(E::DuplicateVip { .. })
        ));
        assert!(matches!(
            check(|c| c.vips = vec!["224.0.0.1".parse().unwrap()]),
            Err(E::BadVip { .. })
        ));
        assert!(matches!(
            check(|c| c.unicast_peers = vec!["fd00::1".parse().unwrap()]),
            Err(E::UnicastPeer { .. })
        ));
        assert!(matches!(
            check(|c| c.unicast_src = Some("0.0.0.0".parse().unwrap())),
            Err(E::UnicastSrc { .. })
        ));
        assert_eq!(check(|c| c.garp_interval_ms = 0), Err(E::GarpInterval));
        assert_eq!(
            check(|c| {
                c.garp_interval_ms = 0;
                c.garp_count = 1;
            }),
            Ok(())
        );
        assert_eq!(
            check(|c| c.garp_count = 1000),
            Err(E::GarpCount { count: 1000 })
        );
        assert_eq!(check(|c| c.garp_refresh_ms = Some(5)), Err(E::GarpRefresh));
        assert_eq!(check(|c| c.notify = Some(" ".into())), Err(E::Notify));
        assert!(matches!(
            check(|c| c.preempt_delay_ms = u32::MAX),
            Err(E::PreemptDelay { .. })
        ));
    }

    #[test]
    fn ipv6_config() {
        let c = parse(
            r#"
            interface = "eth0"
            vrid = 1
            priority = 255
            advert_interval_ms = 100
            vips = ["fd00::100", "fd00::101"]
            unicast_peers = ["fd00::2"]
            preempt = false
        "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert!(!c.is_ipv4());
        assert_eq!(c.advert_interval_cs(), 10);
    }

    #[test]
    fn error_messages_name_the_field() {
        let e = check(|c| c.advert_interval_ms = 15).unwrap_err();
        assert!(e.to_string().starts_with("advert_interval_ms:"), "{e}");
    }

    #[test]
    fn tracker_publishes_roles() {
        let t = Tracker::new();
        let mut rx = t.subscribe();
        t.publish(Role {
            state: State::Master,
            master: None,
            fault: None,
        });
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().state, State::Master);
        assert_eq!(t.status().counters.state, 2);
        let inputs = t.inputs();
        t.set_xdp_attached(false);
        assert!(!inputs.borrow().xdp_attached);
    }
}
