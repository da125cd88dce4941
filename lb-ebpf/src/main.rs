//! The XDP programs of the load balancer.
//!
//! - `xdp_lb`: steers packets for a VIP to a backend chosen by the service's Maglev ring
//!   (or the connection table), with direct server return; everything else passes.
//! - `xdp_decap`: runs on backends; strips the IP-in-IP header `xdp_lb` added (this
//!   kernel has no IPIP module).
//! - `xdp_pass`, `xdp_count`, `xdp_sink`, `xdp_tx`: small helpers: a pass program for the
//!   peer end of a veth (XDP_TX only arrives when the peer runs XDP), a counting pass
//!   (tests), a counting drop (benchmark sink) and a MAC-swapping XDP_TX (benchmark floor).
//!
//! Keep the datapath dumb: the controller computes rings, weights and health; here is
//! only bounds-checked parsing, O(1) map lookups and header rewrites. Each entry point is
//! a thin wrapper around a `try_*` body; every exit adds to exactly one reason counter.
//!
//! # Layout
//! - `parse`: bounds-checked header access
//! - `lb`: the load-balancer body (services, conntrack, rings, fragments, ICMP)
//! - `fwd`: L2 rewrite and IP-in-IP encapsulation, ICMP replies
//! - `decap`: the backend-side decapsulator

// no_std/no_main only for the BPF target: on the host (cargo clippy --workspace, the
// docs) dependencies link std, and the programs are checked as ordinary functions.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Inline assembly for whole-word packet access (`parse::wide`); the BPF build already
// runs with RUSTC_BOOTSTRAP for `-Z build-std` (see lb-userspace/build.rs).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod decap;
mod fwd;
mod lb;
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, DevMap, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    Backend, CONNTRACK_SIZE, Config, Counter, FLOW_CACHE_SLOTS, FRAGS_SIZE, Flow, FlowCacheEntry,
    FlowKey, FragKey, MAX_BACKENDS, MAX_SERVICES, MAX_TX_PORTS, RING_MAX, SERVICE_CACHE_SLOTS,
    Service, ServiceCacheEntry, ServiceKey, reason,
};

#[map(name = "LB_SERVICES")]
static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES * 2, 0);

#[map(name = "LB_BACKENDS")]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "LB_RINGS")]
static RINGS: Array<u32> = Array::with_max_entries(MAX_SERVICES * 2 * RING_MAX, 0);

#[map(name = "LB_CONNTRACK")]
static CONNTRACK: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(CONNTRACK_SIZE, 0);

#[map(name = "LB_FLOW_CACHE")]
static FLOW_CACHE: Array<FlowCacheEntry> = Array::with_max_entries(FLOW_CACHE_SLOTS, 0);

#[map(name = "LB_SERVICE_CACHE")]
static SERVICE_CACHE: PerCpuArray<ServiceCacheEntry> =
    PerCpuArray::with_max_entries(SERVICE_CACHE_SLOTS, 0);

#[map(name = "LB_FRAGS")]
static FRAGS: LruHashMap<FragKey, Flow> = LruHashMap::with_max_entries(FRAGS_SIZE, 0);

#[map(name = "LB_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "LB_STATS_REASON")]
static STATS_REASON: PerCpuArray<Counter> = PerCpuArray::with_max_entries(reason::COUNT, 0);

#[map(name = "LB_STATS_SERVICE")]
static STATS_SERVICE: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map(name = "LB_STATS_BACKEND")]
static STATS_BACKEND: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "LB_TX_PORTS")]
static TX_PORTS: DevMap = DevMap::with_max_entries(MAX_TX_PORTS, 0);

#[map(name = "LB_SINK")]
static SINK: PerCpuArray<Counter> = PerCpuArray::with_max_entries(1, 0);

/// Adds one packet of `bytes` to counter `idx` of `map` (per CPU, so no atomics).
#[inline(always)]
fn count(map: &PerCpuArray<Counter>, idx: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, XDP runs with preemption off on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

// Inlined into the entry point the macro generates: otherwise the body is a BPF-to-BPF
// call, whose return costs a mitigated `ret` on CPUs that need one.
#[xdp]
#[inline(always)]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    let len = frame_len(&ctx);
    let (action, why) = lb::run(&ctx);
    count(&STATS_REASON, why, len);
    action
}

#[xdp]
pub fn xdp_decap(ctx: XdpContext) -> u32 {
    let len = frame_len(&ctx);
    let (action, why) = decap::run(&ctx);
    count(&STATS_REASON, why, len);
    action
}

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn xdp_count(ctx: XdpContext) -> u32 {
    count(&SINK, 0, frame_len(&ctx));
    xdp_action::XDP_PASS
}

#[xdp]
pub fn xdp_sink(ctx: XdpContext) -> u32 {
    count(&SINK, 0, frame_len(&ctx));
    xdp_action::XDP_DROP
}

/// The floor of the benchmarks: swap the MACs and bounce the frame, nothing else.
#[xdp]
pub fn xdp_tx(ctx: XdpContext) -> u32 {
    match parse::eth_mut(&ctx) {
        Some(eth) => {
            // SAFETY: bounds checked by eth_mut.
            unsafe {
                core::mem::swap(&mut (*eth).dst_addr, &mut (*eth).src_addr);
            }
            count(&SINK, 0, frame_len(&ctx));
            xdp_action::XDP_TX
        }
        // Fail open: too short to be Ethernet.
        None => xdp_action::XDP_PASS,
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Host builds are only ever checked, never run.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

// Benchmark helpers: the `lb pktgen` generator and the data-plane floor forwarder.
mod r#gen;
