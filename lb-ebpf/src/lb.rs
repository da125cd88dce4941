//! The load-balancer body: parse, find the service, pick the backend, forward.
//!
//! Order of decisions for an IP packet:
//! 1. ICMP/ICMPv6: echo to a VIP is answered here; a destination-unreachable or
//!    packet-too-big about a VIP flow goes to that flow's backend; anything else passes.
//! 2. A non-first fragment follows the backend its first fragment went to
//!    ([`lb_common::MAP_FRAGS`]); without one it is dropped if addressed to a VIP
//!    (`drop_frag_orphan`: without the ports no backend can be known, and passing it to
//!    the LB's own stack would only feed a reassembly queue that never completes).
//! 3. TCP/UDP: service by (VIP, proto, port), else the VIP's port-0 "all ports" service.
//! 4. Backend: connection table first (not for a TCP SYN, which always follows the
//!    current ring), else the ring slot [`ring_slot`]`(flow_hash, M)` of the live ring half.
//!
//! Established TCP (not a SYN, not a fragment) first tries this CPU's flow cache
//! ([`lb_common::FlowCacheEntry`]): a hit forwards without the service and
//! connection-table lookups, the two hash-map calls that dominate the hit path.

#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values go by reference: by value, each 40-byte key is copied onto the 512-byte BPF stack, which then overflows"
)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    programs::XdpContext,
};
use lb_common::{
    BACKEND_DOWN, Backend, Config, FAMILY_V4, FAMILY_V6, FLOW_CACHE_REFRESH, FLOW_CACHE_SLOTS,
    FLOW_CACHE_WAYS, Flow, FlowCacheEntry, FlowKey, FragKey, PROTO_TCP, PROTO_UDP, RING_MAX,
    SERVICE_CACHE_SLOTS, Service, ServiceCacheEntry, ServiceKey,
    hash::{cache_set, flow_hash, service_slot},
    reason, ring_index, ring_slot,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    BACKENDS, CONFIG, CONNTRACK, FLOW_CACHE, FRAGS, RINGS, SERVICE_CACHE, SERVICES, STATS_BACKEND,
    STATS_REASON, STATS_SERVICE, count, fwd,
    parse::{be16, ptr_at, wide, words16},
};

pub const ETH_LEN: usize = EthHdr::LEN;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

/// `Ok((action, reason))`, or `Err((XDP_PASS, reason))` for every fail-open exit.
/// Both variants carry both words on purpose: with a bare `Err(reason)` half of the
/// payload is undefined, and LLVM may fill it from any register (even a pointer) and
/// pack it with a shift, which the verifier rejects as pointer arithmetic.
pub type Verdict = Result<(u32, u32), (u32, u32)>;

/// A fail-open exit counted as `why`.
#[inline(always)]
pub const fn pass(why: u32) -> (u32, u32) {
    (xdp_action::XDP_PASS, why)
}

/// What the parser learnt about an IP packet.
pub struct Packet {
    pub key: FlowKey,
    /// Offset of the L4 header.
    pub l4_off: usize,
    /// Length of the IP packet (header included), as the IP header says.
    pub ip_len: usize,
    /// IPv4 header length (options included), 40 for IPv6.
    pub ihl: usize,
    /// Fragment: `frag_id`, whether this is a fragment, and whether it is the first.
    pub frag_id: u32,
    pub is_frag: bool,
    pub first_frag: bool,
    /// The protocol every fragment of the datagram names alike (the fragment table's
    /// key): the IPv4 protocol, or the Next Header of the IPv6 Fragment header, which
    /// names the first header of the fragmentable part (RFC 8200 section 4.5), maybe
    /// a destination options header before the upper layer.
    pub frag_proto: u8,
}

#[inline(always)]
pub fn run(ctx: &XdpContext) -> (u32, u32) {
    match try_lb(ctx) {
        Ok(v) => v,
        Err(v) => v,
    }
}

#[inline(always)]
fn try_lb(ctx: &XdpContext) -> Verdict {
    // Fail open: too short for Ethernet, let the kernel account for it.
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut pkt = match ether_type {
        ETH_P_IP => parse_v4(ctx)?,
        ETH_P_IPV6 => parse_v6(ctx)?,
        // ARP, LLDP, VLAN-tagged frames, ...: not ours.
        _ => return Err(pass(reason::PASS_NOT_IP)),
    };
    let proto = pkt.key.proto;
    if proto == PROTO_ICMP || proto == PROTO_ICMPV6 {
        return icmp(ctx, &mut pkt);
    }
    // Before the protocol check: a later IPv6 fragment names only the first header
    // of the fragmentable part, which may be an extension header before TCP or UDP.
    if pkt.is_frag && !pkt.first_frag {
        return follow_fragment(ctx, &pkt);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(pass_not_vip_or(&pkt.key, reason::PASS_UNSUPPORTED));
    }
    // Ports: both TCP and UDP start with them.
    let ports = ptr_at::<[u8; 4]>(ctx, pkt.l4_off).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked. One load: the source port's bytes come first in memory.
    let ports = unsafe { wide::load32(ports.cast()) };
    pkt.key.sport_be = ports as u16;
    pkt.key.dport_be = (ports >> 16) as u16;
    // The L4 header must lie inside the IP packet: bytes past its length (Ethernet
    // padding) are no header, and the backend's stack drops a TCP header shorter than
    // 20 bytes or than its data offset, and a UDP length the packet does not hold.
    // Fail open, like every other malformed packet: the LB never forwards them.
    let l4_len = (ETH_LEN + pkt.ip_len).saturating_sub(pkt.l4_off);
    let mut syn = false;
    if proto == PROTO_TCP {
        let h = ptr_at::<[u8; 20]>(ctx, pkt.l4_off).ok_or(pass(reason::PASS_MALFORMED))?;
        // SAFETY: bounds checked; byte 12 holds the data offset, byte 13 CWR..FIN.
        let (doff, f) = unsafe { ((*h)[12] >> 4, (*h)[13]) };
        let doff = usize::from(doff) * 4;
        if doff < 20 || doff > l4_len {
            return Err(pass(reason::PASS_MALFORMED));
        }
        syn = f & 0x02 != 0 && f & 0x10 == 0;
    } else {
        let h = ptr_at::<[u8; 8]>(ctx, pkt.l4_off).ok_or(pass(reason::PASS_MALFORMED))?;
        // SAFETY: bounds checked; bytes 4-5 hold the UDP length.
        let ulen = usize::from(be16(unsafe { [(*h)[4], (*h)[5]] }));
        // A first fragment's UDP length counts the whole datagram, not this fragment.
        if l4_len < 8 || ulen < 8 || (!pkt.is_frag && ulen > l4_len) {
            return Err(pass(reason::PASS_MALFORMED));
        }
    }
    let cacheable = proto == PROTO_TCP && !pkt.is_frag;
    // One set per packet, in this CPU's region: looked up for established TCP, filled
    // after a miss or SYN.
    let set = if cacheable {
        // SAFETY: helper without preconditions (the JIT inlines it); XDP runs with
        // migration off, so the CPU cannot change under the program.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        cpu.wrapping_mul(FLOW_CACHE_SLOTS) + cache_set(&pkt.key) * FLOW_CACHE_WAYS
    } else {
        0
    };
    if cacheable && !syn {
        match from_flow_cache(ctx, &pkt, set) {
            Err((NOT_CACHED, _)) => {}
            v => return v,
        }
    }
    // Read before any other state: a cache entry filled below carries this epoch, and
    // the controller bumps it only after writing its changes.
    let cfg = config();
    let svc = find_service_cached(&pkt.key, cfg.epoch).ok_or(pass(reason::PASS_NOT_VIP))?;
    let (backend_id, backend, hash) = match pick(&pkt.key, &svc, &cfg, syn, true) {
        Ok(v) => v,
        Err(why) => return Ok((xdp_action::XDP_DROP, why)),
    };
    if cacheable {
        fill_flow_cache(set, &pkt.key, backend_id, &svc, hash, cfg.epoch);
    }
    if pkt.is_frag {
        // First fragment: remember where the rest of the datagram goes.
        let fk = frag_key(&pkt);
        let v = Flow {
            backend: backend_id,
            flags: svc.flags,
            last_seen_ns: 0,
        };
        let _ = FRAGS.insert(&fk, &v, 0);
    }
    forward(ctx, &pkt, &svc, backend_id, &backend, hash, &cfg)
}

/// [`from_flow_cache`]'s "not here, take the full path" (never a real action).
const NOT_CACHED: u32 = u32::MAX;

/// Forwards an established TCP packet from the flow-cache set whose first slot is
/// `set` (in this CPU's region), or returns `Err((NOT_CACHED, 0))` when the flow is in
/// neither way, is stale, or is due for a refresh.
#[inline(always)]
fn from_flow_cache(ctx: &XdpContext, pkt: &Packet, set: u32) -> Verdict {
    let miss = Err((NOT_CACHED, 0));
    let Some(cfg) = CONFIG.get(0) else {
        return miss;
    };
    let Some(mut e) = FLOW_CACHE.get_ptr_mut(set) else {
        return miss;
    };
    // SAFETY: slots of this CPU's region, valid for the program run; no other CPU
    // touches them, and XDP runs with preemption off.
    if !unsafe { (*e).key.same_flow(&pkt.key) } {
        let Some(e1) = FLOW_CACHE.get_ptr_mut(set + 1) else {
            return miss;
        };
        // SAFETY: as above.
        if !unsafe { (*e1).key.same_flow(&pkt.key) } {
            return miss;
        }
        e = e1;
    }
    // SAFETY: as above.
    let e = unsafe { &mut *e };
    if e.epoch != cfg.epoch {
        return miss;
    }
    e.hits = e.hits.wrapping_add(1);
    if e.hits % FLOW_CACHE_REFRESH == 0 {
        return miss;
    }
    let Some(b) = BACKENDS.get(e.backend) else {
        return miss;
    };
    if b.family == 0 || b.flags & BACKEND_DOWN != 0 {
        return miss;
    }
    count(&STATS_REASON, reason::EVENT_FLOW_CACHE_HIT, 0);
    let svc = Service {
        id: e.svc_id,
        flags: e.svc_flags,
        ring_slot: 0,
        ring_size: 0,
    };
    forward(ctx, pkt, &svc, e.backend, b, e.hash, cfg)
}

/// Remembers where a TCP flow went, in this CPU's flow-cache set whose first slot is
/// `set`: over the flow's own entry if either way holds it, else in way 0, whose flow
/// moves to way 1 (the older flow of the set is forgotten).
#[inline(always)]
fn fill_flow_cache(set: u32, key: &FlowKey, backend: u32, svc: &Service, hash: u32, epoch: u32) {
    let (Some(e0), Some(e1)) = (FLOW_CACHE.get_ptr_mut(set), FLOW_CACHE.get_ptr_mut(set + 1))
    else {
        return;
    };
    let entry = FlowCacheEntry {
        key: *key,
        backend,
        svc_id: svc.id,
        svc_flags: svc.flags,
        hash,
        epoch,
        hits: 0,
    };
    // SAFETY: as in `from_flow_cache`.
    unsafe {
        if (*e0).key.same_flow(key) {
            *e0 = entry;
        } else if (*e1).key.same_flow(key) {
            *e1 = entry;
        } else {
            // Two different slots: a plain `*e1 = *e0` would be a `memmove` call.
            core::ptr::copy_nonoverlapping(e0, e1, 1);
            *e0 = entry;
        }
    }
}

/// Whether the frame is unicast to a MAC other than this LB's (see `Config::lb_mac`).
/// Checked only before a frame is sent (forwarding, a following fragment, an echo
/// reply), where the header is at hand anyway: inserted at the
/// top of `try_lb`, LLVM's register allocation changed into a shape the verifier
/// rejects (32-bit packet pointers widened by shifts).
#[inline(always)]
fn for_other_host(ctx: &XdpContext, cfg: &Config) -> bool {
    if cfg.lb_mac == [0; 6] {
        return false;
    }
    match ptr_at::<EthHdr>(ctx, 0) {
        // SAFETY: bounds checked.
        Some(eth) => {
            let dst = unsafe { (*eth).dst_addr };
            dst[0] & 1 == 0 && dst != cfg.lb_mac
        }
        None => false,
    }
}

#[inline(always)]
fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// [`not_vip_or`] as a fail-open exit.
#[inline(always)]
fn pass_not_vip_or(key: &FlowKey, why: u32) -> (u32, u32) {
    pass(not_vip_or(key, why))
}

/// A non-VIP packet passes as `pass_not_vip`; one to a VIP we will not steer, as `why`.
#[inline(always)]
fn not_vip_or(key: &FlowKey, why: u32) -> u32 {
    if is_vip(key) {
        why
    } else {
        reason::PASS_NOT_VIP
    }
}

/// The controller marks every VIP with a service entry of proto ICMP/ICMPv6 and port 0.
#[inline(always)]
fn is_vip(key: &FlowKey) -> bool {
    let marker = ServiceKey {
        addr_be: key.dst_be,
        port_be: 0,
        proto: if key.family == FAMILY_V4 {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        },
        family: key.family,
    };
    // SAFETY: the value is copied out at once.
    unsafe { SERVICES.get(&marker).is_some() }
}

/// [`find_service`] through this CPU's service cache (entries of `epoch` only).
#[inline(always)]
fn find_service_cached(key: &FlowKey, epoch: u32) -> Option<Service> {
    let sk = service_key(key);
    let e = SERVICE_CACHE.get_ptr_mut(service_slot(&sk) & (SERVICE_CACHE_SLOTS - 1))?;
    // SAFETY: this CPU's slot, valid for the program run; XDP runs with preemption off.
    let e = unsafe { &mut *e };
    if e.epoch == epoch && e.key.same_service(&sk) {
        return Some(e.svc);
    }
    let svc = find_service(sk)?;
    *e = ServiceCacheEntry {
        key: sk,
        epoch,
        svc,
    };
    Some(svc)
}

/// The service key a packet of flow `key` looks up first (its exact port).
#[inline(always)]
fn service_key(key: &FlowKey) -> ServiceKey {
    ServiceKey {
        addr_be: key.dst_be,
        port_be: key.dport_be,
        proto: key.proto,
        family: key.family,
    }
}

/// The service for `sk`, else the VIP's port-0 "all ports" service.
#[inline(always)]
fn find_service(mut sk: ServiceKey) -> Option<Service> {
    // SAFETY: the value is copied out at once.
    if let Some(s) = unsafe { SERVICES.get(&sk) } {
        return Some(*s);
    }
    sk.port_be = 0;
    // SAFETY: as above.
    unsafe { SERVICES.get(&sk) }.copied()
}

/// Chooses the backend: connection table (unless `syn`), else the ring. Inserts the
/// result into the connection table when `remember`.
#[inline(always)]
fn pick(
    key: &FlowKey,
    svc: &Service,
    cfg: &Config,
    syn: bool,
    remember: bool,
) -> Result<(u32, Backend, u32), u32> {
    let hash = flow_hash(key, cfg.hash_seed);
    let udp = key.proto == PROTO_UDP;
    if !syn && let Some(f) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: map value pointer, valid for this program run.
        let f = unsafe { &mut *f };
        // The clock is read only where it matters (UDP idle expiry): the TCP hit path,
        // the hottest one, skips the helper call.
        let now = if udp {
            // SAFETY: helper without preconditions.
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        };
        let expired =
            udp && cfg.udp_timeout_ns != 0 && now.wrapping_sub(f.last_seen_ns) > cfg.udp_timeout_ns;
        if expired {
            count(&STATS_REASON, reason::EVENT_UDP_EXPIRED, 0);
        } else if let Some(b) = BACKENDS.get(f.backend)
            && b.family != 0
            && b.flags & BACKEND_DOWN == 0
        {
            if udp {
                f.last_seen_ns = now;
            }
            count(&STATS_REASON, reason::EVENT_CONNTRACK_HIT, 0);
            return Ok((f.backend, *b, hash));
        }
    }
    count(&STATS_REASON, reason::EVENT_CONNTRACK_MISS, 0);
    let m = svc.ring_size;
    if m == 0 || m > RING_MAX {
        // Fail closed: the service exists but has no healthy backend.
        return Err(reason::DROP_NO_BACKEND);
    }
    let idx = ring_index(svc.id, svc.ring_slot & 1, ring_slot(hash, m));
    // Fail closed: a hole in the ring is a controller bug, never forward blindly.
    let id = *RINGS.get(idx).ok_or(reason::DROP_RING_SLOT_EMPTY)?;
    let b = *BACKENDS.get(id).ok_or(reason::DROP_RING_SLOT_EMPTY)?;
    if id == 0 || b.family == 0 {
        return Err(reason::DROP_RING_SLOT_EMPTY);
    }
    if remember {
        // A SYN of a tuple already in the table (a retransmission, a reused port)
        // rewrites its entry in place: no insert, no LRU list work.
        if syn && let Some(f) = CONNTRACK.get_ptr_mut(key) {
            // SAFETY: map value pointer, valid for this program run.
            unsafe {
                (*f).backend = id;
                (*f).flags = svc.flags;
            }
            return Ok((id, b, hash));
        }
        let v = Flow {
            backend: id,
            flags: svc.flags,
            // Only UDP entries expire; TCP skips the clock read.
            last_seen_ns: if udp {
                // SAFETY: helper without preconditions.
                unsafe { bpf_ktime_get_ns() }
            } else {
                0
            },
        };
        if CONNTRACK.insert(key, &v, 0).is_err() {
            // Still forwarded by the ring, just not pinned.
            count(&STATS_REASON, reason::EVENT_TABLE_FULL, 0);
        }
    }
    Ok((id, b, hash))
}

#[inline(always)]
fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    svc: &Service,
    id: u32,
    b: &Backend,
    hash: u32,
    cfg: &Config,
) -> Verdict {
    if for_other_host(ctx, cfg) {
        // Fail open: unicast for another host (a backup LB on a flooding bridge).
        return Err(pass(reason::PASS_OTHER_HOST));
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    let v = if svc.flags & lb_common::SVC_MODE_MASK == lb_common::SVC_MODE_ENCAP {
        fwd::encap(ctx, pkt, b, hash, cfg)
    } else {
        fwd::l2(ctx, b)
    };
    if sent_to_backend(&v) {
        count(&STATS_SERVICE, svc.id, len);
        count(&STATS_BACKEND, id, len);
    }
    v
}

/// Whether `v` sends the frame towards the backend: only that counts as its traffic
/// (not a "too big" answered to the client, nor a drop).
#[inline(always)]
fn sent_to_backend(v: &Verdict) -> bool {
    matches!(*v, Ok((action, why)) if action != xdp_action::XDP_DROP
        && action != xdp_action::XDP_ABORTED
        && why != reason::TX_ICMP_TOO_BIG)
}

#[inline(always)]
fn frag_key(pkt: &Packet) -> FragKey {
    FragKey {
        src_be: pkt.key.src_be,
        dst_be: pkt.key.dst_be,
        id: pkt.frag_id,
        proto: pkt.frag_proto,
        family: pkt.key.family,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn follow_fragment(ctx: &XdpContext, pkt: &Packet) -> Verdict {
    let fk = frag_key(pkt);
    let cfg = config();
    // SAFETY: copied out at once.
    let Some(f) = (unsafe { FRAGS.get(&fk) }).copied() else {
        let l4 = pkt.key.proto == PROTO_TCP || pkt.key.proto == PROTO_UDP;
        if !l4 {
            // Not a datagram the LB steers (or one whose protocol this fragment does
            // not say): as its unfragmented packets, it passes.
            return Err(pass_not_vip_or(&pkt.key, reason::PASS_UNSUPPORTED));
        }
        if is_vip(&pkt.key) {
            if for_other_host(ctx, &cfg) {
                // Fail open: the datagram is another host's (see `forward`).
                return Err(pass(reason::PASS_OTHER_HOST));
            }
            // A rare event: logged through aya-log (a ring buffer the controller
            // drains), never on the forwarding path.
            aya_log_ebpf::debug!(ctx, "orphan fragment id {} dropped", fk.id);
            return Ok((xdp_action::XDP_DROP, reason::DROP_FRAG_ORPHAN));
        }
        return Err(pass(reason::PASS_NOT_VIP));
    };
    // The first fragment was recorded before `forward` looked at the MAC: a datagram
    // unicast to another host (a backup LB on a flooding bridge) is that host's to
    // forward, every fragment of it. Fail open.
    if for_other_host(ctx, &cfg) {
        return Err(pass(reason::PASS_OTHER_HOST));
    }
    // The backend may have gone since the first fragment: then the datagram is lost
    // anyway (fail closed).
    let b = match BACKENDS.get(f.backend) {
        Some(b) if b.family != 0 => *b,
        _ => return Ok((xdp_action::XDP_DROP, reason::DROP_RING_SLOT_EMPTY)),
    };
    count(&STATS_REASON, reason::EVENT_FRAG_FOLLOWED, 0);
    let svc = Service {
        id: 0,
        flags: f.flags,
        ring_slot: 0,
        ring_size: 0,
    };
    let hash = flow_hash(&pkt.key, cfg.hash_seed);
    let len = (ctx.data_end() - ctx.data()) as u64;
    let v = if svc.flags & lb_common::SVC_MODE_MASK == lb_common::SVC_MODE_ENCAP {
        fwd::encap(ctx, pkt, &b, hash, &cfg)
    } else {
        fwd::l2(ctx, &b)
    };
    if sent_to_backend(&v) {
        count(&STATS_BACKEND, f.backend, len);
    }
    v
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext) -> Result<Packet, (u32, u32)> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(pass(reason::PASS_MALFORMED));
    }
    // IPv4 options are skipped by their length (IHL), never interpreted.
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    let ip_len = usize::from(be16(ip.tot_len));
    let frame = ctx.data_end() - ctx.data();
    if ihl < Ipv4Hdr::LEN || ip_len < ihl || ETH_LEN + ip_len > frame {
        return Err(pass(reason::PASS_MALFORMED));
    }
    let frags = be16(ip.frags);
    let more = frags & 0x2000 != 0;
    let offset = frags & 0x1fff;
    // SAFETY: inside the bounds-checked header.
    let (src, dst) = unsafe {
        (
            wide::load32(ip.src_addr.as_ptr()),
            wide::load32(ip.dst_addr.as_ptr()),
        )
    };
    Ok(Packet {
        key: FlowKey {
            src_be: [src, 0, 0, 0],
            dst_be: [dst, 0, 0, 0],
            sport_be: 0,
            dport_be: 0,
            proto: ip.proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        },
        l4_off: ETH_LEN + ihl,
        ip_len,
        ihl,
        frag_id: u32::from(be16(ip.id)),
        is_frag: more || offset != 0,
        first_frag: offset == 0,
        frag_proto: ip.proto,
    })
}

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// How many extension headers we walk before refusing the packet.
const MAX_EXT_HEADERS: usize = 4;

#[inline(always)]
fn parse_v6(ctx: &XdpContext) -> Result<Packet, (u32, u32)> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(pass(reason::PASS_MALFORMED));
    }
    let payload = usize::from(be16(ip.payload_len));
    let frame = ctx.data_end() - ctx.data();
    // A zero payload length means a jumbogram (RFC 2675): not on Ethernet, refuse.
    if payload == 0 || ETH_LEN + Ipv6Hdr::LEN + payload > frame {
        return Err(pass(reason::PASS_MALFORMED));
    }
    // SAFETY: inside the bounds-checked header.
    let (src_be, dst_be) = unsafe { (words16(&ip.src_addr), words16(&ip.dst_addr)) };
    let mut key = FlowKey {
        src_be,
        dst_be,
        sport_be: 0,
        dport_be: 0,
        proto: ip.next_hdr,
        family: FAMILY_V6,
        _pad: [0; 2],
    };
    let mut off = ETH_LEN + Ipv6Hdr::LEN;
    let mut pkt_frag = (0u32, false, true);
    let mut frag_proto = 0;
    // Walk the extension headers we understand (RFC 8200 section 4); anything else
    // past them is the upper layer, or something we refuse below.
    for _ in 0..MAX_EXT_HEADERS {
        let next = key.proto;
        if next == NEXTHDR_HOP || next == NEXTHDR_DEST || next == NEXTHDR_ROUTING {
            let h = ptr_at::<[u8; 4]>(ctx, off).ok_or(pass(reason::PASS_MALFORMED))?;
            // SAFETY: bounds checked.
            let h = unsafe { *h };
            if next == NEXTHDR_ROUTING && h[3] != 0 {
                // Segments left: this hop is not the final destination, so the
                // destination address is not the flow's; refuse rather than mis-steer.
                return Err(pass_not_vip_or(&key, reason::PASS_UNSUPPORTED));
            }
            key.proto = h[0];
            off += (usize::from(h[1]) + 1) * 8;
        } else if next == NEXTHDR_FRAGMENT {
            let h = ptr_at::<[u8; 8]>(ctx, off).ok_or(pass(reason::PASS_MALFORMED))?;
            // SAFETY: bounds checked.
            let h = unsafe { *h };
            key.proto = h[0];
            frag_proto = h[0];
            let off_m = u16::from_be_bytes([h[2], h[3]]);
            let offset = off_m >> 3;
            let more = off_m & 1 != 0;
            pkt_frag = (
                u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                more || offset != 0,
                offset == 0,
            );
            off += 8;
            if offset != 0 {
                // A later fragment: what follows is the middle of the datagram, not
                // headers (a destination options header after the Fragment header
                // is in the first fragment only).
                break;
            }
        } else {
            break;
        }
    }
    let next = key.proto;
    let later_frag = pkt_frag.1 && !pkt_frag.2;
    if !later_frag
        && (next == NEXTHDR_HOP
            || next == NEXTHDR_DEST
            || next == NEXTHDR_ROUTING
            || next == NEXTHDR_FRAGMENT)
    {
        // More extension headers than we walk: refuse deliberately.
        return Err(pass_not_vip_or(&key, reason::PASS_UNSUPPORTED));
    }
    if off > ETH_LEN + Ipv6Hdr::LEN + payload {
        return Err(pass(reason::PASS_MALFORMED));
    }
    Ok(Packet {
        key,
        l4_off: off,
        ip_len: Ipv6Hdr::LEN + payload,
        ihl: Ipv6Hdr::LEN,
        frag_id: pkt_frag.0,
        is_frag: pkt_frag.1,
        first_frag: pkt_frag.2,
        frag_proto,
    })
}

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_ECHO_REQUEST: u8 = 128;

#[inline(always)]
fn icmp(ctx: &XdpContext, pkt: &mut Packet) -> Verdict {
    if pkt.is_frag {
        return Err(pass_not_vip_or(&pkt.key, reason::PASS_UNSUPPORTED));
    }
    let h = ptr_at::<[u8; 8]>(ctx, pkt.l4_off).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    let ty = unsafe { (*h)[0] };
    let v4 = pkt.key.family == FAMILY_V4;
    if (v4 && ty == ICMP_ECHO_REQUEST) || (!v4 && ty == ICMPV6_ECHO_REQUEST) {
        if !is_vip(&pkt.key) {
            return Err(pass(reason::PASS_NOT_VIP));
        }
        if for_other_host(ctx, &config()) {
            // Fail open: the host the frame is for answers it (see `forward`).
            return Err(pass(reason::PASS_OTHER_HOST));
        }
        return fwd::echo_reply(ctx, pkt);
    }
    if (v4 && ty == ICMP_DEST_UNREACH)
        || (!v4 && (ty == ICMPV6_DEST_UNREACH || ty == ICMPV6_PKT_TOOBIG))
    {
        return icmp_error(ctx, pkt);
    }
    Err(pass(reason::PASS_NOT_VIP))
}

/// An ICMP error quoting a packet the VIP "sent" (really a backend, with DSR): the
/// quoted header is (VIP:port -> client:port); reverse it to find the flow's backend.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, pkt: &Packet) -> Verdict {
    let inner = pkt.l4_off + 8;
    let mut key = FlowKey::default();
    let inner_l4;
    if pkt.key.family == FAMILY_V4 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, inner).ok_or(pass(reason::PASS_MALFORMED))?;
        // SAFETY: bounds checked.
        let ip = unsafe { &*ip };
        let ihl = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
            return Err(pass(reason::PASS_MALFORMED));
        }
        key.src_be[0] = u32::from_ne_bytes(ip.dst_addr);
        key.dst_be[0] = u32::from_ne_bytes(ip.src_addr);
        key.proto = ip.proto;
        key.family = FAMILY_V4;
        inner_l4 = inner + ihl;
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, inner).ok_or(pass(reason::PASS_MALFORMED))?;
        // SAFETY: bounds checked.
        let ip = unsafe { &*ip };
        // SAFETY: inside the bounds-checked header.
        unsafe {
            key.src_be = words16(&ip.dst_addr);
            key.dst_be = words16(&ip.src_addr);
        }
        // Quoted extension headers are not walked: such an error passes.
        key.proto = ip.next_hdr;
        key.family = FAMILY_V6;
        inner_l4 = inner + Ipv6Hdr::LEN;
    }
    if key.proto != PROTO_TCP && key.proto != PROTO_UDP {
        return Err(pass(reason::PASS_NOT_VIP));
    }
    let ports = ptr_at::<[u8; 4]>(ctx, inner_l4).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    let ports = unsafe { *ports };
    key.dport_be = u16::from_ne_bytes([ports[0], ports[1]]);
    key.sport_be = u16::from_ne_bytes([ports[2], ports[3]]);
    // The error must be addressed to the VIP the quoted packet came from.
    if key.dst_be != pkt.key.dst_be {
        return Err(pass(reason::PASS_NOT_VIP));
    }
    let svc = find_service(service_key(&key)).ok_or(pass(reason::PASS_NOT_VIP))?;
    let cfg = config();
    let (id, b, hash) = match pick(&key, &svc, &cfg, false, false) {
        Ok(v) => v,
        Err(why) => return Ok((xdp_action::XDP_DROP, why)),
    };
    count(&STATS_REASON, reason::EVENT_ICMP_STEERED, 0);
    forward(ctx, pkt, &svc, id, &b, hash, &cfg)
}
