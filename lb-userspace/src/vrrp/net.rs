//! VRRP I/O: the raw protocol-112 sockets, gratuitous ARP / unsolicited NA, and
//! adding / removing the VIPs.
//!
//! Each family uses two raw sockets rather than one: the send socket is bound to the
//! advert source address so the kernel uses exactly the address the checksum's
//! pseudo-header was computed over, but a bound raw socket only receives packets
//! addressed to that address - not the multicast group - so receiving needs a second,
//! unbound socket. The send socket gets a drop-all filter so it never queues anything.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use anyhow::Context;
use tokio::io::unix::AsyncFd;

use super::packet::{self, Advert};
use super::sys::{self, SockAddr};

/// The data-plane interface.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

impl Link {
    pub fn lookup(name: &str) -> anyhow::Result<Link> {
        let index = sys::if_index(name).with_context(|| {
            format!("interface {name:?} not found (check `interface` in the VRRP config)")
        })?;
        let mac = sys::if_mac(name).with_context(|| format!("reading the MAC of {name}"))?;
        Ok(Link {
            name: name.to_owned(),
            index,
            mac,
        })
    }
}

/// One received IP datagram of protocol 112, before VRRP validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    Packet {
        src: IpAddr,
        dst: IpAddr,
        /// IPv4 TTL or IPv6 hop limit; `None` if the kernel did not say.
        ttl: Option<u8>,
        /// The VRRP message is `buf[start..end]`.
        start: usize,
        end: usize,
    },
    /// The IP header itself was unusable (truncated, oversized datagram...).
    BadIpHeader,
}

/// The advert sockets of one instance.
#[derive(Debug)]
pub struct VrrpSocket {
    rx: AsyncFd<OwnedFd>,
    tx: OwnedFd,
    v4: bool,
    src: IpAddr,
    scope: u32,
    /// The multicast group, or the unicast peers.
    dsts: Vec<IpAddr>,
}

fn proto() -> libc::c_int {
    libc::c_int::from(packet::IPPROTO_VRRP)
}

impl VrrpSocket {
    /// Opens and configures both sockets. `src` must be an address of `link`
    /// (the kernel refuses to bind anything else, which is the check we want).
    pub fn open(link: &Link, src: IpAddr, unicast_peers: &[IpAddr]) -> io::Result<VrrpSocket> {
        let v4 = src.is_ipv4();
        let ttl = libc::c_int::from(packet::TTL);
        let (rx, tx) = if v4 {
            let rx = sys::socket(libc::AF_INET, libc::SOCK_RAW, proto())?;
            sys::bind_to_device(&rx, &link.name)?;
            if unicast_peers.is_empty() {
                sys::join_v4(&rx, packet::GROUP_V4, link.index)?;
            }
            let tx = sys::socket(libc::AF_INET, libc::SOCK_RAW, proto())?;
            sys::attach_drop_all_filter(&tx)?;
            sys::bind_to_device(&tx, &link.name)?;
            // Section 5.1.1.3: TTL MUST be 255, multicast and unicast alike.
            sys::setsockopt_int(&tx, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, ttl)?;
            sys::setsockopt_int(&tx, libc::IPPROTO_IP, libc::IP_TTL, ttl)?;
            sys::setsockopt_int(&tx, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, 0)?;
            // Precedence "internetwork control", as keepalived: adverts must not sit
            // behind data in a congested queue, or the backup declares us dead.
            sys::setsockopt_int(&tx, libc::IPPROTO_IP, libc::IP_TOS, 0xc0)?;
            sys::multicast_if_v4(&tx, link.index)?;
            sys::bind(&tx, &SockAddr::ip(src, 0))?;
            (rx, tx)
        } else {
            let rx = sys::socket(libc::AF_INET6, libc::SOCK_RAW, proto())?;
            sys::bind_to_device(&rx, &link.name)?;
            // IPv6 raw sockets do not see the IP header: ask for the hop limit
            // (section 5.1.2.3 check) and the destination (checksum pseudo-header).
            sys::setsockopt_int(&rx, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
            sys::setsockopt_int(&rx, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
            if unicast_peers.is_empty() {
                sys::join_v6(&rx, packet::GROUP_V6, link.index)?;
            }
            let tx = sys::socket(libc::AF_INET6, libc::SOCK_RAW, proto())?;
            sys::attach_drop_all_filter(&tx)?;
            sys::bind_to_device(&tx, &link.name)?;
            sys::setsockopt_int(&tx, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, ttl)?;
            sys::setsockopt_int(&tx, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, ttl)?;
            sys::setsockopt_int(&tx, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)?;
            sys::setsockopt_int(
                &tx,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                link.index as libc::c_int,
            )?;
            // The checksum is computed by packet::Advert::encode, not the kernel
            // (IPV6_CHECKSUM stays off), so receive can count bad checksums too.
            sys::bind(&tx, &SockAddr::ip(src, link.index))?;
            (rx, tx)
        };
        let dsts = if unicast_peers.is_empty() {
            vec![if v4 {
                IpAddr::V4(packet::GROUP_V4)
            } else {
                IpAddr::V6(packet::GROUP_V6)
            }]
        } else {
            unicast_peers.to_vec()
        };
        Ok(VrrpSocket {
            rx: sys::async_fd(rx)?,
            tx,
            v4,
            src,
            scope: link.index,
            dsts,
        })
    }

    pub fn src(&self) -> IpAddr {
        self.src
    }

    /// Sends the advert to every destination; returns how many sends succeeded and
    /// the last error if any failed.
    pub fn send(&self, advert: &Advert) -> (usize, Option<io::Error>) {
        let mut ok = 0;
        let mut err = None;
        for &dst in &self.dsts {
            let res = advert
                .encode(self.src, dst)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
                .and_then(|buf| sys::sendto(&self.tx, &buf, &SockAddr::ip(dst, self.scope)));
            match res {
                Ok(_) => ok += 1,
                Err(e) => err = Some(e),
            }
        }
        (ok, err)
    }

    /// Waits for the next datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Incoming> {
        loop {
            let mut guard = self.rx.readable().await?;
            match guard.try_io(|fd| sys::recvmsg(fd.as_raw_fd(), buf)) {
                Ok(Ok(meta)) => return Ok(self.parse(&buf[..meta.len], meta)),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    fn parse(&self, buf: &[u8], meta: sys::RecvMeta) -> Incoming {
        if meta.truncated {
            return Incoming::BadIpHeader;
        }
        if self.v4 {
            parse_ipv4(buf)
        } else {
            match meta.src {
                Some(src @ IpAddr::V6(_)) => Incoming::Packet {
                    src,
                    // Without IPV6_PKTINFO (never on Linux) assume the group.
                    dst: IpAddr::V6(meta.dst6.unwrap_or(packet::GROUP_V6)),
                    ttl: meta.hop_limit.and_then(|h| u8::try_from(h).ok()),
                    start: 0,
                    end: buf.len(),
                },
                _ => Incoming::BadIpHeader,
            }
        }
    }
}

/// IPv4 raw sockets deliver the IP header: take TTL, addresses and the payload bounds
/// from it.
fn parse_ipv4(buf: &[u8]) -> Incoming {
    if buf.len() < 20 || buf[0] >> 4 != 4 {
        return Incoming::BadIpHeader;
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if ihl < 20 || ihl > buf.len() || total < ihl {
        return Incoming::BadIpHeader;
    }
    let end = total.min(buf.len());
    let addr = |o: usize| IpAddr::V4(Ipv4Addr::new(buf[o], buf[o + 1], buf[o + 2], buf[o + 3]));
    Incoming::Packet {
        src: addr(12),
        dst: addr(16),
        ttl: Some(buf[8]),
        start: ihl,
        end,
    }
}

/// Sends gratuitous ARPs (IPv4) or unsolicited neighbour advertisements (IPv6) for the
/// VIPs, so hosts and switches move the VIPs to this node's MAC at once.
#[derive(Debug)]
pub struct Announcer {
    fd: OwnedFd,
    link: Link,
    vips: Vec<IpAddr>,
}

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

impl Announcer {
    pub fn open(link: &Link, vips: &[IpAddr]) -> io::Result<Announcer> {
        let v4 = vips.first().is_none_or(|v| v.is_ipv4());
        let fd = if v4 {
            // Protocol 0: this packet socket receives nothing, it only sends.
            sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?
        } else {
            let fd = sys::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
            sys::icmp6_block_all(&fd)?;
            sys::bind_to_device(&fd, &link.name)?;
            // RFC 4861 section 7.1.2: receivers drop NAs whose hop limit is not 255.
            sys::setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255)?;
            sys::setsockopt_int(
                &fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                link.index as libc::c_int,
            )?;
            fd
        };
        Ok(Announcer {
            fd,
            link: link.clone(),
            vips: vips.to_vec(),
        })
    }

    pub fn is_v4(&self) -> bool {
        self.vips.first().is_none_or(|v| v.is_ipv4())
    }

    /// One announcement per VIP; returns how many were sent and the last error.
    pub fn announce(&self) -> (usize, Option<io::Error>) {
        let mut ok = 0;
        let mut err = None;
        for &vip in &self.vips {
            let res = match vip {
                IpAddr::V4(v) => sys::sendto(
                    &self.fd,
                    &garp_frame(self.link.mac, v),
                    &SockAddr::link(self.link.index, ETH_P_ARP, BROADCAST),
                ),
                IpAddr::V6(v) => sys::sendto(
                    &self.fd,
                    &unsolicited_na(self.link.mac, v),
                    &SockAddr::ip(IpAddr::V6(ALL_NODES), self.link.index),
                ),
            };
            match res {
                Ok(_) => ok += 1,
                Err(e) => err = Some(e),
            }
        }
        (ok, err)
    }
}

/// A gratuitous ARP request (RFC 5227 section 3, "ARP Announcement"; RFC 5798
/// section 8.1.2): sender and target protocol address are both the VIP, broadcast,
/// padded to the Ethernet minimum.
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op 1 (request)
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    // Target hardware address: zero, as RFC 5227 says for announcements.
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 section 7.2.6; RFC 5798 section
/// 8.2.2): Override set, Solicited clear, target = VIP, with the target link-layer
/// address option. The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 136; // Neighbor Advertisement
    p[4] = 0x20; // R=0, S=0, O=1
    p[8..24].copy_from_slice(&vip.octets());
    p[24] = 2; // Target Link-Layer Address option
    p[25] = 1; // length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// Adds or removes VIPs with iproute2, which keeps this module free of netlink
/// message building (an `rtnetlink` dependency would replace it).
async fn ip(args: &[&str]) -> anyhow::Result<()> {
    let fut = tokio::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .with_context(|| format!("`ip {}` timed out", args.join(" ")))?
        .context("running `ip` (is iproute2 installed?)")?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

fn vip_args(op: &str, vip: IpAddr, dev: &str) -> Vec<String> {
    match vip {
        IpAddr::V4(_) => vec![
            "-4".into(),
            "addr".into(),
            op.into(),
            format!("{vip}/32"),
            "dev".into(),
            dev.into(),
        ],
        IpAddr::V6(_) => {
            let mut a = vec![
                "-6".into(),
                "addr".into(),
                op.into(),
                format!("{vip}/128"),
                "dev".into(),
                dev.into(),
            ];
            if op != "del" {
                // nodad: the VIP is usable at once (DAD would delay it by ~1 s and
                // fail anyway while the old master still holds it). preferred_lft 0:
                // never pick the VIP as source of this node's own traffic.
                a.extend(["nodad".into(), "preferred_lft".into(), "0".into()]);
            }
            a
        }
    }
}

/// Adds every VIP (idempotent: `replace`); returns the first error after trying all.
pub async fn add_vips(dev: &str, vips: &[IpAddr]) -> anyhow::Result<()> {
    let mut first = None;
    for &vip in vips {
        let args = vip_args("replace", vip, dev);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = ip(&args).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Removes every VIP that is present; absence is not an error.
pub async fn del_vips(dev: &str, vips: &[IpAddr]) -> anyhow::Result<()> {
    let present = sys::if_addrs(dev).unwrap_or_default();
    let mut first = None;
    for &vip in vips.iter().filter(|v| present.contains(v)) {
        let args = vip_args("del", vip, dev);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = ip(&args).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    #[test]
    fn garp_layout() {
        let f = garp_frame(MAC, Ipv4Addr::new(10, 0, 0, 100));
        #[rustfmt::skip]
        let head: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 1,
            2, 0, 0, 0, 0, 1, 10, 0, 0, 100,
            0, 0, 0, 0, 0, 0, 10, 0, 0, 100,
        ];
        assert_eq!(f[..42], head);
        assert!(f[42..].iter().all(|&b| b == 0));
    }

    #[test]
    fn na_layout() {
        let vip: Ipv6Addr = "fd00::100".parse().unwrap();
        let p = unsolicited_na(MAC, vip);
        assert_eq!(p[..8], [136, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(p[8..24], vip.octets());
        assert_eq!(p[24..], [2, 1, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn ipv4_header_parsing() {
        let mut pkt = vec![
            0x45, 0xc0, 0, 32, 0, 0, 0, 0, 255, 112, 0, 0, 10, 0, 0, 1, 224, 0, 0, 18,
        ];
        pkt.extend_from_slice(&[0; 12]);
        assert_eq!(
            parse_ipv4(&pkt),
            Incoming::Packet {
                src: "10.0.0.1".parse().unwrap(),
                dst: "224.0.0.18".parse().unwrap(),
                ttl: Some(255),
                start: 20,
                end: 32
            }
        );
        assert_eq!(parse_ipv4(&pkt[..19]), Incoming::BadIpHeader);
        let mut bad = pkt.clone();
        bad[0] = 0x4f; // IHL 60 > length
        assert_eq!(parse_ipv4(&bad[..32]), Incoming::BadIpHeader);
        let mut bad = pkt.clone();
        bad[0] = 0x65;
        assert_eq!(parse_ipv4(&bad), Incoming::BadIpHeader);
        let mut short_total = pkt.clone();
        short_total[3] = 10;
        assert_eq!(parse_ipv4(&short_total), Incoming::BadIpHeader);
    }

    #[test]
    fn vip_commands() {
        assert_eq!(
            vip_args("replace", "10.0.0.100".parse().unwrap(), "eth0").join(" "),
            "-4 addr replace 10.0.0.100/32 dev eth0"
        );
        assert_eq!(
            vip_args("replace", "fd00::1".parse().unwrap(), "eth0").join(" "),
            "-6 addr replace fd00::1/128 dev eth0 nodad preferred_lft 0"
        );
        assert_eq!(
            vip_args("del", "fd00::1".parse().unwrap(), "eth0").join(" "),
            "-6 addr del fd00::1/128 dev eth0"
        );
    }
}
