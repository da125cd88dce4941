//! Benchmark helpers: the packet generator `lb pktgen` runs with `BPF_PROG_RUN` in XDP
//! live-frames mode (the mechanism of xdp-tools' `xdp-trafficgen`; this kernel has no
//! `CONFIG_NET_PKTGEN`), and the floor forwarder the data-plane benchmark compares
//! `xdp_lb` with.
//!
//! - `xdp_gen`: rebuilds the frame's headers from a template and gives it the next of
//!   `flows` distinct 5-tuples (source port and the low 16 bits of the source address),
//!   fixing the IPv4 header and L4 checksums incrementally (RFC 1624), then XDP_TX:
//!   the kernel sends it out of the `ingress_ifindex` given in the run's context.
//! - `xdp_fwd_floor`: the least a forwarder can do: swap the MACs and XDP_REDIRECT to
//!   devmap port 0, so "LB rate / floor rate" isolates what `xdp_lb` costs on top.
//!
//! Why a template: in live-frames mode the kernel initialises each page of its frame
//! pool once and recycles it; whatever a later hop did to the bytes (`xdp_lb` rewrites
//! the MACs, encapsulation overwrites the Ethernet header with the outer IP header)
//! would otherwise come back in the next frame from that page.
//!
//! The map layout, [`GenConfig`], lives in `lb-common` (shared with `lb pktgen`).

use crate::{
    SINK, TX_PORTS, count, frame_len,
    parse::{csum_replace16, eth_mut, ptr_at},
};
use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::pktgen::{GenConfig, PORT_STRIDE, PORTS_PER_ADDR, TEMPLATE_WORDS};

#[map(name = "LB_GEN_CONFIG")]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// Per-CPU index of the next flow.
#[map(name = "LB_GEN_NEXT")]
static GEN_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn put16(ctx: &XdpContext, off: u32, v: u16) -> Option<u16> {
    // The mask bounds the offset for the verifier; the map's writer keeps it < 128.
    let p = ptr_at::<[u8; 2]>(ctx, (off & 0x7f) as usize)?;
    // SAFETY: bounds checked.
    unsafe {
        let old = u16::from_be_bytes(*p);
        *p = v.to_be_bytes();
        Some(old)
    }
}

#[inline(always)]
fn try_gen(ctx: &XdpContext) -> Option<u32> {
    let cfg = GEN_CONFIG.get(0)?;
    let next = GEN_NEXT.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot; XDP runs with preemption off.
    let n = unsafe {
        let n = *next;
        *next = if n + 1 >= cfg.flows { 0 } else { n + 1 };
        n
    };
    // Whole words first, then the (even-length) tail in 16-bit pieces.
    let hdr_len = cfg.hdr_len as usize;
    let words = if hdr_len / 8 < TEMPLATE_WORDS {
        hdr_len / 8
    } else {
        TEMPLATE_WORDS
    };
    let mut i = 0;
    while i < TEMPLATE_WORDS {
        if i >= words {
            break;
        }
        let p = ptr_at::<u64>(ctx, i * 8)?;
        // SAFETY: bounds checked.
        unsafe { *p = cfg.template[i] };
        i += 1;
    }
    let bytes = cfg.template.as_ptr() as *const u8;
    let mut off = words * 8;
    while off + 2 <= hdr_len && off + 2 <= TEMPLATE_WORDS * 8 {
        let p = ptr_at::<[u8; 2]>(ctx, off)?;
        // SAFETY: bounds checked; `off + 2` is inside the template.
        unsafe { *p = [*bytes.add(off), *bytes.add(off + 1)] };
        off += 2;
    }
    let sport = cfg
        .sport_base
        .wrapping_add(((n % PORTS_PER_ADDR) * PORT_STRIDE % PORTS_PER_ADDR) as u16);
    let src = cfg.src_base.wrapping_add((n / PORTS_PER_ADDR) as u16);
    put16(ctx, cfg.sport_off, sport)?;
    put16(ctx, cfg.src_off, src)?;
    // The address is in the L4 pseudo-header too, so both sums see both changes.
    let p = ptr_at::<[u8; 2]>(ctx, (cfg.l4_csum_off & 0x7f) as usize)?;
    // SAFETY: bounds checked.
    unsafe {
        let c = u16::from_be_bytes(*p);
        let c = csum_replace16(c, cfg.sport_base, sport);
        let mut c = csum_replace16(c, cfg.src_base, src);
        // 0 means "no checksum" to UDP; 0xffff is the same one's-complement value.
        if c == 0 {
            c = 0xffff;
        }
        *p = c.to_be_bytes();
    }
    if cfg.ip_csum_off != 0 {
        let p = ptr_at::<[u8; 2]>(ctx, (cfg.ip_csum_off & 0x7f) as usize)?;
        // SAFETY: bounds checked.
        unsafe {
            let c = u16::from_be_bytes(*p);
            *p = csum_replace16(c, cfg.src_base, src).to_be_bytes();
        }
    }
    Some(xdp_action::XDP_TX)
}

#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    // Fail closed: a misconfigured generator must not send half-written frames.
    try_gen(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

/// The data-plane floor: MAC swap (like `xdp_tx`) and XDP_REDIRECT to devmap port 0.
#[xdp]
pub fn xdp_fwd_floor(ctx: XdpContext) -> u32 {
    let Some(eth) = eth_mut(&ctx) else {
        // Fail open: too short to be Ethernet.
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by eth_mut.
    unsafe { core::mem::swap(&mut (*eth).dst_addr, &mut (*eth).src_addr) };
    count(&SINK, 0, frame_len(&ctx));
    // Fail closed: no port in the devmap.
    TX_PORTS.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}
