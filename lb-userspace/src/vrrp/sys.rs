//! The thin `libc` layer under `net`: raw sockets, socket options, ancillary data,
//! interface queries. Every `unsafe` block is here, each with its justification, so
//! the rest of the module is safe Rust.
//!
//! (`socket2` / `nix` would cover most of this; the crate does not depend on them yet.)

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A non-blocking, close-on-exec socket.
pub fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success we own the returned descriptor.
    let fd =
        cvt(unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers a socket with the tokio reactor for readability.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd's descriptor stays open, and always the same, until the
    // OwnedFd - here owned by the AsyncFd - is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// `setsockopt` with a value of any plain-old-data type.
pub fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: val points to size_of::<T>() readable bytes for the duration of the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn setsockopt_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &val)
}

/// SO_BINDTODEVICE: only traffic of this interface is received, and sends leave by it.
pub fn bind_to_device(fd: &impl AsRawFd, ifname: &str) -> io::Result<()> {
    // SAFETY: the name bytes are readable for their length.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Attaches a classic BPF filter that accepts nothing: for send-only raw sockets,
/// which would otherwise queue every matching packet until their buffer fills.
pub fn attach_drop_all_filter(fd: &impl AsRawFd) -> io::Result<()> {
    // BPF_RET | BPF_K with k = 0: keep 0 bytes of every packet.
    let mut insn = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: insn.as_mut_ptr(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Storage for any IP socket address.
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    /// `scope_id` is the interface index for IPv6 link-local addresses.
    pub fn ip(addr: IpAddr, scope_id: u32) -> SockAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            IpAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
                size_of::<libc::sockaddr_in>()
            }
            IpAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    sin6_scope_id: if is_link_local(a) { scope_id } else { 0 },
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    /// A link-layer address for an AF_PACKET send on `ifindex`.
    pub fn link(ifindex: u32, protocol: u16, dst: [u8; 6]) -> SockAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(&dst);
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: protocol.to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: addr,
        };
        // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_ll.
        unsafe { std::ptr::write((&raw mut storage).cast(), sll) };
        SockAddr {
            storage,
            len: size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        }
    }

    fn to_ip(&self) -> Option<IpAddr> {
        match libc::c_int::from(self.storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin: libc::sockaddr_in =
                    unsafe { std::ptr::read((&raw const self.storage).cast()) };
                Some(IpAddr::V4(Ipv4Addr::from(
                    sin.sin_addr.s_addr.to_ne_bytes(),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((&raw const self.storage).cast()) };
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

pub fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

pub fn bind(fd: &impl AsRawFd, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: addr.storage holds addr.len valid bytes.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr.storage).cast(), addr.len) }).map(drop)
}

pub fn sendto(fd: &impl AsRawFd, buf: &[u8], to: &SockAddr) -> io::Result<usize> {
    // SAFETY: buf and to are valid for their lengths during the call.
    cvt_size(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&raw const to.storage).cast(),
            to.len,
        )
    })
}

/// What `recvmsg` learnt about one datagram besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    pub len: usize,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
    pub src: Option<IpAddr>,
    /// IPV6_HOPLIMIT ancillary data.
    pub hop_limit: Option<i32>,
    /// IPV6_PKTINFO destination address.
    pub dst6: Option<Ipv6Addr>,
}

/// `recvmsg` into `buf`, parsing the IPv6 ancillary data enabled with
/// IPV6_RECVHOPLIMIT and IPV6_RECVPKTINFO.
pub fn recvmsg(fd: RawFd, buf: &mut [u8]) -> io::Result<RecvMeta> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the pointers are filled below.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: msg points to buffers that live across the call.
    let len = cvt_size(unsafe { libc::recvmsg(fd, &raw mut msg, 0) })?;
    let mut meta = RecvMeta {
        len,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        src: SockAddr {
            storage: name,
            len: msg.msg_namelen,
        }
        .to_ip(),
        hop_limit: None,
        dst6: None,
    };
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, bounded by
    // msg_controllen; each data pointer is read with the size its type dictates.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IPV6 {
                if c.cmsg_type == libc::IPV6_HOPLIMIT {
                    meta.hop_limit = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
                    ));
                } else if c.cmsg_type == libc::IPV6_PKTINFO {
                    let info =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>());
                    meta.dst6 = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(meta)
}

pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    req
}

fn ioctl_ifreq(name: &str, request: libc::Ioctl) -> io::Result<libc::ifreq> {
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut req = ifreq(name);
    // SAFETY: SIOCGIF* requests read the name and write into the ifreq we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, &raw mut req) })?;
    Ok(req)
}

/// Whether the interface is administratively up and has carrier (IFF_UP and
/// IFF_RUNNING); `false` if it does not exist.
pub fn if_is_running(name: &str) -> bool {
    match ioctl_ifreq(name, libc::SIOCGIFFLAGS) {
        Ok(req) => {
            // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
            let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
            flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
        }
        Err(_) => false,
    }
}

pub fn if_mac(name: &str) -> io::Result<[u8; 6]> {
    let req = ioctl_ifreq(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// The addresses on the interface, in the order the kernel lists them (primary first
/// for IPv4).
pub fn if_addrs(name: &str) -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    cvt(unsafe { libc::getifaddrs(&raw mut head) })?;
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() == name.as_bytes() && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type;
            // copying sockaddr_storage-many bytes could overrun, so copy per family.
            let family = libc::c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
            let addr = match family {
                libc::AF_INET => {
                    // SAFETY: the family says this is a sockaddr_in.
                    let sin = unsafe { std::ptr::read(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                    Some(IpAddr::V4(Ipv4Addr::from(
                        sin.sin_addr.s_addr.to_ne_bytes(),
                    )))
                }
                libc::AF_INET6 => {
                    // SAFETY: the family says this is a sockaddr_in6.
                    let sin6 = unsafe { std::ptr::read(ifa.ifa_addr.cast::<libc::sockaddr_in6>()) };
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            };
            out.extend(addr);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

pub fn join_v4(fd: &impl AsRawFd, group: Ipv4Addr, ifindex: u32) -> io::Result<()> {
    let mreq = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from_ne_bytes(group.octets()),
        },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    };
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
}

pub fn multicast_if_v4(fd: &impl AsRawFd, ifindex: u32) -> io::Result<()> {
    let mreq = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    };
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)
}

pub fn join_v6(fd: &impl AsRawFd, group: Ipv6Addr, ifindex: u32) -> io::Result<()> {
    let mreq = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: group.octets(),
        },
        ipv6mr_interface: ifindex,
    };
    setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
}

/// ICMP6_FILTER blocking every ICMPv6 type: for the send-only NA socket.
pub fn icmp6_block_all(fd: &impl AsRawFd) -> io::Result<()> {
    // struct icmp6_filter { uint32_t icmp6_filt[8]; }: a set bit blocks the type.
    const ICMP6_FILTER: libc::c_int = 1;
    let filter = [u32::MAX; 8];
    setsockopt(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_known() {
        assert_eq!(if_index("lo").unwrap(), 1);
        let addrs = if_addrs("lo").unwrap();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        assert!(if_is_running("lo"));
        assert_eq!(if_mac("lo").unwrap(), [0; 6]);
        assert!(if_index("no-such-if0").is_err());
        assert!(!if_is_running("no-such-if0"));
    }

    #[test]
    fn sockaddr_round_trips() {
        for a in ["10.1.2.3", "fe80::1", "fd00::5"] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(SockAddr::ip(ip, 3).to_ip(), Some(ip));
        }
    }

    #[test]
    fn link_local_detection() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_link_local("febf::1".parse().unwrap()));
        assert!(!is_link_local("fec0::1".parse().unwrap()));
    }
}
