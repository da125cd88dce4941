//! Counters of one VRRP instance, lock-free so the runtime bumps them on the packet
//! path and the metrics exporter reads them at any time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::packet::DecodeError;
use super::state::State;

/// Monotonic counters plus the state gauge. Read with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    pub adverts_rx: AtomicU64,
    pub adverts_tx: AtomicU64,
    /// Adverts with priority 0 received (a master stopping).
    pub priority_zero_rx: AtomicU64,
    pub priority_zero_tx: AtomicU64,
    pub malformed_short: AtomicU64,
    pub malformed_version: AtomicU64,
    pub malformed_type: AtomicU64,
    pub malformed_addr_count: AtomicU64,
    pub malformed_checksum: AtomicU64,
    pub malformed_interval: AtomicU64,
    /// IP header unusable (IPv4 header truncated, wrong family...).
    pub malformed_ip: AtomicU64,
    /// TTL / hop limit not 255 (section 7.1): sent from off-link or forged.
    pub bad_ttl: AtomicU64,
    /// Valid adverts for another VRID on the same link.
    pub foreign_vrid: AtomicU64,
    /// Adverts for our VRID whose address list is not ours: no address (section
    /// 5.2.5), one we do not have, one of ours missing or listed twice. Dropped, as
    /// keepalived drops them (its `addr_list_err`): acting on them let a bad or
    /// forged advert take the VIPs away from the master.
    pub addr_list_err: AtomicU64,
    /// Unicast mode: adverts from an address that is not a configured peer.
    pub unknown_peer: AtomicU64,
    /// Packets whose source is this node's own advert source: an address conflict,
    /// a forgery, or this node listed among its own unicast peers. Dropped.
    pub own_src: AtomicU64,
    pub transitions: AtomicU64,
    pub garp_tx: AtomicU64,
    pub na_tx: AtomicU64,
    pub send_errors: AtomicU64,
    /// Current state, [`State::as_gauge`].
    pub state: AtomicU64,
}

/// A point-in-time copy of [`Counters`], serializable for JSON / Prometheus.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountersSnapshot {
    pub adverts_rx: u64,
    pub adverts_tx: u64,
    pub priority_zero_rx: u64,
    pub priority_zero_tx: u64,
    pub malformed_short: u64,
    pub malformed_version: u64,
    pub malformed_type: u64,
    pub malformed_addr_count: u64,
    pub malformed_checksum: u64,
    pub malformed_interval: u64,
    pub malformed_ip: u64,
    pub bad_ttl: u64,
    pub foreign_vrid: u64,
    pub addr_list_err: u64,
    pub unknown_peer: u64,
    pub own_src: u64,
    pub transitions: u64,
    pub garp_tx: u64,
    pub na_tx: u64,
    pub send_errors: u64,
    pub state: u64,
}

impl CountersSnapshot {
    /// All malformed-packet counters summed (everything rejected before the state
    /// machine, except foreign VRIDs and unknown peers, which are well-formed).
    pub fn malformed_total(&self) -> u64 {
        self.malformed_short
            + self.malformed_version
            + self.malformed_type
            + self.malformed_addr_count
            + self.malformed_checksum
            + self.malformed_interval
            + self.malformed_ip
            + self.bad_ttl
    }

    /// `(reason, count)` pairs of the malformed counters, for a labelled metric
    /// such as `lb_vrrp_malformed_total{reason="checksum"}`.
    pub fn malformed_by_reason(&self) -> [(&'static str, u64); 8] {
        [
            ("short", self.malformed_short),
            ("version", self.malformed_version),
            ("type", self.malformed_type),
            ("addr_count", self.malformed_addr_count),
            ("checksum", self.malformed_checksum),
            ("interval", self.malformed_interval),
            ("ip_header", self.malformed_ip),
            ("ttl", self.bad_ttl),
        ]
    }
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// The counter of a malformed message: per reason, and `addr_list_err` for an
    /// advert without addresses.
    pub(crate) fn malformed_counter(&self, e: &DecodeError) -> &AtomicU64 {
        match e {
            DecodeError::Short { .. } => &self.malformed_short,
            DecodeError::Version { .. } => &self.malformed_version,
            DecodeError::Type { .. } => &self.malformed_type,
            DecodeError::AddrCount { .. } => &self.malformed_addr_count,
            DecodeError::Checksum { .. } => &self.malformed_checksum,
            DecodeError::ZeroInterval => &self.malformed_interval,
            DecodeError::NoAddrs => &self.addr_list_err,
            DecodeError::HeaderFamily { .. } => &self.malformed_ip,
        }
    }

    pub(crate) fn set_state(&self, s: State) {
        self.state.store(s.as_gauge(), Relaxed);
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        CountersSnapshot {
            adverts_rx: g(&self.adverts_rx),
            adverts_tx: g(&self.adverts_tx),
            priority_zero_rx: g(&self.priority_zero_rx),
            priority_zero_tx: g(&self.priority_zero_tx),
            malformed_short: g(&self.malformed_short),
            malformed_version: g(&self.malformed_version),
            malformed_type: g(&self.malformed_type),
            malformed_addr_count: g(&self.malformed_addr_count),
            malformed_checksum: g(&self.malformed_checksum),
            malformed_interval: g(&self.malformed_interval),
            malformed_ip: g(&self.malformed_ip),
            bad_ttl: g(&self.bad_ttl),
            foreign_vrid: g(&self.foreign_vrid),
            addr_list_err: g(&self.addr_list_err),
            unknown_peer: g(&self.unknown_peer),
            own_src: g(&self.own_src),
            transitions: g(&self.transitions),
            garp_tx: g(&self.garp_tx),
            na_tx: g(&self.na_tx),
            send_errors: g(&self.send_errors),
            state: g(&self.state),
        }
    }
}
