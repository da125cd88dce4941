//! The VRRPv3 advertisement on the wire (RFC 5798 section 5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      IPvX Address(es)                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Only the VRRP message is handled here: the IP header (TTL / hop limit 255,
//! section 5.1) is the receiver's business because the kernel builds it on send and
//! hands it over separately (IPv6 ancillary data) on receive. The checksum needs the
//! IP source and destination, so both [`Advert::encode`] and [`Advert::decode`] take
//! them.

use std::net::IpAddr;

/// IP protocol number of VRRP (RFC 5798 section 5.1.1.3 / 5.1.2.3).
pub const IPPROTO_VRRP: u8 = 112;
/// The IPv4 multicast group adverts are sent to (RFC 5798 section 5.1.1.2).
pub const GROUP_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group adverts are sent to (RFC 5798 section 5.1.2.2).
pub const GROUP_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only TTL / hop limit a valid advert may carry (RFC 5798 section 5.1.1.3 / 7.1):
/// a router decrements it, so 255 proves the sender is on the link.
pub const TTL: u8 = 255;
/// VRRP version this module speaks (section 5.2.1).
pub const VERSION: u8 = 3;
/// The only packet type (section 5.2.2): ADVERTISEMENT.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed part before the addresses.
pub const HEADER_LEN: usize = 8;
/// The Max Adver Int field is 12 bits of centiseconds (section 5.2.7).
pub const MAX_ADVERT_INT_CS: u16 = 0x0fff;

/// One VRRPv3 advertisement, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Virtual Router ID (section 5.2.3); 0 is not a valid VRID but is a decoding
    /// concern of the receiver (it is simply foreign), not a malformation.
    pub vrid: u8,
    /// Sender's priority (section 5.2.4): 0 = master is stopping, 255 = address owner.
    pub priority: u8,
    /// Max Adver Int in centiseconds, 12 bits (section 5.2.7).
    pub max_advert_int_cs: u16,
    /// The virtual addresses, all of the family of the IP header (section 5.2.9).
    pub addrs: Vec<IpAddr>,
}

/// Why an advert could not be encoded (a caller bug: config validation prevents it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("advert address {addr} is not of the family of the IP header ({src})")]
    MixedFamily { addr: IpAddr, src: IpAddr },
    #[error("source {src} and destination {dst} are of different families")]
    HeaderFamily { src: IpAddr, dst: IpAddr },
    #[error("{count} addresses do not fit the 8-bit Count IPvX Addr field")]
    TooManyAddrs { count: usize },
    #[error("max advert interval {cs} cs does not fit 12 bits (1..=4095)")]
    Interval { cs: u16 },
}

/// Why a received VRRP message was rejected. Each variant is a distinct counter
/// ([`DecodeError::reason`]); none of them may change the node's state (section 7.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet of {len} bytes is shorter than the {HEADER_LEN}-byte VRRP header")]
    Short { len: usize },
    #[error("VRRP version {version}, only version 3 is spoken")]
    Version { version: u8 },
    #[error("VRRP type {kind}, only 1 (ADVERTISEMENT) exists")]
    Type { kind: u8 },
    #[error("Count IPvX Addr {count} needs {expected} bytes but the packet has {len}")]
    AddrCount {
        count: u8,
        expected: usize,
        len: usize,
    },
    #[error("checksum {received:#06x} is wrong (expected {expected:#06x})")]
    Checksum { received: u16, expected: u16 },
    #[error("max advert interval 0 cs")]
    ZeroInterval,
    /// Section 5.2.5: an advert carries at least one address. keepalived drops these
    /// too ("received an invalid ip number count") and counts them with address-list
    /// errors, as [`super::Counters`] does.
    #[error("Count IPvX Addr is 0 (at least 1 address, section 5.2.5)")]
    NoAddrs,
    #[error("source {src} and destination {dst} are of different families")]
    HeaderFamily { src: IpAddr, dst: IpAddr },
}

impl DecodeError {
    /// A stable, metric-label-friendly name for the kind of malformation.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short { .. } => "short",
            DecodeError::Version { .. } => "version",
            DecodeError::Type { .. } => "type",
            DecodeError::AddrCount { .. } => "addr_count",
            DecodeError::Checksum { .. } => "checksum",
            DecodeError::ZeroInterval => "interval",
            DecodeError::NoAddrs => "addr_list",
            DecodeError::HeaderFamily { .. } => "family",
        }
    }
}

impl Advert {
    /// The VRRP message for an IP packet from `src` to `dst`, checksum filled in
    /// (section 5.2.8: over the pseudo-header of `src`/`dst`, protocol 112, for IPv4
    /// as well as IPv6 - this is a v3 change from v2).
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(EncodeError::HeaderFamily { src, dst });
        }
        if let Some(&addr) = self.addrs.iter().find(|a| a.is_ipv4() != src.is_ipv4()) {
            return Err(EncodeError::MixedFamily { addr, src });
        }
        let count = u8::try_from(self.addrs.len()).map_err(|_| EncodeError::TooManyAddrs {
            count: self.addrs.len(),
        })?;
        if self.max_advert_int_cs == 0 || self.max_advert_int_cs > MAX_ADVERT_INT_CS {
            return Err(EncodeError::Interval {
                cs: self.max_advert_int_cs,
            });
        }
        let mut buf = Vec::with_capacity(HEADER_LEN + self.addrs.len() * addr_len(src));
        buf.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        buf.push(self.vrid);
        buf.push(self.priority);
        buf.push(count);
        // The 4 reserved bits are the top of this u16 and MUST be zero (section 5.2.6).
        buf.extend_from_slice(&self.max_advert_int_cs.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        for addr in &self.addrs {
            match addr {
                IpAddr::V4(a) => buf.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
            }
        }
        let sum = checksum(src, dst, &buf);
        buf[6..8].copy_from_slice(&sum.to_be_bytes());
        Ok(buf)
    }

    /// Parses and validates the VRRP message `buf` received in an IP packet from
    /// `src` to `dst` (section 7.1, minus the TTL and VRID checks, which belong to the
    /// receiver). Reserved bits are ignored as section 5.2.6 demands.
    pub fn decode(buf: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, DecodeError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(DecodeError::HeaderFamily { src, dst });
        }
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Short { len: buf.len() });
        }
        let version = buf[0] >> 4;
        if version != VERSION {
            return Err(DecodeError::Version { version });
        }
        let kind = buf[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(DecodeError::Type { kind });
        }
        let count = buf[3];
        let alen = addr_len(src);
        let expected = HEADER_LEN + usize::from(count) * alen;
        // Exact length: the checksum covers "the entire VRRP message", and trailing
        // bytes would be a message this implementation does not understand.
        if buf.len() != expected {
            return Err(DecodeError::AddrCount {
                count,
                expected,
                len: buf.len(),
            });
        }
        // Summing a message that carries its checksum gives 0xffff (folded) when it
        // is right; recompute with the field zeroed to report the expected value.
        let received = u16::from_be_bytes([buf[6], buf[7]]);
        let mut zeroed = buf.to_vec();
        zeroed[6] = 0;
        zeroed[7] = 0;
        let expected_sum = checksum(src, dst, &zeroed);
        if expected_sum != received {
            return Err(DecodeError::Checksum {
                received,
                expected: expected_sum,
            });
        }
        let max_advert_int_cs = u16::from_be_bytes([buf[4], buf[5]]) & MAX_ADVERT_INT_CS;
        if max_advert_int_cs == 0 {
            // Zero would make the master advertise continuously and the backup's
            // Master_Down_Interval collapse to Skew_Time: not a usable advert.
            return Err(DecodeError::ZeroInterval);
        }
        if count == 0 {
            // Checked after the checksum, so noise counts as noise: only a
            // well-formed advert with no address is an address-list error.
            return Err(DecodeError::NoAddrs);
        }
        let addrs = buf[HEADER_LEN..]
            .chunks_exact(alen)
            .map(|c| match *c {
                [a, b, c, d] => IpAddr::from([a, b, c, d]),
                _ => {
                    // chunks_exact(16): always 16 bytes here.
                    let mut v6 = [0u8; 16];
                    v6.copy_from_slice(c);
                    IpAddr::from(v6)
                }
            })
            .collect();
        Ok(Advert {
            vrid: buf[1],
            priority: buf[2],
            max_advert_int_cs,
            addrs,
        })
    }
}

fn addr_len(a: IpAddr) -> usize {
    if a.is_ipv4() { 4 } else { 16 }
}

/// The one's complement sum of 16-bit big-endian words, not yet folded (RFC 1071).
fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        // An odd trailing byte is padded with a zero byte on the right.
        acc += u64::from(*last) << 8;
    }
    acc
}

/// The VRRPv3 checksum of `msg` (whose checksum field must be zero) sent from `src`
/// to `dst`: section 5.2.8, with the IPv4 pseudo-header of RFC 768 and the IPv6 one
/// of RFC 2460 section 8.1, next header 112.
pub fn checksum(src: IpAddr, dst: IpAddr, msg: &[u8]) -> u16 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&d.octets(), acc);
            // zero, protocol, then the 16-bit length
            acc += u64::from(IPPROTO_VRRP);
            acc += msg.len() as u64;
        }
        // IPv6 (mixed families are rejected by encode/decode before this).
        (s, d) => {
            let s6 = match s {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            let d6 = match d {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            acc = sum_words(&s6.octets(), acc);
            acc = sum_words(&d6.octets(), acc);
            // 32-bit upper-layer length, three zero bytes, next header
            acc = sum_words(&(msg.len() as u32).to_be_bytes(), acc);
            acc += u64::from(IPPROTO_VRRP);
        }
    }
    acc = sum_words(msg, acc);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const DST4: IpAddr = IpAddr::V4(GROUP_V4);

    fn v4_advert() -> Advert {
        Advert {
            vrid: 51,
            priority: 100,
            max_advert_int_cs: 100,
            addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))],
        }
    }

    /// An independent checksum: the RFC 1071 reference loop over an explicitly laid
    /// out pseudo-header, written without sharing code with the module.
    fn reference_checksum(pseudo_and_msg: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < pseudo_and_msg.len() {
            sum += (u32::from(pseudo_and_msg[i]) << 8) | u32::from(pseudo_and_msg[i + 1]);
            i += 2;
        }
        if i < pseudo_and_msg.len() {
            sum += u32::from(pseudo_and_msg[i]) << 8;
        }
        while (sum >> 16) != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn v4_byte_exact_vector() {
        // Built by hand from the section 5.1 picture:
        // version 3 / type 1, VRID 51, priority 100, 1 address, rsvd 0 + 100 cs, cksum, 10.0.0.100
        #[rustfmt::skip]
        let mut expected: Vec<u8> = vec![
            0x31, 51, 100, 1,
            0x00, 0x64, 0x00, 0x00,
            10, 0, 0, 100,
        ];
        #[rustfmt::skip]
        let pseudo: [u8; 12] = [
            10, 0, 0, 1,      // source
            224, 0, 0, 18,    // destination
            0, 112, 0, 12,    // zero, protocol 112, VRRP length 12
        ];
        let mut all = pseudo.to_vec();
        all.extend_from_slice(&expected);
        let sum = reference_checksum(&all);
        // By hand: words 0x0a00+0x0001+0xe000+0x0012+0x0070+0x000c+0x3133+0x6401
        //        +0x0064+0x0000+0x0a00+0x0064 = 0x1_8a8b -> 0x8a8c, complement 0x7573.
        assert_eq!(sum, 0x7573);
        expected[6..8].copy_from_slice(&sum.to_be_bytes());

        let encoded = v4_advert().encode(SRC4, DST4).unwrap();
        assert_eq!(encoded, expected);
        assert_eq!(Advert::decode(&encoded, SRC4, DST4).unwrap(), v4_advert());
    }

    #[test]
    fn v6_byte_exact_vector() {
        let src: IpAddr = "fe80::1".parse().unwrap();
        let dst = IpAddr::V6(GROUP_V6);
        let vip: Ipv6Addr = "fd00::100".parse().unwrap();
        let advert = Advert {
            vrid: 7,
            priority: 255,
            max_advert_int_cs: 0x0fff,
            addrs: vec![IpAddr::V6(vip)],
        };
        let encoded = advert.encode(src, dst).unwrap();
        let mut body = vec![0x31, 7, 255, 1, 0x0f, 0xff, 0, 0];
        body.extend_from_slice(&vip.octets());
        assert_eq!(encoded[..6], body[..6]);
        assert_eq!(encoded[8..], body[8..]);

        // RFC 2460 8.1 pseudo-header: src, dst, 32-bit length, 3 zero bytes, next header.
        let mut all = Vec::new();
        all.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        all.extend_from_slice(&GROUP_V6.octets());
        all.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 112]);
        all.extend_from_slice(&body);
        let sum = reference_checksum(&all);
        assert_eq!(encoded[6..8], sum.to_be_bytes());
        assert_eq!(Advert::decode(&encoded, src, dst).unwrap(), advert);
    }

    /// An advert captured with tcpdump from keepalived 2.2.7 (`vrrp_version 3`,
    /// VRID 51, priority 150, `advert_int 0.1`, VIP 10.77.0.100) sent from 10.77.0.2
    /// to 224.0.0.18: proves the checksum convention matches a real peer.
    #[test]
    fn keepalived_capture_decodes_and_reencodes() {
        let pkt = [
            0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0x43, 0x32, 0x0a, 0x4d, 0x00, 0x64,
        ];
        let src = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2));
        let a = Advert::decode(&pkt, src, DST4).unwrap();
        assert_eq!(
            a,
            Advert {
                vrid: 51,
                priority: 150,
                max_advert_int_cs: 10,
                addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100))],
            }
        );
        assert_eq!(a.encode(src, DST4).unwrap(), pkt);
    }

    #[test]
    fn unicast_checksum_uses_real_destination() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let pkt = v4_advert().encode(SRC4, peer).unwrap();
        assert!(Advert::decode(&pkt, SRC4, peer).is_ok());
        assert!(matches!(
            Advert::decode(&pkt, SRC4, DST4),
            Err(DecodeError::Checksum { .. })
        ));
    }

    #[test]
    fn every_malformation_has_its_error() {
        let good = v4_advert().encode(SRC4, DST4).unwrap();
        let dec = |b: &[u8]| Advert::decode(b, SRC4, DST4);

        assert_eq!(dec(&good[..7]), Err(DecodeError::Short { len: 7 }));
        assert_eq!(dec(&[]), Err(DecodeError::Short { len: 0 }));

        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(dec(&v2), Err(DecodeError::Version { version: 2 }));

        let mut t = good.clone();
        t[0] = 0x32;
        assert_eq!(dec(&t), Err(DecodeError::Type { kind: 2 }));

        assert_eq!(
            dec(&good[..11]),
            Err(DecodeError::AddrCount {
                count: 1,
                expected: 12,
                len: 11
            })
        );
        let mut long = good.clone();
        long.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(dec(&long), Err(DecodeError::AddrCount { .. })));
        let mut count = good.clone();
        count[3] = 2;
        assert!(matches!(dec(&count), Err(DecodeError::AddrCount { .. })));

        let mut bad_sum = good.clone();
        bad_sum[7] ^= 1;
        assert!(matches!(dec(&bad_sum), Err(DecodeError::Checksum { .. })));
        // Any flipped bit in the body is caught too.
        let mut flipped = good.clone();
        flipped[2] ^= 0x40;
        assert!(matches!(dec(&flipped), Err(DecodeError::Checksum { .. })));

        let mut zero = v4_advert();
        zero.max_advert_int_cs = 1;
        let mut z = zero.encode(SRC4, DST4).unwrap();
        z[5] = 0;
        let s = checksum(SRC4, DST4, &{
            let mut c = z.clone();
            c[6] = 0;
            c[7] = 0;
            c
        });
        z[6..8].copy_from_slice(&s.to_be_bytes());
        assert_eq!(dec(&z), Err(DecodeError::ZeroInterval));

        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert!(matches!(
            Advert::decode(&good, SRC4, v6),
            Err(DecodeError::HeaderFamily { .. })
        ));
        // The IPv4 message read as IPv6 needs 24 bytes for one address.
        assert!(matches!(
            Advert::decode(&good, v6, IpAddr::V6(GROUP_V6)),
            Err(DecodeError::AddrCount { .. })
        ));
    }

    /// Section 5.2.5: Count IPvX Addr is at least 1. A zero-address advert with a
    /// correct checksum used to decode, and a higher priority in it made a master
    /// yield and drop its VIPs.
    #[test]
    fn zero_addresses_is_refused() {
        let mut a = v4_advert();
        a.priority = 254;
        a.addrs.clear();
        let pkt = a.encode(SRC4, DST4).unwrap();
        assert_eq!(pkt.len(), HEADER_LEN);
        assert_eq!(pkt[3], 0);
        assert_eq!(Advert::decode(&pkt, SRC4, DST4), Err(DecodeError::NoAddrs));
        assert_eq!(DecodeError::NoAddrs.reason(), "addr_list");
        let v6: IpAddr = "fe80::1".parse().unwrap();
        let pkt = a.encode(v6, IpAddr::V6(GROUP_V6)).unwrap();
        assert_eq!(
            Advert::decode(&pkt, v6, IpAddr::V6(GROUP_V6)),
            Err(DecodeError::NoAddrs)
        );
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let mut pkt = v4_advert().encode(SRC4, DST4).unwrap();
        pkt[4] |= 0xf0;
        pkt[6] = 0;
        pkt[7] = 0;
        let s = checksum(SRC4, DST4, &pkt);
        pkt[6..8].copy_from_slice(&s.to_be_bytes());
        assert_eq!(Advert::decode(&pkt, SRC4, DST4).unwrap(), v4_advert());
    }

    #[test]
    fn encode_rejects_what_cannot_be_sent() {
        let mut a = v4_advert();
        a.max_advert_int_cs = 4096;
        assert_eq!(
            a.encode(SRC4, DST4),
            Err(EncodeError::Interval { cs: 4096 })
        );
        let mut a = v4_advert();
        a.addrs.push("fd00::1".parse().unwrap());
        assert!(matches!(
            a.encode(SRC4, DST4),
            Err(EncodeError::MixedFamily { .. })
        ));
        let mut a = v4_advert();
        a.addrs = vec![IpAddr::V4(Ipv4Addr::LOCALHOST); 256];
        assert_eq!(
            a.encode(SRC4, DST4),
            Err(EncodeError::TooManyAddrs { count: 256 })
        );
    }

    #[test]
    fn decode_never_panics_on_noise() {
        // A cheap deterministic fuzz: every length up to 64 with pseudo-random bytes.
        let mut x: u32 = 0x1234_5678;
        for len in 0..64 {
            for _ in 0..200 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = Advert::decode(&buf, SRC4, DST4);
                let _ = Advert::decode(&buf, "fe80::1".parse().unwrap(), IpAddr::V6(GROUP_V6));
            }
        }
    }
}
