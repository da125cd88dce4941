//! The binary and the embedding API: `--check`, config errors naming the field, SIGHUP
//! reload without dropping in-flight requests, SIGTERM drain, and `web_tier::serve`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Upstream, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_web-tier");

/// Kills and reaps the child on drop, so a failed assertion leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
}

fn write_config(dir: &Path, root: &str, upstream: SocketAddr) -> PathBuf {
    let path = dir.join("web.toml");
    let text = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[log]
access = "access.log"
error = "error.log"

[limits]
drain_timeout = "20s"

[upstream.app]
server = [{{ addr = "{upstream}" }}]

[[server]]
[[server.location]]
prefix = "/"
root = "{root}"
[[server.location]]
prefix = "/api/"
proxy = "app"
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the binary and waits for it to log the address it bound (the first, if it
/// binds several).
fn spawn(config: &Path) -> (Child, SocketAddr) {
    let (child, addrs) = spawn_all(config);
    (child, addrs[0])
}

fn get(addr: SocketAddr, path: &str) -> common::Resp {
    common::request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Starts a request in a thread; returns its handle (joins to the response).
fn in_flight(addr: SocketAddr, path: &'static str) -> std::thread::JoinHandle<common::Resp> {
    std::thread::spawn(move || get(addr, path))
}

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web.toml");
    let out = Command::new(BIN)
        .args(["--check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn check_rejects_invalid_config_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \"missing-dir\"\n",
            "server[0].location[0].root",
        ),
        (
            "[[server]]\n[[server.location]]\nprefix = \"/\"\nproxy = \"nope\"\n",
            "server[0].location[0].proxy",
        ),
        (
            "[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \".\"\ncache_contrl = \"x\"\n",
            "cache_contrl",
        ),
        (
            "[[listen]]\naddr = \"127.0.0.1:0\"\ntls = { cert = \"no.pem\", key = \"no.pem\" }\n[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \".\"\n",
            "listen[0].tls",
        ),
        (
            "[upstream.app]\nserver = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n[[server]]\n[[server.location]]\nprefix = \"/\"\nproxy = \"app\"\n",
            "upstream.app.server[0].weight",
        ),
    ];
    for (text, field) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{field:?} not named in: {err}");
    }
}

#[test]
fn sighup_reloads_without_dropping_in_flight_requests() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    for v in ["v1", "v2"] {
        std::fs::create_dir(dir.path().join(v)).unwrap();
        std::fs::write(dir.path().join(v).join("index.html"), v).unwrap();
    }
    let config = write_config(dir.path(), "v1", up.addr);
    let (child, addr) = spawn(&config);
    assert_eq!(get(addr, "/").text(), "v1");

    // A request held at the upstream across the reload.
    let held = in_flight(addr, "/api/gate");
    wait_for("request at upstream", || {
        (up.seen.requests.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    });
    // A keep-alive connection opened before the reload.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.set_read_timeout(Some(common::WAIT)).unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(common::read_resp(&mut kept, false).text(), "v1");

    write_config(dir.path(), "v2", up.addr);
    signal(&child, libc::SIGHUP);
    wait_for("new root served", || {
        (get(addr, "/").text() == "v2").then_some(())
    });
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        common::read_resp(&mut kept, false).text(),
        "v2",
        "kept-alive connection sees the reload"
    );

    up.release(1);
    let r = held.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request survived the reload");
    assert!(r.text().contains("path: /api/gate"));

    // A broken config on SIGHUP is refused and the running one kept.
    std::fs::write(&config, "this is [not toml").unwrap();
    signal(&child, libc::SIGHUP);
    wait_for("reload failure logged", || {
        common::read_string(&dir.path().join("error.log"))
            .contains("reload failed; keeping the running configuration")
            .then_some(())
    });
    std::fs::write(dir.path().join("v2/index.html"), "v2 still").unwrap();
    assert_eq!(get(addr, "/").text(), "v2 still");
    assert!(
        common::read_string(&dir.path().join("access.log"))
            .contains("\"GET /api/gate HTTP/1.1\" 200")
    );
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    drains_in_flight_requests_then_exits(libc::SIGTERM);
}

/// Sends `sig` while a proxied request is held at the upstream: the listener closes,
/// the process waits for the request, answers it, and exits cleanly.
fn drains_in_flight_requests_then_exits(sig: libc::c_int) {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let config = write_config(dir.path(), "www", up.addr);
    let (mut child, addr) = spawn(&config);
    let held = in_flight(addr, "/api/gate");
    wait_for("request at upstream", || {
        (up.seen.requests.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    });
    signal(&child, sig);
    // The listener closes first: new connections are refused while the old one drains.
    wait_for("listener closed", || {
        TcpStream::connect(addr).is_err().then_some(())
    });
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "exited before draining"
    );
    up.release(1);
    let r = held.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("path: /api/gate"));
    let status = wait_for("exit", || child.0.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
}

#[test]
fn embedded_serve_api_runs_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hi").unwrap();
    let text = format!(
        "[log]\naccess = \"off\"\nerror = \"off\"\n[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let config = web_tier::config::Config::from_str(&text).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(web_tier::serve(config, listener, async move {
            let _ = rx.await;
        }));
        let body = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(body.starts_with("HTTP/1.0 200 OK\r\n"), "{body}");
        assert!(body.ends_with("\r\n\r\nhi"), "{body}");
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    });
}

/// Starts the binary and waits for the listening line; returns every bound address, in
/// `[[listen]]` order.
fn spawn_all(config: &Path) -> (Child, Vec<SocketAddr>) {
    let child = Child(
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let log = config.parent().unwrap().join("error.log");
    let addrs = wait_for("the listening line in error.log", || {
        let text = common::read_string(&log);
        let line = text.lines().find(|l| l.contains("\"listening\""))?;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["addrs"]
            .as_str()?
            .trim_matches(['[', ']'])
            .split(", ")
            .map(|a| a.parse().ok())
            .collect::<Option<Vec<SocketAddr>>>()
    });
    (child, addrs)
}

/// Writes a self-signed certificate for `localhost` to cert.pem / key.pem in `dir`.
fn write_cert(dir: &Path) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
}

/// curl over TLS to `addr`, trusting only `cacert`; whether it got a 200.
fn curl_tls_ok(addr: SocketAddr, cacert: &Path) -> bool {
    let url = format!("https://localhost:{}/", addr.port());
    let resolve = format!("localhost:{}:{}", addr.port(), addr.ip());
    Command::new("curl")
        .args([
            "-s",
            "-f",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "--cacert",
        ])
        .arg(cacert)
        .args(["--resolve", &resolve, &url])
        .status()
        .unwrap()
        .success()
}

fn write_tls_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hi").unwrap();
    let path = dir.join("web.toml");
    let text = r#"
[[listen]]
addr = "127.0.0.1:0"

[[listen]]
addr = "127.0.0.2:0"
tls = { cert = "cert.pem", key = "key.pem" }

[log]
access = "access.log"
error = "error.log"

[limits]
drain_timeout = "1h"

[[server]]
[[server.location]]
prefix = "/"
root = "www"
"#;
    std::fs::write(&path, text).unwrap();
    path
}

/// nginx's certificate-renewal contract (certbot's deploy hook runs `nginx -s reload`):
/// SIGHUP serves the certificate now in the configured files.
#[test]
fn sighup_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let config = write_tls_config(dir.path());
    let (child, addrs) = spawn_all(&config);
    let tls = addrs[1];
    let old = dir.path().join("old-cert.pem");
    std::fs::copy(dir.path().join("cert.pem"), &old).unwrap();
    assert!(curl_tls_ok(tls, &old));

    write_cert(dir.path());
    signal(&child, libc::SIGHUP);
    wait_for("reload logged", || {
        common::read_string(&dir.path().join("error.log"))
            .contains("configuration reloaded")
            .then_some(())
    });
    assert!(
        curl_tls_ok(tls, &dir.path().join("cert.pem")),
        "the renewed certificate is not served after SIGHUP"
    );
    assert!(
        !curl_tls_ok(tls, &old),
        "the old certificate is still served"
    );

    // A broken key on reload is refused whole: the renewed certificate stays.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    signal(&child, libc::SIGHUP);
    wait_for("reload failure logged", || {
        common::read_string(&dir.path().join("error.log"))
            .contains("reload failed")
            .then_some(())
    });
    assert!(curl_tls_ok(tls, &dir.path().join("cert.pem")));
}

/// A connection that has sent nothing yet (plain, or before its TLS handshake) has no
/// request to finish: SIGTERM closes it at once rather than waiting out the header
/// timeout or `drain_timeout` (here an hour).
#[test]
fn sigterm_closes_connections_that_sent_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let config = write_tls_config(dir.path());
    let (mut child, addrs) = spawn_all(&config);
    let mut quiet: Vec<TcpStream> = addrs
        .iter()
        .map(|a| TcpStream::connect(a).unwrap())
        .collect();
    // Make sure the server has accepted them (a request on a third connection is
    // answered after both were queued ahead of it).
    assert_eq!(get(addrs[0], "/").status, 200);
    signal(&child, libc::SIGTERM);
    let status = wait_for("exit", || child.0.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    for s in &mut quiet {
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
}

/// nginx's graceful stop is SIGQUIT (`nginx -s quit`, Debian's and systemd's stop
/// command); it must drain as SIGTERM does, not dump core with requests in flight.
#[test]
fn sigquit_drains_like_sigterm() {
    drains_in_flight_requests_then_exits(libc::SIGQUIT);
}

/// logrotate's nginx contract: move the file, then SIGUSR1 reopens the logs by name
/// (and the process keeps running: SIGUSR1's default action would end it).
#[test]
fn sigusr1_reopens_the_logs() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hi").unwrap();
    let config = write_config(dir.path(), "www", up.addr);
    let (mut child, addr) = spawn(&config);
    assert_eq!(get(addr, "/").status, 200);
    let access = dir.path().join("access.log");
    wait_for("first line", || {
        common::read_string(&access)
            .contains("\"GET / HTTP/1.1\" 200")
            .then_some(())
    });
    std::fs::rename(&access, dir.path().join("access.log.1")).unwrap();
    std::fs::rename(dir.path().join("error.log"), dir.path().join("error.log.1")).unwrap();
    signal(&child, libc::SIGUSR1);
    wait_for("logs reopened", || {
        (access.exists() && dir.path().join("error.log").exists()).then_some(())
    });
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGUSR1 ended the server"
    );
    assert_eq!(get(addr, "/index.html").status, 200);
    wait_for("line in the new access.log", || {
        common::read_string(&access)
            .contains("\"GET /index.html HTTP/1.1\" 200")
            .then_some(())
    });
    assert!(
        !common::read_string(&dir.path().join("access.log.1")).contains("/index.html"),
        "written to the rotated file"
    );
}
