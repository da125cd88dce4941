//! Bounds-checked access to packet memory: every pointer handed out has been checked
//! against `data_end`, which is also what the verifier wants to see.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use network_types::eth::EthHdr;

/// Pointer to a `T` at `off` bytes into the frame, if the whole `T` is inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
pub fn eth_mut(ctx: &XdpContext) -> Option<*mut EthHdr> {
    ptr_at::<EthHdr>(ctx, 0)
}

/// Sets both MAC addresses of an Ethernet header from values already in registers.
/// Written byte by byte on purpose: a plain `(*eth).dst_addr = b.mac` from a map value
/// (or from the header itself) is a copy LLVM cannot prove disjoint, so it calls
/// `memmove`, which on BPF is an out-of-line byte loop and a BPF-to-BPF call per MAC.
///
/// # Safety
/// `eth` must point to a bounds-checked Ethernet header.
#[inline(always)]
#[expect(
    clippy::manual_memcpy,
    reason = "copy_from_slice is the memmove call this function exists to avoid"
)]
pub unsafe fn set_macs(eth: *mut EthHdr, dst: [u8; 6], src: [u8; 6]) {
    // SAFETY: caller guarantees `eth`.
    unsafe {
        let d = &raw mut (*eth).dst_addr;
        let s = &raw mut (*eth).src_addr;
        for i in 0..6 {
            (*d)[i] = dst[i];
            (*s)[i] = src[i];
        }
    }
}

/// Copies a MAC out of memory LLVM cannot prove disjoint from the packet (a map
/// value, the packet itself) into a register value, without `memmove`.
///
/// # Safety
/// `p` must be valid for reads of 6 bytes.
#[inline(always)]
pub unsafe fn mac_at(p: *const [u8; 6]) -> [u8; 6] {
    // SAFETY: caller guarantees `p`.
    unsafe { [(*p)[0], (*p)[1], (*p)[2], (*p)[3], (*p)[4], (*p)[5]] }
}

/// Reads a big-endian u16 out of a 2-byte field.
#[inline(always)]
pub fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// An IPv6 address as four native words of wire-order bytes (the map key layout).
#[inline(always)]
pub fn words16(b: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// One's-complement sum of `n` 16-bit words starting at `p` (n bounded by the caller).
///
/// # Safety
/// `p .. p + 2n` must be inside a checked region.
#[inline(always)]
pub unsafe fn sum16(p: *const u8, n: usize) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < n {
        // SAFETY: caller guarantees the range.
        let w = unsafe { u16::from_be_bytes([*p.add(2 * i), *p.add(2 * i + 1)]) };
        sum += u64::from(w);
        i += 1;
    }
    sum
}

/// Incremental checksum update (RFC 1624, eqn. 3): field `old` became `new`.
#[inline(always)]
pub fn csum_replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!check) + u64::from(!old) + u64::from(new);
    lb_common::hash::csum_fold(sum)
}
