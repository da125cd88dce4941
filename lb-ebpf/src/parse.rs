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

/// Loads and stores of whole words at any alignment, in packet or map memory.
///
/// LLVM's BPF backend splits every access it cannot prove aligned into single bytes: a
/// 40-byte IPv6 header became 40 byte stores and as many shifts, and a frame's IP
/// header usually sits 2 bytes off a 4-byte boundary. The kernel allows unaligned
/// packet and map-value access wherever the CPU handles it (programs are loaded without
/// `BPF_F_STRICT_ALIGNMENT`), so on BPF these are one load or store instruction each,
/// written in inline assembly. On the host (checks, docs) they are unaligned accesses.
/// Stack memory is the exception: the verifier wants it aligned, so callers pass stack
/// addresses only at offsets aligned to the access.
pub mod wide {
    // `pair`, `mac_at` and `set_macs` put the first bytes in memory in the low bits.
    const _: () = assert!(cfg!(target_endian = "little"), "bpfel only");

    /// `$name(p)`: one `$bits`-bit load at `p`.
    macro_rules! load {
        ($name:ident, $t:ty, $bits:literal) => {
            /// # Safety
            /// The bytes at `p` must be readable: bounds-checked packet or map memory.
            #[inline(always)]
            pub unsafe fn $name(p: *const u8) -> $t {
                #[cfg(target_arch = "bpf")]
                {
                    let v: u64;
                    // SAFETY: caller guarantees the range; the instruction only reads.
                    unsafe {
                        core::arch::asm!(
                            concat!("{v} = *(u", $bits, " *)({p} + 0)"),
                            p = in(reg) p,
                            v = lateout(reg) v,
                            options(readonly, nostack, preserves_flags)
                        );
                    }
                    v as $t
                }
                #[cfg(not(target_arch = "bpf"))]
                // SAFETY: caller guarantees the range.
                unsafe {
                    p.cast::<$t>().read_unaligned()
                }
            }
        };
    }

    /// `$name(p, v)`: one `$bits`-bit store of `v` at `p`.
    macro_rules! store {
        ($name:ident, $t:ty, $bits:literal) => {
            /// # Safety
            /// The bytes at `p` must be writable: bounds-checked packet memory.
            #[inline(always)]
            pub unsafe fn $name(p: *mut u8, v: $t) {
                #[cfg(target_arch = "bpf")]
                // SAFETY: caller guarantees the range.
                unsafe {
                    core::arch::asm!(
                        concat!("*(u", $bits, " *)({p} + 0) = {v}"),
                        p = in(reg) p,
                        v = in(reg) v as u64,
                        options(nostack, preserves_flags)
                    );
                }
                #[cfg(not(target_arch = "bpf"))]
                // SAFETY: caller guarantees the range.
                unsafe {
                    p.cast::<$t>().write_unaligned(v)
                }
            }
        };
    }

    load!(load16, u16, "16");
    load!(load32, u32, "32");
    store!(store32, u32, "32");
    store!(store64, u64, "64");

    /// Two native words as one: `lo`'s bytes first in memory.
    #[inline(always)]
    pub fn pair(lo: u32, hi: u32) -> u64 {
        u64::from(lo) | (u64::from(hi) << 32)
    }
}

/// A MAC address as the low 48 bits of a word, its bytes in memory order.
pub type Mac = u64;

/// Reads a MAC without byte loads (and without the `memmove` a `[u8; 6]` copy between
/// memory LLVM cannot prove disjoint becomes on BPF).
///
/// # Safety
/// `p` must be valid for reads of 6 bytes: packet or map memory, or a 4-aligned stack
/// address.
#[inline(always)]
pub unsafe fn mac_at(p: *const [u8; 6]) -> Mac {
    let p = p.cast::<u8>();
    // SAFETY: caller guarantees `p`.
    unsafe { u64::from(wide::load32(p)) | (u64::from(wide::load16(p.add(4))) << 32) }
}

/// Sets both MAC addresses of an Ethernet header: two stores.
///
/// # Safety
/// `eth` must point to a bounds-checked Ethernet header.
#[inline(always)]
pub unsafe fn set_macs(eth: *mut EthHdr, dst: Mac, src: Mac) {
    let p = eth.cast::<u8>();
    // SAFETY: caller guarantees the 14-byte header; these write bytes 0..12.
    unsafe {
        wide::store64(p, (dst & 0xffff_ffff_ffff) | (src << 48));
        wide::store32(p.add(8), (src >> 16) as u32);
    }
}

/// Reads a big-endian u16 out of a 2-byte field.
#[inline(always)]
pub fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// An IPv6 address as four native words of wire-order bytes (the map key layout).
///
/// # Safety
/// `p` must be bounds-checked packet memory (or map memory).
#[inline(always)]
pub unsafe fn words16(p: *const [u8; 16]) -> [u32; 4] {
    let p = p.cast::<u8>();
    // SAFETY: caller guarantees the 16 bytes.
    unsafe {
        [
            wide::load32(p),
            wide::load32(p.add(4)),
            wide::load32(p.add(8)),
            wide::load32(p.add(12)),
        ]
    }
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
