//! Property test of `xdp_lb` through BPF_PROG_TEST_RUN: a million random and mutated
//! frames against a seeded world of services, rings and backends.
//!
//! Properties, for every frame:
//! - the program never returns XDP_ABORTED (every exit is a decision);
//! - XDP_PASS leaves the frame byte for byte as it came;
//! - a frame not addressed to a VIP (decided here from the raw bytes: not IPv4/IPv6,
//!   too short to hold a destination, or a destination that is not a VIP) is passed;
//! - a forwarded frame is one of: the input with only the MACs rewritten (L2, the MAC a
//!   backend's), the input behind an outer IPv4/IPv6 header whose fields and IPv4
//!   header checksum are right (encapsulation), an echo reply, or an ICMP "too big"
//!   whose IP and ICMP checksums the program wrote correctly;
//! - a forwarded frame whose input had valid checksums has valid checksums.
//!
//! Checksums are checked with etherparse ([`verify_checksums`]), never with lb-common's
//! helpers. At the end the per-reason counters must add up to the actions seen (every
//! exit counted once).
//!
//! The PRNG is a seeded xorshift64*; the seed is printed and can be set with
//! `LB_FUZZ_SEED`, the frame count with `LB_FUZZ_FRAMES`.

use etherparse::{
    EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type,
    IpFragOffset, IpNumber, Ipv4Header, Ipv4HeaderSlice, Ipv4Options, Ipv6FlowLabel, Ipv6Header,
    Ipv6RawExtHeader, TcpHeader, UdpHeader,
};
use lb::dataplane::{Dataplane, LoadOptions, sum, test_run};
use lb_common::{
    BACKEND_REDIRECT, Backend, Config, FAMILY_V4, PROTO_TCP, PROTO_UDP, SVC_MODE_ENCAP,
    SVC_MODE_L2, Service, ServiceKey, reason, ring_index,
};
use lb_tests::{
    addr::{Ip, words16},
    checksums::{verify_checksums, walk_ext_headers},
};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

const LB_MAC: [u8; 6] = [0x02, 0x4c, 0x42, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 1];
const VIP4: [u8; 4] = [10, 0, 0, 100];
const VIP4E: [u8; 4] = [10, 0, 1, 100];
const VIP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const CLIENT4: [u8; 4] = [192, 0, 2, 10];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const OTHER4: [u8; 4] = [10, 0, 0, 200];
const OTHER6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0];
const ENCAP_SRC4: [u8; 4] = [172, 16, 0, 0];
const ENCAP_SRC6: [u8; 16] = [0xfd, 0, 0, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const ENCAP_MTU: u32 = 1500;
const M: u32 = 13;

/// (id, address, flags); MAC `02:be:00:00:00:<id>`.
#[rustfmt::skip]
const BACKENDS: &[(u32, Ip, u8)] = &[
    (1, Ip::V4([10, 0, 0, 11]), 0),
    (2, Ip::V4([10, 0, 0, 12]), 0),
    (3, Ip::V6([0xfd, 0, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]), 0),
    (4, Ip::V6([0xfd, 0, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]), 0),
    (5, Ip::V4([10, 0, 0, 15]), BACKEND_REDIRECT),
];

fn mac_of(id: u32) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, id as u8]
}

/// (id, vip, proto, port, mode, backends).
type SvcRow = (u32, Ip, u8, u16, u32, &'static [u32]);

#[rustfmt::skip]
const SVCS: &[SvcRow] = &[
    (0, Ip::V4(VIP4), PROTO_TCP, 80, SVC_MODE_L2, &[1, 2]),
    (1, Ip::V4(VIP4), PROTO_UDP, 0, SVC_MODE_L2, &[1, 2]),
    (2, Ip::V4(VIP4), PROTO_TCP, 84, SVC_MODE_L2, &[5]),
    (3, Ip::V4(VIP4E), PROTO_TCP, 0, SVC_MODE_ENCAP, &[1, 2]),
    (4, Ip::V4(VIP4E), PROTO_UDP, 0, SVC_MODE_ENCAP, &[3, 4]),
    (5, Ip::V6(VIP6), PROTO_TCP, 80, SVC_MODE_L2, &[3, 4]),
    (6, Ip::V6(VIP6), PROTO_UDP, 0, SVC_MODE_ENCAP, &[3, 4]),
];

fn seed_world(dp: &mut Dataplane) -> anyhow::Result<()> {
    let m = &mut dp.maps;
    m.config.set(
        0,
        Config {
            hash_seed: 0x5eed_0002,
            encap_mtu: ENCAP_MTU,
            udp_timeout_ns: 30_000_000_000,
            encap_src_v4_be: u32::from_ne_bytes(ENCAP_SRC4),
            epoch: 0,
            encap_src_v6_be: words16(ENCAP_SRC6),
            lb_mac: [0; 6],
            _pad2: [0; 2],
        },
        0,
    )?;
    for &(id, addr, flags) in BACKENDS {
        let b = Backend {
            addr_be: addr.words(),
            mac: mac_of(id),
            family: addr.family(),
            flags,
            tx_port: 0,
            _pad: 0,
        };
        m.backends.set(id, b, 0)?;
    }
    for &(id, vip, proto, port, mode, backends) in SVCS {
        let k = ServiceKey {
            addr_be: vip.words(),
            port_be: port.to_be(),
            proto,
            family: vip.family(),
        };
        m.services.insert(
            k,
            Service {
                id,
                flags: mode,
                ring_slot: 0,
                ring_size: M,
            },
            0,
        )?;
        for slot in 0..M {
            m.rings.set(
                ring_index(id, 0, slot),
                backends[slot as usize % backends.len()],
                0,
            )?;
        }
    }
    for vip in [Ip::V4(VIP4), Ip::V4(VIP4E), Ip::V6(VIP6)] {
        let proto = if vip.family() == FAMILY_V4 {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        };
        let k = ServiceKey {
            addr_be: vip.words(),
            port_be: 0,
            proto,
            family: vip.family(),
        };
        m.services.insert(k, Service::default(), 0)?;
    }
    m.tx_ports.set(0, 1, None, 0)?;
    Ok(())
}

/// xorshift64* (Vigna 2014): small, fast, and reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// Up to `max - 1` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

fn eth(ty: EtherType, ip: &[u8]) -> Vec<u8> {
    let mut v = Ethernet2Header {
        source: CLIENT_MAC,
        destination: LB_MAC,
        ether_type: ty,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(ip);
    v
}

/// A transport payload for `proto` with correct checksums.
fn l4(r: &mut Rng, src: Ip, dst: Ip, proto: u8) -> Vec<u8> {
    let sport = if r.chance(1, 2) {
        40000 + r.u16() % 64
    } else {
        r.u16()
    };
    let dport = [80, 84, 53, 443, r.u16()][r.below(5)];
    let len = if r.chance(1, 16) {
        1300 + r.below(300)
    } else {
        r.below(64)
    };
    let data = r.bytes(len);
    let mut v = match proto {
        PROTO_TCP => {
            let mut t = TcpHeader::new(sport, dport, r.next() as u32, 1000);
            t.syn = r.chance(1, 2);
            t.ack = r.chance(1, 2);
            t.fin = r.chance(1, 8);
            t.rst = r.chance(1, 8);
            t.checksum = match (src, dst) {
                (Ip::V4(s), Ip::V4(d)) => t.calc_checksum_ipv4_raw(s, d, &data).unwrap(),
                (Ip::V6(s), Ip::V6(d)) => t.calc_checksum_ipv6_raw(s, d, &data).unwrap(),
                _ => unreachable!(),
            };
            t.to_bytes().to_vec()
        }
        PROTO_UDP => {
            let mut u = UdpHeader {
                source_port: sport,
                destination_port: dport,
                length: (8 + len) as u16,
                checksum: 0,
            };
            u.checksum = match (src, dst) {
                (Ip::V4(s), Ip::V4(d)) => u.calc_checksum_ipv4_raw(s, d, &data).unwrap(),
                (Ip::V6(s), Ip::V6(d)) => u.calc_checksum_ipv6_raw(s, d, &data).unwrap(),
                _ => unreachable!(),
            };
            u.to_bytes().to_vec()
        }
        PROTO_ICMP => {
            let echo = IcmpEchoHeader {
                id: r.u16(),
                seq: r.u16(),
            };
            Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), &data)
                .to_bytes()
                .to_vec()
        }
        PROTO_ICMPV6 => {
            let (Ip::V6(s), Ip::V6(d)) = (src, dst) else {
                unreachable!()
            };
            let echo = IcmpEchoHeader {
                id: r.u16(),
                seq: r.u16(),
            };
            Icmpv6Header::with_checksum(Icmpv6Type::EchoRequest(echo), s, d, &data)
                .unwrap()
                .to_bytes()
                .to_vec()
        }
        _ => Vec::new(),
    };
    v.extend_from_slice(&data);
    v
}

fn ipv4(r: &mut Rng, src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(payload.len() as u16, 64, IpNumber(proto), src, dst).unwrap();
    h.identification = r.u16() % 8;
    if r.chance(1, 4) {
        let n = 4 * (1 + r.below(10));
        let opts: Vec<u8> = (0..n).map(|i| if i + 1 == n { 0 } else { 1 }).collect();
        h.options = Ipv4Options::try_from(&opts[..]).unwrap();
        h.total_len = (h.header_len() + payload.len()) as u16;
    }
    if r.chance(1, 8) {
        h.dont_fragment = false;
        h.more_fragments = r.chance(1, 2);
        h.fragment_offset = IpFragOffset::try_new([0, 3, 6][r.below(3)]).unwrap();
    }
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn ipv6(r: &mut Rng, src: [u8; 16], dst: [u8; 16], proto: u8, payload: &[u8]) -> Vec<u8> {
    // Extension headers: hop-by-hop (0), destination options (60), routing (43) with 0
    // or 1 segments left, fragment (44; written by hand, see fixtures.rs `frag_header`).
    let exts: Vec<u8> = if r.chance(1, 3) {
        (0..1 + r.below(5))
            .map(|_| [0, 60, 43, 44][r.below(4)])
            .collect()
    } else {
        Vec::new()
    };
    let mut body = Vec::new();
    for (i, &t) in exts.iter().enumerate() {
        let next = *exts.get(i + 1).unwrap_or(&proto);
        match t {
            44 => {
                let w = ([0u16, 3, 6][r.below(3)] << 3) | u16::from(r.chance(1, 2));
                body.extend_from_slice(&[next, 0, (w >> 8) as u8, w as u8, 0, 0, 0, r.byte() % 4]);
            }
            43 => {
                let mut b = vec![4, r.byte() % 2, 0, 0, 0, 0];
                b.extend_from_slice(&OTHER6);
                body.extend_from_slice(
                    &Ipv6RawExtHeader::new_raw(IpNumber(next), &b)
                        .unwrap()
                        .to_bytes(),
                );
            }
            _ => body.extend_from_slice(
                &Ipv6RawExtHeader::new_raw(IpNumber(next), &[1, 4, 0, 0, 0, 0])
                    .unwrap()
                    .to_bytes(),
            ),
        }
    }
    body.extend_from_slice(payload);
    let h = Ipv6Header {
        traffic_class: r.byte(),
        flow_label: Ipv6FlowLabel::try_new(r.next() as u32 & 0xf_ffff).unwrap(),
        payload_length: body.len() as u16,
        next_header: IpNumber(*exts.first().unwrap_or(&proto)),
        hop_limit: 64,
        source: src,
        destination: dst,
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

/// A well-formed frame: IPv4 or IPv6, to a VIP or not, TCP/UDP/ICMP echo/ICMP error
/// about a VIP flow/another protocol, with IP options or extension headers.
fn valid_frame(r: &mut Rng) -> Vec<u8> {
    let v6 = r.chance(1, 3);
    let kind = r.below(10);
    if v6 {
        let dst = if r.chance(3, 4) { VIP6 } else { OTHER6 };
        let (src, dst6) = (Ip::V6(CLIENT6), Ip::V6(dst));
        let (proto, payload) = match kind {
            0..=3 => (PROTO_TCP, l4(r, src, dst6, PROTO_TCP)),
            4..=6 => (PROTO_UDP, l4(r, src, dst6, PROTO_UDP)),
            7 => (PROTO_ICMPV6, l4(r, src, dst6, PROTO_ICMPV6)),
            8 => {
                // An ICMPv6 error quoting (VIP -> client).
                let p = [PROTO_TCP, PROTO_UDP][r.below(2)];
                let inner = l4(r, dst6, src, p);
                let mut q = ipv6(r, dst, CLIENT6, p, &inner);
                q.truncate(48 + r.below(64));
                let ty = if r.chance(1, 2) {
                    Icmpv6Type::PacketTooBig { mtu: 1280 }
                } else {
                    Icmpv6Type::Unknown {
                        type_u8: 1,
                        code_u8: 4,
                        bytes5to8: [0; 4],
                    }
                };
                let mut v = Icmpv6Header::with_checksum(ty, CLIENT6, dst, &q)
                    .unwrap()
                    .to_bytes()
                    .to_vec();
                v.extend_from_slice(&q);
                (PROTO_ICMPV6, v)
            }
            _ => (r.byte(), r.some_bytes(40)),
        };
        eth(EtherType::IPV6, &ipv6(r, CLIENT6, dst, proto, &payload))
    } else {
        let dst = [VIP4, VIP4, VIP4E, OTHER4][r.below(4)];
        let (src, dst4) = (Ip::V4(CLIENT4), Ip::V4(dst));
        let (proto, payload) = match kind {
            0..=3 => (PROTO_TCP, l4(r, src, dst4, PROTO_TCP)),
            4..=6 => (PROTO_UDP, l4(r, src, dst4, PROTO_UDP)),
            7 => (PROTO_ICMP, l4(r, src, dst4, PROTO_ICMP)),
            8 => {
                let p = [PROTO_TCP, PROTO_UDP][r.below(2)];
                let inner = l4(r, dst4, src, p);
                let mut q = ipv4(r, dst, CLIENT4, p, &inner);
                let ihl = usize::from(q[0] & 0x0f) * 4;
                q.truncate(ihl + 8);
                let ty = Icmpv4Type::Unknown {
                    type_u8: 3,
                    code_u8: r.byte() % 6,
                    bytes5to8: [0, 0, 5, 0xdc],
                };
                let mut v = Icmpv4Header::with_checksum(ty, &q).to_bytes().to_vec();
                v.extend_from_slice(&q);
                (PROTO_ICMP, v)
            }
            _ => (r.byte(), r.some_bytes(40)),
        };
        eth(EtherType::IPV4, &ipv4(r, CLIENT4, dst, proto, &payload))
    }
}

fn random_frame(r: &mut Rng) -> Vec<u8> {
    let mut f = r.some_bytes(200);
    if f.len() > 14 && r.chance(1, 2) {
        // Give the parser something to chew on: an IP EtherType, sometimes a VIP.
        let v6 = r.chance(1, 2);
        f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        f[14] = if v6 {
            0x60 | (f[14] & 0x0f)
        } else {
            0x45 + (f[14] % 11)
        };
        if r.chance(1, 2) {
            if v6 && f.len() >= 54 {
                f[38..54].copy_from_slice(&VIP6);
            } else if !v6 && f.len() >= 34 {
                f[30..34].copy_from_slice(&VIP4);
            }
        }
    }
    f
}

fn mutate(r: &mut Rng, f: &mut Vec<u8>) {
    let n = if r.chance(1, 5) { 0 } else { 1 + r.below(4) };
    for _ in 0..n {
        if f.is_empty() {
            break;
        }
        let at = if r.chance(3, 4) {
            r.below(f.len().min(100))
        } else {
            r.below(f.len())
        };
        if r.chance(1, 2) {
            f[at] ^= 1 << r.below(8);
        } else {
            f[at] = r.byte();
        }
    }
    if r.chance(1, 5) {
        let n = r.below(f.len() + 1);
        f.truncate(n);
    }
}

/// Decided from the raw bytes, independently of the program's parser.
fn addressed_to_vip(f: &[u8]) -> bool {
    match f.get(12..14) {
        Some([0x08, 0x00]) => f.get(30..34).is_some_and(|d| d == VIP4 || d == VIP4E),
        Some([0x86, 0xdd]) => f.get(38..54).is_some_and(|d| d == VIP6),
        _ => false,
    }
}

/// The IP length the input's header claims (what the program encapsulates).
fn claimed_ip_len(f: &[u8]) -> usize {
    if f[12..14] == [0x08, 0x00] {
        usize::from(u16::from_be_bytes([f[16], f[17]]))
    } else {
        40 + usize::from(u16::from_be_bytes([f[18], f[19]]))
    }
}

/// What a forwarded frame turned out to be.
#[derive(Default)]
struct Seen {
    l2: u64,
    encap: u64,
    echo: u64,
    too_big: u64,
}

/// Checks a frame the program sent (XDP_TX / XDP_REDIRECT) against its input.
fn check_sent(input: &[u8], out: &[u8], seen: &mut Seen) -> Result<(), String> {
    let input_valid = verify_checksums(input).is_ok();
    let backend_macs: Vec<[u8; 6]> = BACKENDS.iter().map(|b| mac_of(b.0)).collect();
    if out.len() == input.len() && out[12..] == input[12..] {
        // L2: only the MACs.
        if out[6..12] != input[0..6] || !backend_macs.iter().any(|m| out[0..6] == *m) {
            return Err("L2 forward with wrong MACs".into());
        }
        seen.l2 += 1;
    } else if (out.len() == input.len() + 20 && out[34..] == input[14..])
        || (out.len() == input.len() + 40 && out[54..] == input[14..])
    {
        // Encapsulation: check the outer header the program wrote.
        let inner_len = claimed_ip_len(input);
        if out[6..12] != input[0..6] || !backend_macs.iter().any(|m| out[0..6] == *m) {
            return Err("encap with wrong MACs".into());
        }
        let inner_proto = if input[12..14] == [0x08, 0x00] { 4 } else { 41 };
        if out.len() == input.len() + 20 {
            let h = Ipv4HeaderSlice::from_slice(&out[14..])
                .map_err(|e| format!("outer ipv4: {e}"))?
                .to_header();
            let ok = out[12..14] == [0x08, 0x00]
                && h.calc_header_checksum() == h.header_checksum
                && usize::from(h.total_len) == inner_len + 20
                && h.time_to_live == 64
                && h.protocol.0 == inner_proto
                && h.identification == 0
                && !h.dont_fragment
                && !h.more_fragments
                && h.source[..2] == ENCAP_SRC4[..2]
                && BACKENDS
                    .iter()
                    .any(|b| matches!(b.1, Ip::V4(a) if a == h.destination));
            if !ok {
                return Err(format!("bad outer IPv4 header {h:?}"));
            }
        } else {
            let (h, _) =
                Ipv6Header::from_slice(&out[14..]).map_err(|e| format!("outer ipv6: {e}"))?;
            let ok = out[12..14] == [0x86, 0xdd]
                && usize::from(h.payload_length) == inner_len
                && h.hop_limit == 64
                && h.next_header.0 == inner_proto
                && h.source[..12] == ENCAP_SRC6[..12]
                && BACKENDS
                    .iter()
                    .any(|b| matches!(b.1, Ip::V6(a) if a == h.destination));
            if !ok {
                return Err(format!("bad outer IPv6 header {h:?}"));
            }
        }
        seen.encap += 1;
    } else {
        // An ICMP reply from the VIP back to the client.
        if out[0..6] != input[6..12] || out[6..12] != input[0..6] {
            return Err("ICMP reply with wrong MACs".into());
        }
        let v4 = out[12..14] == [0x08, 0x00];
        let (l3, ty) = if v4 {
            let h =
                Ipv4HeaderSlice::from_slice(&out[14..]).map_err(|e| format!("reply ipv4: {e}"))?;
            (h.slice().len(), out.get(14 + h.slice().len()).copied())
        } else {
            // An echo reply keeps the request's extension headers.
            let (h, rest) =
                Ipv6Header::from_slice(&out[14..]).map_err(|e| format!("reply ipv6: {e}"))?;
            let rest = &rest[..usize::from(h.payload_length).min(rest.len())];
            let (off, _, _) = walk_ext_headers(h.next_header.0, rest).ok_or("reply exts")?;
            (40 + off, rest.get(off).copied())
        };
        match (v4, ty) {
            (true, Some(0)) | (false, Some(129)) => {
                if out.len() != input.len() {
                    return Err("echo reply of another length".into());
                }
                if input_valid {
                    verify_checksums(out).map_err(|e| format!("echo reply: {e}"))?;
                }
                seen.echo += 1;
            }
            (true, Some(3)) | (false, Some(2)) => {
                // Too big: every checksum in it was written by the program.
                verify_checksums(out).map_err(|e| format!("too big: {e}"))?;
                let quote = &out[14 + l3 + 8..];
                if !input[14..].starts_with(quote) {
                    return Err("too big quotes something else".into());
                }
                seen.too_big += 1;
            }
            _ => return Err("sent something that is neither forward nor reply".into()),
        }
        return Ok(());
    }
    if input_valid {
        verify_checksums(out).map_err(|e| format!("valid input, forwarded: {e}"))?;
    }
    Ok(())
}

#[test]
fn a_million_random_and_mutated_frames() {
    lb_tests::require_root();
    let seed: u64 = std::env::var("LB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc0ff_ee1b_5eed);
    let frames: u64 = std::env::var("LB_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    println!("seed {seed} (LB_FUZZ_SEED), {frames} frames (LB_FUZZ_FRAMES)");
    let mut r = Rng(seed.max(1));

    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_size: 4096,
        max_services: 8,
    })
    .expect("loading xdp_lb");
    seed_world(&mut dp).expect("seeding maps");
    let exits_before: Vec<u64> = (0..reason::EXIT_COUNT)
        .map(|i| sum(&dp.maps.stats_reason.get(&i, 0).unwrap()).packets)
        .collect();
    let prog = dp.program().unwrap();

    let mut actions = [0u64; 5];
    let mut refused = 0u64;
    let mut vip_frames = 0u64;
    let mut seen = Seen::default();
    // Frames shorter than an Ethernet header never reach the program (the kernel
    // refuses them); they are generated and counted, but `frames` counts runs.
    let mut n = 0u64;
    while n - refused < frames {
        n += 1;
        let mut f = if r.chance(3, 10) {
            random_frame(&mut r)
        } else {
            valid_frame(&mut r)
        };
        mutate(&mut r, &mut f);
        let fail = |what: String| -> ! {
            panic!(
                "frame {n} (seed {seed}): {what}\ninput {:02x?}",
                &f[..f.len().min(160)]
            )
        };
        let (action, out) = match test_run(prog, &f) {
            Ok(v) => v,
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
            Err(_) if f.len() < 14 => {
                refused += 1;
                continue;
            }
            Err(e) => fail(format!("test run: {e:#}")),
        };
        if action == XDP_ABORTED || action > XDP_REDIRECT {
            fail(format!("action {action}"));
        }
        actions[action as usize] += 1;
        if action == XDP_PASS && out != f {
            fail(format!("XDP_PASS changed the frame into {out:02x?}"));
        }
        let vip = addressed_to_vip(&f);
        vip_frames += u64::from(vip);
        if !vip && action != XDP_PASS {
            fail(format!(
                "frame not addressed to a VIP got action {action}: {out:02x?}"
            ));
        }
        if (action == XDP_TX || action == XDP_REDIRECT)
            && let Err(e) = check_sent(&f, &out, &mut seen)
        {
            fail(format!("{e}\noutput {:02x?}", &out[..out.len().min(160)]));
        }
    }

    let exits: Vec<u64> = (0..reason::EXIT_COUNT)
        .map(|i| sum(&dp.maps.stats_reason.get(&i, 0).unwrap()).packets - exits_before[i as usize])
        .collect();
    let group = |ids: &[u32]| ids.iter().map(|&i| exits[i as usize]).sum::<u64>();
    println!(
        "ran {frames} frames ({refused} more, shorter than Ethernet, refused by the kernel); {vip_frames} to a VIP"
    );
    println!(
        "actions: pass {} drop {} tx {} redirect {}; sent: l2 {} encap {} echo {} too_big {}",
        actions[XDP_PASS as usize],
        actions[XDP_DROP as usize],
        actions[XDP_TX as usize],
        actions[XDP_REDIRECT as usize],
        seen.l2,
        seen.encap,
        seen.echo,
        seen.too_big
    );
    for (i, n) in exits.iter().enumerate() {
        println!("  {:>22} {n}", reason::NAMES[i]);
    }
    for i in reason::EVENT_CONNTRACK_HIT..=reason::EVENT_FRAG_FOLLOWED {
        let n = sum(&dp.maps.stats_reason.get(&i, 0).unwrap()).packets;
        println!("  {:>22} {n} (event)", reason::NAMES[i as usize]);
    }
    use reason::*;
    assert_eq!(
        exits.iter().sum::<u64>(),
        frames,
        "every exit counted exactly once"
    );
    assert_eq!(
        group(&[
            PASS_NOT_IP,
            PASS_NOT_VIP,
            PASS_MALFORMED,
            PASS_UNSUPPORTED,
            PASS_DECAP
        ]),
        actions[2],
        "pass reasons"
    );
    assert_eq!(
        group(&[
            DROP_NO_BACKEND,
            DROP_RING_SLOT_EMPTY,
            DROP_ADJUST_FAILED,
            DROP_FRAG_ORPHAN
        ]),
        actions[1],
        "drop reasons"
    );
    assert_eq!(
        group(&[TX_L2, REDIRECT_L2, TX_ENCAP, TX_ICMP_ECHO, TX_ICMP_TOO_BIG]),
        actions[3] + actions[4],
        "send reasons"
    );
    // The generator must reach every kind of output, or the properties prove little.
    assert!(
        seen.l2 > 0
            && seen.encap > 0
            && seen.echo > 0
            && seen.too_big > 0
            && actions[1] > 0
            && actions[4] > 0
    );
}
