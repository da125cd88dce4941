//! Malformed and hostile requests over raw TCP: each gets the right 4xx, and the server
//! keeps serving well-formed requests afterwards.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{Upstream, Web, read_resp, request};

fn start(up: &Upstream) -> Web {
    let config = format!(
        r#"
[log]
access = "{{dir}}/access.log"
error = "{{dir}}/error.log"

[limits]
max_body_size = "1k"
max_header_size = "8k"
max_headers = 50
header_timeout = "1s"
body_timeout = "1s"
drain_timeout = "2s"

[upstream.app]
server = [{{ addr = "{}" }}]

[[server]]
[[server.location]]
prefix = "/"
root = "{{dir}}/www"
[[server.location]]
prefix = "/api/"
proxy = "app"
"#,
        up.addr
    );
    Web::start(&config, &[("www/index.html", b"ok\n")])
}

fn chunked(path: &str, body: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
        .into_bytes()
}

fn chunked_get(path: &str, body: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
        .into_bytes()
}

fn get_with(headers: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\n{headers}\r\n").into_bytes()
}

fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let big_header = format!("Host: x\r\nX-Big: {}\r\n", "a".repeat(10_000));
    let many_headers: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000));
    let too_big_chunked: String = (0..3)
        .map(|_| format!("200\r\n{}\r\n", "z".repeat(0x200)))
        .collect::<String>()
        + "0\r\n\r\n";
    vec![
        // Request line.
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("method only", b"GET\r\n\r\n".to_vec(), 400),
        ("HTTP/0.9 style", b"GET /\r\n\r\n".to_vec(), 400),
        ("unknown version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("lowercase protocol", b"GET / http/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("extra token", b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("bad method token", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("NUL in target", b"GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("long URI", long_uri.into_bytes(), 431),
        // Headers.
        ("header without colon", get_with("Host: x\r\nNoColon\r\n"), 400),
        ("space in header name", get_with("Host: x\r\nBad Header: y\r\n"), 400),
        ("space before colon", get_with("Host : x\r\n"), 400),
        ("bad char in header name", get_with("Host: x\r\nX(: y\r\n"), 400),
        ("control char in value", get_with("Host: x\r\nX: a\x01b\r\n"), 400),
        ("NUL in value", get_with("Host: x\r\nX: a\0b\r\n"), 400),
        ("obs-fold", get_with("Host: x\r\nX: a\r\n  folded\r\n"), 400),
        ("missing Host", get_with(""), 400),
        ("two Hosts", get_with("Host: a\r\nHost: b\r\n"), 400),
        ("oversized header", get_with(&big_header), 431),
        ("too many headers", get_with(&format!("Host: x\r\n{many_headers}")), 431),
        ("unknown expectation", get_with("Host: x\r\nExpect: teapot\r\n"), 417),
        // Framing.
        ("non-numeric Content-Length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(), 400),
        ("negative Content-Length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("plus-signed Content-Length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc".to_vec(), 400),
        ("conflicting Content-Lengths", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(), 400),
        ("Transfer-Encoding not ending in chunked", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        ("invalid chunk size (proxy)", chunked("/api/x", "zz\r\nabc\r\n0\r\n\r\n"), 400),
        ("invalid chunk size (static GET)", chunked_get("/", "zz\r\nabc\r\n0\r\n\r\n"), 400),
        ("chunk size overflow", chunked("/api/x", "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), 400),
        ("chunk without CRLF after data", chunked("/api/x", "3\r\nabcXY0\r\n\r\n"), 400),
        ("chunk size with garbage", chunked("/api/x", "3 x\r\nabc\r\n0\r\n\r\n"), 400),
        // Limits.
        ("Content-Length too large", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec(), 413),
        ("chunked body too large", chunked("/api/x", &too_big_chunked), 413),
        ("slow body", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc".to_vec(), 408),
        ("slowloris head", b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a".to_vec(), 408),
        // Paths and methods.
        ("dot-dot traversal", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("encoded traversal", b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("encoded NUL", b"GET /index.html%00.txt HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("bad percent-encoding", b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("POST to static", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 405),
    ]
}

#[test]
fn each_malformed_request_gets_its_4xx_and_the_server_keeps_serving() {
    let up = Upstream::start("a");
    let web = start(&up);
    let cases = cases();
    assert!(cases.len() >= 30, "the issue asks for at least 30 cases");
    let mut failures = Vec::new();
    for (name, req, want) in &cases {
        let r = request(web.addr, req);
        if r.status != *want {
            failures.push(format!("{name}: got {} want {want}", r.status));
        }
        let ok = web.get("/", &[]);
        assert_eq!(
            (ok.status, ok.text().as_str()),
            (200, "ok\n"),
            "after {name}"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(web.get("/api/echo", &[]).status, 200);
}

#[test]
fn malformed_request_after_a_good_one_on_the_same_connection() {
    let up = Upstream::start("a");
    let web = start(&up);
    let mut s = TcpStream::connect(web.addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        .unwrap();
    // The server answers both, then closes because of the garbage.
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut all).unwrap();
    let (first, used) = common::parse_resp(&all, false).expect("first response");
    let (second, _) = common::parse_resp(&all[used..], false).expect("second response");
    assert_eq!((first.status, first.text().as_str()), (200, "ok\n"));
    assert_eq!(second.status, 400);
}

#[test]
fn idle_keep_alive_connection_is_closed_without_a_408() {
    let up = Upstream::start("a");
    let web = start(&up);
    let mut s = TcpStream::connect(web.addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut s, false).status, 200);
    // Now idle: after header_timeout the server closes, saying nothing.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn slowloris_is_logged_as_408() {
    let up = Upstream::start("a");
    let web = start(&up);
    let r = request(web.addr, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    let log = common::wait_for("408 in access log", || {
        let t = common::read_string(&web.path("access.log"));
        t.contains("\"\" 408 0").then_some(t)
    });
    assert!(log.starts_with("127.0.0.1 - - ["), "{log}");
}

/// nginx escapes each byte of a header it logs: a raw `\xE9` in User-Agent is logged as
/// `\xE9`, not as the three bytes of U+FFFD; a Referer sent empty is `""`.
#[test]
fn access_log_escapes_raw_header_bytes_as_nginx_does() {
    let up = Upstream::start("a");
    let web = start(&up);
    let r = request(
        web.addr,
        b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Agent: a\xe9b\"\r\nReferer: \r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let log = common::wait_for("access log line", || {
        let t = common::read_string(&web.path("access.log"));
        t.contains("/index.html").then_some(t)
    });
    let line = log.lines().find(|l| l.contains("/index.html")).unwrap();
    assert!(
        line.ends_with("\"GET /index.html HTTP/1.1\" 200 3 \"\" \"a\\xE9b\\x22\""),
        "{line}"
    );
}

/// A client that closes before its answer is logged with nginx's 499 and 0 bytes, not
/// left out of the access log.
#[test]
fn request_aborted_by_the_client_is_logged_as_499() {
    let up = Upstream::start("a");
    let web = start(&up);
    let mut s = TcpStream::connect(web.addr).unwrap();
    s.write_all(b"GET /api/gate HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    common::wait_for("request at upstream", || {
        (up.seen.requests.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    });
    drop(s);
    let log = common::wait_for("499 in access log", || {
        let t = common::read_string(&web.path("access.log"));
        t.contains("/api/gate").then_some(t)
    });
    assert!(
        log.contains("\"GET /api/gate HTTP/1.1\" 499 0 \"-\" \"-\""),
        "{log}"
    );
    up.release(1);
}
