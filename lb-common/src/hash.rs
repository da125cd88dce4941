//! The seeded flow hash that indexes Maglev rings.
//!
//! One function for both sides: the XDP program calls it per packet, the controller and
//! the tests call it to predict where a flow lands. The 5-tuple is taken as 64-bit words
//! (two 32-bit wire words each), each folded into the state by a xor, a multiply by an
//! odd constant and a xor-shift, then MurmurHash3's 64-bit finaliser. Every step is a
//! bijection of the state, so tuples that differ in one word never collide, and there
//! are no loops for the verifier to bound. 64-bit words halve the dependent chain of a
//! 32-bit block hash: this runs for every SYN, and IPv6 tuples are ten words long.

use crate::{FlowKey, ServiceKey};

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;
/// 2^64 divided by the golden ratio, made odd: the word multiplier.
const K0: u64 = 0x9e37_79b9_7f4a_7c15;
/// MurmurHash3's `fmix64` multipliers.
const K1: u64 = 0xff51_afd7_ed55_8ccd;
const K2: u64 = 0xc4ce_b9fe_1a85_ec53;

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(K1);
    h ^= h >> 33;
    h = h.wrapping_mul(K2);
    h ^ (h >> 33)
}

/// Folds the 64-bit word `w` into the state `h`.
#[inline(always)]
fn step(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(K0);
    x ^ (x >> 32)
}

#[inline(always)]
fn word(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Hash of a flow's 5-tuple with `seed`. Byte order of the fields is the wire order,
/// taken as native words, so both sides hash the same bits. IPv4 folds only the words
/// its addresses use (one 64-bit word instead of four); the family is part of the last
/// word, so an IPv4 tuple and an IPv6 one with the same low words hash apart.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let (s, d) = (&key.src_be, &key.dst_be);
    let mut h = u64::from(seed).wrapping_mul(K0);
    if key.family == crate::FAMILY_V4 {
        h = step(h, word(s[0], d[0]));
    } else {
        h = step(h, word(s[0], s[1]));
        h = step(h, word(s[2], s[3]));
        h = step(h, word(d[0], d[1]));
        h = step(h, word(d[2], d[3]));
    }
    let ports = (u32::from(key.sport_be) << 16) | u32::from(key.dport_be);
    let kind = u32::from(key.proto) | (u32::from(key.family) << 8);
    let h = fmix64(step(h, word(ports, kind)));
    (h >> 32) as u32 ^ h as u32
}

/// Set of `key` in a CPU's region of the flow cache: one of
/// `FLOW_CACHE_SLOTS / FLOW_CACHE_WAYS`, whose first slot is `set * FLOW_CACHE_WAYS`.
/// Cheaper than [`flow_hash`]: the addresses are folded by XOR before one finaliser,
/// which is plenty to spread a small set-associative cache.
#[inline(always)]
pub fn cache_set(key: &FlowKey) -> u32 {
    let s = key.src_be[0] ^ key.src_be[1] ^ key.src_be[2] ^ key.src_be[3];
    let d = key.dst_be[0] ^ key.dst_be[1] ^ key.dst_be[2] ^ key.dst_be[3];
    let ports = (u32::from(key.sport_be) << 16) | u32::from(key.dport_be);
    fmix(s ^ d.rotate_left(13) ^ ports.wrapping_mul(C1))
        & (crate::FLOW_CACHE_SLOTS / crate::FLOW_CACHE_WAYS - 1)
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

    fn key6(sport: u16) -> FlowKey {
        FlowKey {
            src_be: [0x20010db8u32.to_be(), 0, 0, 1u32.to_be()],
            dst_be: [0x20010db8u32.to_be(), 0, 0, 0x100u32.to_be()],
            family: crate::FAMILY_V6,
            ..key(sport)
        }
    }

    /// `n` consecutive source ports over `m` slots (as the data plane indexes a ring,
    /// or a cache): every slot within `pct` percent of even.
    fn assert_spread(m: u32, pct: u32, slot: impl Fn(u16) -> u32) {
        let mut all = [0u32; 64];
        let buckets = &mut all[..m as usize];
        let n = 10_000u32;
        for p in 0..n as u16 {
            buckets[slot(20_000 + p) as usize] += 1;
        }
        let even = n / m;
        for b in buckets.iter() {
            assert!(b.abs_diff(even) * 100 / even < pct, "{buckets:?}");
        }
    }

    #[test]
    fn neighbouring_ports_spread_over_a_small_ring() {
        assert_spread(13, 15, |p| crate::ring_slot(flow_hash(&key(p), 42), 13));
        assert_spread(13, 15, |p| crate::ring_slot(flow_hash(&key6(p), 42), 13));
    }

    #[test]
    fn neighbouring_client_addresses_spread_over_a_small_ring() {
        // One port, consecutive client addresses: the last address word changes.
        assert_spread(13, 15, |p| {
            let mut k = key(1000);
            k.src_be[0] = u32::from_be_bytes([10, 0, (p >> 8) as u8, p as u8]).to_be();
            crate::ring_slot(flow_hash(&k, 42), 13)
        });
        assert_spread(13, 15, |p| {
            let mut k = key6(1000);
            k.src_be[3] = u32::from(p).to_be();
            crate::ring_slot(flow_hash(&k, 42), 13)
        });
    }

    #[test]
    fn one_differing_word_never_collides() {
        // Each step is a bijection of the state: change any one word, the hash changes.
        let base = key6(1000);
        let h0 = flow_hash(&base, 9);
        for i in 0..4 {
            for v in [1u32, 0x8000_0000, 0xffff_ffff] {
                let mut k = base;
                k.src_be[i] ^= v;
                assert_ne!(flow_hash(&k, 9), h0, "src word {i} ^ {v:#x}");
                let mut k = base;
                k.dst_be[i] ^= v;
                assert_ne!(flow_hash(&k, 9), h0, "dst word {i} ^ {v:#x}");
            }
        }
    }

    #[test]
    fn ipv4_and_ipv6_with_the_same_low_words_hash_apart() {
        let mut k6 = key(1000);
        k6.family = crate::FAMILY_V6;
        assert_ne!(flow_hash(&key(1000), 7), flow_hash(&k6, 7));
    }

    #[test]
    fn cache_sets_spread() {
        assert_spread(16, 20, |p| cache_set(&key(p)) & 15);
        assert_spread(16, 20, |p| cache_set(&key6(p)) & 15);
    }

    #[test]
    fn ring_slot_stays_in_range_and_covers_it() {
        let m = 65_537;
        assert_eq!(crate::ring_slot(0, m), 0);
        assert_eq!(crate::ring_slot(u32::MAX, m), m - 1);
        assert_eq!(crate::ring_slot(u32::MAX / 2, 2), 0);
        assert_eq!(crate::ring_slot(u32::MAX / 2 + 1, 2), 1);
    }

    #[test]
    fn csum_fold_matches_rfc1071_example() {
        // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to 0x2ddf0 -> ~0xddf2.
        let sum = 0x0001u64 + 0xf203 + 0xf4f5 + 0xf6f7;
        assert_eq!(csum_fold(sum), !0xddf2u16);
    }
}
