//! The packet generator's contract (`xdp_gen` in lb-ebpf, `lb pktgen` in lb-userspace):
//! one definition of its config map, program names and flow numbering.

use core::mem::size_of;

/// Generator config: index 0 -> [`GenConfig`] (array of one).
pub const MAP_GEN_CONFIG: &str = "LB_GEN_CONFIG";
/// The generator program (XDP live frames).
pub const PROG_GEN: &str = "xdp_gen";
/// The floor forwarder the data-plane benchmark compares `xdp_lb` with.
pub const PROG_FWD_FLOOR: &str = "xdp_fwd_floor";

/// Template words copied over the start of each frame (96 bytes: Ethernet + IPv6 + TCP
/// is 74).
pub const TEMPLATE_WORDS: usize = 12;
/// Source ports cycle through this many values before the address moves on.
pub const PORTS_PER_ADDR: u32 = 60000;
/// Multiplier that permutes `0..PORTS_PER_ADDR` (coprime to it), so consecutive
/// frames get unrelated-looking ports, as from many independent clients.
pub const PORT_STRIDE: u32 = 7919;

/// Value of `LB_GEN_CONFIG` index 0 (written by `lb pktgen` before the run).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GenConfig {
    /// Distinct flows (>= 1).
    pub flows: u32,
    /// Bytes of `template` to copy over the frame: even, at most 8 * TEMPLATE_WORDS,
    /// and no longer than the frame.
    pub hdr_len: u32,
    /// Offset of the last 16 bits of the IPv4/IPv6 source address.
    pub src_off: u32,
    /// Offset of the L4 source port.
    pub sport_off: u32,
    /// Offset of the L4 checksum.
    pub l4_csum_off: u32,
    /// Offset of the IPv4 header checksum; 0 for IPv6 (which has none).
    pub ip_csum_off: u32,
    /// Source port and last 16 source-address bits in the template (host order).
    pub sport_base: u16,
    pub src_base: u16,
    pub _pad: u32,
    /// The first bytes of the frame, checksums valid for `sport_base`/`src_base`.
    pub template: [u64; TEMPLATE_WORDS],
}
const _: () = assert!(size_of::<GenConfig>() == 128);

#[cfg(feature = "user")]
// SAFETY: repr(C), explicit padding, every bit pattern is valid.
unsafe impl aya::Pod for GenConfig {}
