//! Backend side of encapsulation: strip the outer IPv4/IPv6 header `xdp_lb` added and
//! hand the inner packet (addressed to the VIP) to the stack. Anything that is not
//! IP-in-IP passes untouched.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::reason;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{lb::ETH_LEN, parse::ptr_at};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

#[inline(always)]
pub fn run(ctx: &XdpContext) -> (u32, u32) {
    match try_decap(ctx) {
        Ok(why) => (xdp_action::XDP_PASS, why),
        // Fail open: not ours, or not parseable; the stack decides.
        Err(why) => (xdp_action::XDP_PASS, why),
    }
}

#[inline(always)]
fn try_decap(ctx: &XdpContext) -> Result<u32, u32> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(reason::PASS_MALFORMED)?;
    // SAFETY: bounds checked.
    let (ether_type, eth_copy) = unsafe { (u16::from_be((*eth).ether_type), *eth) };
    let (outer, inner_proto) = match ether_type {
        0x0800 => {
            let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN).ok_or(reason::PASS_MALFORMED)?;
            // SAFETY: bounds checked.
            let ip = unsafe { &*ip };
            // Only option-less outer headers: that is all xdp_lb writes.
            if ip.vihl != 0x45 {
                return Err(reason::PASS_NOT_VIP);
            }
            // A fragment (a router may fragment the outer header, which xdp_lb sends
            // without DF): stripping its outer header would hand the stack a slice of
            // the inner packet's payload as if it were an IP header. Fail open: the
            // stack reassembles or drops it.
            if u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
                return Err(reason::PASS_UNSUPPORTED);
            }
            (Ipv4Hdr::LEN, ip.proto)
        }
        0x86dd => {
            let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(reason::PASS_MALFORMED)?;
            // SAFETY: bounds checked.
            (Ipv6Hdr::LEN, unsafe { (*ip).next_hdr })
        }
        _ => return Err(reason::PASS_NOT_IP),
    };
    let inner_type: u16 = match inner_proto {
        IPPROTO_IPIP => 0x0800,
        IPPROTO_IPV6 => 0x86dd,
        _ => return Err(reason::PASS_NOT_VIP),
    };
    // The inner header must be there before we commit to stripping.
    if ptr_at::<[u8; 20]>(ctx, ETH_LEN + outer).is_none() {
        return Err(reason::PASS_MALFORMED);
    }
    // SAFETY: the helper checks bounds; pointers are re-derived afterwards.
    if unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, outer as i32) } != 0 {
        return Err(reason::DROP_ADJUST_FAILED);
    }
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(reason::DROP_ADJUST_FAILED)?;
    // SAFETY: bounds checked.
    unsafe {
        (*eth).dst_addr = eth_copy.dst_addr;
        (*eth).src_addr = eth_copy.src_addr;
        (*eth).ether_type = inner_type.to_be();
    }
    Ok(reason::PASS_DECAP)
}
