//! REDbot, the HTTP lint (<https://redbot.org>), run against web-tier's static files:
//! an independent check of validators, conditional requests, ranges, content
//! negotiation and caching headers. `cargo xtask setup` installs it from PyPI into
//! `/opt/lb-redbot` (override with `REDBOT=/path/to/redbot`).
//!
//! Every note REDbot makes has a level: good, info, warn or bad. A response passes when
//! it has no warn or bad note and has the good notes its kind of file should earn (each
//! of them is a feature: a wrong `Content-Length`, a missing 304 or a broken range would
//! take one away).

mod common;

use std::process::Command;
use std::time::Duration;

use common::Web;

const CONFIG: &str = r#"
[log]
access = "off"
error = "{dir}/error.log"

[[server]]

[[server.location]]
prefix = "/"
root = "{dir}/www"
cache_control = "max-age=60"
"#;

/// A note from REDbot's HAR output (`_red_messages`).
#[derive(Debug, serde::Deserialize)]
struct Note {
    note_id: String,
    level: String,
    summary: String,
}

fn redbot() -> String {
    std::env::var("REDBOT").unwrap_or_else(|_| "/opt/lb-redbot/bin/redbot".into())
}

/// REDbot's notes on `url`.
fn notes(url: &str) -> Vec<Note> {
    let bin = redbot();
    let out = Command::new(&bin)
        .args(["-o", "har", url])
        .output()
        .unwrap_or_else(|e| panic!("running {bin} ({e}): run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "{bin} {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let har: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("REDbot's HAR for {url} is not JSON ({e})"));
    let entries = har["log"]["entries"].as_array().expect("HAR entries");
    assert_eq!(entries.len(), 1, "one response checked for {url}");
    serde_json::from_value(entries[0]["_red_messages"].clone()).expect("REDbot notes")
}

fn check(web: &Web, path: &str, want_good: &[&str]) {
    let url = web.url(path);
    let notes = notes(&url);
    let listing: String = notes
        .iter()
        .map(|n| format!("\n  {} {}: {}", n.level, n.note_id, n.summary))
        .collect();
    let complaints: Vec<&Note> = notes
        .iter()
        .filter(|n| n.level != "GOOD" && n.level != "INFO")
        .collect();
    assert!(
        complaints.is_empty(),
        "REDbot complains about {url}:{listing}"
    );
    for id in want_good {
        assert!(
            notes.iter().any(|n| n.note_id == *id && n.level == "GOOD"),
            "REDbot did not find {id} for {url}:{listing}"
        );
    }
}

/// The good notes every static file should earn (`FRESHNESS_FRESH` is the location's
/// `cache_control`).
const EVERY_FILE: [&str; 6] = [
    "CL_CORRECT",
    "DATE_CORRECT",
    "FRESHNESS_FRESH",
    "INM_304",
    "IMS_304",
    "RANGE_CORRECT",
];

/// A 1x1 PNG: REDbot checks that the bytes match the declared type. The file gets a
/// tail after it (see `site`): REDbot asks for a range of up to 97 bytes from a point it
/// saw in the body, and on a smaller file that is all of it (then it warns that the
/// 206 is as long as the 200).
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

fn site(config: &str) -> Web {
    let html: String = (0..200)
        .map(|i| format!("<p>paragraph {i}</p>\n"))
        .collect();
    let html = format!("<!doctype html><title>t</title>\n{html}");
    let js = b"function hello() { return 'hello from app.js'; }\n".repeat(40);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &js).unwrap();
    let js_gz = gz.finish().unwrap();
    let png = [PNG, &[0u8; 400]].concat();
    let large: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let web = Web::start(
        config,
        &[
            ("www/page.html", html.as_bytes()),
            ("www/app.js", &js),
            ("www/app.js.gz", &js_gz),
            ("www/image.png", &png),
            ("www/large.bin", &large),
        ],
    );
    // Old enough to be cached (files changed in the last moments are served uncached).
    std::thread::sleep(web_tier::file_cache::SETTLE + Duration::from_millis(20));
    web
}

fn check_site(web: &Web) {
    let with_gzip = [EVERY_FILE.as_slice(), &["CONNEG_GZIP_GOOD"]].concat();
    // Compressed on the fly.
    check(web, "/page.html", &with_gzip);
    // A precompressed sibling.
    check(web, "/app.js", &with_gzip);
    // Not compressible: identity only.
    check(web, "/image.png", &EVERY_FILE);
    // Large enough to go out by sendfile from the cache (or streamed, uncached).
    check(web, "/large.bin", &EVERY_FILE);
}

#[test]
fn redbot_finds_nothing_wrong_with_static_files() {
    check_site(&site(CONFIG));
}

#[test]
fn redbot_finds_nothing_wrong_with_static_files_uncached() {
    check_site(&site(&format!("{CONFIG}\n[file_cache]\nmax_size = 0\n")));
}
