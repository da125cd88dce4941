//! Static content over real sockets: validators, the conditional and range matrix,
//! precompressed and on-the-fly compression, index / redirect / listing / error pages,
//! and confinement of paths and symlinks to the root.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use common::{Web, curl, read_resp, request};

const ALPHA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BR_BYTES: &[u8] = b"pretend-brotli-bytes";

fn large() -> Vec<u8> {
    (0..(1usize << 20)).map(|i| (i * 7 % 251) as u8).collect()
}

fn css() -> Vec<u8> {
    (0..200)
        .map(|i| format!(".rule-{i:04} {{ color: #{i:06x}; }}\n"))
        .collect::<String>()
        .into_bytes()
}

fn js() -> Vec<u8> {
    b"function hello() { return 'hello from app.js'; }\n".repeat(40)
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

const CONFIG: &str = r#"
[log]
access = "{dir}/access.log"
error = "{dir}/error.log"

[[server]]
error_pages = { "404" = "{dir}/errors/404.html", "403" = "{dir}/errors/403.html" }

[[server.location]]
prefix = "/"
root = "{dir}/www"
cache_control = "public, max-age=60"

[[server.location]]
prefix = "/listing/"
root = "{dir}"
autoindex = true
"#;

/// A server with the file cache on (the default), started once the files are old enough
/// to be cached, so every request after the first for a file is a cache hit.
fn start() -> Web {
    let web = start_with(CONFIG);
    std::thread::sleep(web_tier::file_cache::SETTLE + Duration::from_millis(20));
    web
}

/// The same site with the cache off: every request opens and reads the file.
fn start_uncached() -> Web {
    start_with(&format!("{CONFIG}\n[file_cache]\nmax_size = 0\n"))
}

/// Both, for the tests that must hold either way.
fn both() -> [Web; 2] {
    [start(), start_uncached()]
}

fn start_with(config: &str) -> Web {
    let large = large();
    let css = css();
    let js = js();
    let js_gz = gz(&js);
    let png: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
    Web::start(
        config,
        &[
            ("www/alpha.txt", ALPHA),
            ("www/empty.txt", b""),
            ("www/index.html", b"<h1>home</h1>\n"),
            ("www/big.css", &css),
            ("www/app.js", &js),
            ("www/app.js.gz", &js_gz),
            ("www/app.js.br", BR_BYTES),
            ("www/image.png", &png),
            ("www/large.bin", &large),
            ("www/sub/index.html", b"<h1>sub</h1>\n"),
            ("www/noindex/file.txt", b"x"),
            ("listing/dir/one.txt", b"1"),
            ("listing/dir/two & <three>.txt", b"2"),
            ("errors/404.html", b"<h1>custom not found</h1>\n"),
            ("errors/403.html", b"<h1>custom forbidden</h1>\n"),
            ("outside/secret.txt", b"top secret\n"),
        ],
    )
}

fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

#[test]
fn full_get_has_validators_type_and_cache_control() {
    for web in both() {
        let r = web.get("/alpha.txt", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, ALPHA);
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("content-length"), Some("36"));
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
        let etag = r.header("etag").unwrap();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong etag: {etag}"
        );
        let lm = httpdate::parse_http_date(r.header("last-modified").unwrap()).unwrap();
        let mtime = std::fs::metadata(web.path("www/alpha.txt"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(date(lm), date(mtime));
        // MIME by extension.
        assert_eq!(
            web.get("/big.css", &[]).header("content-type"),
            Some("text/css")
        );
        assert_eq!(
            web.get("/image.png", &[]).header("content-type"),
            Some("image/png")
        );
        assert_eq!(
            web.get("/large.bin", &[]).header("content-type"),
            Some("application/octet-stream")
        );
    }
}

#[test]
fn conditional_matrix() {
    for web in both() {
        let first = web.get("/alpha.txt", &[]);
        let etag = first.header("etag").unwrap().to_owned();
        let lm = first.header("last-modified").unwrap().to_owned();
        let lm_time = httpdate::parse_http_date(&lm).unwrap();
        let older = date(lm_time - Duration::from_secs(3600));
        let newer = date(lm_time + Duration::from_secs(3600));
        let weak = format!("W/{etag}");
        let list = format!("\"nope\", {etag}");
        let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
            (vec![("If-None-Match", &etag)], 304),
            (vec![("If-None-Match", &weak)], 304),
            (vec![("If-None-Match", &list)], 304),
            (vec![("If-None-Match", "*")], 304),
            (vec![("If-None-Match", "\"nope\"")], 200),
            (vec![("If-Modified-Since", &lm)], 304),
            (vec![("If-Modified-Since", &newer)], 304),
            (vec![("If-Modified-Since", &older)], 200),
            (vec![("If-Modified-Since", "not a date")], 200),
            // If-None-Match wins over If-Modified-Since.
            (
                vec![("If-None-Match", "\"nope\""), ("If-Modified-Since", &lm)],
                200,
            ),
            (vec![("If-Match", &etag)], 200),
            (vec![("If-Match", "*")], 200),
            (vec![("If-Match", "\"nope\"")], 412),
            (vec![("If-Match", &weak)], 412),
            (vec![("If-Unmodified-Since", &older)], 412),
            (vec![("If-Unmodified-Since", &lm)], 200),
            // If-Match wins over If-Unmodified-Since.
            (
                vec![("If-Match", &etag), ("If-Unmodified-Since", &older)],
                200,
            ),
        ];
        for (headers, want) in cases {
            let r = web.get("/alpha.txt", &headers);
            assert_eq!(r.status, want, "{headers:?}");
            match want {
                304 => {
                    assert!(r.body.is_empty());
                    assert_eq!(
                        r.header("etag"),
                        Some(etag.as_str()),
                        "304 carries the etag"
                    );
                    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
                }
                200 => assert_eq!(r.body, ALPHA),
                _ => assert_eq!(r.text(), "precondition failed\n"),
            }
        }
    }
}

/// An entity-tag may hold bytes beyond ASCII (obs-text). Such a tag never matches ours,
/// but the field is there: `If-Match` fails with 412, and `If-None-Match` still keeps
/// `If-Modified-Since` from being evaluated (they used to be taken for absent).
#[test]
fn non_ascii_entity_tags_are_conditions_not_absent_fields() {
    for web in both() {
        let lm = web
            .get("/alpha.txt", &[])
            .header("last-modified")
            .unwrap()
            .to_owned();
        let ask = |field: &str, extra: &str| {
            let mut req =
                format!("GET /alpha.txt HTTP/1.1\r\nHost: localhost\r\n{extra}").into_bytes();
            req.extend_from_slice(field.as_bytes());
            req.extend_from_slice(b": \"\xe9t\xe9\"\r\nConnection: close\r\n\r\n");
            request(web.addr, &req)
        };
        let r = ask("If-Match", "");
        assert_eq!(r.status, 412);
        assert_eq!(r.text(), "precondition failed\n");
        let r = ask("If-None-Match", &format!("If-Modified-Since: {lm}\r\n"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, ALPHA);
    }
}

fn multipart(r: &common::Resp) -> Vec<(String, Vec<u8>)> {
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content-type {ct}"));
    let delim = format!("--{boundary}");
    let body = &r.body;
    let mut parts = Vec::new();
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut pos = find(body, delim.as_bytes(), 0).unwrap() + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            assert_eq!(&body[pos..], b"--\r\n");
            break;
        }
        assert!(body[pos..].starts_with(b"\r\n"));
        let head_end = find(body, b"\r\n\r\n", pos).unwrap();
        let head = String::from_utf8(body[pos + 2..head_end].to_vec()).unwrap();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_owned();
        let next = find(body, format!("\r\n{delim}").as_bytes(), head_end).unwrap();
        parts.push((range, body[head_end + 4..next].to_vec()));
        pos = next + 2 + delim.len();
    }
    parts
}

#[test]
fn range_matrix() {
    for web in both() {
        let full = web.get("/alpha.txt", &[]);
        let etag = full.header("etag").unwrap().to_owned();
        let lm = full.header("last-modified").unwrap().to_owned();
        let older = date(httpdate::parse_http_date(&lm).unwrap() - Duration::from_secs(10));

        let single: Vec<(&str, &str, &[u8])> = vec![
            ("bytes=0-4", "bytes 0-4/36", b"01234"),
            ("bytes=10-", "bytes 10-35/36", b"abcdefghijklmnopqrstuvwxyz"),
            ("bytes=-3", "bytes 33-35/36", b"xyz"),
            ("bytes=30-1000", "bytes 30-35/36", b"uvwxyz"),
            ("bytes=-100", "bytes 0-35/36", ALPHA),
            // Overlapping ranges are merged into one.
            ("bytes=0-4,2-9", "bytes 0-9/36", b"0123456789"),
        ];
        for (range, content_range, body) in single {
            let r = web.get("/alpha.txt", &[("Range", range)]);
            assert_eq!(r.status, 206, "{range}");
            assert_eq!(r.header("content-range"), Some(content_range), "{range}");
            assert_eq!(r.body, body, "{range}");
            assert_eq!(
                r.header("content-length"),
                Some(body.len().to_string().as_str())
            );
        }

        for range in ["bytes=36-", "bytes=100-200", "bytes=-0"] {
            let r = web.get("/alpha.txt", &[("Range", range)]);
            assert_eq!(r.status, 416, "{range}");
            assert_eq!(r.header("content-range"), Some("bytes */36"));
        }
        // Syntactically invalid or foreign units: ignored, full 200.
        for range in ["bytes=5-2", "bytes=a-b", "lines=1-2", "bytes"] {
            let r = web.get("/alpha.txt", &[("Range", range)]);
            assert_eq!(r.status, 200, "{range}");
            assert_eq!(r.body, ALPHA);
        }

        let r = web.get("/alpha.txt", &[("Range", "bytes=0-2, 10-12, -2")]);
        assert_eq!(r.status, 206);
        assert_eq!(
            multipart(&r),
            vec![
                ("bytes 0-2/36".to_owned(), b"012".to_vec()),
                ("bytes 10-12/36".to_owned(), b"abc".to_vec()),
                ("bytes 34-35/36".to_owned(), b"yz".to_vec()),
            ]
        );
        assert_eq!(
            r.header("content-length").unwrap(),
            r.body.len().to_string()
        );

        // If-Range: a current validator gets the range, a stale one the full 200.
        let cases: Vec<(&str, u16)> =
            vec![(&etag, 206), ("\"stale\"", 200), (&lm, 206), (&older, 200)];
        for (if_range, want) in cases {
            let r = web.get(
                "/alpha.txt",
                &[("Range", "bytes=0-4"), ("If-Range", if_range)],
            );
            assert_eq!(r.status, want, "If-Range {if_range}");
            assert_eq!(r.body, if want == 206 { &ALPHA[..5] } else { ALPHA });
        }
        let r = web.get(
            "/alpha.txt",
            &[("Range", "bytes=0-1,5-6"), ("If-Range", "\"stale\"")],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, ALPHA);
    }
}

/// Numerals too large for 64 bits are valid positions past any end (RFC 9110 §14.1.1):
/// a huge first-pos is a 416 (as nginx), a huge last-pos or suffix-length runs to the end
/// (nginx: 416). They used to make the header ignored.
#[test]
fn huge_range_numerals_are_positions_past_the_end() {
    let huge = "99999999999999999999999";
    for web in both() {
        let r = web.get("/alpha.txt", &[("Range", &format!("bytes={huge}-"))]);
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some("bytes */36"));
        for range in [format!("bytes=0-{huge}"), format!("bytes=-{huge}")] {
            let r = web.get("/alpha.txt", &[("Range", &range)]);
            assert_eq!(r.status, 206, "{range}");
            assert_eq!(r.header("content-range"), Some("bytes 0-35/36"), "{range}");
            assert_eq!(r.body, ALPHA, "{range}");
        }
        let r = web.get("/alpha.txt", &[("Range", &format!("bytes=30-{huge}, 0-1"))]);
        assert_eq!(
            multipart(&r),
            vec![
                ("bytes 30-35/36".to_owned(), b"uvwxyz".to_vec()),
                ("bytes 0-1/36".to_owned(), b"01".to_vec()),
            ]
        );
    }
}

/// An empty file ignores Range and answers its empty 200, as nginx does (RFC 9110 §14.2
/// lets a server ignore Range); a `bytes=0-` probe used to get a 416.
#[test]
fn ranges_of_an_empty_file_get_the_empty_200() {
    for web in both() {
        for range in ["bytes=0-", "bytes=0-0", "bytes=-1"] {
            let r = web.get("/empty.txt", &[("Range", range)]);
            assert_eq!(r.status, 200, "{range}");
            assert_eq!(r.header("content-length"), Some("0"), "{range}");
            assert_eq!(r.header("content-range"), None, "{range}");
            assert!(r.body.is_empty());
        }
    }
}

#[test]
fn large_file_streams_full_and_ranges() {
    for web in both() {
        let data = large();
        let r = web.get("/large.bin", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("1048576"));
        assert!(r.body == data, "streamed body differs");

        let r = web.get("/large.bin", &[("Range", "bytes=100000-300000")]);
        assert_eq!(r.status, 206);
        assert!(r.body == data[100_000..=300_000]);

        let r = web.get("/large.bin", &[("Range", "bytes=0-99999,500000-700000,-5")]);
        assert_eq!(r.status, 206);
        let parts = multipart(&r);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].0, "bytes 0-99999/1048576");
        assert!(parts[0].1 == data[..100_000]);
        assert_eq!(parts[1].0, "bytes 500000-700000/1048576");
        assert!(parts[1].1 == data[500_000..=700_000]);
        assert_eq!(parts[2].0, "bytes 1048571-1048575/1048576");
        assert!(parts[2].1 == data[1_048_571..]);
    }
}

#[test]
fn head_matches_get_without_body_on_a_kept_alive_connection() {
    for web in both() {
        let mut s = TcpStream::connect(web.addr).unwrap();
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        s.write_all(b"HEAD /big.css HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let head = read_resp(&mut s, true);
        s.write_all(b"GET /alpha.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let get = read_resp(&mut s, false);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(css().len().to_string().as_str())
        );
        assert_eq!(head.header("content-type"), Some("text/css"));
        assert!(head.header("etag").is_some());
        // The GET on the same connection parses cleanly: HEAD sent no body bytes.
        assert_eq!(get.status, 200);
        assert_eq!(get.body, ALPHA);
    }
}

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    for web in both() {
        let js = js();
        let r = web.get("/app.js", &[("Accept-Encoding", "gzip, br")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("br"));
        assert_eq!(r.body, BR_BYTES);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert_eq!(r.header("content-type"), Some("text/javascript"));
        let br_tag = r.header("etag").unwrap().to_owned();

        let r = web.get("/app.js", &[("Accept-Encoding", "gzip, br;q=0")]);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(gunzip(&r.body), js);
        let gz_tag = r.header("etag").unwrap().to_owned();

        let r = web.get("/app.js", &[]);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.body, js);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let id_tag = r.header("etag").unwrap().to_owned();
        assert!(br_tag != gz_tag && gz_tag != id_tag && br_tag != id_tag);

        // Each representation revalidates against its own tag.
        let r = web.get(
            "/app.js",
            &[("Accept-Encoding", "br"), ("If-None-Match", &br_tag)],
        );
        assert_eq!(r.status, 304);
        let r = web.get(
            "/app.js",
            &[("Accept-Encoding", "br"), ("If-None-Match", &id_tag)],
        );
        assert_eq!(r.status, 200);

        // A range request is answered from the identity bytes.
        let r = web.get(
            "/app.js",
            &[("Accept-Encoding", "br, gzip"), ("Range", "bytes=0-7")],
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.body, b"function");
    }
}

#[test]
fn on_the_fly_gzip_for_large_text_only() {
    for web in both() {
        let css = css();
        let r = web.get("/big.css", &[("Accept-Encoding", "gzip")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let tag = r.header("etag").unwrap().to_owned();
        assert!(
            tag.starts_with("W/\""),
            "on-the-fly gzip has a weak etag: {tag}"
        );
        assert!(r.body.len() < css.len());
        assert_eq!(gunzip(&r.body), css);
        assert_eq!(
            r.header("content-length").unwrap(),
            r.body.len().to_string()
        );

        let r = web.get(
            "/big.css",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &tag)],
        );
        assert_eq!(r.status, 304);

        // Below the size threshold, not compressed.
        let r = web.get("/alpha.txt", &[("Accept-Encoding", "gzip")]);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.body, ALPHA);
        // Not a text type.
        let r = web.get("/image.png", &[("Accept-Encoding", "gzip")]);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.header("vary"), None);
        // Not accepted.
        let r = web.get("/big.css", &[("Accept-Encoding", "identity")]);
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.body, css);
        // Ranges are served from the identity bytes.
        let r = web.get(
            "/big.css",
            &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-5")],
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &css[..6]);
    }
}

#[test]
fn curl_matrix() {
    for web in both() {
        let css = css();
        let url = web.url("/big.css");

        let r = curl(&["--compressed", &url]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.body, css, "curl decoded the gzip body to the file");

        let r = curl(&[&url]);
        let etag = r.header("etag").unwrap().to_owned();
        let lm = r.header("last-modified").unwrap().to_owned();
        assert_eq!(r.body, css);

        let r = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        let r = curl(&["-z", &lm, &url]);
        assert_eq!(r.status, 304);
        let r = curl(&["-H", "If-Match: \"other\"", &url]);
        assert_eq!(r.status, 412);

        let r = curl(&["-r", "0-9", &url]);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &css[..10]);
        let r = curl(&["-r", "0-9,20-29", &url]);
        assert_eq!(r.status, 206);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("multipart/byteranges")
        );
        let r = curl(&["-r", "0-9", "-H", &format!("If-Range: {etag}"), &url]);
        assert_eq!(r.status, 206);
        let r = curl(&["-r", "0-9", "-H", "If-Range: \"old\"", &url]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, css);
        let r = curl(&["-r", "99999-", &url]);
        assert_eq!(r.status, 416);

        let r = curl(&["-I", &url]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-length"),
            Some(css.len().to_string().as_str())
        );
    }
}

#[test]
fn index_redirect_listing_and_error_pages() {
    for web in both() {
        let r = web.get("/", &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
        assert_eq!(r.header("content-type"), Some("text/html"));

        let r = web.get("/sub?x=1", &[]);
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some("/sub/?x=1"));
        let r = web.get("/sub/", &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "<h1>sub</h1>\n"));

        // No index and no autoindex: 403 with the configured page.
        let r = web.get("/noindex/", &[]);
        assert_eq!(r.status, 403);
        assert_eq!(r.text(), "<h1>custom forbidden</h1>\n");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));

        let r = web.get("/missing.txt", &[]);
        assert_eq!(r.status, 404);
        assert_eq!(r.text(), "<h1>custom not found</h1>\n");

        let r = web.get("/listing/dir/", &[]);
        assert_eq!(r.status, 200);
        let html = r.text();
        assert!(html.contains("<a href=\"one.txt\">one.txt</a>"), "{html}");
        assert!(
            html.contains(
                "<a href=\"two%20%26%20%3Cthree%3E.txt\">two &amp; &lt;three&gt;.txt</a>"
            ),
            "{html}"
        );
    }
}

#[test]
fn paths_and_symlinks_are_confined_to_the_root() {
    for web in both() {
        let www = web.path("www");
        std::os::unix::fs::symlink("../outside", www.join("escape")).unwrap();
        std::os::unix::fs::symlink("../outside/secret.txt", www.join("secret-link.txt")).unwrap();
        std::os::unix::fs::symlink("alpha.txt", www.join("inside-link.txt")).unwrap();
        std::os::unix::fs::symlink(www.join("alpha.txt"), www.join("absolute-link.txt")).unwrap();
        std::os::unix::fs::symlink("/etc", www.join("etc")).unwrap();

        let cases: Vec<(&[u8], u16)> = vec![
            (b"/../outside/secret.txt", 400),
            (b"/sub/../../outside/secret.txt", 400),
            (b"/%2e%2e/outside/secret.txt", 400),
            (b"/%2E%2E/outside/secret.txt", 400),
            (b"/sub/%2e%2e/alpha.txt", 400),
            (b"/.%2e/outside/secret.txt", 400),
            (b"/..%2foutside/secret.txt", 400),
            (b"/alpha.txt%00.html", 400),
            (b"/alpha%zz.txt", 400),
            (b"/escape/secret.txt", 403),
            (b"/secret-link.txt", 403),
            (b"/etc/passwd", 403),
            (b"/absolute-link.txt", 403),
            (b"/inside-link.txt", 200),
            (b"/sub/../alpha.txt", 200),
            (b"/./alpha.txt", 200),
            (b"//alpha.txt", 200),
        ];
        for (path, want) in cases {
            let mut req = b"GET ".to_vec();
            req.extend_from_slice(path);
            req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let r = request(web.addr, &req);
            assert_eq!(r.status, want, "{}", String::from_utf8_lossy(path));
            assert!(!r.text().contains("top secret"));
            if want == 200 {
                assert_eq!(r.body, ALPHA);
            }
        }
    }
}

#[test]
fn non_get_methods_are_405_with_allow() {
    let web = start();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let req = format!(
            "{method} /alpha.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        );
        let r = request(web.addr, req.as_bytes());
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn access_log_is_nginx_combined() {
    let web = start();
    let r = web.get(
        "/alpha.txt",
        &[("Referer", "http://ref/"), ("User-Agent", "tester \"1\"")],
    );
    assert_eq!(r.status, 200);
    let log = common::wait_for("access log line", || {
        let t = common::read_string(&web.path("access.log"));
        t.contains("alpha.txt").then_some(t)
    });
    let line = log.lines().find(|l| l.contains("alpha.txt")).unwrap();
    let (prefix, rest) = line.split_once(" [").unwrap();
    assert_eq!(prefix, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert_eq!(time.len(), "10/Oct/2000:13:55:36 +0000".len(), "{time}");
    assert!(time.ends_with(" +0000"));
    assert_eq!(
        rest,
        "\"GET /alpha.txt HTTP/1.1\" 200 36 \"http://ref/\" \"tester \\x221\\x22\""
    );
}

#[test]
fn cached_files_follow_edits_and_large_ones_go_out_whole() {
    let web = start();
    // 200 KiB: cached in a sealed memfd and sent with sendfile underneath hyper.
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i * 13 % 241) as u8).collect();
    let path = web.path("www/page.bin");
    std::fs::write(&path, &big).unwrap();
    std::thread::sleep(web_tier::file_cache::SETTLE + Duration::from_millis(20));

    // One kept-alive connection: the first GET fills the cache, the rest are hits.
    let mut s = TcpStream::connect(web.addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut etag = String::new();
    for _ in 0..3 {
        s.write_all(b"GET /page.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let r = read_resp(&mut s, false);
        assert_eq!(r.status, 200);
        assert!(r.body == big, "whole body, byte for byte");
        etag = r.header("etag").unwrap().to_owned();
    }
    s.write_all(b"GET /page.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100000-150000\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, false);
    assert_eq!(r.status, 206);
    assert!(r.body == big[100_000..=150_000]);
    s.write_all(b"HEAD /page.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, true);
    assert_eq!(r.header("content-length"), Some("204800"));
    s.write_all(b"GET /alpha.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_resp(&mut s, false).body, ALPHA);

    // Edited in place, same size: the next request sees the new bytes and a new tag.
    let edited: Vec<u8> = big.iter().map(|b| b.wrapping_add(1)).collect();
    std::fs::write(&path, &edited).unwrap();
    let r = web.get("/page.bin", &[]);
    assert!(r.body == edited, "edit served at once");
    assert_ne!(r.header("etag"), Some(etag.as_str()));
    // Truncated: the new length.
    std::fs::write(&path, &edited[..1000]).unwrap();
    let r = web.get("/page.bin", &[]);
    assert_eq!(r.body, &edited[..1000]);
    assert_eq!(r.header("content-length"), Some("1000"));
}

#[test]
fn a_small_cache_still_serves_every_file() {
    // Room for about two of these files: the rest are evicted and read again, and files
    // above max_file_size are streamed; every response stays correct.
    let config = format!("{CONFIG}\n[file_cache]\nmax_size = \"20k\"\nmax_file_size = \"8k\"\n");
    let files: Vec<(String, Vec<u8>)> = (0..8u8)
        .map(|i| {
            (
                format!("www/f{i}.bin"),
                vec![b'a' + i; 7000 + usize::from(i)],
            )
        })
        .collect();
    let mut list: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let large = large();
    list.push(("www/large.bin", &large));
    list.push(("errors/404.html", b"nf"));
    list.push(("errors/403.html", b"fb"));
    let web = Web::start(&config, &list);
    std::thread::sleep(web_tier::file_cache::SETTLE + Duration::from_millis(20));
    for _ in 0..3 {
        for (name, data) in &files {
            let r = web.get(&format!("/{}", name.trim_start_matches("www/")), &[]);
            assert_eq!(r.status, 200);
            assert!(&r.body == data, "{name}");
        }
        assert!(web.get("/large.bin", &[]).body == large);
    }
}
