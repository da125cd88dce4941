//! How a request finds its server and location, as nginx finds them: the target's
//! authority over Host, Host values nginx refuses, locations matched on the normalised
//! path, TRACE refused, and the static answers that depend on the path's exact form
//! (the directory redirect, a file named with a trailing slash).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Upstream, Web, request};

fn start(up: &Upstream) -> Web {
    let config = format!(
        r#"
[limits]
max_body_size = "1k"

[upstream.app]
server = [{{ addr = "{}" }}]

[[server]]
names = ["a.test"]
default = true
[[server.location]]
prefix = "/"
root = "{{dir}}/a"
[[server.location]]
prefix = "/api/"
proxy = "app"

[[server]]
names = ["b.test"]
[[server.location]]
prefix = "/"
root = "{{dir}}/b"
"#,
        up.addr
    );
    Web::start(
        &config,
        &[
            ("a/index.html", b"site a\n"),
            ("a/alpha.txt", b"alpha\n"),
            ("a/dir/index.html", b"dir index\n"),
            ("a/my dir/index.html", b"spaced\n"),
            ("b/index.html", b"site b\n"),
        ],
    )
}

fn get(web: &Web, target: &str, host: &str) -> common::Resp {
    request(
        web.addr,
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn the_targets_authority_names_the_server_whatever_host_says() {
    let up = Upstream::start("app");
    let web = start(&up);
    assert_eq!(get(&web, "/", "b.test").text(), "site b\n");
    // Absolute-form: RFC 9112 §3.2.2, Host is ignored.
    assert_eq!(get(&web, "http://b.test/", "a.test").text(), "site b\n");
    assert_eq!(get(&web, "http://a.test/", "b.test").text(), "site a\n");
    // And the proxy is chosen by it too, with the authority sent on as Host.
    let r = get(&web, "http://a.test/api/echo", "b.test");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\nhost: a.test\n"), "{}", r.text());
}

#[test]
fn host_values_nginx_refuses_are_a_400_and_the_server_keeps_serving() {
    let up = Upstream::start("app");
    let web = start(&up);
    for host in [
        "a b",
        "a.test/../x",
        "a..test",
        "a\\b",
        "",
        ":80",
        "a.test:80/x",
    ] {
        let r = get(&web, "/", host);
        assert_eq!(r.status, 400, "Host: {host:?}");
        let r = get(&web, "/api/echo", host);
        assert_eq!(r.status, 400, "Host: {host:?} (proxy)");
        assert_eq!(get(&web, "/", "a.test").text(), "site a\n");
    }
    assert_eq!(
        up.seen.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // A trailing dot and a port are fine.
    assert_eq!(get(&web, "/", "b.test.:8080").text(), "site b\n");
}

#[test]
fn locations_match_the_normalised_path_and_the_upstream_gets_the_clients_form() {
    let up = Upstream::start("app");
    let web = start(&up);
    // Out of /api/ once normalised: the static location serves it.
    let r = get(&web, "/api/../alpha.txt", "a.test");
    assert_eq!((r.status, r.text().as_str()), (200, "alpha\n"));
    let r = get(&web, "/api/x/../../alpha.txt", "a.test");
    assert_eq!((r.status, r.text().as_str()), (200, "alpha\n"));
    assert_eq!(
        up.seen.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Into /api/ once normalised: proxied, the target as the client wrote it.
    for target in ["//api/echo", "/%61pi/echo", "/static/../api/echo"] {
        let r = get(&web, target, "a.test");
        assert_eq!(r.status, 200, "{target}");
        assert!(
            r.text().contains(&format!("\npath: {target}\n")),
            "{target}: {}",
            r.text()
        );
    }
    // Above the root: refused, as nginx does.
    assert_eq!(get(&web, "/api/../../x", "a.test").status, 400);
}

#[test]
fn trace_is_refused_before_any_location() {
    let up = Upstream::start("app");
    let web = start(&up);
    for target in ["/", "/api/echo"] {
        let r = request(
            web.addr,
            format!("TRACE {target} HTTP/1.1\r\nHost: a.test\r\nCookie: s=1\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 405, "{target}");
        assert!(!r.text().contains("s=1"), "{}", r.text());
    }
    assert_eq!(up.seen.method("TRACE"), 0);
}

#[test]
fn the_directory_redirect_points_into_this_site() {
    let up = Upstream::start("app");
    let web = start(&up);
    for (target, want) in [
        ("/dir", "/dir/"),
        ("/dir?x=1", "/dir/?x=1"),
        ("//dir", "/dir/"),
        // Would be `//evil.example/../dir/`: a redirect to another site.
        ("//evil.example/../dir", "/dir/"),
        ("/./dir", "/dir/"),
        ("/my%20dir", "/my%20dir/"),
    ] {
        let r = get(&web, target, "a.test");
        assert_eq!(r.status, 301, "{target}");
        assert_eq!(r.header("location"), Some(want), "{target}");
    }
    assert_eq!(get(&web, "/my%20dir/", "a.test").text(), "spaced\n");
}

#[test]
fn a_file_named_as_a_directory_is_not_found() {
    let up = Upstream::start("app");
    let web = start(&up);
    assert_eq!(get(&web, "/alpha.txt", "a.test").text(), "alpha\n");
    // Twice: the second time the file is in the cache.
    for _ in 0..2 {
        assert_eq!(get(&web, "/alpha.txt/", "a.test").status, 404);
        assert_eq!(get(&web, "/alpha.txt", "a.test").text(), "alpha\n");
    }
}

#[test]
fn several_if_none_match_lines_are_one_list() {
    let up = Upstream::start("app");
    let web = start(&up);
    let etag = get(&web, "/alpha.txt", "a.test")
        .header("etag")
        .expect("etag")
        .to_owned();
    let r = request(
        web.addr,
        format!(
            "GET /alpha.txt HTTP/1.1\r\nHost: a.test\r\nIf-None-Match: \"other\"\r\n\
             If-None-Match: {etag}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 304);
}

#[test]
fn an_oversized_upload_to_a_static_location_is_refused_before_100_continue() {
    let up = Upstream::start("app");
    let web = start(&up);
    let mut s = TcpStream::connect(web.addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    s.write_all(
        b"PUT /alpha.txt HTTP/1.1\r\nHost: a.test\r\nContent-Length: 9000\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .unwrap();
    // The first answer is the 413, not a `100 Continue` inviting the upload.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before an answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}
