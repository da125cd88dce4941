//! Maglev ring population (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4): turns a service's backends into the ring the
//! XDP program indexes with `lb_common::ring_slot(flow_hash, M)`.
//!
//! # The algorithm
//! Each backend gets a permutation of the `M` slots, `slot(j) = (offset + j * skip) % M`,
//! with `offset = h1(key) % M` and `skip = h2(key) % (M - 1) + 1`. Because `M` is prime,
//! every `skip` in `1..M` is coprime to it, so the sequence visits every slot exactly once.
//! Backends then take turns: on its turn a backend walks its permutation to the first
//! free slot and claims it, until the ring is full. Two properties follow, and the tests
//! check both: every backend ends up with almost the same number of slots (`floor(M/N)`
//! or `ceil(M/N)`), and adding or removing one backend moves few slots owned by others
//! (about 0.6% of the ring at `M = 65537`, `N = 1000`; see the disruption tests), so
//! established flows whose conntrack entry was lost (another LB node, an eviction) mostly
//! keep their backend.
//!
//! # Weights
//! A backend's weight is its number of turns per round relative to the heaviest one: each
//! round it adds `weight` to a credit and takes a turn whenever the credit reaches
//! `max_weight` (integer arithmetic, so no float rounding differs between nodes). Shares
//! come out proportional to weight, within a few slots (at most 2.3 in 3000 random
//! configurations measured). A backend of weight 0 is
//! drained: it takes no turns and holds no slots.
//!
//! # Same ring on every node
//! Two LB nodes given the same backends must build bit-identical rings, or a flow that
//! moves between nodes (ECMP rehash, VRRP failover) changes backend. So: backends are
//! sorted by key before population (the order in the config does not matter), the key
//! hashes are SipHash-2-4 under fixed keys implemented here (std's `DefaultHasher` is
//! documented as free to change between Rust releases, and `RandomState` is random per
//! process), bytes are read little-endian on every platform, and weights use integers.
//! `golden_ring_is_pinned` fails if any of this changes: a change reshuffles every ring,
//! so it needs all nodes upgraded together.
//!
//! # Cost
//! No `N * M` permutation table: each backend keeps only its next position in the
//! permutation and advances it by `skip` with a conditional subtract instead of a `%`.
//! The walk probes about `M * ln M` slots in total (the free slots thin out at the end),
//! in a ring of `4 * M` bytes that stays in cache. With uneven weights a round can pass
//! over backends that have no turn, which costs at most `O(N)` per slot claimed.

use lb_common::RING_MAX;
use std::time::{Duration, Instant};

/// One backend as the ring builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend<'a> {
    /// Backend id stored in the ring slots (>= 1; 0 marks an empty slot for the data plane).
    pub id: u32,
    /// Stable name of the backend (e.g. `"10.0.0.11:80"`): its permutation is derived from
    /// it, so keep it the same across restarts and nodes.
    pub key: &'a str,
    /// Relative share of the ring; 0 drains the backend.
    pub weight: u32,
}

/// Why a ring could not be built. Every variant is a configuration error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    /// The ring size is below 2 or above what the data-plane ring map holds.
    #[error("ring size {size} is out of range: use a prime between 2 and {max}")]
    SizeOutOfRange { size: u32, max: u32 },
    /// The ring size is not prime, so some skips would not visit every slot.
    #[error(
        "ring size {size} is not prime (Maglev needs a prime so every backend's permutation \
         visits every slot); use {suggestion}, the next prime"
    )]
    SizeNotPrime { size: u32, suggestion: u32 },
    /// A backend has id 0, which the data plane reads as an empty slot.
    #[error("backend {key:?} has id 0, which is reserved for an empty ring slot; ids start at 1")]
    ZeroId { key: String },
    /// Two backends share an id, so the data plane could not tell them apart.
    #[error("backends {first:?} and {second:?} both have id {id}; give each backend its own id")]
    DuplicateId {
        id: u32,
        first: String,
        second: String,
    },
    /// Two backends share a key: a key names one backend, and two backends with the same
    /// permutation would also fight over the same slots.
    #[error(
        "backends with ids {first_id} and {second_id} both have key {key:?}; a key names one \
         backend, so give each its own (e.g. its address and port)"
    )]
    DuplicateKey {
        key: String,
        first_id: u32,
        second_id: u32,
    },
}

/// Builds the ring of `size` slots for `backends`.
///
/// Each slot holds a backend id. The result depends only on the set of backends, not on
/// their order. Returns an empty `Vec` when no backend has a weight above 0 (the data
/// plane then drops the service's traffic as having no backend); otherwise every slot is
/// filled.
///
/// # Errors
/// [`MaglevError`] if `size` is not a prime in `2..=RING_MAX`, or if an id is 0, or if ids
/// or keys repeat. Backends of weight 0 are validated too, so a drained backend's typo
/// shows up before it is enabled.
pub fn build_ring(backends: &[MaglevBackend<'_>], size: u32) -> Result<Vec<u32>, MaglevError> {
    check_size(size)?;
    check_backends(backends)?;

    let max_weight = backends.iter().map(|b| b.weight).max().unwrap_or(0);
    if max_weight == 0 {
        return Ok(Vec::new());
    }

    // Key order makes the turn order, hence the ring, independent of the config's order.
    // Keys are unique (checked above), so this order is total.
    let mut turns: Vec<Turn> = backends
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| Turn::new(b, size))
        .collect();
    turns.sort_unstable_by(|a, b| a.key.cmp(b.key));

    let m = size;
    let max_weight = u64::from(max_weight);
    let mut ring = vec![0u32; m as usize];
    let mut filled = 0u32;
    'fill: loop {
        for t in &mut turns {
            t.credit += t.weight;
            if t.credit < max_weight {
                continue;
            }
            t.credit -= max_weight;
            // Terminates: the ring has a free slot, and the permutation reaches every slot.
            // The slots it has passed were taken and stay taken, so none is missed.
            loop {
                let slot = t.pos as usize;
                t.pos += t.skip;
                if t.pos >= m {
                    t.pos -= m;
                }
                if ring[slot] == 0 {
                    ring[slot] = t.id;
                    break;
                }
            }
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    Ok(ring)
}

/// A backend's place in the population: where its permutation continues and how close
/// it is to its next turn.
struct Turn<'a> {
    key: &'a str,
    id: u32,
    /// Next slot of the permutation: `(offset + next * skip) % M`, kept incrementally.
    pos: u32,
    skip: u32,
    /// `u64` so `credit + weight` cannot overflow for any pair of `u32` weights.
    weight: u64,
    credit: u64,
}

impl<'a> Turn<'a> {
    fn new(b: &MaglevBackend<'a>, m: u32) -> Self {
        let bytes = b.key.as_bytes();
        let m64 = u64::from(m);
        // The casts cannot truncate: both values are below `m`, a `u32`.
        let pos = (siphash24(OFFSET_KEY, bytes) % m64) as u32;
        let skip = (siphash24(SKIP_KEY, bytes) % (m64 - 1) + 1) as u32;
        Turn {
            key: b.key,
            id: b.id,
            pos,
            skip,
            weight: u64::from(b.weight),
            credit: 0,
        }
    }
}

fn check_size(size: u32) -> Result<(), MaglevError> {
    if !(2..=RING_MAX).contains(&size) {
        return Err(MaglevError::SizeOutOfRange {
            size,
            max: RING_MAX,
        });
    }
    if !is_prime(size) {
        // RING_MAX is prime, so the next prime is still in range.
        return Err(MaglevError::SizeNotPrime {
            size,
            suggestion: next_prime_at_least(size),
        });
    }
    Ok(())
}

fn check_backends(backends: &[MaglevBackend<'_>]) -> Result<(), MaglevError> {
    if let Some(b) = backends.iter().find(|b| b.id == 0) {
        return Err(MaglevError::ZeroId {
            key: b.key.to_owned(),
        });
    }
    let mut by_id: Vec<&MaglevBackend<'_>> = backends.iter().collect();
    by_id.sort_unstable_by_key(|b| (b.id, b.key));
    if let Some(w) = by_id.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(MaglevError::DuplicateId {
            id: w[0].id,
            first: w[0].key.to_owned(),
            second: w[1].key.to_owned(),
        });
    }
    let mut by_key = by_id;
    by_key.sort_unstable_by_key(|b| (b.key, b.id));
    if let Some(w) = by_key.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(MaglevError::DuplicateKey {
            key: w[0].key.to_owned(),
            first_id: w[0].id,
            second_id: w[1].id,
        });
    }
    Ok(())
}

/// Whether `n` is prime (trial division by 6k +/- 1; at most ~22k steps for a `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // `u64` so `d * d` cannot overflow near `u32::MAX`.
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// The smallest prime `>= n`: what to suggest when a configured ring size is not prime.
///
/// # Panics
/// If `n` is above 4294967291, the largest `u32` prime. Ring sizes stop at
/// [`RING_MAX`], so check the range first when `n` comes from a user.
pub fn next_prime_at_least(n: u32) -> u32 {
    const LARGEST_U32_PRIME: u32 = 4_294_967_291;
    assert!(
        n <= LARGEST_U32_PRIME,
        "no u32 prime is at least {n} (the largest is {LARGEST_U32_PRIME})"
    );
    (n..=LARGEST_U32_PRIME)
        .find(|&p| is_prime(p))
        .unwrap_or(LARGEST_U32_PRIME)
}

/// For `cargo xtask bench maglev`: builds the ring `rounds` times for `n` equal-weight
/// backends (keys `10.a.b.c:80`, as from a real config) at size `m`, and returns each
/// round's wall time. The backend list is made once, outside the timed part.
///
/// # Panics
/// If `m` is not a valid ring size, or `n` does not fit in the `u32` id space.
pub fn bench_build(n: usize, m: u32, rounds: usize) -> Vec<Duration> {
    let keys = sample_keys(n);
    let backends = sample_backends(&keys, |_| 1);
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let ring = build_ring(std::hint::black_box(&backends), m);
            let took = start.elapsed();
            if let Err(e) = std::hint::black_box(ring) {
                panic!("bench_build({n}, {m}): {e}");
            }
            took
        })
        .collect()
}

/// `n` distinct backend keys shaped like real ones (`10.a.b.c:port`).
fn sample_keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let port = 80 + (i >> 24);
            format!(
                "10.{}.{}.{}:{port}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect()
}

/// Backends for `keys`, with ids `1..` in list order and `weight(index)`.
fn sample_backends(keys: &[String], weight: impl Fn(usize) -> u32) -> Vec<MaglevBackend<'_>> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| MaglevBackend {
            id: u32::try_from(i + 1).expect("backend count fits in u32 ids"),
            key,
            weight: weight(i),
        })
        .collect()
}

/// SipHash key for a backend's offset: the ASCII of `"maglev offset v1"`. Arbitrary, but
/// fixed forever: changing it reshuffles every ring (see the module docs).
const OFFSET_KEY: [u8; 16] = *b"maglev offset v1";
/// SipHash key for a backend's skip; a different key makes skip independent of offset.
const SKIP_KEY: [u8; 16] = *b"maglev  skip  v1";

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `msg` under the 128-bit `key`.
///
/// Chosen for the key hashes because it is a well-analysed keyed hash, fast enough for
/// short keys (tens of nanoseconds per backend), and fully specified down to byte
/// order, so every node and every Rust version computes the same value. Checked against
/// the reference test vectors in the tests.
fn siphash24(key: [u8; 16], msg: &[u8]) -> u64 {
    let (k0, k1) = key.split_at(8);
    let k0 = u64::from_le_bytes(k0.try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(k1.try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut blocks = msg.chunks_exact(8);
    for block in &mut blocks {
        let m = u64::from_le_bytes(block.try_into().expect("chunks_exact gives 8 bytes"));
        sip_compress(&mut v, m);
    }
    // Last block: the remaining bytes, little-endian, with the length's low byte on top.
    let mut last = (msg.len() as u64) << 56;
    for (i, &byte) in blocks.remainder().iter().enumerate() {
        last |= u64::from(byte) << (8 * i);
    }
    sip_compress(&mut v, last);
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Absorbs one 8-byte block with the "2" of SipHash-2-4: two rounds per block.
fn sip_compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    /// Slots held by each backend id.
    fn shares(ring: &[u32]) -> HashMap<u32, u32> {
        let mut counts = HashMap::new();
        for &id in ring {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    fn equal(keys: &[String]) -> Vec<MaglevBackend<'_>> {
        sample_backends(keys, |_| 1)
    }

    /// Fraction of the ring whose owner changed although the old owner is still present:
    /// the flows Maglev moved needlessly.
    fn needless_moves(old: &[u32], new: &[u32]) -> f64 {
        let survivors: BTreeSet<u32> = new.iter().copied().collect();
        let moved = old
            .iter()
            .zip(new)
            .filter(|&(o, n)| o != n && survivors.contains(o))
            .count();
        moved as f64 / old.len() as f64
    }

    // --- 1. Equal weights ---------------------------------------------------------------

    fn assert_floor_or_ceil(ring: &[u32], n: usize, weight: u32) {
        let m = ring.len();
        let counts = shares(ring);
        let (lo, hi) = (m / n, m.div_ceil(n));
        for id in 1..=n as u32 {
            let got = counts.get(&id).copied().unwrap_or(0) as usize;
            assert!(
                (lo..=hi).contains(&got),
                "M={m} N={n} w={weight}: backend {id} holds {got}, want {lo}..={hi}"
            );
        }
    }

    #[test]
    fn equal_weights_give_floor_or_ceil_slots() {
        for m in [2, 3, 13, 251, 1009, 65537] {
            let ns: Vec<usize> = if m == 65537 {
                vec![1, 2, 3, 7, 100, 1000]
            } else {
                (1..=60).chain([250, 251, 252, 1000]).collect()
            };
            for n in ns {
                let keys = sample_keys(n);
                for weight in [1, 7] {
                    let ring = build_ring(&sample_backends(&keys, |_| weight), m).unwrap();
                    assert_floor_or_ceil(&ring, n, weight);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_equal_weights_give_floor_or_ceil_slots(
            keys in prop::collection::btree_set("[a-z0-9.:-]{1,16}", 1..80),
            m in prop::sample::select(vec![13u32, 101, 251, 4099]),
            weight in 1u32..=u32::MAX,
        ) {
            let keys: Vec<String> = keys.into_iter().collect();
            let ring = build_ring(&sample_backends(&keys, |_| weight), m).unwrap();
            assert_floor_or_ceil(&ring, keys.len(), weight);
        }
    }

    // --- 2. Weights ---------------------------------------------------------------------

    fn assert_weighted_shares(ring: &[u32], backends: &[MaglevBackend<'_>]) {
        let m = ring.len() as f64;
        let total: f64 = backends.iter().map(|b| f64::from(b.weight)).sum();
        let counts = shares(ring);
        for b in backends {
            let got = f64::from(counts.get(&b.id).copied().unwrap_or(0)) / m;
            let want = f64::from(b.weight) / total;
            assert!(
                (got - want).abs() <= 0.01,
                "backend {} (weight {}) holds {got:.4} of the ring, want {want:.4} +/- 0.01",
                b.id,
                b.weight
            );
        }
    }

    #[test]
    fn weights_1_2_3_4_share_proportionally() {
        let keys = sample_keys(4);
        let backends = sample_backends(&keys, |i| i as u32 + 1);
        let ring = build_ring(&backends, 65537).unwrap();
        assert_weighted_shares(&ring, &backends);
    }

    #[test]
    fn weight_zero_drains_a_backend() {
        let keys = sample_keys(5);
        let backends = sample_backends(&keys, |i| if i == 2 { 0 } else { 10 });
        let ring = build_ring(&backends, 251).unwrap();
        assert!(!ring.contains(&3), "drained backend 3 still holds slots");
        assert!(ring.iter().all(|&id| id != 0));
        assert_weighted_shares(&ring, &backends);
    }

    #[test]
    fn extreme_weight_ratio_still_fills_the_ring() {
        // One backend at u32::MAX beside weight-1 ones: the light ones get a turn roughly
        // never, and the population must neither overflow nor spin.
        let keys = sample_keys(3);
        let backends = sample_backends(&keys, |i| if i == 0 { u32::MAX } else { 1 });
        let ring = build_ring(&backends, 1009).unwrap();
        assert!(ring.iter().all(|&id| id == 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn prop_weighted_shares_within_one_percent(
            weights in prop::collection::vec(0u32..=1000, 1..24),
            m in prop::sample::select(vec![4099u32, 8191, 65537]),
        ) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let keys = sample_keys(weights.len());
            let backends = sample_backends(&keys, |i| weights[i]);
            let ring = build_ring(&backends, m).unwrap();
            assert_weighted_shares(&ring, &backends);
        }
    }

    // --- 3. Disruption ------------------------------------------------------------------

    // The 0.6% bound is about the mean of classic Maglev at M/N = 65, not a worst case:
    // over all 1001 single removals from `sample_keys(1001)` the moved share ranged from
    // 0.50% to 0.65% (mean 0.57%), and other key sets reach 0.69%. These tests pin one
    // fixed configuration each (the removed index was picked before measuring), so they
    // are deterministic; a failure after changing the hash or the key set means
    // re-checking the distribution, not necessarily a bug.
    #[test]
    fn removing_one_of_1000_backends_moves_few_other_slots() {
        let keys = sample_keys(1000);
        let backends = equal(&keys);
        let before = build_ring(&backends, 65537).unwrap();
        let mut fewer = backends.clone();
        let gone = fewer.remove(417);
        let after = build_ring(&fewer, 65537).unwrap();

        assert!(!after.contains(&gone.id));
        let moved = needless_moves(&before, &after);
        assert!(moved <= 0.006, "{:.3}% of the slots moved", moved * 100.0);

        // Adding it back restores the original ring exactly: population is a function of
        // the backend set.
        assert_eq!(build_ring(&backends, 65537).unwrap(), before);
    }

    #[test]
    fn adding_one_backend_to_1000_moves_few_other_slots() {
        let keys = sample_keys(1001);
        let (old, new) = (equal(&keys[..1000]), equal(&keys));
        let before = build_ring(&old, 65537).unwrap();
        let after = build_ring(&new, 65537).unwrap();
        // Every old owner survives, so the needless moves are the slots that changed owner
        // other than to the newcomer.
        let moved = before
            .iter()
            .zip(&after)
            .filter(|&(b, a)| b != a && *a != 1001)
            .count() as f64
            / 65537.0;
        assert!(moved <= 0.006, "{:.3}% of the slots moved", moved * 100.0);
        assert_floor_or_ceil(&after, 1001, 1);
    }

    // --- 4. Determinism, validation, edge cases -----------------------------------------

    #[test]
    fn golden_ring_is_pinned() {
        // If this fails, the ring changed for the same input: every LB node must be
        // upgraded at once, or flows move between backends during the rollout.
        let keys = ["10.0.0.11:80", "10.0.0.12:80", "10.0.0.13:80"];
        let backends: Vec<_> = keys
            .iter()
            .zip(1..)
            .map(|(key, id)| MaglevBackend { id, key, weight: 1 })
            .collect();
        assert_eq!(build_ring(&backends, 13).unwrap(), GOLDEN_13);
    }
    /// Also computed by an independent Python transcription of this module (SipHash-2-4
    /// from the paper, same keys, same turn order) when this test was written.
    const GOLDEN_13: [u32; 13] = [2, 2, 1, 2, 1, 3, 2, 3, 1, 1, 1, 3, 3];

    #[test]
    fn same_input_gives_same_ring() {
        let keys = sample_keys(50);
        let backends = sample_backends(&keys, |i| (i % 4) as u32);
        assert_eq!(
            build_ring(&backends, 4099).unwrap(),
            build_ring(&backends, 4099).unwrap()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_ring_ignores_backend_order(
            entries in prop::collection::btree_map("[a-z0-9.:]{1,12}", 0u32..5, 1..40)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>())
                .prop_shuffle(),
            m in prop::sample::select(vec![13u32, 251, 1009]),
        ) {
            // Ids follow the key, not the position, so a shuffle is the same config.
            let mut sorted = entries.clone();
            sorted.sort();
            let id_of: HashMap<&str, u32> =
                sorted.iter().zip(1..).map(|((k, _), id)| (k.as_str(), id)).collect();
            fn as_backends<'a>(
                list: &'a [(String, u32)],
                id_of: &HashMap<&str, u32>,
            ) -> Vec<MaglevBackend<'a>> {
                list.iter()
                    .map(|(key, weight)| MaglevBackend { id: id_of[key.as_str()], key, weight: *weight })
                    .collect()
            }
            let shuffled = build_ring(&as_backends(&entries, &id_of), m).unwrap();
            let ordered = build_ring(&as_backends(&sorted, &id_of), m).unwrap();
            prop_assert_eq!(&shuffled, &ordered);
        }

        #[test]
        fn prop_every_slot_is_filled(
            weights in prop::collection::vec(0u32..=u32::MAX, 1..30),
            m in prop::sample::select(vec![2u32, 3, 13, 251, 1009]),
        ) {
            let keys = sample_keys(weights.len());
            let backends = sample_backends(&keys, |i| weights[i]);
            let ring = build_ring(&backends, m).unwrap();
            if weights.iter().all(|&w| w == 0) {
                prop_assert!(ring.is_empty());
            } else {
                prop_assert_eq!(ring.len(), m as usize);
                for id in ring {
                    prop_assert!(id >= 1 && weights[id as usize - 1] > 0, "slot holds {}", id);
                }
            }
        }
    }

    #[test]
    fn empty_input_gives_empty_ring() {
        assert_eq!(build_ring(&[], 65537), Ok(Vec::new()));
    }

    #[test]
    fn all_weights_zero_gives_empty_ring() {
        let keys = sample_keys(3);
        assert_eq!(
            build_ring(&sample_backends(&keys, |_| 0), 13),
            Ok(Vec::new())
        );
    }

    #[test]
    fn bad_sizes_are_rejected() {
        let keys = sample_keys(2);
        let backends = equal(&keys);
        for size in [0, 1, RING_MAX + 1, RING_MAX + 2, u32::MAX] {
            assert_eq!(
                build_ring(&backends, size),
                Err(MaglevError::SizeOutOfRange {
                    size,
                    max: RING_MAX
                })
            );
        }
        for (size, suggestion) in [(4, 5), (65536, 65537), (65535, 65537), (1000, 1009)] {
            assert_eq!(
                build_ring(&backends, size),
                Err(MaglevError::SizeNotPrime { size, suggestion })
            );
        }
        // Validated even when the ring would be empty: the config is wrong either way.
        assert!(build_ring(&[], 4).is_err());
    }

    #[test]
    fn id_zero_is_rejected() {
        let backends = [
            MaglevBackend {
                id: 1,
                key: "a",
                weight: 1,
            },
            MaglevBackend {
                id: 0,
                key: "b",
                weight: 0,
            },
        ];
        assert_eq!(
            build_ring(&backends, 13),
            Err(MaglevError::ZeroId { key: "b".into() })
        );
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let backends = [
            MaglevBackend {
                id: 7,
                key: "b",
                weight: 1,
            },
            MaglevBackend {
                id: 3,
                key: "c",
                weight: 1,
            },
            MaglevBackend {
                id: 7,
                key: "a",
                weight: 0,
            },
        ];
        let err = build_ring(&backends, 13).unwrap_err();
        assert_eq!(
            err,
            MaglevError::DuplicateId {
                id: 7,
                first: "a".into(),
                second: "b".into()
            }
        );
        assert!(err.to_string().contains("own id"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let backends = [
            MaglevBackend {
                id: 2,
                key: "10.0.0.1:80",
                weight: 1,
            },
            MaglevBackend {
                id: 1,
                key: "10.0.0.1:80",
                weight: 1,
            },
        ];
        assert_eq!(
            build_ring(&backends, 13),
            Err(MaglevError::DuplicateKey {
                key: "10.0.0.1:80".into(),
                first_id: 1,
                second_id: 2
            })
        );
    }

    #[test]
    fn is_prime_matches_a_sieve() {
        const N: usize = 70_000;
        let mut sieve = vec![true; N];
        sieve[0] = false;
        sieve[1] = false;
        for i in 2..N {
            if sieve[i] {
                for j in (i * i..N).step_by(i) {
                    sieve[j] = false;
                }
            }
        }
        for (n, &prime) in sieve.iter().enumerate() {
            assert_eq!(is_prime(n as u32), prime, "{n}");
        }
        assert!(is_prime(4_294_967_291));
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65521 * 65519)); // product of two primes near 2^16
    }

    #[test]
    fn next_prime_at_least_examples() {
        let cases = [(0, 2), (2, 2), (14, 17), (65537, 65537), (65538, 65539)];
        for (n, p) in cases {
            assert_eq!(next_prime_at_least(n), p, "{n}");
        }
        assert_eq!(next_prime_at_least(4_294_967_280), 4_294_967_291);
    }

    #[test]
    #[should_panic(expected = "no u32 prime")]
    fn next_prime_at_least_panics_past_the_last_u32_prime() {
        let _ = next_prime_at_least(4_294_967_292);
    }

    #[test]
    fn siphash_matches_reference_vectors() {
        // From the SipHash paper's appendix and the reference implementation's vectors.h:
        // key 00 01 .. 0f, messages 00 01 .. (len - 1).
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..64).collect();
        assert_eq!(siphash24(key, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(key, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(key, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_siphash_matches_std(msg in prop::collection::vec(any::<u8>(), 0..40)) {
            // std's deprecated `SipHasher` is SipHash-2-4 too: a second, independent check
            // of every message length's tail handling.
            #[expect(deprecated, reason = "only as a reference implementation to test against")]
            let mut reference = std::hash::SipHasher::new_with_keys(
                u64::from_le_bytes(OFFSET_KEY[..8].try_into().unwrap()),
                u64::from_le_bytes(OFFSET_KEY[8..].try_into().unwrap()),
            );
            std::hash::Hasher::write(&mut reference, &msg);
            prop_assert_eq!(siphash24(OFFSET_KEY, &msg), std::hash::Hasher::finish(&reference));
        }
    }

    #[test]
    fn bench_build_times_each_round() {
        assert_eq!(bench_build(10, 251, 3).len(), 3);
    }

    /// `cargo test --release -p lb-userspace --lib maglev -- --ignored --nocapture`
    #[test]
    #[ignore = "timing report, meaningful only in a release build"]
    fn print_bench_build_timings() {
        for n in [100, 1000] {
            let mut times = bench_build(n, 65537, 50);
            times.sort();
            println!(
                "bench_build({n}, 65537): min {:?}, median {:?}, max {:?}",
                times[0],
                times[times.len() / 2],
                times[times.len() - 1]
            );
        }
    }
}
