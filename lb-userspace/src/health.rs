//! Backend health checks, run concurrently from the LB node (one tokio task per
//! backend address).
//!
//! A backend starts "up", so a restarted controller does not flush the rings of an
//! adopted data plane before the first checks complete. It goes down after `fall`
//! consecutive failures and comes back after `rise` consecutive successes; only those
//! transitions are reported to the controller, which rebuilds the affected rings.
//! A backend listed by several services is checked once, with the first service's
//! check settings.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
    time::timeout,
};

use crate::config::{Config, Health, HealthKind};

/// A health transition of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub address: IpAddr,
    pub up: bool,
}

/// Counters of one backend's checks.
#[derive(Debug, Default)]
pub struct Counters {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub transitions: AtomicU64,
}

/// The running checks; dropping it stops them.
pub struct Checks {
    tasks: Vec<JoinHandle<()>>,
    pub counters: std::collections::BTreeMap<IpAddr, Arc<Counters>>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one task per distinct backend address of `cfg`.
pub fn start(cfg: &Config, tx: mpsc::Sender<Transition>) -> Checks {
    let mut seen = std::collections::BTreeMap::new();
    let mut tasks = Vec::new();
    for s in cfg.services() {
        for b in &s.backends {
            if seen.contains_key(&b.address) || s.health.kind == HealthKind::None {
                continue;
            }
            let counters = Arc::new(Counters::default());
            seen.insert(b.address, counters.clone());
            let target = SocketAddr::new(b.address, s.health.port.unwrap_or(s.port));
            let h = s.health.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(check_loop(target, h, tx, counters)));
        }
    }
    Checks {
        tasks,
        counters: seen,
    }
}

async fn check_loop(
    target: SocketAddr,
    h: Health,
    tx: mpsc::Sender<Transition>,
    counters: Arc<Counters>,
) {
    let mut up = true;
    let (mut oks, mut fails) = (0u32, 0u32);
    let mut tick = tokio::time::interval(Duration::from_millis(h.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = check_once(target, &h).await;
        if ok {
            counters.ok.fetch_add(1, Ordering::Relaxed);
            oks += 1;
            fails = 0;
        } else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            fails += 1;
            oks = 0;
        }
        let flip = if up { fails >= h.fall } else { oks >= h.rise };
        if flip {
            up = !up;
            counters.transitions.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "backend {target} is now {} ({} consecutive {})",
                if up { "UP" } else { "DOWN" },
                if up { oks } else { fails },
                if up { "successes" } else { "failures" }
            );
            if tx
                .send(Transition {
                    address: target.ip(),
                    up,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// One check with the configured timeout.
pub async fn check_once(target: SocketAddr, h: &Health) -> bool {
    let limit = Duration::from_millis(h.timeout_ms);
    match h.kind {
        HealthKind::None => true,
        HealthKind::Tcp => matches!(timeout(limit, TcpStream::connect(target)).await, Ok(Ok(_))),
        HealthKind::Http => {
            matches!(timeout(limit, http_get(target, &h.path)).await, Ok(Ok(s)) if s == h.expect_status)
        }
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; returns the status code.
async fn http_get(target: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(target).await?;
    let host = match target.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    // The status line is all we need: "HTTP/1.1 200 ...".
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    parse_status(&buf[..n]).ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

fn parse_status(b: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(b.get(..12)?).ok()?;
    if !s.starts_with("HTTP/1.") {
        return None;
    }
    s.get(9..12)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
    }

    #[tokio::test]
    async fn checks_against_real_sockets() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 256];
                let n = s.read(&mut b).await.unwrap_or(0);
                let ok = std::str::from_utf8(&b[..n])
                    .unwrap_or("")
                    .starts_with("GET /ok ");
                let resp: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                };
                let _ = s.write_all(resp).await;
            }
        });
        let mut h = Health {
            kind: HealthKind::Http,
            path: "/ok".into(),
            ..Health::default()
        };
        assert!(check_once(addr, &h).await);
        h.path = "/missing".into();
        assert!(!check_once(addr, &h).await);
        h.kind = HealthKind::Tcp;
        assert!(check_once(addr, &h).await);
        // A port nobody listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(!check_once(closed_addr, &h).await);
    }
}
