//! Packet fixtures: `xdp_lb` and `xdp_decap` run on hand-made frames through
//! BPF_PROG_TEST_RUN.
//!
//! The heart is one table of {description, input frame, seeded maps, expected action,
//! expected output bytes, expected exit reason and events}. Its rows run in order
//! against one loaded data plane whose maps hold a fixed "world" (services, rings,
//! backends, config; see [`SVCS`] and [`BACKENDS`]); a row may seed more (a connection
//! table entry) and check the tables afterwards. Rows use distinct client ports so they
//! do not see each other's connection-table entries, except where a sequence is the
//! point (fragments in and out of order).
//!
//! Expected outputs are built here, independently of the program: from the input (L2
//! rewrite), or with etherparse from the documented header layout (encapsulation,
//! ICMP replies). Every frame the program sends has its checksums re-verified with
//! etherparse ([`verify_checksums`]), never with lb-common's helpers. The flow hash and
//! ring slot are predicted with `lb_common::hash::flow_hash`, the documented contract
//! shared by the controller and the program.
//!
//! Every row also checks the per-reason counters: its exit reason moved by exactly one
//! packet (and the frame's bytes), the listed events moved by one, nothing else moved.

use aya::{
    maps::{MapData, PerCpuArray},
    programs::Xdp,
};
use etherparse::{
    EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type,
    IpFragOffset, IpNumber, Ipv4Dscp, Ipv4Ecn, Ipv4Header, Ipv4HeaderSlice, Ipv4Options,
    Ipv6FlowLabel, Ipv6Header, Ipv6RawExtHeader, TcpHeader, UdpHeader,
    icmpv4::DestUnreachableHeader,
};
use lb::dataplane::{Dataplane, LoadOptions, Maps, load_object, load_program, sum, test_run};
use lb_common::{
    BACKEND_DOWN, BACKEND_REDIRECT, Backend, Config, Counter, FAMILY_V4, FLOW_CACHE_REFRESH, Flow,
    FlowKey, PROTO_TCP, PROTO_UDP, SVC_MODE_ENCAP, SVC_MODE_L2, Service, ServiceKey,
    hash::flow_hash, reason, ring_index,
};
use lb_tests::{
    addr::{Ip, words16},
    checksums::verify_checksums,
};

// XDP actions (uapi/linux/bpf.h).
const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

// ---------------------------------------------------------------------------------
// The world every fixture runs in.
// ---------------------------------------------------------------------------------

type Mac = [u8; 6];

const LB_MAC: Mac = [0x02, 0x4c, 0x42, 0x00, 0x00, 0x01];
const CLIENT_MAC: Mac = [0x02, 0xc1, 0x00, 0x00, 0x00, 0x01];

const VIP4: [u8; 4] = [10, 0, 0, 100];
/// The VIP whose services encapsulate.
const VIP4E: [u8; 4] = [10, 0, 1, 100];
const VIP6: [u8; 16] = v6(0xfd00, 0x100);
const CLIENT4: [u8; 4] = [192, 0, 2, 10];
const CLIENT6: [u8; 16] = v6(0x2001_0db8, 0x10);
/// A router on the client's path (source of ICMP errors).
const ROUTER4: [u8; 4] = [198, 51, 100, 1];
const ROUTER6: [u8; 16] = v6(0x2001_0db8, 0xfe);
/// Addresses on the LB's network that are not VIPs.
const OTHER4: [u8; 4] = [10, 0, 0, 200];
const OTHER6: [u8; 16] = v6(0xfd00, 0x200);

const SEED: u32 = 0x5eed_0001;
const ENCAP_MTU: u32 = 1500;
const UDP_TIMEOUT_NS: u64 = 5_000_000_000;
const ENCAP_SRC4: [u8; 4] = [172, 16, 0, 0];
const ENCAP_SRC6: [u8; 16] = v6(0xfd00_000e, 0);
/// Ring size of every service with backends (a small prime).
const M: u32 = 13;
/// Backend id written into every slot of the ring halves that are not live: a row that
/// read the wrong half would come out with this backend's MAC.
const DECOY: u32 = 11;

/// `prefix::last` with the first 32 bits `hi` and the last 16 bits `lo`.
const fn v6(hi: u32, lo: u16) -> [u8; 16] {
    let h = hi.to_be_bytes();
    let l = lo.to_be_bytes();
    [
        h[0], h[1], h[2], h[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1],
    ]
}

struct Be {
    id: u32,
    addr: Ip,
    flags: u8,
    tx_port: u32,
}

/// Backends (MAC `02:be:00:00:00:<id>`). Id 12 is deliberately not configured.
#[rustfmt::skip]
const BACKENDS: &[Be] = &[
    Be { id: 1, addr: Ip::V4([10, 0, 0, 11]), flags: 0, tx_port: 0 },
    Be { id: 2, addr: Ip::V4([10, 0, 0, 12]), flags: 0, tx_port: 0 },
    Be { id: 3, addr: Ip::V4([10, 0, 0, 13]), flags: 0, tx_port: 0 },
    Be { id: 4, addr: Ip::V6(v6(0xfd00_000b, 4)), flags: 0, tx_port: 0 },
    Be { id: 5, addr: Ip::V6(v6(0xfd00_000b, 5)), flags: 0, tx_port: 0 },
    Be { id: 6, addr: Ip::V4([10, 2, 0, 6]), flags: 0, tx_port: 0 },
    Be { id: 7, addr: Ip::V4([10, 2, 0, 7]), flags: 0, tx_port: 0 },
    // Behind another interface: devmap port 0 (set to `lo`).
    Be { id: 8, addr: Ip::V4([10, 0, 0, 18]), flags: BACKEND_REDIRECT, tx_port: 0 },
    // Behind a devmap port that is not configured.
    Be { id: 9, addr: Ip::V4([10, 0, 0, 19]), flags: BACKEND_REDIRECT, tx_port: 7 },
    Be { id: 10, addr: Ip::V4([10, 0, 0, 20]), flags: BACKEND_DOWN, tx_port: 0 },
    Be { id: DECOY, addr: Ip::V4([10, 0, 0, 21]), flags: 0, tx_port: 0 },
];

const UNCONFIGURED_BACKEND: u32 = 12;

fn mac_of(id: u32) -> Mac {
    [0x02, 0xbe, 0, 0, 0, id as u8]
}

fn backend(id: u32) -> &'static Be {
    BACKENDS
        .iter()
        .find(|b| b.id == id)
        .expect("backend in the world")
}

struct Svc {
    id: u32,
    vip: Ip,
    proto: u8,
    /// 0: all ports.
    port: u16,
    mode: u32,
    /// Live ring slot `i` holds `backends[i % len]`; empty: every slot holds id 0.
    backends: &'static [u32],
    ring_size: u32,
}

const S_V4_TCP80: u32 = 0;
const S_V4_UDP_ALL: u32 = 1;
const S_V6_TCP80: u32 = 2;
const S_V6_UDP_ALL_ENCAP: u32 = 3;
const S_V4E_TCP_ALL: u32 = 4;
const S_V4E_UDP_ALL_IN_V6: u32 = 5;
const S_EMPTY_RING: u32 = 6;
const S_RING_HOLES: u32 = 7;
const S_RING_UNCONFIGURED: u32 = 8;
const S_REDIRECT: u32 = 9;
const S_REDIRECT_NO_PORT: u32 = 10;
const S_V6_IN_V4: u32 = 11;
const S_V4_UDP53_ENCAP: u32 = 12;
const MAX_SERVICES: u32 = 13;

#[rustfmt::skip]
const SVCS: &[Svc] = &[
    Svc { id: S_V4_TCP80, vip: Ip::V4(VIP4), proto: PROTO_TCP, port: 80, mode: SVC_MODE_L2, backends: &[1, 2, 3], ring_size: M },
    Svc { id: S_V4_UDP_ALL, vip: Ip::V4(VIP4), proto: PROTO_UDP, port: 0, mode: SVC_MODE_L2, backends: &[1, 2, 3], ring_size: M },
    Svc { id: S_V6_TCP80, vip: Ip::V6(VIP6), proto: PROTO_TCP, port: 80, mode: SVC_MODE_L2, backends: &[4, 5], ring_size: M },
    Svc { id: S_V6_UDP_ALL_ENCAP, vip: Ip::V6(VIP6), proto: PROTO_UDP, port: 0, mode: SVC_MODE_ENCAP, backends: &[4, 5], ring_size: M },
    Svc { id: S_V4E_TCP_ALL, vip: Ip::V4(VIP4E), proto: PROTO_TCP, port: 0, mode: SVC_MODE_ENCAP, backends: &[6, 7], ring_size: M },
    Svc { id: S_V4E_UDP_ALL_IN_V6, vip: Ip::V4(VIP4E), proto: PROTO_UDP, port: 0, mode: SVC_MODE_ENCAP, backends: &[4, 5], ring_size: M },
    Svc { id: S_EMPTY_RING, vip: Ip::V4(VIP4), proto: PROTO_TCP, port: 81, mode: SVC_MODE_L2, backends: &[1], ring_size: 0 },
    Svc { id: S_RING_HOLES, vip: Ip::V4(VIP4), proto: PROTO_TCP, port: 82, mode: SVC_MODE_L2, backends: &[], ring_size: M },
    Svc { id: S_RING_UNCONFIGURED, vip: Ip::V4(VIP4), proto: PROTO_TCP, port: 83, mode: SVC_MODE_L2, backends: &[UNCONFIGURED_BACKEND], ring_size: M },
    Svc { id: S_REDIRECT, vip: Ip::V4(VIP4), proto: PROTO_TCP, port: 84, mode: SVC_MODE_L2, backends: &[8], ring_size: M },
    Svc { id: S_REDIRECT_NO_PORT, vip: Ip::V4(VIP4), proto: PROTO_TCP, port: 85, mode: SVC_MODE_L2, backends: &[9], ring_size: M },
    Svc { id: S_V6_IN_V4, vip: Ip::V6(VIP6), proto: PROTO_TCP, port: 443, mode: SVC_MODE_ENCAP, backends: &[6], ring_size: M },
    Svc { id: S_V4_UDP53_ENCAP, vip: Ip::V4(VIP4), proto: PROTO_UDP, port: 53, mode: SVC_MODE_ENCAP, backends: &[6, 7], ring_size: M },
];

const VIPS: [Ip; 3] = [Ip::V4(VIP4), Ip::V4(VIP4E), Ip::V6(VIP6)];

fn svc(id: u32) -> &'static Svc {
    SVCS.iter()
        .find(|s| s.id == id)
        .expect("service in the world")
}

/// The live half of a service's ring, as the controller would have written it.
fn live_ring(s: &Svc) -> Vec<u32> {
    (0..s.ring_size as usize)
        .map(|i| {
            if s.backends.is_empty() {
                0
            } else {
                s.backends[i % s.backends.len()]
            }
        })
        .collect()
}

/// Where the ring sends `key`: (backend id, flow hash).
fn ring_pick(svc_id: u32, key: &FlowKey) -> (u32, u32) {
    let s = svc(svc_id);
    let h = flow_hash(key, SEED);
    (
        live_ring(s)[lb_common::ring_slot(h, s.ring_size) as usize],
        h,
    )
}

/// A backend of the service's ring other than `not`.
fn other_backend(svc_id: u32, not: u32) -> u32 {
    *svc(svc_id)
        .backends
        .iter()
        .find(|&&b| b != not)
        .expect("a second backend")
}

fn world_config() -> Config {
    Config {
        hash_seed: SEED,
        encap_mtu: ENCAP_MTU,
        udp_timeout_ns: UDP_TIMEOUT_NS,
        encap_src_v4_be: u32::from_ne_bytes(ENCAP_SRC4),
        epoch: 0,
        encap_src_v6_be: words16(ENCAP_SRC6),
        lb_mac: [0; 6],
        _pad2: [0; 2],
    }
}

fn seed_world(maps: &mut Maps) -> anyhow::Result<()> {
    maps.config.set(0, world_config(), 0)?;
    for b in BACKENDS {
        let v = Backend {
            addr_be: b.addr.words(),
            mac: mac_of(b.id),
            family: b.addr.family(),
            flags: b.flags,
            tx_port: b.tx_port,
            _pad: 0,
        };
        maps.backends.set(b.id, v, 0)?;
    }
    for s in SVCS {
        let key = ServiceKey {
            addr_be: s.vip.words(),
            port_be: s.port.to_be(),
            proto: s.proto,
            family: s.vip.family(),
        };
        // Odd ids live in half 1, even ids in half 0: both halves get exercised.
        let live = s.id % 2;
        let v = Service {
            id: s.id,
            flags: s.mode,
            ring_slot: live,
            ring_size: s.ring_size,
        };
        maps.services.insert(key, v, 0)?;
        for (slot, id) in live_ring(s).into_iter().enumerate() {
            maps.rings.set(ring_index(s.id, live, slot as u32), id, 0)?;
            maps.rings
                .set(ring_index(s.id, 1 - live, slot as u32), DECOY, 0)?;
        }
    }
    for vip in VIPS {
        let marker = ServiceKey {
            addr_be: vip.words(),
            port_be: 0,
            proto: if vip.family() == FAMILY_V4 {
                PROTO_ICMP
            } else {
                PROTO_ICMPV6
            },
            family: vip.family(),
        };
        maps.services.insert(marker, Service::default(), 0)?;
    }
    // Port 0 of the devmap: the loopback device (ifindex 1) always exists.
    maps.tx_ports.set(0, 1, None, 0)?;
    Ok(())
}

fn load_world(conntrack_size: u32) -> Dataplane {
    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_size,
        max_services: MAX_SERVICES,
    })
    .expect("loading xdp_lb");
    seed_world(&mut dp.maps).expect("seeding the maps");
    dp
}

fn key(src: Ip, dst: Ip, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_be: src.words(),
        dst_be: dst.words(),
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto,
        family: src.family(),
        _pad: [0; 2],
    }
}

fn now_mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------
// Frame construction, with etherparse computing every checksum.
// ---------------------------------------------------------------------------------

fn eth(dst: Mac, src: Mac, ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut v = Ethernet2Header {
        source: src,
        destination: dst,
        ether_type,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

/// A client frame arriving at the LB.
fn frame(ip: &[u8]) -> Vec<u8> {
    let ty = if ip[0] >> 4 == 4 {
        EtherType::IPV4
    } else {
        EtherType::IPV6
    };
    eth(LB_MAC, CLIENT_MAC, ty, ip)
}

#[derive(Clone)]
struct V4 {
    src: [u8; 4],
    dst: [u8; 4],
    tos: u8,
    id: u16,
    df: bool,
    mf: bool,
    /// In 8-byte units.
    frag_off: u16,
    options: Vec<u8>,
}

fn v4h(src: [u8; 4], dst: [u8; 4]) -> V4 {
    V4 {
        src,
        dst,
        tos: 0,
        id: 0x1111,
        df: true,
        mf: false,
        frag_off: 0,
        options: Vec::new(),
    }
}

fn ipv4(h: &V4, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4Header {
        dscp: Ipv4Dscp::try_new(h.tos >> 2).unwrap(),
        ecn: Ipv4Ecn::try_new(h.tos & 3).unwrap(),
        total_len: 0,
        identification: h.id,
        dont_fragment: h.df,
        more_fragments: h.mf,
        fragment_offset: IpFragOffset::try_new(h.frag_off).unwrap(),
        time_to_live: 64,
        protocol: IpNumber(proto),
        header_checksum: 0,
        source: h.src,
        destination: h.dst,
        options: Ipv4Options::try_from(&h.options[..]).unwrap(),
    };
    ip.total_len = (ip.header_len() + payload.len()) as u16;
    ip.header_checksum = ip.calc_header_checksum();
    let mut v = ip.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// `ip` (an IPv4 packet) with its TTL set to `ttl` and the header checksum redone.
fn with_ttl(ip: &[u8], ttl: u8) -> Vec<u8> {
    let mut h = Ipv4HeaderSlice::from_slice(ip).unwrap().to_header();
    h.time_to_live = ttl;
    h.header_checksum = h.calc_header_checksum();
    let mut v = ip.to_vec();
    v[..h.header_len()].copy_from_slice(&h.to_bytes());
    v
}

/// A frame of an IPv4 packet with its total length set to `len` (checksum redone),
/// the bytes after it left in the frame as Ethernet padding.
fn with_total_len(f: &[u8], len: u16) -> Vec<u8> {
    let mut h = Ipv4HeaderSlice::from_slice(&f[14..]).unwrap().to_header();
    h.total_len = len;
    h.header_checksum = h.calc_header_checksum();
    let mut v = f.to_vec();
    v[14..14 + h.header_len()].copy_from_slice(&h.to_bytes());
    v
}

#[derive(Clone)]
enum Ext {
    /// Hop-by-hop (0), routing (43) or destination options (60), with its body after
    /// the next-header and length bytes.
    Raw(u8, Vec<u8>),
    Frag {
        off: u16,
        more: bool,
        id: u32,
    },
}

const EXT_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAG: u8 = 44;
const EXT_DEST: u8 = 60;

fn ext_type(e: &Ext) -> u8 {
    match e {
        Ext::Raw(t, _) => *t,
        Ext::Frag { .. } => EXT_FRAG,
    }
}

/// PadN options filling a 6-byte extension header body.
fn padn6() -> Vec<u8> {
    vec![1, 4, 0, 0, 0, 0]
}

/// Routing header type 4 body with `left` segments left and one 16-byte segment.
fn routing(left: u8) -> Vec<u8> {
    let mut b = vec![4, left, 0, 0, 0, 0];
    b.extend_from_slice(&OTHER6);
    b
}

/// An IPv6 Fragment header, written by hand after RFC 8200 section 4.5 (bytes 2-3 are
/// `offset << 3 | M`): etherparse 0.16's `Ipv6FragmentHeader` puts the offset and the
/// M flag at the wrong bit positions (etherparse#150, fixed in 0.20).
fn frag_header(next: u8, off: u16, more: bool, id: u32) -> [u8; 8] {
    let w = (off << 3) | u16::from(more);
    let [a, b] = w.to_be_bytes();
    let [c, d, e, f] = id.to_be_bytes();
    [next, 0, a, b, c, d, e, f]
}

fn ipv6(src: [u8; 16], dst: [u8; 16], hop: u8, exts: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = IpNumber(exts.get(i + 1).map_or(proto, ext_type));
        match e {
            Ext::Raw(_, b) => {
                body.extend_from_slice(&Ipv6RawExtHeader::new_raw(next, b).unwrap().to_bytes())
            }
            Ext::Frag { off, more, id } => {
                body.extend_from_slice(&frag_header(next.0, *off, *more, *id))
            }
        }
    }
    body.extend_from_slice(payload);
    let h = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
        payload_length: body.len() as u16,
        next_header: IpNumber(exts.first().map_or(proto, ext_type)),
        hop_limit: hop,
        source: src,
        destination: dst,
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

#[derive(Clone, Copy, Debug)]
enum Tcp {
    Syn,
    Ack,
}

fn tcp(src: Ip, dst: Ip, sport: u16, dport: u16, kind: Tcp, payload: &[u8]) -> Vec<u8> {
    let mut t = TcpHeader::new(sport, dport, 1000, 64240);
    match kind {
        Tcp::Syn => t.syn = true,
        Tcp::Ack => {
            t.ack = true;
            t.acknowledgment_number = 5000;
        }
    }
    t.checksum = match (src, dst) {
        (Ip::V4(s), Ip::V4(d)) => t.calc_checksum_ipv4_raw(s, d, payload).unwrap(),
        (Ip::V6(s), Ip::V6(d)) => t.calc_checksum_ipv6_raw(s, d, payload).unwrap(),
        _ => unreachable!(),
    };
    let mut v = t.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn udp(src: Ip, dst: Ip, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: (8 + payload.len()) as u16,
        checksum: 0,
    };
    u.checksum = match (src, dst) {
        (Ip::V4(s), Ip::V4(d)) => u.calc_checksum_ipv4_raw(s, d, payload).unwrap(),
        (Ip::V6(s), Ip::V6(d)) => u.calc_checksum_ipv6_raw(s, d, payload).unwrap(),
        _ => unreachable!(),
    };
    let mut v = u.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn icmp4(ty: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let mut v = Icmpv4Header::with_checksum(ty, payload).to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn icmp6(ty: Icmpv6Type, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut v = Icmpv6Header::with_checksum(ty, src, dst, payload)
        .unwrap()
        .to_bytes()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// A whole client frame: TCP over IPv4/IPv6 without options.
fn tcp_frame(src: Ip, dst: Ip, sport: u16, dport: u16, kind: Tcp, len: usize) -> Vec<u8> {
    let seg = tcp(src, dst, sport, dport, kind, &payload(len));
    match (src, dst) {
        (Ip::V4(s), Ip::V4(d)) => frame(&ipv4(&v4h(s, d), PROTO_TCP, &seg)),
        (Ip::V6(s), Ip::V6(d)) => frame(&ipv6(s, d, 64, &[], PROTO_TCP, &seg)),
        _ => unreachable!(),
    }
}

fn udp_frame(src: Ip, dst: Ip, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let dg = udp(src, dst, sport, dport, &payload(len));
    match (src, dst) {
        (Ip::V4(s), Ip::V4(d)) => frame(&ipv4(&v4h(s, d), PROTO_UDP, &dg)),
        (Ip::V6(s), Ip::V6(d)) => frame(&ipv6(s, d, 64, &[], PROTO_UDP, &dg)),
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------
// Expected outputs, from the documented behaviour.
// ---------------------------------------------------------------------------------

/// L2 direct server return: destination MAC = the backend's, source MAC = the MAC the
/// frame arrived for; not one byte after the Ethernet header changes.
fn l2_out(input: &[u8], backend_id: u32) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&mac_of(backend_id));
    out[6..12].copy_from_slice(&input[0..6]);
    out
}

/// IP-in-IP as documented in lb-common's `Config` and fwd.rs: the outer source is the
/// configured prefix with the hash in its low 16 bits (IPv4) or last word (IPv6), TTL /
/// hop limit 64, IPv4 id 0 and no flags, IPv6 flow label = low 20 bits of the hash, and
/// the inner TOS / traffic class copied out.
fn encap_out(input: &[u8], backend_id: u32, hash: u32) -> Vec<u8> {
    let inner = &input[14..];
    let inner_v4 = input[12..14] == [0x08, 0x00];
    let tos = if inner_v4 {
        inner[1]
    } else {
        (inner[0] << 4) | (inner[1] >> 4)
    };
    let proto = if inner_v4 {
        IpNumber::IPV4
    } else {
        IpNumber::IPV6
    };
    let b = backend(backend_id);
    let mut ip = match b.addr {
        Ip::V4(dst) => {
            let h = hash.to_be_bytes();
            let mut o = Ipv4Header {
                dscp: Ipv4Dscp::try_new(tos >> 2).unwrap(),
                ecn: Ipv4Ecn::try_new(tos & 3).unwrap(),
                total_len: (20 + inner.len()) as u16,
                identification: 0,
                dont_fragment: false,
                more_fragments: false,
                fragment_offset: IpFragOffset::ZERO,
                time_to_live: 64,
                protocol: proto,
                header_checksum: 0,
                source: [ENCAP_SRC4[0], ENCAP_SRC4[1], h[2], h[3]],
                destination: dst,
                options: Ipv4Options::new(),
            };
            o.header_checksum = o.calc_header_checksum();
            eth(
                mac_of(backend_id),
                input[0..6].try_into().unwrap(),
                EtherType::IPV4,
                &o.to_bytes(),
            )
        }
        Ip::V6(dst) => {
            let mut src = ENCAP_SRC6;
            src[12..].copy_from_slice(&hash.to_be_bytes());
            let o = Ipv6Header {
                traffic_class: tos,
                flow_label: Ipv6FlowLabel::try_new(hash & 0xf_ffff).unwrap(),
                payload_length: inner.len() as u16,
                next_header: proto,
                hop_limit: 64,
                source: src,
                destination: dst,
            };
            eth(
                mac_of(backend_id),
                input[0..6].try_into().unwrap(),
                EtherType::IPV6,
                &o.to_bytes(),
            )
        }
    };
    ip.extend_from_slice(inner);
    ip
}

/// ICMP "fragmentation needed" from the VIP back to the client (RFC 792/1191): quotes
/// the IP header (options included) and 8 bytes, trimmed to an even length.
fn frag_needed_out(input: &[u8], mtu: u16) -> Vec<u8> {
    let ip = Ipv4HeaderSlice::from_slice(&input[14..]).unwrap();
    let ihl = usize::from(ip.ihl()) * 4;
    let quote_len = (ihl + 8).min(usize::from(ip.total_len())) & !1;
    let quote = &input[14..14 + quote_len];
    let icmp = icmp4(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu,
        }),
        quote,
    );
    let mut h = Ipv4Header::new(
        icmp.len() as u16,
        64,
        IpNumber::ICMP,
        ip.destination(),
        ip.source(),
    )
    .unwrap();
    h.dscp = Ipv4Dscp::try_new(0xc0 >> 2).unwrap();
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(&icmp);
    eth(
        input[6..12].try_into().unwrap(),
        input[0..6].try_into().unwrap(),
        EtherType::IPV4,
        &v,
    )
}

/// ICMPv6 "packet too big" from the VIP (RFC 4443 2.4): quotes as much as fits in the
/// minimum MTU (1232 bytes), trimmed to an even length; hop limit 255.
fn packet_too_big_out(input: &[u8], mtu: u32) -> Vec<u8> {
    let (ip, _) = Ipv6Header::from_slice(&input[14..]).unwrap();
    let quote_len = (40 + usize::from(ip.payload_length)).min(1232) & !1;
    let quote = &input[14..14 + quote_len];
    let icmp = icmp6(
        Icmpv6Type::PacketTooBig { mtu },
        ip.destination,
        ip.source,
        quote,
    );
    let v = ipv6(ip.destination, ip.source, 255, &[], PROTO_ICMPV6, &icmp);
    // `ipv6` sets a flow label; the reply carries none.
    let mut v = v;
    v[1] = 0;
    v[2] = 0;
    v[3] = 0;
    eth(
        input[6..12].try_into().unwrap(),
        input[0..6].try_into().unwrap(),
        EtherType::IPV6,
        &v,
    )
}

// ---------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------

#[derive(Debug)]
enum Out {
    /// XDP_PASS: the frame must come back byte for byte.
    Unchanged,
    Bytes(Vec<u8>),
    /// XDP_DROP: whatever the program left in the buffer is never sent.
    Ignored,
}

/// Map state a row checks after running.
enum After {
    /// The connection table maps `key` to `Some(backend)` / has no entry.
    Conntrack(FlowKey, Option<u32>),
}

/// Changes made just before the frame is sent (undone after the row).
enum Before {
    /// The controller wrote a change: `Config::epoch` moves on.
    BumpEpoch,
    /// Backend `id` is marked down for this row only.
    BackendDown(u32),
}

struct Fixture {
    desc: String,
    input: Vec<u8>,
    /// Extra connection-table entries, on top of the world.
    seed: Vec<(FlowKey, Flow)>,
    action: u32,
    output: Out,
    reason: u32,
    events: Vec<u32>,
    /// The per-backend counter that must move by one packet.
    backend: Option<u32>,
    before: Vec<Before>,
    after: Vec<After>,
}

impl Fixture {
    fn new(desc: impl Into<String>, input: Vec<u8>) -> Self {
        Self {
            desc: desc.into(),
            input,
            seed: Vec::new(),
            action: XDP_PASS,
            output: Out::Unchanged,
            reason: reason::PASS_NOT_VIP,
            events: Vec::new(),
            backend: None,
            before: Vec::new(),
            after: Vec::new(),
        }
    }

    fn pass(mut self, why: u32) -> Self {
        self.action = XDP_PASS;
        self.output = Out::Unchanged;
        self.reason = why;
        self
    }

    fn tx(mut self, why: u32, out: Vec<u8>) -> Self {
        self.action = XDP_TX;
        self.output = Out::Bytes(out);
        self.reason = why;
        self
    }

    fn drop(mut self, why: u32) -> Self {
        self.action = XDP_DROP;
        self.output = Out::Ignored;
        self.reason = why;
        self
    }

    fn events(mut self, ev: &[u32]) -> Self {
        self.events = ev.to_vec();
        self
    }

    fn via(mut self, backend: u32) -> Self {
        self.backend = Some(backend);
        self
    }

    fn seed(mut self, key: FlowKey, backend: u32, last_seen_ns: u64) -> Self {
        self.seed.push((
            key,
            Flow {
                backend,
                flags: 0,
                last_seen_ns,
            },
        ));
        self
    }

    fn first(mut self, b: Before) -> Self {
        self.before.push(b);
        self
    }

    fn then(mut self, a: After) -> Self {
        self.after.push(a);
        self
    }
}

/// Hands out a fresh client port per flow so rows do not share connection state.
struct Ports(u16);

impl Ports {
    fn next(&mut self) -> u16 {
        self.0 += 1;
        self.0
    }
}

/// A flow to a service forwarded on a connection-table miss: L2 or encapsulated as the
/// service says, to the backend the ring names; the flow is pinned afterwards.
fn forwarded_on_miss(desc: &str, input: Vec<u8>, svc_id: u32, k: FlowKey) -> Fixture {
    let (b, h) = ring_pick(svc_id, &k);
    let (why, out) = if svc(svc_id).mode == SVC_MODE_ENCAP {
        (reason::TX_ENCAP, encap_out(&input, b, h))
    } else {
        (reason::TX_L2, l2_out(&input, b))
    };
    Fixture::new(desc, input)
        .tx(why, out)
        .events(&[reason::EVENT_CONNTRACK_MISS])
        .via(b)
        .then(After::Conntrack(k, Some(b)))
}

fn fragment_rows(t: &mut Vec<Fixture>, ports: &mut Ports) {
    // An IPv4 UDP datagram of 8 + 48 bytes in three fragments of 24, 24 and 8 bytes.
    let frag4 = |sport: u16, id: u16| -> [Vec<u8>; 3] {
        let dg = udp(Ip::V4(CLIENT4), Ip::V4(VIP4), sport, 5000, &payload(48));
        let piece = |off: usize, end: usize, mf: bool| {
            let h = V4 {
                id,
                df: false,
                mf,
                frag_off: (off / 8) as u16,
                ..v4h(CLIENT4, VIP4)
            };
            frame(&ipv4(&h, PROTO_UDP, &dg[off..end]))
        };
        [
            piece(0, 24, true),
            piece(24, 48, true),
            piece(48, 56, false),
        ]
    };

    let sport = ports.next();
    let k = key(Ip::V4(CLIENT4), Ip::V4(VIP4), sport, 5000, PROTO_UDP);
    let (b, _) = ring_pick(S_V4_UDP_ALL, &k);
    let [f1, f2, f3] = frag4(sport, 0x1001);
    t.push(forwarded_on_miss(
        "v4 fragments in order: first fragment (ports) picks the backend",
        f1,
        S_V4_UDP_ALL,
        k,
    ));
    for (n, f) in [(2, f2), (3, f3)] {
        let out = l2_out(&f, b);
        t.push(
            Fixture::new(
                format!("v4 fragments in order: fragment {n} follows the first"),
                f,
            )
            .tx(reason::TX_L2, out)
            .events(&[reason::EVENT_FRAG_FOLLOWED])
            .via(b),
        );
    }

    let sport = ports.next();
    let k = key(Ip::V4(CLIENT4), Ip::V4(VIP4), sport, 5000, PROTO_UDP);
    let (b, _) = ring_pick(S_V4_UDP_ALL, &k);
    let [f1, f2, f3] = frag4(sport, 0x1002);
    t.push(
        Fixture::new(
            "v4 fragments out of order: last before first is an orphan (drop_frag_orphan)",
            f3.clone(),
        )
        .drop(reason::DROP_FRAG_ORPHAN),
    );
    t.push(forwarded_on_miss(
        "v4 fragments out of order: then the first fragment",
        f1,
        S_V4_UDP_ALL,
        k,
    ));
    for (n, f) in [("middle", f2), ("retransmitted last", f3)] {
        let out = l2_out(&f, b);
        t.push(
            Fixture::new(
                format!("v4 fragments out of order: {n} fragment follows"),
                f,
            )
            .tx(reason::TX_L2, out)
            .events(&[reason::EVENT_FRAG_FOLLOWED])
            .via(b),
        );
    }

    // IPv6: Fragment extension header, to the encapsulating UDP service.
    let frag6 = |sport: u16, id: u32| -> [Vec<u8>; 2] {
        let dg = udp(Ip::V6(CLIENT6), Ip::V6(VIP6), sport, 6000, &payload(40));
        let a = ipv6(
            CLIENT6,
            VIP6,
            64,
            &[Ext::Frag {
                off: 0,
                more: true,
                id,
            }],
            PROTO_UDP,
            &dg[..24],
        );
        let b = ipv6(
            CLIENT6,
            VIP6,
            64,
            &[Ext::Frag {
                off: 3,
                more: false,
                id,
            }],
            PROTO_UDP,
            &dg[24..],
        );
        [frame(&a), frame(&b)]
    };
    let sport = ports.next();
    let k = key(Ip::V6(CLIENT6), Ip::V6(VIP6), sport, 6000, PROTO_UDP);
    let (b, _) = ring_pick(S_V6_UDP_ALL_ENCAP, &k);
    let [f1, f2] = frag6(sport, 0xabc001);
    t.push(
        Fixture::new(
            "v6 fragments out of order: second before first is an orphan",
            f2.clone(),
        )
        .drop(reason::DROP_FRAG_ORPHAN),
    );
    t.push(forwarded_on_miss(
        "v6 fragments: first fragment encapsulated (IPv6-in-IPv6)",
        f1,
        S_V6_UDP_ALL_ENCAP,
        k,
    ));
    // A non-first fragment has no ports: its outer source / flow label come from the
    // hash of the flow with ports 0 (the same backend, maybe another RSS queue).
    let h0 = flow_hash(&key(Ip::V6(CLIENT6), Ip::V6(VIP6), 0, 0, PROTO_UDP), SEED);
    let out = encap_out(&f2, b, h0);
    t.push(
        Fixture::new("v6 fragments: second fragment follows, encapsulated", f2)
            .tx(reason::TX_ENCAP, out)
            .events(&[reason::EVENT_FRAG_FOLLOWED])
            .via(b),
    );

    // RFC 8200 puts destination options for the final destination after the Fragment
    // header, in the fragmentable part: only the first fragment carries them, and a
    // later fragment's Fragment header names them (60), not UDP.
    let sport = ports.next();
    let k = key(Ip::V6(CLIENT6), Ip::V6(VIP6), sport, 6000, PROTO_UDP);
    let (b, _) = ring_pick(S_V6_UDP_ALL_ENCAP, &k);
    let dg = udp(Ip::V6(CLIENT6), Ip::V6(VIP6), sport, 6000, &payload(40));
    let id = 0xabc002;
    let f1 = frame(&ipv6(
        CLIENT6,
        VIP6,
        64,
        &[
            Ext::Frag {
                off: 0,
                more: true,
                id,
            },
            Ext::Raw(EXT_DEST, padn6()),
        ],
        PROTO_UDP,
        &dg[..24],
    ));
    // The fragmentable part is the 8-byte options header and the datagram: the
    // second fragment starts at byte 8 + 24 = 32 of it.
    let f2 = frame(&ipv6(
        CLIENT6,
        VIP6,
        64,
        &[Ext::Frag {
            off: 4,
            more: false,
            id,
        }],
        EXT_DEST,
        &dg[24..],
    ));
    t.push(forwarded_on_miss(
        "v6 fragments with destination options after the Fragment header: the first picks the backend",
        f1,
        S_V6_UDP_ALL_ENCAP,
        k,
    ));
    let h0 = flow_hash(&key(Ip::V6(CLIENT6), Ip::V6(VIP6), 0, 0, EXT_DEST), SEED);
    let out = encap_out(&f2, b, h0);
    t.push(
        Fixture::new(
            "v6 fragments with destination options after the Fragment header: the second follows (its payload is not read as headers)",
            f2,
        )
        .tx(reason::TX_ENCAP, out)
        .events(&[reason::EVENT_FRAG_FOLLOWED])
        .via(b),
    );

    let h = V4 {
        id: 0x1003,
        df: false,
        mf: false,
        frag_off: 3,
        ..v4h(CLIENT4, OTHER4)
    };
    t.push(Fixture::new(
        "v4 non-first fragment to a non-VIP passes",
        frame(&ipv4(&h, PROTO_UDP, &payload(16))),
    ));
    let h = V4 {
        id: 0x1004,
        df: false,
        mf: true,
        frag_off: 0,
        ..v4h(CLIENT4, VIP4)
    };
    let ping = icmp4(
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 }),
        &payload(16),
    );
    t.push(
        Fixture::new(
            "v4 fragmented ICMP echo to a VIP is not answered (pass_unsupported)",
            frame(&ipv4(&h, PROTO_ICMP, &ping)),
        )
        .pass(reason::PASS_UNSUPPORTED),
    );
}

fn icmp_rows(t: &mut Vec<Fixture>, ports: &mut Ports) {
    // Echo.
    let req = frame(&ipv4(
        &v4h(CLIENT4, VIP4),
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 9 }),
            &payload(32),
        ),
    ));
    let rep = ipv4(
        &v4h(VIP4, CLIENT4),
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoReply(IcmpEchoHeader { id: 7, seq: 9 }),
            &payload(32),
        ),
    );
    t.push(Fixture::new("v4 ICMP echo to a VIP is answered", req).tx(
        reason::TX_ICMP_ECHO,
        eth(CLIENT_MAC, LB_MAC, EtherType::IPV4, &rep),
    ));
    // The reply starts a new life, as the kernel's and Katran's do (TTL 64), whatever
    // was left of the request's: a request that arrived with TTL 1 would otherwise
    // be answered with a reply the first router drops.
    let req = ipv4(
        &v4h(CLIENT4, VIP4),
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 8, seq: 1 }),
            &payload(32),
        ),
    );
    let rep = ipv4(
        &v4h(VIP4, CLIENT4),
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoReply(IcmpEchoHeader { id: 8, seq: 1 }),
            &payload(32),
        ),
    );
    t.push(
        Fixture::new(
            "v4 ICMP echo to a VIP arriving with TTL 1 is answered with TTL 64",
            frame(&with_ttl(&req, 1)),
        )
        .tx(
            reason::TX_ICMP_ECHO,
            eth(CLIENT_MAC, LB_MAC, EtherType::IPV4, &rep),
        ),
    );
    let req = icmp6(
        Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 9 }),
        CLIENT6,
        VIP6,
        &payload(33),
    );
    let rep = icmp6(
        Icmpv6Type::EchoReply(IcmpEchoHeader { id: 7, seq: 9 }),
        VIP6,
        CLIENT6,
        &payload(33),
    );
    t.push(
        Fixture::new(
            "v6 ICMPv6 echo to a VIP is answered (hop limit 64, odd length)",
            frame(&ipv6(CLIENT6, VIP6, 17, &[], PROTO_ICMPV6, &req)),
        )
        .tx(
            reason::TX_ICMP_ECHO,
            eth(
                CLIENT_MAC,
                LB_MAC,
                EtherType::IPV6,
                &ipv6(VIP6, CLIENT6, 64, &[], PROTO_ICMPV6, &rep),
            ),
        ),
    );
    let mut opt = v4h(CLIENT4, VIP4E);
    opt.options = vec![0x94, 0x04, 0x00, 0x00]; // router alert
    let req = frame(&ipv4(
        &opt,
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 2 }),
            &payload(8),
        ),
    ));
    let mut ropt = v4h(VIP4E, CLIENT4);
    ropt.options = opt.options.clone();
    let rep = ipv4(
        &ropt,
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoReply(IcmpEchoHeader { id: 1, seq: 2 }),
            &payload(8),
        ),
    );
    t.push(
        Fixture::new("v4 ICMP echo with IP options to a VIP is answered", req).tx(
            reason::TX_ICMP_ECHO,
            eth(CLIENT_MAC, LB_MAC, EtherType::IPV4, &rep),
        ),
    );
    t.push(Fixture::new(
        "v4 ICMP echo to a non-VIP passes",
        frame(&ipv4(
            &v4h(CLIENT4, OTHER4),
            PROTO_ICMP,
            &icmp4(
                Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 9 }),
                &payload(8),
            ),
        )),
    ));
    t.push(Fixture::new(
        "v6 ICMPv6 echo to a non-VIP passes",
        frame(&ipv6(
            CLIENT6,
            OTHER6,
            64,
            &[],
            PROTO_ICMPV6,
            &icmp6(
                Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 9 }),
                CLIENT6,
                OTHER6,
                &[],
            ),
        )),
    ));
    t.push(Fixture::new(
        "v4 ICMP echo reply to a VIP passes (not ours to answer)",
        frame(&ipv4(
            &v4h(CLIENT4, VIP4),
            PROTO_ICMP,
            &icmp4(Icmpv4Type::EchoReply(IcmpEchoHeader { id: 7, seq: 9 }), &[]),
        )),
    ));

    // ICMP errors about VIP flows (the quote is VIP:port -> client:port, as the backend
    // sent it with DSR): steered to the flow's backend, without pinning anything.
    let quote4 = |vip: [u8; 4], sport: u16, dport: u16, proto: u8| {
        let l4 = if proto == PROTO_TCP {
            tcp(
                Ip::V4(vip),
                Ip::V4(CLIENT4),
                dport,
                sport,
                Tcp::Ack,
                &payload(100),
            )
        } else {
            udp(Ip::V4(vip), Ip::V4(CLIENT4), dport, sport, &payload(100))
        };
        ipv4(&v4h(vip, CLIENT4), proto, &l4)[..28].to_vec()
    };
    let frag_needed = |vip: [u8; 4], q: &[u8]| {
        frame(&ipv4(
            &v4h(ROUTER4, vip),
            PROTO_ICMP,
            &icmp4(
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400,
                }),
                q,
            ),
        ))
    };

    let p = ports.next();
    let k = key(Ip::V4(CLIENT4), Ip::V4(VIP4), p, 80, PROTO_TCP);
    let (b, _) = ring_pick(S_V4_TCP80, &k);
    let input = frag_needed(VIP4, &quote4(VIP4, p, 80, PROTO_TCP));
    let out = l2_out(&input, b);
    t.push(
        Fixture::new("v4 ICMP frag-needed about a VIP:80 flow steered to the ring's backend (L2), nothing pinned", input)
            .tx(reason::TX_L2, out)
            .events(&[reason::EVENT_CONNTRACK_MISS, reason::EVENT_ICMP_STEERED])
            .via(b)
            .then(After::Conntrack(k, None)),
    );

    let p = ports.next();
    let k = key(Ip::V4(CLIENT4), Ip::V4(VIP4), p, 80, PROTO_TCP);
    let (rb, _) = ring_pick(S_V4_TCP80, &k);
    let pinned = other_backend(S_V4_TCP80, rb);
    let input = frag_needed(VIP4, &quote4(VIP4, p, 80, PROTO_TCP));
    let out = l2_out(&input, pinned);
    t.push(
        Fixture::new(
            "v4 ICMP frag-needed about a pinned flow follows the connection table",
            input,
        )
        .seed(k, pinned, 0)
        .tx(reason::TX_L2, out)
        .events(&[reason::EVENT_CONNTRACK_HIT, reason::EVENT_ICMP_STEERED])
        .via(pinned),
    );

    let p = ports.next();
    let k = key(Ip::V4(CLIENT4), Ip::V4(VIP4E), p, 8443, PROTO_TCP);
    let (b, h) = ring_pick(S_V4E_TCP_ALL, &k);
    let input = frag_needed(VIP4E, &quote4(VIP4E, p, 8443, PROTO_TCP));
    let out = encap_out(&input, b, h);
    t.push(
        Fixture::new(
            "v4 ICMP frag-needed about an encapsulated flow is encapsulated with the flow's hash",
            input,
        )
        .tx(reason::TX_ENCAP, out)
        .events(&[reason::EVENT_CONNTRACK_MISS, reason::EVENT_ICMP_STEERED])
        .via(b),
    );

    let p = ports.next();
    let k = key(Ip::V6(CLIENT6), Ip::V6(VIP6), p, 6000, PROTO_UDP);
    let (b, h) = ring_pick(S_V6_UDP_ALL_ENCAP, &k);
    let inner = udp(Ip::V6(VIP6), Ip::V6(CLIENT6), 6000, p, &payload(1400));
    let q = ipv6(VIP6, CLIENT6, 64, &[], PROTO_UDP, &inner);
    let q = &q[..1232 - 8];
    let input = frame(&ipv6(
        ROUTER6,
        VIP6,
        64,
        &[],
        PROTO_ICMPV6,
        &icmp6(Icmpv6Type::PacketTooBig { mtu: 1280 }, ROUTER6, VIP6, q),
    ));
    let out = encap_out(&input, b, h);
    t.push(
        Fixture::new(
            "v6 ICMPv6 packet-too-big about a VIP flow steered to its backend (encapsulated)",
            input,
        )
        .tx(reason::TX_ENCAP, out)
        .events(&[reason::EVENT_CONNTRACK_MISS, reason::EVENT_ICMP_STEERED])
        .via(b),
    );

    let p = ports.next();
    let k = key(Ip::V6(CLIENT6), Ip::V6(VIP6), p, 80, PROTO_TCP);
    let (b, _) = ring_pick(S_V6_TCP80, &k);
    let inner = tcp(Ip::V6(VIP6), Ip::V6(CLIENT6), 80, p, Tcp::Ack, &[]);
    let q = ipv6(VIP6, CLIENT6, 64, &[], PROTO_TCP, &inner);
    let du = Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Address);
    let input = frame(&ipv6(
        ROUTER6,
        VIP6,
        64,
        &[],
        PROTO_ICMPV6,
        &icmp6(du, ROUTER6, VIP6, &q),
    ));
    let out = l2_out(&input, b);
    t.push(
        Fixture::new(
            "v6 ICMPv6 destination-unreachable about a VIP:80 flow steered (L2)",
            input,
        )
        .tx(reason::TX_L2, out)
        .events(&[reason::EVENT_CONNTRACK_MISS, reason::EVENT_ICMP_STEERED])
        .via(b),
    );

    // Errors the LB does not steer.
    let mut q = quote4(VIP4, ports.next(), 80, PROTO_TCP);
    q[12..16].copy_from_slice(&OTHER4); // quoted source is not the VIP it was sent to
    t.push(Fixture::new(
        "v4 ICMP error to a VIP quoting another source passes",
        frag_needed(VIP4, &q),
    ));
    let q = ipv4(
        &v4h(VIP4, CLIENT4),
        PROTO_ICMP,
        &icmp4(Icmpv4Type::EchoReply(IcmpEchoHeader { id: 1, seq: 1 }), &[]),
    );
    t.push(Fixture::new(
        "v4 ICMP error to a VIP quoting ICMP passes",
        frag_needed(VIP4, &q),
    ));
    t.push(Fixture::new(
        "v4 ICMP error to a non-VIP passes",
        frag_needed(OTHER4, &quote4(OTHER4, ports.next(), 80, PROTO_TCP)),
    ));
    t.push(Fixture::new(
        "v4 ICMP error about a VIP port without a service passes",
        frag_needed(VIP4, &quote4(VIP4, ports.next(), 22, PROTO_TCP)),
    ));
}

fn pmtu_rows(t: &mut Vec<Fixture>, ports: &mut Ports) {
    // IPv4-in-IPv4: the inner packet may be at most encap_mtu - 20 bytes.
    let p = ports.next();
    let input = tcp_frame(Ip::V4(CLIENT4), Ip::V4(VIP4E), p, 443, Tcp::Ack, 1440);
    let k = key(Ip::V4(CLIENT4), Ip::V4(VIP4E), p, 443, PROTO_TCP);
    t.push(forwarded_on_miss(
        "v4 TCP of exactly encap_mtu - 20 bytes is encapsulated",
        input,
        S_V4E_TCP_ALL,
        k,
    ));

    let p = ports.next();
    let input = tcp_frame(Ip::V4(CLIENT4), Ip::V4(VIP4E), p, 443, Tcp::Ack, 1441);
    let out = frag_needed_out(&input, (ENCAP_MTU - 20) as u16);
    t.push(
        Fixture::new(
            "v4 TCP one byte over encap_mtu - 20: ICMP frag-needed (mtu 1480) quoting header + 8",
            input,
        )
        .tx(reason::TX_ICMP_TOO_BIG, out)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );

    let p = ports.next();
    let mut h = v4h(CLIENT4, VIP4E);
    h.options = vec![0x01, 0x01, 0x01, 0x01, 0x94, 0x04, 0x00, 0x00];
    let seg = tcp(
        Ip::V4(CLIENT4),
        Ip::V4(VIP4E),
        p,
        443,
        Tcp::Ack,
        &payload(1460),
    );
    let input = frame(&ipv4(&h, PROTO_TCP, &seg));
    let out = frag_needed_out(&input, (ENCAP_MTU - 20) as u16);
    t.push(
        Fixture::new(
            "v4 TCP with 8 bytes of IP options too big: the quote keeps the options",
            input,
        )
        .tx(reason::TX_ICMP_TOO_BIG, out)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );

    let p = ports.next();
    let input = udp_frame(Ip::V4(CLIENT4), Ip::V4(VIP4E), p, 4789, 1440);
    let out = frag_needed_out(&input, (ENCAP_MTU - 40) as u16);
    t.push(
        Fixture::new(
            "v4 UDP too big for IPv4-in-IPv6 (outer 40 bytes): frag-needed with mtu 1460",
            input,
        )
        .tx(reason::TX_ICMP_TOO_BIG, out)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );

    let p = ports.next();
    let input = udp_frame(Ip::V6(CLIENT6), Ip::V6(VIP6), p, 6000, 1413);
    let out = packet_too_big_out(&input, ENCAP_MTU - 40);
    t.push(
        Fixture::new(
            "v6 UDP too big for IPv6-in-IPv6: packet-too-big (mtu 1460) quoting 1232 bytes",
            input,
        )
        .tx(reason::TX_ICMP_TOO_BIG, out)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );
}

fn truncation_rows(
    t: &mut Vec<Fixture>,
    name: &str,
    input: &[u8],
    boundaries: &[usize],
    needed: usize,
) {
    // Raw cuts: the IP length fields now promise more than the frame holds.
    let mut cuts: Vec<usize> = boundaries
        .iter()
        .flat_map(|&b| [b.saturating_sub(1), b, b + 1])
        .filter(|&c| c >= 14 && c < input.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    for &c in &cuts {
        t.push(
            Fixture::new(
                format!("{name} cut at {c} bytes (IP length says more)"),
                input[..c].to_vec(),
            )
            .pass(reason::PASS_MALFORMED),
        );
    }
    // Consistent cuts: the IP length is fixed up (and the IPv4 header checksum with
    // it), but what the program needs to read is not all there.
    let v4 = input[12..14] == [0x08, 0x00];
    let l3_min = if v4 {
        14 + usize::from(input[14] & 0x0f) * 4
    } else {
        54
    };
    for &c in cuts.iter().filter(|&&c| c >= l3_min && c < needed) {
        let mut f = input[..c].to_vec();
        if v4 {
            let mut h = Ipv4HeaderSlice::from_slice(&f[14..]).unwrap().to_header();
            h.total_len = (c - 14) as u16;
            h.header_checksum = h.calc_header_checksum();
            f[14..14 + h.header_len()].copy_from_slice(&h.to_bytes());
        } else {
            f[18..20].copy_from_slice(&((c - 54) as u16).to_be_bytes());
        }
        t.push(
            Fixture::new(
                format!("{name} cut at {c} bytes with a matching IP length"),
                f,
            )
            .pass(reason::PASS_MALFORMED),
        );
    }
}

fn table() -> Vec<Fixture> {
    let mut t = Vec::new();
    let mut ports = Ports(40000);
    let c4 = Ip::V4(CLIENT4);
    let c6 = Ip::V6(CLIENT6);
    let v4 = Ip::V4(VIP4);
    let v4e = Ip::V4(VIP4E);
    let v6 = Ip::V6(VIP6);

    // --- L2 mode, IPv4 TCP: connection table miss, hit, SYN re-hash.
    let p = ports.next();
    let k = key(c4, v4, p, 80, PROTO_TCP);
    t.push(forwarded_on_miss(
        "v4 TCP SYN to VIP:80 (L2): ring picks, flow pinned",
        tcp_frame(c4, v4, p, 80, Tcp::Syn, 0),
        S_V4_TCP80,
        k,
    ));
    let (b, _) = ring_pick(S_V4_TCP80, &k);
    let input = tcp_frame(c4, v4, p, 80, Tcp::Ack, 10);
    let out = l2_out(&input, b);
    t.push(
        Fixture::new(
            "v4 TCP ACK of the same flow: this CPU's flow cache (filled by the SYN)",
            input.clone(),
        )
        .tx(reason::TX_L2, out.clone())
        .events(&[reason::EVENT_FLOW_CACHE_HIT])
        .via(b),
    );
    t.push(
        Fixture::new(
            "v4 TCP ACK after the controller wrote a change (new epoch): connection table hit",
            input.clone(),
        )
        .first(Before::BumpEpoch)
        .tx(reason::TX_L2, out.clone())
        .events(&[reason::EVENT_CONNTRACK_HIT])
        .via(b),
    );
    t.push(
        Fixture::new(
            "v4 TCP ACK once the connection table refilled the cache: flow cache again",
            input,
        )
        .tx(reason::TX_L2, out)
        .events(&[reason::EVENT_FLOW_CACHE_HIT])
        .via(b),
    );

    let p = ports.next();
    let k = key(c4, v4, p, 80, PROTO_TCP);
    let (rb, _) = ring_pick(S_V4_TCP80, &k);
    let pinned = other_backend(S_V4_TCP80, rb);
    let input = tcp_frame(c4, v4, p, 80, Tcp::Ack, 0);
    let out = l2_out(&input, pinned);
    t.push(
        Fixture::new(
            "v4 TCP ACK with a seeded entry goes to the pinned backend, not the ring's",
            input.clone(),
        )
        .seed(k, pinned, 0)
        .tx(reason::TX_L2, out.clone())
        .events(&[reason::EVENT_CONNTRACK_HIT])
        .via(pinned)
        .then(After::Conntrack(k, Some(pinned))),
    );
    t.push(
        Fixture::new(
            "v4 TCP ACK of the seeded flow again: flow cache, still the pinned backend",
            input.clone(),
        )
        .tx(reason::TX_L2, out)
        .events(&[reason::EVENT_FLOW_CACHE_HIT])
        .via(pinned),
    );
    let ring_out = l2_out(&input, rb);
    t.push(
        Fixture::new(
            "v4 TCP ACK of a cached flow whose backend went down: not from the cache, re-hashed",
            input.clone(),
        )
        .first(Before::BackendDown(pinned))
        .tx(reason::TX_L2, ring_out.clone())
        .events(&[reason::EVENT_CONNTRACK_MISS])
        .via(rb)
        .then(After::Conntrack(k, Some(rb))),
    );
    // Back to the pinned backend for the SYN rows below.
    let syn = tcp_frame(c4, v4, p, 80, Tcp::Syn, 0);
    t.push(
        Fixture::new(
            "v4 TCP ACK of a re-pinned flow: the cache holds the new backend",
            input.clone(),
        )
        .tx(reason::TX_L2, ring_out.clone())
        .events(&[reason::EVENT_FLOW_CACHE_HIT])
        .via(rb),
    );
    t.push(
        Fixture::new(
            "v4 TCP ACK with the entry re-pinned by hand and a new epoch: the table wins",
            input.clone(),
        )
        .seed(k, pinned, 0)
        .first(Before::BumpEpoch)
        .tx(reason::TX_L2, l2_out(&input, pinned))
        .events(&[reason::EVENT_CONNTRACK_HIT])
        .via(pinned),
    );
    t.push(forwarded_on_miss(
        "v4 TCP SYN re-hashes past the pinned entry and re-pins to the ring's backend",
        syn,
        S_V4_TCP80,
        k,
    ));
    t.push(
        Fixture::new(
            "v4 TCP ACK after the SYN re-hash: the cache follows the SYN, not the old pin",
            input,
        )
        .tx(reason::TX_L2, ring_out)
        .events(&[reason::EVENT_FLOW_CACHE_HIT])
        .via(rb),
    );

    let p = ports.next();
    let k = key(c4, v4, p, 80, PROTO_TCP);
    let input = tcp_frame(c4, v4, p, 80, Tcp::Ack, 0);
    t.push(forwarded_on_miss(
        "v4 TCP ACK without an entry (conntrack miss) follows the ring",
        input,
        S_V4_TCP80,
        k,
    ));

    let p = ports.next();
    let k = key(c4, v4, p, 80, PROTO_TCP);
    let input = tcp_frame(c4, v4, p, 80, Tcp::Ack, 0);
    t.push(
        forwarded_on_miss(
            "v4 TCP entry pinned to a backend marked down is re-hashed",
            input,
            S_V4_TCP80,
            k,
        )
        .seed(k, 10, 0),
    );
    let p = ports.next();
    let k = key(c4, v4, p, 80, PROTO_TCP);
    let input = tcp_frame(c4, v4, p, 80, Tcp::Ack, 0);
    t.push(
        forwarded_on_miss(
            "v4 TCP entry pinned to an unconfigured backend id is re-hashed",
            input,
            S_V4_TCP80,
            k,
        )
        .seed(k, UNCONFIGURED_BACKEND, 0),
    );

    let p = ports.next();
    let mut h = v4h(CLIENT4, VIP4);
    h.options = vec![0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00];
    h.tos = 0xb8;
    let input = frame(&ipv4(&h, PROTO_TCP, &tcp(c4, v4, p, 80, Tcp::Syn, &[])));
    t.push(forwarded_on_miss(
        "v4 TCP SYN with 8 bytes of IP options (L2)",
        input,
        S_V4_TCP80,
        key(c4, v4, p, 80, PROTO_TCP),
    ));

    let p = ports.next();
    let mut input = tcp_frame(c4, v4, p, 80, Tcp::Syn, 0);
    input.resize(60, 0);
    t.push(forwarded_on_miss(
        "v4 TCP SYN with Ethernet padding to 60 bytes: padding carried along",
        input,
        S_V4_TCP80,
        key(c4, v4, p, 80, PROTO_TCP),
    ));

    // --- UDP, all-ports service, idle expiry.
    let p = ports.next();
    let k = key(c4, v4, p, 5353, PROTO_UDP);
    t.push(forwarded_on_miss(
        "v4 UDP to the VIP's all-ports service (port 5353, L2)",
        udp_frame(c4, v4, p, 5353, 20),
        S_V4_UDP_ALL,
        k,
    ));
    let p = ports.next();
    let k = key(c4, v4, p, 53, PROTO_UDP);
    t.push(forwarded_on_miss(
        "v4 UDP to port 53: the port service wins over all-ports (encap)",
        udp_frame(c4, v4, p, 53, 20),
        S_V4_UDP53_ENCAP,
        k,
    ));

    let p = ports.next();
    let k = key(c4, v4, p, 7000, PROTO_UDP);
    let (rb, _) = ring_pick(S_V4_UDP_ALL, &k);
    let pinned = other_backend(S_V4_UDP_ALL, rb);
    let input = udp_frame(c4, v4, p, 7000, 20);
    let out = l2_out(&input, pinned);
    t.push(
        Fixture::new(
            "v4 UDP with a fresh entry (last_seen now) stays pinned",
            input,
        )
        .seed(k, pinned, u64::MAX) // replaced by "now" when seeding
        .tx(reason::TX_L2, out)
        .events(&[reason::EVENT_CONNTRACK_HIT])
        .via(pinned),
    );
    let p = ports.next();
    let k = key(c4, v4, p, 7000, PROTO_UDP);
    let (rb, _) = ring_pick(S_V4_UDP_ALL, &k);
    let stale = other_backend(S_V4_UDP_ALL, rb);
    let input = udp_frame(c4, v4, p, 7000, 20);
    t.push(
        forwarded_on_miss(
            "v4 UDP entry idle longer than udp_timeout_ns expires: ring decides, entry replaced",
            input,
            S_V4_UDP_ALL,
            k,
        )
        .seed(k, stale, 0) // replaced by "now - 12 * timeout"
        .events(&[reason::EVENT_UDP_EXPIRED, reason::EVENT_CONNTRACK_MISS]),
    );

    // --- IPv6, extension headers.
    let p = ports.next();
    t.push(forwarded_on_miss(
        "v6 TCP SYN to VIP6:80 (L2)",
        tcp_frame(c6, v6, p, 80, Tcp::Syn, 0),
        S_V6_TCP80,
        key(c6, v6, p, 80, PROTO_TCP),
    ));
    let ext_frame = |p: u16, exts: &[Ext]| {
        frame(&ipv6(
            CLIENT6,
            VIP6,
            64,
            exts,
            PROTO_TCP,
            &tcp(c6, v6, p, 80, Tcp::Syn, &[]),
        ))
    };
    let p = ports.next();
    t.push(forwarded_on_miss(
        "v6 TCP with hop-by-hop and destination options headers",
        ext_frame(
            p,
            &[Ext::Raw(EXT_HOP, padn6()), Ext::Raw(EXT_DEST, padn6())],
        ),
        S_V6_TCP80,
        key(c6, v6, p, 80, PROTO_TCP),
    ));
    let p = ports.next();
    t.push(forwarded_on_miss(
        "v6 TCP with four extension headers (the most walked), one a routing header with 0 segments left",
        ext_frame(p, &[Ext::Raw(EXT_HOP, padn6()), Ext::Raw(EXT_DEST, padn6()), Ext::Raw(EXT_ROUTING, routing(0)), Ext::Raw(EXT_DEST, padn6())]),
        S_V6_TCP80,
        key(c6, v6, p, 80, PROTO_TCP),
    ));
    let p = ports.next();
    t.push(
        Fixture::new(
            "v6 TCP with five extension headers is refused (pass_unsupported)",
            ext_frame(
                p,
                &[
                    Ext::Raw(EXT_HOP, padn6()),
                    Ext::Raw(EXT_DEST, padn6()),
                    Ext::Raw(EXT_DEST, padn6()),
                    Ext::Raw(EXT_DEST, padn6()),
                    Ext::Raw(EXT_DEST, padn6()),
                ],
            ),
        )
        .pass(reason::PASS_UNSUPPORTED),
    );
    let p = ports.next();
    t.push(
        Fixture::new(
            "v6 TCP with a routing header, 1 segment left, is refused (pass_unsupported)",
            ext_frame(p, &[Ext::Raw(EXT_ROUTING, routing(1))]),
        )
        .pass(reason::PASS_UNSUPPORTED),
    );
    t.push(Fixture::new(
        "v6 TCP with a routing header, 1 segment left, to a non-VIP passes",
        frame(&ipv6(
            CLIENT6,
            OTHER6,
            64,
            &[Ext::Raw(EXT_ROUTING, routing(1))],
            PROTO_TCP,
            &tcp(c6, Ip::V6(OTHER6), 1, 80, Tcp::Syn, &[]),
        )),
    ));

    // --- Encapsulation.
    let p = ports.next();
    let mut h = v4h(CLIENT4, VIP4E);
    h.tos = 0x2e;
    let input = frame(&ipv4(&h, PROTO_TCP, &tcp(c4, v4e, p, 8080, Tcp::Syn, &[])));
    t.push(forwarded_on_miss(
        "v4 TCP to an all-ports encap service: IPv4-in-IPv4, TOS copied",
        input,
        S_V4E_TCP_ALL,
        key(c4, v4e, p, 8080, PROTO_TCP),
    ));
    let p = ports.next();
    t.push(forwarded_on_miss(
        "v4 UDP to an encap service with IPv6 backends: IPv4-in-IPv6",
        udp_frame(c4, v4e, p, 4789, 100),
        S_V4E_UDP_ALL_IN_V6,
        key(c4, v4e, p, 4789, PROTO_UDP),
    ));
    let p = ports.next();
    let mut ip = ipv6(
        CLIENT6,
        VIP6,
        64,
        &[],
        PROTO_UDP,
        &udp(c6, v6, p, 6000, &payload(99)),
    );
    ip[0] = 0x6a; // traffic class 0xa1
    ip[1] = 0x12;
    t.push(forwarded_on_miss(
        "v6 UDP to an all-ports encap service: IPv6-in-IPv6, traffic class copied",
        frame(&ip),
        S_V6_UDP_ALL_ENCAP,
        key(c6, v6, p, 6000, PROTO_UDP),
    ));
    let p = ports.next();
    t.push(
        Fixture::new(
            "v6 TCP to an encap service with an IPv4 backend (IPv6-in-IPv4 not offered) drops",
            tcp_frame(c6, v6, p, 443, Tcp::Syn, 0),
        )
        .drop(reason::DROP_RING_SLOT_EMPTY)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );

    // --- Redirect, empty rings, holes.
    let p = ports.next();
    let input = tcp_frame(c4, v4, p, 84, Tcp::Syn, 0);
    let out = l2_out(&input, 8);
    t.push(Fixture {
        action: XDP_REDIRECT,
        ..Fixture::new(
            "v4 TCP to a backend behind devmap port 0: XDP_REDIRECT",
            input,
        )
        .tx(reason::REDIRECT_L2, out)
        .events(&[reason::EVENT_CONNTRACK_MISS])
        .via(8)
    });
    let p = ports.next();
    t.push(
        Fixture::new(
            "v4 TCP to a backend behind an unconfigured devmap port drops",
            tcp_frame(c4, v4, p, 85, Tcp::Syn, 0),
        )
        .drop(reason::DROP_RING_SLOT_EMPTY)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );
    let p = ports.next();
    t.push(
        Fixture::new(
            "v4 TCP to a service with ring_size 0 drops (drop_no_backend)",
            tcp_frame(c4, v4, p, 81, Tcp::Syn, 0),
        )
        .drop(reason::DROP_NO_BACKEND)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );
    let p = ports.next();
    t.push(
        Fixture::new(
            "v4 TCP to a service whose ring holds backend id 0 drops",
            tcp_frame(c4, v4, p, 82, Tcp::Syn, 0),
        )
        .drop(reason::DROP_RING_SLOT_EMPTY)
        .events(&[reason::EVENT_CONNTRACK_MISS])
        .then(After::Conntrack(key(c4, v4, p, 82, PROTO_TCP), None)),
    );
    let p = ports.next();
    t.push(
        Fixture::new(
            "v4 TCP to a service whose ring names an unconfigured backend drops",
            tcp_frame(c4, v4, p, 83, Tcp::Syn, 0),
        )
        .drop(reason::DROP_RING_SLOT_EMPTY)
        .events(&[reason::EVENT_CONNTRACK_MISS]),
    );

    // --- Not for the LB.
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT4);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP4);
    t.push(
        Fixture::new(
            "ARP request for the VIP passes",
            eth([0xff; 6], CLIENT_MAC, EtherType::ARP, &arp),
        )
        .pass(reason::PASS_NOT_IP),
    );
    let mut vlan = vec![0x00, 0x64, 0x08, 0x00];
    vlan.extend_from_slice(&ipv4(
        &v4h(CLIENT4, VIP4),
        PROTO_TCP,
        &tcp(c4, v4, 1, 80, Tcp::Syn, &[]),
    ));
    t.push(
        Fixture::new(
            "802.1Q-tagged frame to the VIP passes (not_ip)",
            eth(LB_MAC, CLIENT_MAC, EtherType::VLAN_TAGGED_FRAME, &vlan),
        )
        .pass(reason::PASS_NOT_IP),
    );
    t.push(Fixture::new(
        "v4 TCP to a non-VIP passes",
        tcp_frame(c4, Ip::V4(OTHER4), 1234, 80, Tcp::Syn, 0),
    ));
    t.push(Fixture::new(
        "v6 UDP to a non-VIP passes",
        udp_frame(c6, Ip::V6(OTHER6), 1234, 53, 10),
    ));
    t.push(Fixture::new(
        "v4 TCP to a VIP port without a service passes",
        tcp_frame(c4, v4, 1234, 22, Tcp::Syn, 0),
    ));
    t.push(Fixture::new(
        "v6 TCP to a VIP port without a service passes",
        tcp_frame(c6, v6, 1234, 22, Tcp::Syn, 0),
    ));
    t.push(
        Fixture::new(
            "v4 GRE to a VIP passes (pass_unsupported)",
            frame(&ipv4(&v4h(CLIENT4, VIP4), 47, &payload(24))),
        )
        .pass(reason::PASS_UNSUPPORTED),
    );
    t.push(Fixture::new(
        "v4 GRE to a non-VIP passes",
        frame(&ipv4(&v4h(CLIENT4, OTHER4), 47, &payload(24))),
    ));
    t.push(
        Fixture::new(
            "v6 SCTP to a VIP passes (pass_unsupported)",
            frame(&ipv6(CLIENT6, VIP6, 64, &[], 132, &payload(24))),
        )
        .pass(reason::PASS_UNSUPPORTED),
    );

    // --- Malformed.
    let mut f = tcp_frame(c4, v4, 1, 80, Tcp::Syn, 0);
    f[14] = 0x55;
    t.push(
        Fixture::new("v4 header with version 5 passes (malformed)", f).pass(reason::PASS_MALFORMED),
    );
    let mut f = tcp_frame(c4, v4, 1, 80, Tcp::Syn, 0);
    f[14] = 0x44;
    t.push(Fixture::new("v4 header with IHL 4 passes (malformed)", f).pass(reason::PASS_MALFORMED));
    let mut f = tcp_frame(c4, v4, 1, 80, Tcp::Syn, 0);
    f[16..18].copy_from_slice(&10u16.to_be_bytes());
    t.push(
        Fixture::new(
            "v4 total length shorter than the header passes (malformed)",
            f,
        )
        .pass(reason::PASS_MALFORMED),
    );
    let mut f = tcp_frame(c6, v6, 1, 80, Tcp::Syn, 0);
    f[18..20].copy_from_slice(&[0, 0]);
    t.push(
        Fixture::new("v6 payload length 0 (jumbogram) passes (malformed)", f)
            .pass(reason::PASS_MALFORMED),
    );
    let mut f = tcp_frame(c6, v6, 1, 80, Tcp::Syn, 0);
    f[14] = 0x45;
    t.push(
        Fixture::new(
            "EtherType IPv6 with a version 4 header passes (malformed)",
            f,
        )
        .pass(reason::PASS_MALFORMED),
    );

    // The L4 header is read inside the IP packet, never from what follows it.
    let f = tcp_frame(c4, v4, 1, 80, Tcp::Syn, 0);
    let mut f = with_total_len(&f, 20 + 8);
    f.resize(60, 0);
    t.push(
        Fixture::new(
            "v4 TCP SYN whose IP total length ends inside the TCP header, the rest Ethernet padding, passes (malformed)",
            f,
        )
        .pass(reason::PASS_MALFORMED),
    );
    let mut f = tcp_frame(c4, v4, 1, 80, Tcp::Syn, 8);
    f[14 + 20 + 12] = 0x40;
    t.push(
        Fixture::new("v4 TCP with data offset 4 passes (malformed)", f)
            .pass(reason::PASS_MALFORMED),
    );
    let mut f = tcp_frame(c6, v6, 1, 80, Tcp::Syn, 8);
    f[14 + 40 + 12] = 0xf0;
    t.push(
        Fixture::new(
            "v6 TCP with data offset 15, longer than the segment, passes (malformed)",
            f,
        )
        .pass(reason::PASS_MALFORMED),
    );
    let mut f = udp_frame(c4, v4, 1, 5353, 8);
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&17u16.to_be_bytes());
    t.push(
        Fixture::new(
            "v4 UDP whose length field says more than the IP payload passes (malformed)",
            f,
        )
        .pass(reason::PASS_MALFORMED),
    );
    let mut f = udp_frame(c6, v6, 1, 6000, 8);
    f[14 + 40 + 4..14 + 40 + 6].copy_from_slice(&7u16.to_be_bytes());
    t.push(
        Fixture::new("v6 UDP with a length field below 8 passes (malformed)", f)
            .pass(reason::PASS_MALFORMED),
    );

    fragment_rows(&mut t, &mut ports);
    icmp_rows(&mut t, &mut ports);
    pmtu_rows(&mut t, &mut ports);

    // --- Truncation at every header boundary (Ethernet 14, IP, options / extension
    // headers, L4 header); `needed` is what the program reads of a consistent frame.
    truncation_rows(
        &mut t,
        "v4 TCP",
        &tcp_frame(c4, v4, 1, 80, Tcp::Syn, 8),
        &[14, 34, 38, 54],
        34 + 20,
    );
    truncation_rows(
        &mut t,
        "v4 UDP",
        &udp_frame(c4, v4, 1, 5353, 8),
        &[14, 34, 38, 42],
        42,
    );
    let mut h = v4h(CLIENT4, VIP4);
    h.options = vec![0x94, 0x04, 0x00, 0x00];
    let f = frame(&ipv4(&h, PROTO_TCP, &tcp(c4, v4, 1, 80, Tcp::Syn, &[])));
    truncation_rows(
        &mut t,
        "v4 TCP with options",
        &f,
        &[14, 34, 38, 42, 58],
        38 + 20,
    );
    let f = frame(&ipv6(
        CLIENT6,
        VIP6,
        64,
        &[Ext::Raw(EXT_HOP, padn6()), Ext::Raw(EXT_DEST, padn6())],
        PROTO_TCP,
        &tcp(c6, v6, 1, 80, Tcp::Syn, &[]),
    ));
    truncation_rows(
        &mut t,
        "v6 TCP with 2 extension headers",
        &f,
        &[14, 54, 58, 62, 66, 70, 74, 90],
        70 + 20,
    );
    let f = frame(&ipv6(
        CLIENT6,
        VIP6,
        64,
        &[Ext::Frag {
            off: 0,
            more: true,
            id: 9,
        }],
        PROTO_UDP,
        &udp(c6, v6, 1, 6000, &payload(16))[..16],
    ));
    truncation_rows(
        &mut t,
        "v6 UDP first fragment",
        &f,
        &[14, 54, 62, 66, 70],
        70,
    );
    let f = frame(&ipv4(
        &v4h(CLIENT4, VIP4),
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 }),
            &payload(8),
        ),
    ));
    truncation_rows(&mut t, "v4 ICMP echo", &f, &[14, 34, 38, 42], 42);
    let f = frame(&ipv6(
        CLIENT6,
        VIP6,
        64,
        &[],
        PROTO_ICMPV6,
        &icmp6(
            Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 }),
            CLIENT6,
            VIP6,
            &payload(8),
        ),
    ));
    truncation_rows(&mut t, "v6 ICMPv6 echo", &f, &[14, 54, 58, 62], 62);
    let q = ipv4(
        &v4h(VIP4, CLIENT4),
        PROTO_TCP,
        &tcp(v4, c4, 80, 1, Tcp::Ack, &[]),
    );
    let f = frame(&ipv4(
        &v4h(ROUTER4, VIP4),
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port),
            &q[..28],
        ),
    ));
    truncation_rows(&mut t, "v4 ICMP error", &f, &[14, 34, 42, 62, 66, 70], 66);
    let q = ipv6(
        VIP6,
        CLIENT6,
        64,
        &[],
        PROTO_TCP,
        &tcp(v6, c6, 80, 1, Tcp::Ack, &[]),
    );
    let f = frame(&ipv6(
        ROUTER6,
        VIP6,
        64,
        &[],
        PROTO_ICMPV6,
        &icmp6(Icmpv6Type::PacketTooBig { mtu: 1280 }, ROUTER6, VIP6, &q),
    ));
    truncation_rows(
        &mut t,
        "v6 ICMPv6 error",
        &f,
        &[14, 54, 62, 102, 106, 122],
        106,
    );
    t
}

// ---------------------------------------------------------------------------------
// Running rows.
// ---------------------------------------------------------------------------------

fn reasons(stats: &PerCpuArray<MapData, Counter>) -> Vec<Counter> {
    (0..reason::COUNT)
        .map(|i| sum(&stats.get(&i, 0).expect("reading a reason counter")))
        .collect()
}

fn hexdiff(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(4);
    format!(
        "lengths {} vs {}, first difference at byte {at}: got {:02x?} want {:02x?}",
        got.len(),
        want.len(),
        &got[from..got.len().min(at + 12)],
        &want[from..want.len().min(at + 12)],
    )
}

fn run_row(dp: &mut Dataplane, f: &Fixture) -> Result<(), String> {
    for (k, v) in &f.seed {
        let mut v = *v;
        let now = now_mono_ns();
        v.last_seen_ns = match v.last_seen_ns {
            u64::MAX => now,
            0 if k.proto == PROTO_UDP => now.saturating_sub(12 * UDP_TIMEOUT_NS),
            n => n,
        };
        dp.maps
            .conntrack
            .insert(k, v, 0)
            .map_err(|e| format!("seeding conntrack: {e}"))?;
    }
    let mut restore = Vec::new();
    for b in &f.before {
        match b {
            Before::BumpEpoch => {
                let mut c = dp.maps.config.get(&0, 0).map_err(|e| e.to_string())?;
                c.epoch = c.epoch.wrapping_add(1);
                dp.maps.config.set(0, c, 0).map_err(|e| e.to_string())?;
            }
            Before::BackendDown(id) => {
                let orig = dp.maps.backends.get(id, 0).map_err(|e| e.to_string())?;
                let mut down = orig;
                down.flags |= BACKEND_DOWN;
                dp.maps
                    .backends
                    .set(*id, down, 0)
                    .map_err(|e| e.to_string())?;
                restore.push((*id, orig));
            }
        }
    }
    let result = run_frame(dp, f);
    for (id, orig) in restore {
        dp.maps
            .backends
            .set(id, orig, 0)
            .map_err(|e| e.to_string())?;
    }
    result
}

fn run_frame(dp: &mut Dataplane, f: &Fixture) -> Result<(), String> {
    let before = reasons(&dp.maps.stats_reason);
    let b_before = f
        .backend
        .map(|b| sum(&dp.maps.stats_backend.get(&b, 0).unwrap()).packets);
    let prog = dp.program().expect("xdp_lb loaded");
    let (action, out) = test_run(prog, &f.input).map_err(|e| format!("test run: {e:#}"))?;
    let after = reasons(&dp.maps.stats_reason);

    let mut errs = Vec::new();
    if action == XDP_ABORTED {
        errs.push("XDP_ABORTED: an exit path the program does not handle".into());
    } else if action != f.action {
        errs.push(format!("action {action}, want {}", f.action));
    }
    match &f.output {
        Out::Unchanged if out != f.input => {
            errs.push(format!("frame changed: {}", hexdiff(&out, &f.input)))
        }
        Out::Bytes(want) if &out != want => {
            errs.push(format!("output differs: {}", hexdiff(&out, want)))
        }
        _ => {}
    }
    if matches!(action, XDP_TX | XDP_REDIRECT)
        && let Err(e) = verify_checksums(&out)
    {
        errs.push(format!("output checksums: {e}"));
    }
    for i in 0..reason::COUNT {
        let dp_ = after[i as usize].packets - before[i as usize].packets;
        let db = after[i as usize].bytes - before[i as usize].bytes;
        let want = u64::from(i == f.reason || f.events.contains(&i));
        if dp_ != want {
            errs.push(format!(
                "counter {} moved by {dp_}, want {want}",
                reason::NAMES[i as usize]
            ));
        }
        if i == f.reason && db != f.input.len() as u64 {
            errs.push(format!(
                "counter {} bytes moved by {db}, want {}",
                reason::NAMES[i as usize],
                f.input.len()
            ));
        }
    }
    if let (Some(b), Some(before)) = (f.backend, b_before) {
        let now = sum(&dp.maps.stats_backend.get(&b, 0).unwrap()).packets;
        if now != before + 1 {
            errs.push(format!(
                "backend {b} counter moved by {}, want 1",
                now - before
            ));
        }
    }
    for a in &f.after {
        match a {
            After::Conntrack(k, want) => {
                let got = dp.maps.conntrack.get(k, 0).ok().map(|v| v.backend);
                if got != *want {
                    errs.push(format!("conntrack entry {got:?}, want {want:?}"));
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// Keeps the calling thread on one CPU: `BPF_PROG_TEST_RUN` runs on the caller's CPU,
/// and the flow cache is per CPU, so rows that expect a cache hit need the same one.
fn stay_on_one_cpu() {
    // SAFETY: no preconditions.
    let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
    lb::pktgen::pin_cpu(cpu).expect("pinning the test thread");
}

/// A flow served from the flow cache still goes through the connection table on every
/// `FLOW_CACHE_REFRESH`-th packet (keeping its LRU entry fresh), and only then.
#[test]
fn flow_cache_refreshes_through_the_connection_table() {
    lb_tests::require_root();
    stay_on_one_cpu();
    let dp = load_world(4096);
    let (c4, v4) = (Ip::V4(CLIENT4), Ip::V4(VIP4));
    let port = 61_111;
    let prog = dp.program().expect("xdp_lb loaded");
    let (action, _) = test_run(prog, &tcp_frame(c4, v4, port, 80, Tcp::Syn, 0)).unwrap();
    assert_eq!(action, XDP_TX, "the SYN is forwarded");
    let before = reasons(&dp.maps.stats_reason);
    let n = 3 * FLOW_CACHE_REFRESH + 10;
    let ack = tcp_frame(c4, v4, port, 80, Tcp::Ack, 0);
    let prog = dp.program().expect("xdp_lb loaded");
    for _ in 0..n {
        let (action, _) = test_run(prog, &ack).unwrap();
        assert_eq!(action, XDP_TX);
    }
    let after = reasons(&dp.maps.stats_reason);
    let moved = |i: u32| after[i as usize].packets - before[i as usize].packets;
    assert_eq!(
        moved(reason::EVENT_CONNTRACK_HIT),
        3,
        "one table lookup per refresh"
    );
    assert_eq!(moved(reason::EVENT_FLOW_CACHE_HIT), u64::from(n) - 3);
    assert_eq!(moved(reason::EVENT_CONNTRACK_MISS), 0);
    assert_eq!(moved(reason::TX_L2), u64::from(n));
    let k = key(c4, v4, port, 80, PROTO_TCP);
    let (b, _) = ring_pick(S_V4_TCP80, &k);
    assert_eq!(
        dp.maps.conntrack.get(&k, 0).map(|f| f.backend).ok(),
        Some(b)
    );
}

/// Two flows whose cache sets collide both stay cached (the set has two ways); a third
/// pushes out the flow filled longest ago, which then goes through the table.
#[test]
fn flow_cache_keeps_two_colliding_flows() {
    lb_tests::require_root();
    stay_on_one_cpu();
    let dp = load_world(4096);
    let (c4, v4) = (Ip::V4(CLIENT4), Ip::V4(VIP4));
    let set = |port: u16| lb_common::hash::cache_set(&key(c4, v4, port, 80, PROTO_TCP));
    let first = 61_300;
    let mut ports = vec![first];
    ports.extend(
        (1024..u16::MAX)
            .filter(|&p| p != first && set(p) == set(first))
            .take(2),
    );
    let [a, b, c] = ports[..] else {
        panic!("three ports in one cache set: {ports:?}");
    };
    let prog = dp.program().expect("xdp_lb loaded");
    let send = |port: u16, tcp: Tcp| {
        let (action, _) = test_run(prog, &tcp_frame(c4, v4, port, 80, tcp, 0)).unwrap();
        assert_eq!(action, XDP_TX, "port {port} {tcp:?} forwarded");
    };
    let moved_by = |f: &dyn Fn()| {
        let before = reasons(&dp.maps.stats_reason);
        f();
        let after = reasons(&dp.maps.stats_reason);
        let d = |i: u32| after[i as usize].packets - before[i as usize].packets;
        (
            d(reason::EVENT_FLOW_CACHE_HIT),
            d(reason::EVENT_CONNTRACK_HIT),
        )
    };
    send(a, Tcp::Syn);
    send(b, Tcp::Syn);
    let both = moved_by(&|| {
        for _ in 0..5 {
            send(a, Tcp::Ack);
            send(b, Tcp::Ack);
        }
    });
    assert_eq!(
        both,
        (10, 0),
        "(cache hits, table hits) of two colliding flows"
    );
    send(c, Tcp::Syn);
    assert_eq!(
        moved_by(&|| send(a, Tcp::Ack)),
        (0, 1),
        "the flow filled first is out"
    );
    assert_eq!(
        moved_by(&|| send(c, Tcp::Ack)),
        (1, 0),
        "the newest flow stays"
    );
    assert_eq!(
        moved_by(&|| send(b, Tcp::Ack)),
        (0, 1),
        "refilling the first pushed out the second"
    );
}

/// The service cache serves a (VIP, port) only for the epoch it was filled in: after the
/// controller removes the service and bumps the epoch, the VIP's packets pass.
#[test]
fn service_cache_entries_die_with_the_epoch() {
    lb_tests::require_root();
    stay_on_one_cpu();
    let mut dp = load_world(4096);
    let (c4, v4) = (Ip::V4(CLIENT4), Ip::V4(VIP4));
    let sk = ServiceKey {
        addr_be: v4.words(),
        port_be: 80u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    let run = |dp: &Dataplane, port: u16| {
        let prog = dp.program().expect("xdp_lb loaded");
        test_run(prog, &tcp_frame(c4, v4, port, 80, Tcp::Syn, 0))
            .unwrap()
            .0
    };
    assert_eq!(run(&dp, 61_200), XDP_TX, "a SYN to VIP:80 is forwarded");
    let saved = dp.maps.services.get(&sk, 0).expect("the VIP:80 service");
    dp.maps.services.remove(&sk).unwrap();
    // Same epoch: the cached resolution still stands (the epoch is the contract; the
    // controller bumps it after every change).
    assert_eq!(run(&dp, 61_201), XDP_TX, "cached until the epoch moves");
    let mut c = dp.maps.config.get(&0, 0).unwrap();
    c.epoch = c.epoch.wrapping_add(1);
    dp.maps.config.set(0, c, 0).unwrap();
    assert_eq!(run(&dp, 61_202), XDP_PASS, "gone with the new epoch");
    dp.maps.services.insert(sk, saved, 0).unwrap();
    assert_eq!(run(&dp, 61_203), XDP_TX, "back once the service is");
}

#[test]
fn xdp_lb_fixture_table() {
    lb_tests::require_root();
    stay_on_one_cpu();
    let mut dp = load_world(4096);
    let rows = table();
    let mut failed = Vec::new();
    for (i, f) in rows.iter().enumerate() {
        match run_row(&mut dp, f) {
            Ok(()) => println!("ok   {i:3} {}", f.desc),
            Err(e) => {
                println!("FAIL {i:3} {}: {e}", f.desc);
                failed.push(format!("{i}: {}: {e}", f.desc));
            }
        }
    }
    println!("{} rows, {} failed", rows.len(), failed.len());
    assert!(
        failed.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failed.len(),
        rows.len(),
        failed.join("\n")
    );
}

/// The expected outputs themselves must be well-formed: a table whose expectations
/// were wrong would pass against an equally wrong program.
#[test]
fn expected_outputs_have_valid_checksums() {
    lb_tests::require_root();
    for f in table() {
        if let Out::Bytes(b) = &f.output {
            verify_checksums(b).unwrap_or_else(|e| panic!("{}: {e}", f.desc));
        }
    }
}

/// BPF_PROG_TEST_RUN itself refuses frames shorter than an Ethernet header
/// (`bpf_test_init`: size < ETH_HLEN is -EINVAL), so the table's cuts start at 14.
#[test]
fn frames_shorter_than_ethernet_never_reach_the_program() {
    lb_tests::require_root();
    let dp = load_world(1024);
    let prog = dp.program().unwrap();
    let f = tcp_frame(Ip::V4(CLIENT4), Ip::V4(VIP4), 1, 80, Tcp::Syn, 0);
    for n in 0..14 {
        match test_run(prog, &f[..n]) {
            Err(_) => {}
            Ok((action, out)) => {
                assert_eq!((action, &out[..]), (XDP_PASS, &f[..n]), "{n}-byte frame");
            }
        }
    }
    let before = sum(&dp
        .maps
        .stats_reason
        .get(&reason::PASS_MALFORMED, 0)
        .unwrap())
    .packets;
    let (action, out) = test_run(prog, &f[..14]).unwrap();
    assert_eq!((action, &out[..]), (XDP_PASS, &f[..14]));
    let after = sum(&dp
        .maps
        .stats_reason
        .get(&reason::PASS_MALFORMED, 0)
        .unwrap())
    .packets;
    assert_eq!(
        after,
        before + 1,
        "a bare Ethernet header counts as pass_malformed"
    );
}

/// When the connection table is full the LRU evicts: every new flow is still forwarded
/// to the ring's backend, the table never holds more than its capacity, and each
/// packet either pinned its flow or counted `table_full`.
#[test]
fn full_connection_table_still_forwards() {
    lb_tests::require_root();
    const CAP: u32 = 64;
    let dp = load_world(CAP);
    let mut table_full = 0;
    for sport in 20_000..20_000 + 8 * CAP as u16 {
        let k = key(Ip::V4(CLIENT4), Ip::V4(VIP4), sport, 9000, PROTO_UDP);
        let input = udp_frame(Ip::V4(CLIENT4), Ip::V4(VIP4), sport, 9000, 10);
        let (b, _) = ring_pick(S_V4_UDP_ALL, &k);
        let full_before = sum(&dp
            .maps
            .stats_reason
            .get(&reason::EVENT_TABLE_FULL, 0)
            .unwrap())
        .packets;
        let prog = dp.program().unwrap();
        let (action, out) = test_run(prog, &input).unwrap();
        assert_eq!(action, XDP_TX, "flow {sport}");
        assert_eq!(out, l2_out(&input, b), "flow {sport}");
        let full = sum(&dp
            .maps
            .stats_reason
            .get(&reason::EVENT_TABLE_FULL, 0)
            .unwrap())
        .packets
            - full_before;
        let pinned = dp.maps.conntrack.get(&k, 0).ok().map(|v| v.backend);
        match (full, pinned) {
            (0, Some(p)) => assert_eq!(p, b, "flow {sport} pinned elsewhere"),
            (1, None) => table_full += 1,
            other => panic!(
                "flow {sport}: table_full moved by {}, entry {:?}",
                other.0, other.1
            ),
        }
    }
    let entries = dp.maps.conntrack.keys().count();
    assert!(
        entries <= CAP as usize,
        "{entries} entries in a table of {CAP}"
    );
    let total = sum(&dp.maps.stats_reason.get(&reason::TX_L2, 0).unwrap()).packets;
    assert_eq!(total, 8 * u64::from(CAP));
    println!(
        "{} flows through a {CAP}-entry table: {entries} entries kept, {table_full} table_full events",
        8 * CAP
    );
}

// ---------------------------------------------------------------------------------
// xdp_decap (backend side).
// ---------------------------------------------------------------------------------

#[test]
fn xdp_decap_fixtures() {
    lb_tests::require_root();
    let mut ebpf = load_object(&LoadOptions {
        conntrack_size: 1024,
        max_services: 1,
    })
    .unwrap();
    load_program(&mut ebpf, lb_common::PROG_DECAP).unwrap();
    let prog: &Xdp = ebpf
        .program(lb_common::PROG_DECAP)
        .unwrap()
        .try_into()
        .unwrap();
    let stats: PerCpuArray<&MapData, Counter> =
        PerCpuArray::try_from(ebpf.map(lb_common::MAP_STATS_REASON).unwrap()).unwrap();

    let c4 = Ip::V4(CLIENT4);
    let c6 = Ip::V6(CLIENT6);
    let inner4 = tcp_frame(c4, Ip::V4(VIP4E), 1000, 80, Tcp::Ack, 33);
    let inner6 = udp_frame(c6, Ip::V6(VIP6), 1000, 53, 21);
    let inner4u = udp_frame(c4, Ip::V4(VIP4E), 1000, 53, 21);
    // The inner frame as the backend stack must see it: the outer frame's MACs, the
    // inner EtherType, the inner packet untouched.
    let stripped = |outer: &[u8], inner: &[u8]| {
        let mut v = outer[..12].to_vec();
        v.extend_from_slice(&inner[12..]);
        v
    };
    // (description, input, expected output or None for untouched, reason)
    type Row = (String, Vec<u8>, Option<Vec<u8>>, u32);
    let mut rows: Vec<Row> = Vec::new();
    let e44 = encap_out(&inner4, 6, 0xdead_beef);
    rows.push((
        "IPv4-in-IPv4 is stripped".into(),
        e44.clone(),
        Some(stripped(&e44, &inner4)),
        reason::PASS_DECAP,
    ));
    let e66 = encap_out(&inner6, 4, 0x1234_5678);
    rows.push((
        "IPv6-in-IPv6 is stripped".into(),
        e66.clone(),
        Some(stripped(&e66, &inner6)),
        reason::PASS_DECAP,
    ));
    let e46 = encap_out(&inner4u, 5, 0x0bad_cafe);
    rows.push((
        "IPv4-in-IPv6 is stripped".into(),
        e46.clone(),
        Some(stripped(&e46, &inner4u)),
        reason::PASS_DECAP,
    ));
    rows.push((
        "plain IPv4 TCP passes untouched".into(),
        inner4.clone(),
        None,
        reason::PASS_NOT_VIP,
    ));
    rows.push((
        "plain IPv6 UDP passes untouched".into(),
        inner6.clone(),
        None,
        reason::PASS_NOT_VIP,
    ));
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&[0; 20]);
    rows.push((
        "ARP passes untouched".into(),
        eth([0xff; 6], CLIENT_MAC, EtherType::ARP, &arp),
        None,
        reason::PASS_NOT_IP,
    ));
    let mut h = v4h([10, 9, 9, 9], [10, 0, 0, 11]);
    h.options = vec![0x01, 0x01, 0x01, 0x00];
    let opts = frame(&ipv4(&h, 4, &inner4[14..]));
    rows.push((
        "IPv4-in-IPv4 with outer options passes untouched".into(),
        opts,
        None,
        reason::PASS_NOT_VIP,
    ));
    let hbh = frame(&ipv6(
        ROUTER6,
        VIP6,
        64,
        &[Ext::Raw(EXT_HOP, padn6())],
        41,
        &inner6[14..],
    ));
    rows.push((
        "IPv6 with a hop-by-hop header before the inner packet passes untouched".into(),
        hbh,
        None,
        reason::PASS_NOT_VIP,
    ));
    rows.push((
        "IPv4-in-IPv4 with fewer than 20 inner bytes passes untouched".into(),
        e44[..14 + 20 + 19].to_vec(),
        None,
        reason::PASS_MALFORMED,
    ));
    rows.push((
        "IPv6-in-IPv6 cut inside the outer header passes untouched".into(),
        e66[..14 + 39].to_vec(),
        None,
        reason::PASS_MALFORMED,
    ));
    // A router may fragment the outer IPv4 header (xdp_lb sends it without DF):
    // stripping one fragment's outer header would hand the stack a slice of the inner
    // packet's payload as if it were an IP header.
    let outer_fragment = |from: usize, to: usize, more: bool| {
        let whole = encap_out(&inner4, 6, 1);
        let mut o = Ipv4HeaderSlice::from_slice(&whole[14..])
            .unwrap()
            .to_header();
        let body = &whole[34 + from..34 + to];
        o.more_fragments = more;
        o.fragment_offset = IpFragOffset::try_new((from / 8) as u16).unwrap();
        o.total_len = (20 + body.len()) as u16;
        o.header_checksum = o.calc_header_checksum();
        let mut v = whole[..14].to_vec();
        v.extend_from_slice(&o.to_bytes());
        v.extend_from_slice(body);
        v
    };
    rows.push((
        "first fragment of an outer IPv4 header passes untouched".into(),
        outer_fragment(0, 40, true),
        None,
        reason::PASS_UNSUPPORTED,
    ));
    rows.push((
        "last fragment of an outer IPv4 header passes untouched".into(),
        outer_fragment(40, inner4.len() - 14, false),
        None,
        reason::PASS_UNSUPPORTED,
    ));

    let mut failed = Vec::new();
    for (desc, input, want, why) in &rows {
        let before = sum(&stats.get(why, 0).unwrap()).packets;
        let (action, out) = test_run(prog, input).unwrap();
        let moved = sum(&stats.get(why, 0).unwrap()).packets - before;
        let want_out = want.as_deref().unwrap_or(input);
        let mut errs = Vec::new();
        if action != XDP_PASS {
            errs.push(format!("action {action}"));
        }
        if out != want_out {
            errs.push(hexdiff(&out, want_out));
        }
        if moved != 1 {
            errs.push(format!(
                "counter {} moved by {moved}",
                reason::NAMES[*why as usize]
            ));
        }
        if want.is_some()
            && let Err(e) = verify_checksums(&out)
        {
            errs.push(e);
        }
        if errs.is_empty() {
            println!("ok   decap: {desc}");
        } else {
            println!("FAIL decap: {desc}: {}", errs.join("; "));
            failed.push(format!("{desc}: {}", errs.join("; ")));
        }
    }
    assert!(
        failed.is_empty(),
        "decap fixtures failed:\n{}",
        failed.join("\n")
    );
}

/// With the LB's own MAC configured, a VIP frame unicast to another host's MAC (a
/// bridge flooding unknown unicast to a backup LB) passes untouched and is counted as
/// `pass_other_host`; the same frame to the LB's MAC, or to a broadcast address, is
/// steered.
#[test]
fn frames_for_another_hosts_mac_pass_untouched() {
    lb_tests::require_root();
    let mut dp = load_world(4096);
    let mut cfg = world_config();
    cfg.lb_mac = LB_MAC;
    dp.maps.config.set(0, cfg, 0).unwrap();
    let prog = dp.program().unwrap();
    let to_lb = tcp_frame(Ip::V4(CLIENT4), Ip::V4(VIP4), 40000, 80, Tcp::Syn, 0);
    let mut to_other = to_lb.clone();
    to_other[..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 0x99]);
    let before = sum(&dp
        .maps
        .stats_reason
        .get(&reason::PASS_OTHER_HOST, 0)
        .unwrap())
    .packets;

    let (action, out) = test_run(prog, &to_other).unwrap();
    assert_eq!(action, XDP_PASS);
    assert_eq!(
        out, to_other,
        "a frame for another host must pass byte for byte"
    );
    let after = sum(&dp
        .maps
        .stats_reason
        .get(&reason::PASS_OTHER_HOST, 0)
        .unwrap())
    .packets;
    assert_eq!(after, before + 1);

    let (action, _) = test_run(prog, &to_lb).unwrap();
    assert_eq!(action, XDP_TX, "a frame for the LB's MAC is steered");
    let mut broadcast = to_lb.clone();
    broadcast[..6].copy_from_slice(&[0xff; 6]);
    let (action, _) = test_run(prog, &broadcast).unwrap();
    assert_eq!(action, XDP_TX, "group addresses are not filtered");
}

/// The other-host rule holds on every path that sends a frame, not only the one
/// through the ring: an echo request to a VIP and the fragments of a datagram whose
/// first fragment was for another host's MAC pass untouched as `pass_other_host` (a
/// backup LB on a flooding bridge would otherwise answer pings the master answers
/// too, and forward every later fragment of the master's datagrams a second time).
#[test]
fn echo_and_fragments_for_another_hosts_mac_pass_untouched() {
    lb_tests::require_root();
    let mut dp = load_world(4096);
    let mut cfg = world_config();
    cfg.lb_mac = LB_MAC;
    dp.maps.config.set(0, cfg, 0).unwrap();
    let other = |mut f: Vec<u8>| {
        f[..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 0x99]);
        f
    };
    let ping = other(frame(&ipv4(
        &v4h(CLIENT4, VIP4),
        PROTO_ICMP,
        &icmp4(
            Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 3, seq: 4 }),
            &payload(16),
        ),
    )));
    let ping6 = other(frame(&ipv6(
        CLIENT6,
        VIP6,
        64,
        &[],
        PROTO_ICMPV6,
        &icmp6(
            Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 3, seq: 4 }),
            CLIENT6,
            VIP6,
            &payload(16),
        ),
    )));
    let dg = udp(Ip::V4(CLIENT4), Ip::V4(VIP4), 42_001, 5000, &payload(48));
    let piece = |off: usize, end: usize, mf: bool| {
        let h = V4 {
            id: 0x2001,
            df: false,
            mf,
            frag_off: (off / 8) as u16,
            ..v4h(CLIENT4, VIP4)
        };
        other(frame(&ipv4(&h, PROTO_UDP, &dg[off..end])))
    };
    let frames = [
        ("v4 echo request", ping),
        ("v6 echo request", ping6),
        ("first fragment", piece(0, 24, true)),
        ("second fragment", piece(24, 56, false)),
    ];
    let prog = dp.program().unwrap();
    let mut failed = Vec::new();
    for (what, f) in frames {
        let before = reasons(&dp.maps.stats_reason);
        let (action, out) = test_run(prog, &f).unwrap();
        let after = reasons(&dp.maps.stats_reason);
        let moved = |i: u32| after[i as usize].packets - before[i as usize].packets;
        if action != XDP_PASS || out != f || moved(reason::PASS_OTHER_HOST) != 1 {
            failed.push(format!(
                "{what}: action {action}, frame {}, pass_other_host moved by {}",
                if out == f { "unchanged" } else { "changed" },
                moved(reason::PASS_OTHER_HOST)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A following fragment counts as its backend's traffic only when it is sent there:
/// one too big to encapsulate is answered with "fragmentation needed" and, as on the
/// ring path (`forward`), leaves the backend's counter alone.
#[test]
fn fragment_answered_too_big_is_not_backend_traffic() {
    lb_tests::require_root();
    let dp = load_world(4096);
    let (c4, v4) = (Ip::V4(CLIENT4), Ip::V4(VIP4));
    let sport = 42_100;
    let k = key(c4, v4, sport, 53, PROTO_UDP);
    let (b, _) = ring_pick(S_V4_UDP53_ENCAP, &k);
    let dg = udp(c4, v4, sport, 53, &payload(1600));
    let piece = |off: usize, end: usize, mf: bool| {
        let h = V4 {
            id: 0x2101,
            df: false,
            mf,
            frag_off: (off / 8) as u16,
            ..v4h(CLIENT4, VIP4)
        };
        frame(&ipv4(&h, PROTO_UDP, &dg[off..end]))
    };
    let first = piece(0, 24, true);
    let big = piece(24, dg.len(), false);
    let prog = dp.program().unwrap();
    let backend_packets = || sum(&dp.maps.stats_backend.get(&b, 0).unwrap()).packets;
    let (action, _) = test_run(prog, &first).unwrap();
    assert_eq!(action, XDP_TX, "the first fragment is encapsulated");
    let before = backend_packets();
    let (action, out) = test_run(prog, &big).unwrap();
    assert_eq!(
        (action, out),
        (XDP_TX, frag_needed_out(&big, (ENCAP_MTU - 20) as u16)),
        "a following fragment too big to encapsulate is answered"
    );
    assert_eq!(
        backend_packets(),
        before,
        "backend {b} counted a fragment it was never sent"
    );
}
