//! Leaving the load balancer: L2 rewrite, IP-in-IP encapsulation, and the ICMP replies
//! the LB sends itself (echo, and "too big" when encapsulation would exceed the MTU).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{BACKEND_REDIRECT, Backend, Config, FAMILY_V4, hash::csum_fold, reason};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    TX_PORTS,
    lb::{ETH_LEN, PROTO_ICMP, PROTO_ICMPV6, Packet, Verdict, pass},
    parse::{csum_replace16, mac_at, ptr_at, set_macs, sum16, wide},
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// Sends the frame on: XDP_TX back out of the arrival port, or XDP_REDIRECT through the
/// devmap when the backend sits behind another interface.
#[inline(always)]
fn send(b: &Backend, tx: u32) -> Verdict {
    if b.flags & BACKEND_REDIRECT != 0 {
        return match TX_PORTS.redirect(b.tx_port, 0) {
            Ok(action) => Ok((action, reason::REDIRECT_L2.max(tx))),
            // Fail closed: the port vanished from the devmap.
            Err(_) => Ok((xdp_action::XDP_DROP, reason::DROP_RING_SLOT_EMPTY)),
        };
    }
    Ok((xdp_action::XDP_TX, tx))
}

/// Direct server return on one L2 segment: the backend owns the VIP on a loopback
/// device, so only the destination MAC changes; the source becomes the LB's own MAC
/// (the address the frame arrived for).
#[inline(always)]
pub fn l2(ctx: &XdpContext, b: &Backend) -> Verdict {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked; `b` is a valid reference.
    unsafe {
        let lb_mac = mac_at(&raw const (*eth).dst_addr);
        set_macs(eth, mac_at(&b.mac), lb_mac);
    }
    send(b, reason::TX_L2)
}

/// IP-in-IP: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6.
#[inline(always)]
pub fn encap(ctx: &XdpContext, pkt: &Packet, b: &Backend, hash: u32, cfg: &Config) -> Verdict {
    let outer_len = if b.family == FAMILY_V4 {
        Ipv4Hdr::LEN
    } else {
        Ipv6Hdr::LEN
    };
    if pkt.key.family != FAMILY_V4 && b.family == FAMILY_V4 {
        // IPv6-in-IPv4 is not offered; the controller rejects such configs.
        return Ok((xdp_action::XDP_DROP, reason::DROP_RING_SLOT_EMPTY));
    }
    if cfg.encap_mtu != 0 && (pkt.ip_len + outer_len) as u32 > cfg.encap_mtu {
        return too_big(ctx, pkt, cfg.encap_mtu - outer_len as u32);
    }
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    let lb_mac = unsafe { mac_at(&raw const (*eth).dst_addr) };
    let tos = match ptr_at::<[u8; 2]>(ctx, ETH_LEN) {
        // SAFETY: bounds checked. IPv4 TOS is byte 1; IPv6 traffic class straddles 0-1.
        Some(p) => unsafe {
            if pkt.key.family == FAMILY_V4 {
                (*p)[1]
            } else {
                ((*p)[0] << 4) | ((*p)[1] >> 4)
            }
        },
        None => 0,
    };
    if ctx_adjust_head(ctx, -(outer_len as i32)).is_err() {
        return Ok((xdp_action::XDP_DROP, reason::DROP_ADJUST_FAILED));
    }
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
    // SAFETY: bounds checked; `b` is a valid reference.
    unsafe { set_macs(eth, mac_at(&b.mac), lb_mac) };
    let inner_proto = if pkt.key.family == FAMILY_V4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    // Whole-word stores (`wide`); every word holds wire-order bytes in native order.
    if b.family == FAMILY_V4 {
        // SAFETY: bounds checked.
        unsafe { (*eth).ether_type = 0x0800u16.to_be() };
        let ip = ptr_at::<[u8; 20]>(ctx, ETH_LEN).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
        let tot = (pkt.ip_len + Ipv4Hdr::LEN) as u16;
        // Version/IHL, TOS, total length | id, flags and offset (0) | TTL, protocol,
        // checksum | source (the low 16 bits from the flow hash) | destination.
        let w0 = 0x45 | (u32::from(tos) << 8) | (u32::from(tot.to_be()) << 16);
        let w2 = 64 | (u32::from(inner_proto) << 8);
        let src = (cfg.encap_src_v4_be & 0xffff) | (u32::from((hash as u16).to_be()) << 16);
        let dst = b.addr_be[0];
        // Summing native words gives the checksum in native order too (RFC 1071,
        // byte-order independence), so it is stored as it comes out.
        let c = csum_fold(u64::from(w0) + u64::from(w2) + u64::from(src) + u64::from(dst));
        let p = ip.cast::<u8>();
        // SAFETY: 20 bounds-checked bytes.
        unsafe {
            wide::store64(p, wide::pair(w0, 0));
            wide::store64(p.add(8), wide::pair(w2 | (u32::from(c) << 16), src));
            wide::store32(p.add(16), dst);
        }
    } else {
        // SAFETY: bounds checked.
        unsafe { (*eth).ether_type = 0x86ddu16.to_be() };
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
        let payload = pkt.ip_len as u16;
        // Version, traffic class and a flow label from the hash (RFC 6438) so receivers
        // spread flows | payload length, next header, hop limit.
        let vcf = 0x6000_0000 | (u32::from(tos) << 20) | (hash & 0x000f_ffff);
        let w1 = u32::from(payload.to_be()) | (u32::from(inner_proto) << 16) | (64 << 24);
        let src = &cfg.encap_src_v6_be;
        let dst = &b.addr_be;
        let p = ip.cast::<u8>();
        // SAFETY: 40 bounds-checked bytes.
        unsafe {
            wide::store64(p, wide::pair(vcf.to_be(), w1));
            wide::store64(p.add(8), wide::pair(src[0], src[1]));
            // The source's last word is the flow hash.
            wide::store64(p.add(16), wide::pair(src[2], hash.to_be()));
            wide::store64(p.add(24), wide::pair(dst[0], dst[1]));
            wide::store64(p.add(32), wide::pair(dst[2], dst[3]));
        }
    }
    send(b, reason::TX_ENCAP)
}

#[inline(always)]
fn words_to_bytes(w: &[u32; 4]) -> [u8; 16] {
    let a = w[0].to_ne_bytes();
    let b = w[1].to_ne_bytes();
    let c = w[2].to_ne_bytes();
    let d = w[3].to_ne_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

#[inline(always)]
fn ctx_adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), ()> {
    // SAFETY: the helper checks the headroom itself; all pointers are re-derived after.
    let r = unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, delta) };
    if r == 0 { Ok(()) } else { Err(()) }
}

#[inline(always)]
fn ctx_adjust_tail(ctx: &XdpContext, delta: i32) -> Result<(), ()> {
    // SAFETY: as above.
    let r = unsafe { aya_ebpf::helpers::bpf_xdp_adjust_tail(ctx.ctx, delta) };
    if r == 0 { Ok(()) } else { Err(()) }
}

/// Swaps source and destination MAC.
#[inline(always)]
fn bounce_eth(ctx: &XdpContext) -> Result<(), (u32, u32)> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    unsafe {
        core::mem::swap(&mut (*eth).dst_addr, &mut (*eth).src_addr);
    }
    Ok(())
}

/// ICMP echo request to a VIP -> echo reply from the VIP, sent back out (XDP_TX).
/// Swapping addresses keeps the IPv4 header and ICMPv6 pseudo-header sums unchanged; the
/// type byte and the IPv4 TTL change, which incremental updates cover (RFC 1624).
#[inline(always)]
pub fn echo_reply(ctx: &XdpContext, pkt: &Packet) -> Verdict {
    bounce_eth(ctx)?;
    if pkt.key.family == FAMILY_V4 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN).ok_or(pass(reason::PASS_MALFORMED))?;
        // SAFETY: bounds checked.
        unsafe {
            core::mem::swap(&mut (*ip).src_addr, &mut (*ip).dst_addr);
            // A reply starts with a fresh TTL (as the kernel's does), not what was left
            // of the request's: one that arrived with TTL 1 would die at the first
            // router. TTL and protocol share a 16-bit word of the header checksum.
            let old = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).ttl = 64;
            let new = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).check = csum_replace16(u16::from_be_bytes((*ip).check), old, new).to_be_bytes();
        }
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(pass(reason::PASS_MALFORMED))?;
        // SAFETY: bounds checked.
        unsafe {
            core::mem::swap(&mut (*ip).src_addr, &mut (*ip).dst_addr);
            (*ip).hop_limit = 64;
        }
    }
    let icmp = ptr_at::<[u8; 4]>(ctx, pkt.l4_off).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    unsafe {
        let h = &mut *icmp;
        let old = u16::from_be_bytes([h[0], h[1]]);
        h[0] = if pkt.key.family == FAMILY_V4 { 0 } else { 129 };
        let new = u16::from_be_bytes([h[0], h[1]]);
        let c = csum_replace16(u16::from_be_bytes([h[2], h[3]]), old, new);
        h[2] = (c >> 8) as u8;
        h[3] = c as u8;
    }
    Ok((xdp_action::XDP_TX, reason::TX_ICMP_ECHO))
}

/// Largest quote of the offending packet in an ICMPv6 "packet too big": as much as fits
/// in the IPv6 minimum MTU (RFC 4443 section 2.4 (c)): 1280 - 40 - 8.
const V6_QUOTE_MAX: usize = 1232;
/// ICMPv4 quotes the IP header (options included, at most 60 bytes) plus 8 bytes of
/// payload (RFC 792).
const V4_QUOTE_MAX: usize = 68;

/// Encapsulating would exceed the MTU: answer the client with ICMP "fragmentation
/// needed" (type 3 code 4) or ICMPv6 "packet too big", from the VIP, instead of
/// dropping silently, so its path-MTU discovery shrinks the flow.
#[inline(always)]
fn too_big(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> Verdict {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(pass(reason::PASS_MALFORMED))?;
    // SAFETY: bounds checked.
    let (mac_src, mac_dst) = unsafe { ((*eth).src_addr, (*eth).dst_addr) };
    let v4 = pkt.key.family == FAMILY_V4;
    let (hdr_len, quote) = if v4 {
        let q = pkt.ihl + 8;
        (
            Ipv4Hdr::LEN + 8,
            if q < pkt.ip_len { q } else { pkt.ip_len },
        )
    } else {
        (
            Ipv6Hdr::LEN + 8,
            if V6_QUOTE_MAX < pkt.ip_len {
                V6_QUOTE_MAX
            } else {
                pkt.ip_len
            },
        )
    };
    // The quote must be whole 16-bit words for the checksum loop below; trimming the
    // odd byte of a quote is allowed (the quote is "as much as fits").
    let quote = quote & !1;
    if ctx_adjust_head(ctx, -(hdr_len as i32)).is_err() {
        return Ok((xdp_action::XDP_DROP, reason::DROP_ADJUST_FAILED));
    }
    let total = ETH_LEN + hdr_len + quote;
    let cur = ctx.data_end() - ctx.data();
    if cur > total && ctx_adjust_tail(ctx, -((cur - total) as i32)).is_err() {
        return Ok((xdp_action::XDP_DROP, reason::DROP_ADJUST_FAILED));
    }
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
    // SAFETY: bounds checked.
    unsafe {
        (*eth).dst_addr = mac_src;
        (*eth).src_addr = mac_dst;
        (*eth).ether_type = if v4 { 0x0800u16 } else { 0x86ddu16 }.to_be();
    }
    let icmp_off = ETH_LEN + hdr_len - 8;
    let icmp = ptr_at::<[u8; 8]>(ctx, icmp_off).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
    let icmp_len = 8 + quote;
    let mut sum: u64 = 0;
    if v4 {
        let ip = ptr_at::<[u8; 20]>(ctx, ETH_LEN).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
        let tot = (Ipv4Hdr::LEN + icmp_len) as u16;
        let vip = pkt.key.dst_be[0].to_ne_bytes();
        let client = pkt.key.src_be[0].to_ne_bytes();
        let mut h = [
            0x45,
            0xc0,
            (tot >> 8) as u8,
            tot as u8,
            0,
            0,
            0,
            0,
            64,
            PROTO_ICMP,
            0,
            0,
            vip[0],
            vip[1],
            vip[2],
            vip[3],
            client[0],
            client[1],
            client[2],
            client[3],
        ];
        // SAFETY: local array.
        let c = csum_fold(unsafe { sum16(h.as_ptr(), 10) });
        h[10] = (c >> 8) as u8;
        h[11] = c as u8;
        let m = mtu as u16;
        // SAFETY: bounds checked.
        unsafe {
            *ip = h;
            *icmp = [3, 4, 0, 0, 0, 0, (m >> 8) as u8, m as u8];
        }
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
        let vip = words_to_bytes(&pkt.key.dst_be);
        let client = words_to_bytes(&pkt.key.src_be);
        // SAFETY: bounds checked.
        unsafe {
            (*ip).vcf = [0x60, 0, 0, 0];
            (*ip).payload_len = (icmp_len as u16).to_be_bytes();
            (*ip).next_hdr = PROTO_ICMPV6;
            (*ip).hop_limit = 255;
            (*ip).src_addr = vip;
            (*ip).dst_addr = client;
            let m = mtu.to_be_bytes();
            *icmp = [2, 0, 0, 0, m[0], m[1], m[2], m[3]];
            // Pseudo-header (RFC 8200 section 8.1): addresses, length, next header.
            sum = sum16(vip.as_ptr(), 8) + sum16(client.as_ptr(), 8);
        }
        sum += icmp_len as u64 + u64::from(PROTO_ICMPV6);
    }
    // SAFETY: bounds checked.
    sum += unsafe { sum16((*icmp).as_ptr(), 4) };
    let quote_off = icmp_off + 8;
    let max = if v4 { V4_QUOTE_MAX } else { V6_QUOTE_MAX };
    let mut i = 0;
    while i < max / 2 {
        if 2 * i >= quote {
            break;
        }
        let w =
            ptr_at::<[u8; 2]>(ctx, quote_off + 2 * i).ok_or(pass(reason::DROP_ADJUST_FAILED))?;
        // SAFETY: bounds checked.
        sum += u64::from(u16::from_be_bytes(unsafe { *w }));
        i += 1;
    }
    let c = csum_fold(sum);
    // SAFETY: bounds checked above.
    unsafe {
        (*icmp)[2] = (c >> 8) as u8;
        (*icmp)[3] = c as u8;
    }
    Ok((xdp_action::XDP_TX, reason::TX_ICMP_TOO_BIG))
}
