//! The seeded flow hash that indexes Maglev rings.
//!
//! One function for both sides: the XDP program calls it per packet, the controller and
//! the tests call it to predict where a flow lands. MurmurHash3's 32-bit block mix over
//! the 5-tuple words, then its finaliser: a few multiplies and rotates, no loops the
//! verifier has to bound, and good avalanche so neighbouring ports spread over the ring.

use crate::{FlowKey, ServiceKey};

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a flow's 5-tuple with `seed`. Byte order of the fields is the wire order,
/// taken as native words, so both sides hash the same bits.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, key.src_be[0]);
    h = mix(h, key.src_be[1]);
    h = mix(h, key.src_be[2]);
    h = mix(h, key.src_be[3]);
    h = mix(h, key.dst_be[0]);
    h = mix(h, key.dst_be[1]);
    h = mix(h, key.dst_be[2]);
    h = mix(h, key.dst_be[3]);
    h = mix(h, (u32::from(key.sport_be) << 16) | u32::from(key.dport_be));
    h = mix(h, u32::from(key.proto));
    fmix(h ^ 40)
}

/// Slot of `key` in the per-CPU flow cache (mask it with `FLOW_CACHE_SLOTS - 1`).
/// Cheaper than [`flow_hash`]: the addresses are folded by XOR before one finaliser,
/// which is plenty to spread a direct-mapped cache.
#[inline(always)]
pub fn cache_slot(key: &FlowKey) -> u32 {
    let s = key.src_be[0] ^ key.src_be[1] ^ key.src_be[2] ^ key.src_be[3];
    let d = key.dst_be[0] ^ key.dst_be[1] ^ key.dst_be[2] ^ key.dst_be[3];
    let ports = (u32::from(key.sport_be) << 16) | u32::from(key.dport_be);
    fmix(s ^ d.rotate_left(13) ^ ports.wrapping_mul(C1))
}

/// Slot of `key` in the per-CPU service cache (mask it with `SERVICE_CACHE_SLOTS - 1`).
#[inline(always)]
pub fn service_slot(key: &ServiceKey) -> u32 {
    let a = key.addr_be[0] ^ key.addr_be[1] ^ key.addr_be[2] ^ key.addr_be[3];
    let rest = (u32::from(key.port_be) << 16) | (u32::from(key.proto) << 8);
    fmix(a ^ rest.wrapping_mul(C2))
}

/// Folds a 32-bit one's-complement sum to the 16-bit Internet checksum (RFC 1071).
#[inline(always)]
pub fn csum_fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src_be: [u32::from_ne_bytes([10, 0, 0, 1]), 0, 0, 0],
            dst_be: [u32::from_ne_bytes([10, 0, 0, 100]), 0, 0, 0],
            sport_be: sport.to_be(),
            dport_be: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            family: crate::FAMILY_V4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn seed_changes_hash() {
        assert_ne!(flow_hash(&key(1000), 1), flow_hash(&key(1000), 2));
        assert_eq!(flow_hash(&key(1000), 7), flow_hash(&key(1000), 7));
    }

    #[test]
    fn neighbouring_ports_spread_over_a_small_ring() {
        // 10_000 consecutive source ports over a 13-slot ring: each slot within 15%.
        let mut buckets = [0u32; 13];
        for p in 0..10_000u16 {
            buckets[(flow_hash(&key(20_000 + p), 42) % 13) as usize] += 1;
        }
        let even = 10_000 / 13;
        for b in buckets {
            assert!(b.abs_diff(even) * 100 / even < 15, "{buckets:?}");
        }
    }

    #[test]
    fn csum_fold_matches_rfc1071_example() {
        // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to 0x2ddf0 -> ~0xddf2.
        let sum = 0x0001u64 + 0xf203 + 0xf4f5 + 0xf6f7;
        assert_eq!(csum_fold(sum), !0xddf2u16);
    }
}
