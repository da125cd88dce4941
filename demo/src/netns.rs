//! Threads that live in a node's network namespace: sockets take the namespace of the
//! thread that opens them, so the traffic loop and the probes run on such threads.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsRawFd as _,
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use lb_tests::Ns;

/// Moves the calling thread (only it) into `ns`'s network namespace for good.
pub fn enter(ns: &Ns) -> anyhow::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{}", ns.name()))
        .with_context(|| format!("opening namespace {}", ns.name()))?;
    // SAFETY: setns on this thread with a namespace fd we just opened.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        anyhow::bail!(
            "setns into {}: {}",
            ns.name(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Spawns a named thread that enters `ns` and then runs `f`.
pub fn spawn_in<T: Send + 'static>(
    ns: &Ns,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<JoinHandle<anyhow::Result<T>>> {
    let ns = ns.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            enter(&ns)?;
            Ok(f())
        })
        .context("spawning a thread")
}

/// Runs `f` on a thread inside `ns` and waits for it.
pub fn run_in<T: Send + 'static>(
    ns: &Ns,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    spawn_in(ns, "netns", f)?
        .join()
        .map_err(|_| anyhow::anyhow!("the thread in {} panicked", ns.name()))?
}

/// What a TCP connection attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The handshake completed.
    Open,
    /// RST: the host is reachable, nothing (allowed) listens.
    Refused,
    /// No answer within the timeout (dropped by a firewall, or no route).
    Silent,
    /// No route, network unreachable, or an ICMP error.
    Unreachable,
}

/// Tries a TCP connection from inside `ns`, optionally from source address `src`.
pub fn probe(
    ns: &Ns,
    src: Option<Ipv4Addr>,
    dst: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<Reach> {
    run_in(ns, move || -> anyhow::Result<Reach> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if let Some(a) = src {
            s.bind(&SockAddr::from(SocketAddr::from((a, 0))))
                .with_context(|| format!("binding {a}"))?;
        }
        Ok(match s.connect_timeout(&SockAddr::from(dst), timeout) {
            Ok(()) => Reach::Open,
            Err(e) => match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Reach::Refused,
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Reach::Silent,
                _ => Reach::Unreachable,
            },
        })
    })?
}
