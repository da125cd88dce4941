//! Independent checksum verification of Ethernet frames, for the packet tests
//! (`fixtures`, `fuzz_frames`): every checksum the data plane writes or keeps is
//! recomputed with etherparse, never with lb-common's helpers, so a shared bug cannot
//! hide itself.
//!
//! IPv6 extension headers are walked by hand ([`walk_ext_headers`]) rather than with
//! etherparse 0.16's `Ipv6Extensions`, which rejects a hop-by-hop header that is not
//! first, stops at a header out of its recommended order (and would then skip the
//! upper-layer check), and misreads the Fragment header's offset and M bits
//! (etherparse#150, fixed in 0.20).

use crate::addr::Ip;
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Type, Icmpv6Slice, IpNumber, Ipv4HeaderSlice, Ipv6Header,
    TcpHeaderSlice, UdpHeader,
};

/// One's complement has two zeros: a sender may write either (RFC 1624 section 3).
fn same_checksum(stored: u16, computed: u16) -> bool {
    stored == computed || (stored | computed == 0xffff && (stored == 0 || computed == 0))
}

/// `Err` naming the `what` checksum unless `stored` is `computed` (either zero allowed).
fn check(what: &str, stored: u16, computed: u16) -> Result<(), String> {
    if same_checksum(stored, computed) {
        Ok(())
    } else {
        Err(format!(
            "bad {what} checksum {stored:#06x}, want {computed:#06x}"
        ))
    }
}

/// Verifies every checksum of an Ethernet frame with etherparse: IPv4 header, TCP, UDP,
/// ICMP/ICMPv6, recursing into IP-in-IP. L4 sums of fragments are not checkable alone,
/// and the quote inside an ICMP error is not an intact packet: both are skipped, and
/// so is an upper layer this does not know.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let (e, rest) = Ethernet2Header::from_slice(frame).map_err(|e| format!("ethernet: {e}"))?;
    match e.ether_type {
        EtherType::IPV4 | EtherType::IPV6 => verify_ip(rest),
        t => Err(format!("not IP: {t:?}")),
    }
}

fn verify_ip(ip: &[u8]) -> Result<(), String> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let s = Ipv4HeaderSlice::from_slice(ip).map_err(|e| format!("ipv4: {e}"))?;
            let h = s.to_header();
            if h.calc_header_checksum() != h.header_checksum {
                return Err(format!(
                    "bad IPv4 header checksum {:#06x}",
                    h.header_checksum
                ));
            }
            if h.more_fragments || h.fragment_offset.value() != 0 {
                return Ok(());
            }
            let end = usize::from(h.total_len).min(ip.len());
            let l4 = &ip[h.header_len()..end];
            verify_l4(Ip::V4(h.source), Ip::V4(h.destination), h.protocol, l4)
        }
        Some(6) => {
            let (h, rest) = Ipv6Header::from_slice(ip).map_err(|e| format!("ipv6: {e}"))?;
            let rest = &rest[..usize::from(h.payload_length).min(rest.len())];
            let (off, next, fragment) = walk_ext_headers(h.next_header.0, rest)
                .ok_or("ipv6: extension headers run past the payload")?;
            if fragment {
                return Ok(());
            }
            let l4 = &rest[off..];
            verify_l4(Ip::V6(h.source), Ip::V6(h.destination), IpNumber(next), l4)
        }
        v => Err(format!("IP version {v:?}")),
    }
}

fn verify_l4(src: Ip, dst: Ip, proto: IpNumber, l4: &[u8]) -> Result<(), String> {
    match (proto, src, dst) {
        (IpNumber::IPV4 | IpNumber::IPV6, _, _) => verify_ip(l4),
        (IpNumber::TCP, _, _) => {
            let s = TcpHeaderSlice::from_slice(l4).map_err(|e| format!("tcp: {e}"))?;
            let h = s.to_header();
            let data = &l4[h.header_len()..];
            let c = match (src, dst) {
                (Ip::V4(a), Ip::V4(b)) => h.calc_checksum_ipv4_raw(a, b, data),
                (Ip::V6(a), Ip::V6(b)) => h.calc_checksum_ipv6_raw(a, b, data),
                _ => unreachable!("one IP header has addresses of one family"),
            }
            .map_err(|e| format!("tcp: {e}"))?;
            check("TCP", h.checksum, c)
        }
        (IpNumber::UDP, _, _) => {
            let (h, data) = UdpHeader::from_slice(l4).map_err(|e| format!("udp: {e}"))?;
            if h.checksum == 0 && matches!(src, Ip::V4(_)) {
                return Ok(()); // "no checksum" (RFC 768); IPv6 has no such value (RFC 8200 8.1)
            }
            let c = match (src, dst) {
                (Ip::V4(a), Ip::V4(b)) => h.calc_checksum_ipv4_raw(a, b, data),
                (Ip::V6(a), Ip::V6(b)) => h.calc_checksum_ipv6_raw(a, b, data),
                _ => unreachable!("one IP header has addresses of one family"),
            }
            .map_err(|e| format!("udp: {e}"))?;
            check("UDP", h.checksum, c)
        }
        (IpNumber::ICMP, Ip::V4(_), _) => {
            if l4.len() < 8 {
                return Err("short ICMP".into());
            }
            // Over every byte but the checksum field, whatever the type.
            let c = Icmpv4Type::Unknown {
                type_u8: l4[0],
                code_u8: l4[1],
                bytes5to8: [l4[4], l4[5], l4[6], l4[7]],
            }
            .calc_checksum(&l4[8..]);
            check("ICMP", u16::from_be_bytes([l4[2], l4[3]]), c)
        }
        (IpNumber::IPV6_ICMP, Ip::V6(a), Ip::V6(b)) => {
            let s = Icmpv6Slice::from_slice(l4).map_err(|e| format!("icmpv6: {e}"))?;
            if !s.is_checksum_valid(a, b) {
                return Err(format!("bad ICMPv6 checksum {:#06x}", s.checksum()));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Walks the IPv6 extension headers that follow a fixed header whose next header is
/// `next`, in any order and any number (RFC 8200 section 4): hop-by-hop, routing,
/// destination options, fragment and authentication (RFC 4302). `rest` is the payload
/// after the fixed header.
///
/// Returns (offset of the upper layer in `rest`, its protocol, whether a fragment
/// header was seen), or `None` where a header runs past `rest`. A later fragment
/// (offset not 0) ends the walk at its Fragment header, whose Next Header is returned.
pub fn walk_ext_headers(mut next: u8, rest: &[u8]) -> Option<(usize, u8, bool)> {
    let (mut off, mut fragment) = (0, false);
    loop {
        match IpNumber(next) {
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => {
                let h = rest.get(off..off + 2)?;
                next = h[0];
                // Length in 8-octet units, not counting the first 8.
                off += (usize::from(h[1]) + 1) * 8;
            }
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let h = rest.get(off..off + 8)?;
                next = h[0];
                off += 8;
                fragment = true;
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    // A later fragment: the rest is the middle of the fragmentable
                    // part (headers after this one are in the first fragment only).
                    return (off <= rest.len()).then_some((off, next, fragment));
                }
            }
            IpNumber::AUTHENTICATION_HEADER => {
                let h = rest.get(off..off + 2)?;
                next = h[0];
                // Length in 4-octet units, minus 2 (RFC 4302 section 2.2).
                off += (usize::from(h[1]) + 2) * 4;
            }
            _ => return (off <= rest.len()).then_some((off, next, fragment)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_zero_is_the_same_checksum() {
        assert!(same_checksum(0x1234, 0x1234));
        assert!(same_checksum(0, 0xffff));
        assert!(same_checksum(0xffff, 0));
        assert!(!same_checksum(0x1234, 0x1235));
        assert!(!same_checksum(0x00ff, 0xff00));
    }

    #[test]
    fn walks_headers_in_any_order() {
        // Destination options, then hop-by-hop (etherparse 0.16 refuses it not first),
        // then a fragment header, then TCP.
        let mut rest = vec![0, 0, 1, 4, 0, 0, 0, 0];
        rest.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        rest.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]);
        rest.extend_from_slice(&[0; 20]);
        assert_eq!(walk_ext_headers(60, &rest), Some((24, 6, true)));
        assert_eq!(walk_ext_headers(60, &rest[..20]), None);
        assert_eq!(walk_ext_headers(6, &rest), Some((0, 6, false)));
        // A later fragment (offset 4) naming destination options: its payload is data.
        let later = [60, 0, 0, 32, 0, 0, 0, 1, 0xff, 0xff, 0, 0];
        assert_eq!(walk_ext_headers(44, &later), Some((8, 60, true)));
    }
}
