//! Reverse proxy over real sockets, with in-test upstream servers: header rewriting,
//! keep-alive pools, balancing, retries when an upstream dies, 502/504 (answers framed
//! two ways among them), streaming bodies and body limits.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;

use common::{ResetUpstream, Upstream, Web, curl, request, wait_for};

fn dead_addr() -> SocketAddr {
    // Bind, note the port, close: connecting to it is refused.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A config with one upstream group `app` (mounted at /api/) built from `servers`
/// (`(addr, weight)`), plus extra group settings.
fn config(servers: &[(SocketAddr, u32)], group_extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    format!(
        r#"
[log]
access = "off"
error = "{{dir}}/error.log"

[limits]
max_body_size = "64k"
body_timeout = "1s"
drain_timeout = "2s"

[upstream.app]
server = [{}]
{group_extra}

[[server]]
[[server.location]]
prefix = "/api/"
proxy = "app"
[[server.location]]
prefix = "/"
root = "{{dir}}"
"#,
        list.join(", ")
    )
}

fn get(web: &Web, path: &str) -> common::Resp {
    web.get(path, &[])
}

fn send(web: &Web, req: &str) -> common::Resp {
    request(web.addr, req.as_bytes())
}

#[test]
fn forwards_headers_and_strips_hop_by_hop() {
    let up = Upstream::start("a");
    let web = Web::start(&config(&[(up.addr, 1)], ""), &[]);
    let r = send(
        &web,
        "GET /api/echo?q=1&r=%20 HTTP/1.1\r\nHost: app.example:8080\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Real-IP: 198.51.100.6\r\nX-Forwarded-Proto: https\r\n\
         Connection: keep-alive, x-client-hop\r\nX-Client-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Proxy-Authorization: Basic Zm9v\r\nX-Custom: kept\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let echo = r.text();
    let lines: Vec<&str> = echo.lines().collect();
    for want in [
        "method: GET",
        "path: /api/echo?q=1&r=%20",
        "host: app.example:8080",
        "x-forwarded-for: 192.0.2.7, 127.0.0.1",
        "x-real-ip: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-custom: kept",
        "body-len: 0",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{echo}");
    }
    // The client's own X-Real-IP and X-Forwarded-Proto are replaced, not passed on.
    assert!(!echo.contains("198.51.100.6"), "{echo}");
    assert_eq!(echo.matches("x-real-ip:").count(), 1, "{echo}");
    assert_eq!(echo.matches("x-forwarded-proto:").count(), 1, "{echo}");
    for gone in [
        "x-client-hop",
        "keep-alive",
        "te:",
        "proxy-authorization",
        "connection: keep-alive",
    ] {
        assert!(!echo.contains(gone), "{gone:?} was forwarded:\n{echo}");
    }
    // Response hop-by-hop headers (and those its Connection names) are stripped too.
    assert_eq!(r.header("x-upstream"), Some("a"));
    assert_eq!(r.header("x-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    // Server and Date are the proxy's own, as with nginx (its `proxy_hide_header`
    // default), whichever client carried the request: without a body, and with one.
    let post = send(
        &web,
        "POST /api/echo HTTP/1.1\r\nHost: app.example\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(post.status, 200);
    assert!(post.text().contains("body-len: 2"), "{}", post.text());
    for resp in [&r, &post] {
        assert_eq!(resp.header("server"), Some("web-tier"));
        let date = resp.header("date").expect("a Date");
        assert_ne!(date, common::UPSTREAM_DATE);
        assert!(httpdate::parse_http_date(date).is_ok(), "{date:?}");
    }
}

#[test]
fn keep_alive_pool_reuses_upstream_connections() {
    let up = Upstream::start("a");
    let web = Web::start(&config(&[(up.addr, 1)], "keepalive = 4"), &[]);
    for _ in 0..10 {
        assert_eq!(get(&web, "/api/echo").status, 200);
    }
    assert_eq!(up.seen.requests.load(Ordering::SeqCst), 10);
    assert_eq!(
        up.seen.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
}

#[test]
fn weighted_round_robin_follows_weights() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let web = Web::start(&config(&[(a.addr, 3), (b.addr, 1)], ""), &[]);
    let order: Vec<String> = (0..8)
        .map(|_| {
            get(&web, "/api/echo")
                .header("x-upstream")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(order, ["a", "a", "b", "a", "a", "a", "b", "a"]);
}

#[test]
fn least_conn_avoids_the_busy_server() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let web = Web::start(
        &config(
            &[(a.addr, 1), (b.addr, 1)],
            "balance = \"least_conn\"\nread_timeout = \"30s\"",
        ),
        &[],
    );
    // Park one request on `a` (the first pick on a tie).
    let addr = web.addr;
    let hanging = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        s.write_all(b"GET /api/hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    });
    wait_for("hang request at a", || {
        (a.seen.requests.load(Ordering::SeqCst) == 1).then_some(())
    });
    for _ in 0..4 {
        assert_eq!(get(&web, "/api/echo").header("x-upstream"), Some("b"));
    }
    drop(web);
    hanging.join().unwrap();
}

#[test]
fn upstream_killed_mid_test_idempotent_requests_all_succeed() {
    let mut a = Upstream::start("a");
    let b = Upstream::start("b");
    let web = Web::start(
        &config(
            &[(a.addr, 1), (b.addr, 1)],
            "max_fails = 1\nfail_timeout = \"30s\"",
        ),
        &[],
    );
    let mut served_by = Vec::new();
    for i in 0..20 {
        if i == 6 {
            a.kill();
        }
        let method = ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"][i % 5];
        let r = send(
            &web,
            &format!("{method} /api/echo/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "request {i} ({method})");
        served_by.push(r.header("x-upstream").unwrap().to_owned());
    }
    assert!(served_by[..6].contains(&"a".to_owned()));
    assert!(served_by[6..].iter().all(|u| u == "b"), "{served_by:?}");
    let log = common::read_string(&web.path("error.log"));
    assert!(log.contains("\"marked_down\":\"true\""), "{log}");
}

#[test]
fn non_idempotent_request_is_not_retried_once_sent() {
    let r_up = ResetUpstream::start();
    let b = Upstream::start("b");
    // max_fails = 0 keeps the reset server in rotation, so the order is r, b, r, b.
    let web = Web::start(
        &config(&[(r_up.addr, 1), (b.addr, 1)], "max_fails = 0"),
        &[],
    );
    let post =
        "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let first = send(&web, post);
    assert_eq!(first.status, 502);
    assert_eq!(first.text(), "bad gateway\n");
    let second = send(&web, post);
    assert_eq!(second.status, 200);
    assert!(second.text().contains("body-len: 3"));
    // A GET that hits the reset server is retried on b.
    let get = get(&web, "/api/echo");
    assert_eq!(get.status, 200);
    assert_eq!(get.header("x-upstream"), Some("b"));
    assert_eq!(r_up.seen.method("POST"), 1);
    assert_eq!(r_up.seen.method("GET"), 1);
    assert_eq!(
        b.seen.method("POST"),
        1,
        "the failed POST was not replayed on b"
    );
    assert_eq!(b.seen.method("GET"), 1);
}

#[test]
fn upstream_killed_during_a_post_fails_it_cleanly_without_replay() {
    let mut a = Upstream::start("a");
    let b = Upstream::start("b");
    let web = Web::start(
        &config(&[(a.addr, 1), (b.addr, 1)], "read_timeout = \"30s\""),
        &[],
    );
    let addr = web.addr;
    let post = std::thread::spawn(move || {
        request(
            addr,
            b"POST /api/gate HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
        )
    });
    wait_for("POST held at a", || {
        (a.seen.method("POST") == 1).then_some(())
    });
    a.kill();
    let r = post.join().unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "bad gateway\n");
    assert_eq!(b.seen.method("POST"), 0, "the POST was not replayed on b");
    // Idempotent traffic carries on, on b.
    for _ in 0..3 {
        let r = get(&web, "/api/echo");
        assert_eq!((r.status, r.header("x-upstream")), (200, Some("b")));
    }
}

#[test]
fn refused_connect_is_retried_even_for_post() {
    let b = Upstream::start("b");
    let web = Web::start(&config(&[(dead_addr(), 1), (b.addr, 1)], ""), &[]);
    for _ in 0..3 {
        let r = send(
            &web,
            "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        assert_eq!(r.status, 200);
        assert!(r.text().contains("body-len: 5"));
    }
    assert_eq!(b.seen.method("POST"), 3);
}

#[test]
fn timeouts_give_504_and_dead_upstreams_502() {
    let up = Upstream::start("a");
    let web = Web::start(
        &config(&[(up.addr, 1)], "read_timeout = \"300ms\"\nmax_fails = 0"),
        &[],
    );
    let r = get(&web, "/api/hang");
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "gateway timeout\n");
    // The server is still fine for other requests.
    assert_eq!(get(&web, "/api/echo").status, 200);
    let log = common::read_string(&web.path("error.log"));
    let line = log
        .lines()
        .find(|l| l.contains("upstream read timed out"))
        .expect(&log);
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "warn");
    assert_eq!(v["upstream"], "app");
    assert_eq!(v["peer"], up.addr.to_string());

    let dead = Web::start(&config(&[(dead_addr(), 1), (dead_addr(), 1)], ""), &[]);
    let r = get(&dead, "/api/echo");
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "bad gateway\n");
    // Both are now marked down: no live upstreams, still a clean 502.
    let r = get(&dead, "/api/echo");
    assert_eq!(r.status, 502);
    let log = common::read_string(&dead.path("error.log"));
    assert!(log.contains("no live upstreams"), "{log}");
}

#[test]
fn request_and_response_bodies_stream_through() {
    let up = Upstream::start("a");
    let web = Web::start(&config(&[(up.addr, 1)], ""), &[]);
    // Chunked upload, just under the 64k limit.
    let data: Vec<u8> = (0..60_000u32).map(|i| (i % 256) as u8).collect();
    let mut req = b"PUT /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in data.chunks(7000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = request(web.addr, &req);
    assert_eq!(r.status, 200);
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert!(r.text().contains("body-len: 60000\n"), "{}", r.text());
    assert!(r.text().contains(&format!("body-sum: {sum}\n")));

    // A 3 MB streamed (chunked) response, larger than any buffer on the way.
    let r = curl(&[&web.url("/api/stream?3000000")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3_000_000);
    assert!(r.body.iter().all(|&b| b == b'x'));
}

#[test]
fn body_limits_give_413_and_slow_bodies_408() {
    let up = Upstream::start("a");
    let web = Web::start(&config(&[(up.addr, 1)], ""), &[]);
    // Declared too large: refused before anything reaches the upstream.
    let r = send(
        &web,
        "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    );
    assert_eq!(r.status, 413);
    assert_eq!(up.seen.requests.load(Ordering::SeqCst), 0);

    // Chunked, grows past the limit while streaming.
    let mut req =
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..10 {
        req.extend_from_slice(b"2000\r\n");
        req.extend_from_slice(&[b'z'; 0x2000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = request(web.addr, &req);
    assert_eq!(r.status, 413);

    // Body stalls after 3 of 10 bytes.
    let r = send(
        &web,
        "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(r.status, 408);
    // Same limits on a static location.
    let r = send(
        &web,
        "GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(r.status, 408);
    assert_eq!(get(&web, "/api/echo").status, 200);
}

/// What a raw upstream counts: connections accepted, and connections its `serve` has
/// finished with (and so closed).
#[derive(Clone, Default)]
struct Counts {
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A raw upstream for `n` connections, each handled by `serve` (given its index, from 0
/// in the order they came) on a thread of its own, which closes the connection when
/// `serve` returns.
fn raw_upstream(n: usize, serve: fn(usize, std::net::TcpStream)) -> (SocketAddr, Counts) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Counts::default();
    let seen = counts.clone();
    std::thread::spawn(move || {
        // The connections the test makes; then the thread ends.
        for stream in listener.incoming().take(n) {
            let Ok(s) = stream else { return };
            let i = seen.accepted.fetch_add(1, Ordering::SeqCst);
            let closed = seen.closed.clone();
            std::thread::spawn(move || {
                serve(i, s);
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

/// Reads one request head; false if the connection ended first.
fn read_head(s: &mut std::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// An upstream that answers one request per connection with keep-alive, then closes the
/// connection shortly after (a short upstream `keepalive_timeout`).
fn closing_upstream() -> (SocketAddr, Counts) {
    raw_upstream(4, |_, mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Dropping the stream closes the idle connection.
    })
}

#[test]
fn pooled_connection_closed_by_the_upstream_is_not_used() {
    let (addr, conns) = closing_upstream();
    let web = Web::start(&config(&[(addr, 1)], ""), &[]);
    // Requests without a body (the lean client's pool), then with one (hyper's pool).
    let requests = [
        "GET /api/one HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /api/two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "POST /api/three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        "POST /api/four HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    ];
    for (i, req) in requests.iter().enumerate() {
        let r = send(&web, req);
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
        // The upstream closes the pooled connection meanwhile; nothing polls it while
        // idle, so it is found closed when taken from the pool, and a new one is made.
        // A POST is safe too: it never went out on the dead connection.
        common::wait_for("the upstream to close its connection", || {
            (conns.closed.load(Ordering::SeqCst) == i + 1).then_some(())
        });
        assert_eq!(conns.accepted.load(Ordering::SeqCst), i + 1, "request {i}");
    }
}

/// An upstream that answers the first request on each connection and closes the
/// connection when the second arrives, without answering: the race in which a pooled
/// connection is closed by the upstream just as a request goes out on it.
fn racing_upstream() -> (SocketAddr, Counts) {
    raw_upstream(2, |_, mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            read_head(&mut s);
        }
        // Dropping the stream closes the connection with the request unanswered.
    })
}

#[test]
fn a_get_whose_pooled_connection_closes_unanswered_is_sent_again() {
    second_get_is_sent_again(racing_upstream());
}

/// Two GETs through a one-server group whose upstream leaves the second unanswered on
/// the pooled connection: both are answered, the second on a new connection, and the
/// server is not counted as failed.
fn second_get_is_sent_again((addr, conns): (SocketAddr, Counts)) {
    // One server, so a retry can only be on the same one.
    let web = Web::start(&config(&[(addr, 1)], ""), &[]);
    for i in 0..2 {
        let r = get(&web, "/api/x");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(conns.accepted.load(Ordering::SeqCst), 2);
    // Not counted against the server.
    let log = common::read_string(&web.path("error.log"));
    assert!(!log.contains("upstream request failed"), "{log}");
}

/// An upstream that answers the first request on each connection and resets the
/// connection when the second arrives: the race of the test above, with an upstream
/// that closes with a reset (or a connection that is reset on the way).
fn resetting_upstream() -> (SocketAddr, Counts) {
    raw_upstream(2, |_, mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            // Closing with the next request unread makes the kernel send a reset.
            let _ = s.peek(&mut [0u8; 1]);
        }
    })
}

#[test]
fn a_get_whose_pooled_connection_is_reset_unanswered_is_sent_again() {
    second_get_is_sent_again(resetting_upstream());
}

#[test]
fn the_only_server_of_a_group_is_never_marked_down() {
    // The first connection closes unanswered; the next one answers.
    let (addr, _) = raw_upstream(2, |i, mut s| {
        if read_head(&mut s) && i > 0 {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    // The defaults: one failure would mark a server down for 10 s.
    let web = Web::start(&config(&[(addr, 1)], ""), &[]);
    assert_eq!(get(&web, "/api/x").status, 502);
    let r = get(&web, "/api/x");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let log = common::read_string(&web.path("error.log"));
    assert!(log.contains("upstream request failed"), "{log}");
    assert!(log.contains("\"marked_down\":\"false\""), "{log}");
    assert!(!log.contains("no live upstreams"), "{log}");
}

/// Requests and the answer the upstream gives each, one connection per request: framing
/// that nginx refuses ("upstream sent invalid header"), through the lean client (no
/// body) and hyper's (a POST), then an answer both pass on.
const FRAMING: [(&str, &[u8]); 12] = [
    (
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "HEAD /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    ),
    (
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ),
    (
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ),
    (
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    ),
    (
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    ),
    (
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ),
    (
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    ),
    (
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    ),
];

#[test]
fn answers_framed_two_ways_give_502_through_either_client() {
    let (addr, conns) = raw_upstream(FRAMING.len(), |i, mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(FRAMING[i].1);
        }
    });
    let web = Web::start(&config(&[(addr, 1)], "max_fails = 0"), &[]);
    let (bad, good) = FRAMING.split_at(FRAMING.len() - 2);
    for (i, (req, _)) in bad.iter().enumerate() {
        let r = send(&web, req);
        assert_eq!(r.status, 502, "{i}: {req}");
        if !req.starts_with("HEAD") {
            assert_eq!(r.text(), "bad gateway\n", "{i}: {req}");
        }
    }
    for (req, _) in good {
        let r = send(&web, req);
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{req}");
    }
    // One connection per request: none was reused after a refused answer.
    assert_eq!(conns.accepted.load(Ordering::SeqCst), FRAMING.len());
    let log = common::read_string(&web.path("error.log"));
    assert_eq!(
        log.matches("invalid answer from the upstream").count(),
        bad.len(),
        "{log}"
    );
}

#[test]
fn x_forwarded_for_lines_are_joined_before_the_client_is_added() {
    let up = Upstream::start("a");
    let web = Web::start(&config(&[(up.addr, 1)], ""), &[]);
    // Without a body (the lean client) and with one (hyper's).
    for (start, body) in [
        ("GET /api/echo HTTP/1.1\r\nHost: x\r\n", ""),
        (
            "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n",
            "hi",
        ),
    ] {
        let r = send(
            &web,
            &format!(
                "{start}X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-For: 198.51.100.1, 203.0.113.9\r\n\
                 Connection: close\r\n\r\n{body}"
            ),
        );
        assert_eq!(r.status, 200);
        let echo = r.text();
        assert!(
            echo.lines()
                .any(|l| l == "x-forwarded-for: 192.0.2.7, 198.51.100.1, 203.0.113.9, 127.0.0.1"),
            "{echo}"
        );
        assert_eq!(echo.matches("x-forwarded-for:").count(), 1, "{echo}");
    }
}

#[test]
fn a_request_without_host_is_forwarded_with_the_group_name() {
    let up = Upstream::start("a");
    let web = Web::start(&config(&[(up.addr, 1)], ""), &[]);
    // HTTP/1.0 allows a request without Host; the upstream hears HTTP/1.1, which does not.
    for req in [
        "GET /api/echo HTTP/1.0\r\n\r\n",
        "POST /api/echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        let r = send(&web, req);
        assert_eq!(r.status, 200, "{req}");
        let echo = r.text();
        assert!(echo.lines().any(|l| l == "host: app"), "{req}: {echo}");
        assert_eq!(echo.matches("host:").count(), 1, "{echo}");
    }
}

/// An invalid answer is the upstream's fault but, as with nginx's default
/// `proxy_next_upstream error timeout` (no `invalid_header`), the request is not sent to
/// the next server: the client gets the 502, through either client.
#[test]
fn an_invalid_answer_is_not_retried_on_the_next_server() {
    let (bad, bad_conns) = raw_upstream(4, |_, mut s| {
        if read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello");
        }
    });
    let (good, good_conns) = raw_upstream(4, |_, mut s| {
        if read_head(&mut s) {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    // Never marked down, so round-robin alternates and each pair of requests meets both.
    let web = Web::start(&config(&[(bad, 1), (good, 1)], "max_fails = 0"), &[]);
    // GET goes through the lean client, a PUT without a body through hyper's; both
    // would be replayable.
    for req in [
        "GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "PUT /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ] {
        let mut statuses = [send(&web, req).status, send(&web, req).status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 502], "{req}");
    }
    assert_eq!(bad_conns.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(good_conns.accepted.load(Ordering::SeqCst), 2);
}
