//! The contract between the XDP program (`lb-ebpf`) and the controller (`lb-userspace`).
//!
//! Every map name, key, value, capacity, flag bit and counter index lives here once, so
//! the two sides cannot drift. All map types are `#[repr(C)]` with explicit padding and
//! the byte order in the field name (`_be` = network order, as read off the wire); no
//! `bool`, `Option` or Rust-layout enum crosses the boundary.
//!
//! # Layout
//! - map names and capacities (this file)
//! - [`ServiceKey`], [`Service`]: what the XDP program looks up per packet
//! - [`Backend`], ring layout ([`ring_index`]): where a flow goes
//! - [`FlowKey`], [`Flow`], [`FragKey`]: the connection and fragment tables
//! - [`Config`]: global knobs (hash seed, UDP idle timeout, encapsulation)
//! - [`Counter`], [`reason`]: per-CPU statistics, one counter per exit reason
//! - [`hash`]: the seeded flow hash both sides compute
//! - [`pktgen`]: the benchmark packet generator's config map

#![no_std]

pub mod hash;
pub mod pktgen;

use core::mem::size_of;

/// Services: [`ServiceKey`] -> [`Service`] (hash map).
pub const MAP_SERVICES: &str = "LB_SERVICES";
/// Backends: backend id -> [`Backend`] (array; id 0 is reserved as "no backend").
pub const MAP_BACKENDS: &str = "LB_BACKENDS";
/// Maglev rings of all services, double-buffered: `u32` backend ids (array).
pub const MAP_RINGS: &str = "LB_RINGS";
/// Connection table: [`FlowKey`] -> [`Flow`] (LRU hash).
pub const MAP_CONNTRACK: &str = "LB_CONNTRACK";
/// First-fragment table: [`FragKey`] -> [`Flow`] (LRU hash).
pub const MAP_FRAGS: &str = "LB_FRAGS";
/// Per-CPU flow cache in front of the connection table: `cpu * FLOW_CACHE_SLOTS + slot`
/// -> [`FlowCacheEntry`] (one plain array, a region per possible CPU: the JIT turns a
/// lookup into an address computation, where a per-CPU array first loads a per-entry
/// pointer, a second cache miss per packet with many flows; see [`FlowCacheEntry`]).
pub const MAP_FLOW_CACHE: &str = "LB_FLOW_CACHE";
/// Per-CPU service cache in front of [`MAP_SERVICES`]: slot -> [`ServiceCacheEntry`].
pub const MAP_SERVICE_CACHE: &str = "LB_SERVICE_CACHE";
/// Global configuration: index 0 -> [`Config`] (array of one).
pub const MAP_CONFIG: &str = "LB_CONFIG";
/// Per-CPU counters per exit reason: [`reason`] index -> [`Counter`].
pub const MAP_STATS_REASON: &str = "LB_STATS_REASON";
/// Per-CPU counters per service id -> [`Counter`].
pub const MAP_STATS_SERVICE: &str = "LB_STATS_SERVICE";
/// Per-CPU counters per backend id -> [`Counter`].
pub const MAP_STATS_BACKEND: &str = "LB_STATS_BACKEND";
/// Egress ports for XDP_REDIRECT: port index -> ifindex (devmap).
pub const MAP_TX_PORTS: &str = "LB_TX_PORTS";
/// Per-CPU packet counter of the trivial programs (`xdp_count`, `xdp_sink`).
pub const MAP_SINK: &str = "LB_SINK";

/// Program names in the object, as the loader finds them.
pub const PROG_LB: &str = "xdp_lb";
pub const PROG_DECAP: &str = "xdp_decap";
pub const PROG_PASS: &str = "xdp_pass";
pub const PROG_SINK: &str = "xdp_sink";
pub const PROG_TX: &str = "xdp_tx";

/// Maximum Maglev ring size (a prime); a service may use any smaller prime.
pub const RING_MAX: u32 = 65537;
/// Default number of services the maps are sized for (can be raised at load time).
pub const MAX_SERVICES: u32 = 64;
/// Default number of backend ids (id 0 reserved).
pub const MAX_BACKENDS: u32 = 4096;
/// Default connection-table size (overridable at load time).
pub const CONNTRACK_SIZE: u32 = 1 << 20;
/// Fragment-table size.
pub const FRAGS_SIZE: u32 = 8192;
/// Devmap capacity.
pub const MAX_TX_PORTS: u32 = 64;
/// Slots of each CPU's region of the flow cache (a power of two): [`FLOW_CACHE_WAYS`]
/// per set, so `FLOW_CACHE_SLOTS / FLOW_CACHE_WAYS` sets (1 MiB per CPU). The loader
/// sizes [`MAP_FLOW_CACHE`] to this times the number of possible CPUs.
pub const FLOW_CACHE_SLOTS: u32 = 16384;
/// Ways of each flow-cache set: two flows whose slots collide both stay cached (a
/// direct-mapped cache of the same size left 1k flows about 6% of misses, each one a
/// connection-table lookup).
pub const FLOW_CACHE_WAYS: u32 = 2;
/// Slots of the per-CPU service cache (a power of two).
pub const SERVICE_CACHE_SLOTS: u32 = 256;
/// A cached flow goes through the connection table again on every this-many-th hit,
/// so the shared table's LRU order still sees the flows the cache serves.
pub const FLOW_CACHE_REFRESH: u32 = 256;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// [`Service::flags`]: forward by rewriting MACs (direct server return on one L2 segment).
pub const SVC_MODE_L2: u32 = 0;
/// [`Service::flags`]: forward by IP-in-IP encapsulation (backend on another L3 network).
pub const SVC_MODE_ENCAP: u32 = 1;
/// Mask of the forwarding-mode bits in [`Service::flags`].
pub const SVC_MODE_MASK: u32 = 0xf;

/// [`Backend::flags`]: send through `XDP_REDIRECT` to [`Backend::tx_port`] instead of `XDP_TX`.
pub const BACKEND_REDIRECT: u8 = 1;
/// [`Backend::flags`]: failed its health checks. Out of every ring already; a pinned
/// flow to it is re-hashed instead of forwarded into the void.
pub const BACKEND_DOWN: u8 = 2;

/// Key of [`MAP_SERVICES`]. Port 0 is the "all ports" service of that VIP and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceKey {
    /// VIP as on the wire; IPv4 uses word 0, the rest are zero.
    pub addr_be: [u32; 4],
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(size_of::<ServiceKey>() == 20);

impl ServiceKey {
    /// Field-by-field equality without `memcmp` (see [`FlowKey::same_flow`]).
    #[inline(always)]
    pub fn same_service(&self, o: &ServiceKey) -> bool {
        let mut d = 0;
        for i in 0..4 {
            d |= self.addr_be[i] ^ o.addr_be[i];
        }
        d |= u32::from(self.port_be ^ o.port_be);
        d |= u32::from(self.proto ^ o.proto) | (u32::from(self.family ^ o.family) << 8);
        d == 0
    }
}

/// Value of [`MAP_SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Service {
    /// Index into the ring block and the per-service counters (< max services).
    pub id: u32,
    /// `SVC_MODE_*` bits.
    pub flags: u32,
    /// Which half of the double-buffered ring is live (0 or 1). The controller writes
    /// the other half, then flips this field with one map update: a packet reads the
    /// service once, so it sees either the old ring or the new one, never a mix.
    pub ring_slot: u32,
    /// Ring size M (a prime <= [`RING_MAX`]); 0 means the service has no ring yet.
    pub ring_size: u32,
}
const _: () = assert!(size_of::<Service>() == 16);

/// Value of [`MAP_SERVICE_CACHE`]: one CPU's memo of which service a (VIP, protocol,
/// port) resolved to (the exact-port service or the VIP's port-0 one). New flows to a
/// busy VIP (every SYN) then skip the [`MAP_SERVICES`] hash lookup. Valid only while
/// `epoch` equals [`Config::epoch`], which the controller bumps after every change;
/// misses (not a VIP) are not cached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceCacheEntry {
    /// The packet's (VIP, port, protocol, family).
    pub key: ServiceKey,
    pub epoch: u32,
    pub svc: Service,
}
const _: () = assert!(size_of::<ServiceCacheEntry>() == 40);

/// Value of [`MAP_BACKENDS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Backend {
    /// Backend address (encapsulation destination); IPv4 uses word 0.
    pub addr_be: [u32; 4],
    /// Next-hop MAC for L2 forwarding (the backend, or the router for encapsulation).
    pub mac: [u8; 6],
    /// `FAMILY_*` of `addr_be`; 0 marks an unused slot.
    pub family: u8,
    /// `BACKEND_*` bits.
    pub flags: u8,
    /// Devmap index used with [`BACKEND_REDIRECT`].
    pub tx_port: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Backend>() == 32);

/// Key of [`MAP_CONNTRACK`]: the flow as the client sends it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    pub src_be: [u32; 4],
    pub dst_be: [u32; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

impl FlowKey {
    /// Field-by-field equality, written out so the BPF build compares words instead of
    /// calling `memcmp` (a byte loop on that target).
    #[inline(always)]
    pub fn same_flow(&self, o: &FlowKey) -> bool {
        let mut d = 0;
        for i in 0..4 {
            d |= (self.src_be[i] ^ o.src_be[i]) | (self.dst_be[i] ^ o.dst_be[i]);
        }
        d |= u32::from(self.sport_be ^ o.sport_be) | (u32::from(self.dport_be ^ o.dport_be) << 16);
        d |= u32::from(self.proto ^ o.proto) | (u32::from(self.family ^ o.family) << 8);
        d == 0
    }
}

/// Value of [`MAP_FLOW_CACHE`]: one CPU's memo of a TCP flow's connection-table entry.
///
/// The established-TCP hot path looks here first (the two slots of the set chosen by
/// [`hash::cache_set`], no hash-map call) and falls back to the service and
/// connection-table lookups on any doubt: other flows in the set, an `epoch` older
/// than [`Config::epoch`] (the controller bumps it after every change it writes), a
/// backend now down, or every [`FLOW_CACHE_REFRESH`]-th hit. Like Katran's per-CPU LRU
/// tables it assumes a flow's packets arrive on one CPU (RSS): a SYN re-hashed on one
/// CPU updates the shared table and that CPU's cache only. A flow filled into a set
/// takes way 0 and moves way 0's flow to way 1 (an entry of the same flow is updated
/// where it is), so a set keeps the two flows filled last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowCacheEntry {
    pub key: FlowKey,
    pub backend: u32,
    pub svc_id: u32,
    /// The service's `SVC_MODE_*` bits.
    pub svc_flags: u32,
    /// [`hash::flow_hash`] of `key` (the encapsulation source uses it).
    pub hash: u32,
    /// [`Config::epoch`] when the entry was filled.
    pub epoch: u32,
    pub hits: u32,
}
const _: () = assert!(size_of::<FlowCacheEntry>() == 64);

/// Value of [`MAP_CONNTRACK`] and [`MAP_FRAGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Flow {
    pub backend: u32,
    /// The service's `SVC_MODE_*` bits at the time the flow was pinned (a non-first
    /// fragment has no ports to find its service by).
    pub flags: u32,
    /// `bpf_ktime_get_ns` of the last packet (UDP idle expiry); 0 for TCP, whose
    /// entries never expire by time (the LRU evicts them).
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<Flow>() == 16);

/// Key of [`MAP_FRAGS`]: identifies one datagram's fragments (RFC 791 / RFC 8200).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FragKey {
    pub src_be: [u32; 4],
    pub dst_be: [u32; 4],
    /// IPv4 identification (16 bits, widened) or IPv6 fragment identification.
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FragKey>() == 40);

/// Value of [`MAP_CONFIG`] index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Config {
    /// Seed of [`hash::flow_hash`]; identical on every LB node so they pick alike.
    pub hash_seed: u32,
    /// Largest IP packet (outer header included) an encapsulated packet may become;
    /// larger ones get ICMP "fragmentation needed" / ICMPv6 "packet too big".
    pub encap_mtu: u32,
    /// A UDP conntrack entry older than this is ignored (the ring decides again).
    pub udp_timeout_ns: u64,
    /// Outer IPv4 source prefix for encapsulation; the low 16 bits come from the flow
    /// hash so receivers spread flows across queues (RSS on the outer header).
    pub encap_src_v4_be: u32,
    /// Bumped by the controller after every change it writes to services, backends or
    /// rings; per-CPU flow-cache entries of an older epoch are not used.
    pub epoch: u32,
    /// Outer IPv6 source prefix; the last 32 bits come from the flow hash.
    pub encap_src_v6_be: [u32; 4],
    /// The LB's own MAC on the attached interface. Unicast frames for another host
    /// pass untouched (`pass_other_host`): a veth, a bridge flooding unknown unicast or
    /// a NIC in promiscuous mode shows XDP frames not meant for this node, and a
    /// backup LB must not forward traffic the master owns. All zeros: no check.
    pub lb_mac: [u8; 6],
    pub _pad2: [u8; 2],
}
const _: () = assert!(size_of::<Config>() == 48);

/// A per-CPU packets/bytes pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// Indexes of [`MAP_STATS_REASON`]. Every exit of `xdp_lb` adds to exactly one of the
/// `EXIT_*` range; the `EVENT_*` counters are extra observations on the way.
pub mod reason {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed untouched.
    pub const PASS_NOT_IP: u32 = 0;
    /// IP but not to a configured service: passed untouched.
    pub const PASS_NOT_VIP: u32 = 1;
    /// Truncated or inconsistent headers: passed (fail open: the kernel drops or
    /// answers; the LB never forwards what it could not parse).
    pub const PASS_MALFORMED: u32 = 2;
    /// To a VIP but not something the LB steers (unsupported IPv6 extension header,
    /// non-first fragment with no known first fragment in pass mode, ...): passed.
    pub const PASS_UNSUPPORTED: u32 = 3;
    /// Forwarded with rewritten MACs through `XDP_TX`.
    pub const TX_L2: u32 = 4;
    /// Forwarded with rewritten MACs through `XDP_REDIRECT`.
    pub const REDIRECT_L2: u32 = 5;
    /// Forwarded encapsulated (IP-in-IP) through `XDP_TX`/`XDP_REDIRECT`.
    pub const TX_ENCAP: u32 = 6;
    /// ICMP/ICMPv6 echo to a VIP answered by the LB.
    pub const TX_ICMP_ECHO: u32 = 7;
    /// "Fragmentation needed" / "packet too big" sent back to the client.
    pub const TX_ICMP_TOO_BIG: u32 = 8;
    /// The service exists but its ring is empty (no healthy backend): dropped.
    pub const DROP_NO_BACKEND: u32 = 9;
    /// The ring slot named a backend id that is not configured: dropped.
    pub const DROP_RING_SLOT_EMPTY: u32 = 10;
    /// `bpf_xdp_adjust_head`/`_tail` failed: dropped.
    pub const DROP_ADJUST_FAILED: u32 = 11;
    /// A non-first fragment whose first fragment was never seen: dropped (documented
    /// rule: without the ports we cannot know the backend; the sender retransmits).
    pub const DROP_FRAG_ORPHAN: u32 = 12;
    /// Decapsulated by `xdp_decap` (backend side) and passed to the stack.
    pub const PASS_DECAP: u32 = 13;
    /// A unicast frame addressed to another host's MAC: passed untouched.
    pub const PASS_OTHER_HOST: u32 = 14;
    pub const EXIT_COUNT: u32 = 15;

    /// Conntrack lookup found the flow.
    pub const EVENT_CONNTRACK_HIT: u32 = 16;
    /// Conntrack lookup missed (or a TCP SYN re-hashed).
    pub const EVENT_CONNTRACK_MISS: u32 = 17;
    /// Inserting into the connection table failed (table full and no entry could be
    /// evicted): the packet is still forwarded by the ring, statelessly.
    pub const EVENT_TABLE_FULL: u32 = 18;
    /// A UDP entry was found but older than the idle timeout.
    pub const EVENT_UDP_EXPIRED: u32 = 19;
    /// An ICMP error about a VIP flow was steered to the flow's backend.
    pub const EVENT_ICMP_STEERED: u32 = 20;
    /// A fragment followed its first fragment's backend.
    pub const EVENT_FRAG_FOLLOWED: u32 = 21;
    /// An established TCP packet was served from the per-CPU flow cache (no service or
    /// connection-table lookup).
    pub const EVENT_FLOW_CACHE_HIT: u32 = 22;
    pub const COUNT: u32 = 24;

    /// Human names, index = counter index (used by metrics and `lb status`).
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ip",
        "pass_not_vip",
        "pass_malformed",
        "pass_unsupported",
        "tx_l2",
        "redirect_l2",
        "tx_encap",
        "tx_icmp_echo",
        "tx_icmp_too_big",
        "drop_no_backend",
        "drop_ring_slot_empty",
        "drop_adjust_failed",
        "drop_frag_orphan",
        "pass_decap",
        "pass_other_host",
        "",
        "conntrack_hit",
        "conntrack_miss",
        "table_full",
        "udp_expired",
        "icmp_steered",
        "frag_followed",
        "flow_cache_hit",
        "",
    ];
}

/// The ring slot (< `m`) of a flow with hash `hash`: Lemire's multiply-shift range
/// reduction, uniform like `hash % m` but without a division on the packet path.
#[inline(always)]
pub const fn ring_slot(hash: u32, m: u32) -> u32 {
    ((hash as u64 * m as u64) >> 32) as u32
}

/// Index of slot `slot` of ring half `half` of service `id` in [`MAP_RINGS`].
#[inline(always)]
pub const fn ring_index(id: u32, half: u32, slot: u32) -> u32 {
    (id * 2 + half) * RING_MAX + slot
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), padding is explicit, every bit pattern is valid.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowCacheEntry {}
    unsafe impl aya::Pod for ServiceCacheEntry {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Counter {}
}
