//! Shared test harness: an in-process web-tier on 127.0.0.1:0, small upstream servers,
//! a raw HTTP/1.1 client (for exact bytes and malformed input) and a curl wrapper.
//!
//! Servers run on their own tokio runtime in a background thread so tests can be plain
//! blocking code; dropping a handle shuts its server down and joins the thread. Every
//! socket read has a generous timeout so a hung server fails the test instead of hanging
//! it; no test asserts on timing.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the harness"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::oneshot;

/// Upper bound on any single wait in a test; a hang fails rather than blocks the suite.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running web-tier.
pub struct Web {
    pub addr: SocketAddr,
    pub server: web_tier::Server,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl Web {
    /// Starts a server from config text. `{dir}` in the text is replaced by a fresh temp
    /// directory (which holds `files`, created before the config is parsed).
    pub fn start(config: &str, files: &[(&str, &[u8])]) -> Web {
        Self::start_tls(config, files, false)
    }

    pub fn start_tls(config: &str, files: &[(&str, &[u8])], tls: bool) -> Web {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
        }
        let text = config.replace("{dir}", dir.path().to_str().unwrap());
        let cfg = web_tier::config::Config::from_str(&text).expect("test config is valid");
        let server = web_tier::Server::new(&cfg).expect("server builds");
        let tls_cfg = if tls {
            let files = cfg.listen[0].tls.clone().expect("tls listener in config");
            Some(web_tier::server::load_tls(&files).unwrap())
        } else {
            None
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let srv = server.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                srv.serve(listener, tls_cfg, async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(WAIT).expect("server started");
        Web {
            addr,
            server,
            stop: Some(stop_tx),
            thread: Some(thread),
            dir,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// One request on a fresh connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        request(self.addr, req.as_bytes())
    }

    /// Stops accepting, drains and joins the server thread.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one response from the front of `buf`; returns it and the bytes consumed, or
/// None if incomplete. `head_req` means the response has no body whatever it says.
pub fn parse_resp(buf: &[u8], head_req: bool) -> Option<(Resp, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let no_body = head_req || status == 304 || status == 204 || (100..200).contains(&status);
    if no_body {
        return Some((
            Resp {
                status,
                headers,
                body: Vec::new(),
            },
            end,
        ));
    }
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        if buf.len() < end + len {
            return None;
        }
        let body = buf[end..end + len].to_vec();
        return Some((
            Resp {
                status,
                headers,
                body,
            },
            end + len,
        ));
    }
    if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut pos = end;
        let mut body = Vec::new();
        loop {
            let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size_str = std::str::from_utf8(&buf[pos..line_end]).ok()?;
            let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                if buf.len() < pos + 2 {
                    return None;
                }
                return Some((
                    Resp {
                        status,
                        headers,
                        body,
                    },
                    pos + 2,
                ));
            }
            if buf.len() < pos + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    // Body until close: only complete when the caller saw EOF.
    None
}

/// Sends raw bytes on a fresh connection and reads until EOF (or `WAIT`).
pub fn raw(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// Sends one request and reads one response (the connection may stay open).
pub fn request(addr: SocketAddr, req: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(req).unwrap();
    let head_req = req.starts_with(b"HEAD ");
    read_resp(&mut s, head_req)
}

/// Reads exactly one response from a stream (body until EOF if unframed).
pub fn read_resp(s: &mut TcpStream, head_req: bool) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some((r, used)) = parse_resp(&buf, head_req) {
            // One request, one response: anything more is a framing bug (say, a body
            // after a HEAD response).
            assert_eq!(
                used,
                buf.len(),
                "bytes after the response: {:?}",
                String::from_utf8_lossy(&buf[used..])
            );
            return r;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                // EOF: a close-delimited body, or a truncated response.
                let end = buf
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or_else(|| {
                        panic!("no response head in {:?}", String::from_utf8_lossy(&buf))
                    })
                    + 4;
                let (mut r, _) = parse_resp(&buf[..end], true).unwrap();
                r.body = buf[end..].to_vec();
                return r;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What curl reported.
#[derive(Debug)]
pub struct CurlResp {
    pub status: u16,
    /// `1.1` or `2`.
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CurlResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl with `args` (plus -s and a time bound) and parses its last response head.
pub fn curl(args: &[&str]) -> CurlResp {
    let body = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-D", "-", "-o"])
        .arg(body.path())
        .args(args)
        .output()
        .expect("curl runs (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or_else(|| panic!("no response head from curl: {text}"));
    let mut lines = last.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap().trim_start_matches("HTTP/").to_owned();
    let status = parts.next().unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    CurlResp {
        status,
        version,
        headers,
        body: std::fs::read(body.path()).unwrap(),
    }
}

/// What an upstream saw.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicUsize,
    pub connections: AtomicUsize,
    pub by_method: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl Seen {
    pub fn method(&self, m: &str) -> usize {
        self.by_method.lock().unwrap().get(m).copied().unwrap_or(0)
    }
}

/// A small hyper upstream. Paths:
/// - `/echo...`: 200 with the request's method, path, headers and body length as text,
///   plus hop-by-hop response headers the proxy must strip.
/// - `.../hang`: never answers.
/// - `.../stream?N`: streams N bytes of `x` in 8 KiB chunks.
/// - `.../gate`: waits until the test calls [`Upstream::release`], then echoes.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    gate: Arc<tokio::sync::Semaphore>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    pub fn start(name: &'static str) -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Seen::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let s = seen.clone();
        let g = gate.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                let g = g.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle_upstream(name, s.clone(), g.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            gate,
            rt: Some(rt),
        }
    }

    /// Lets `n` requests waiting at `/gate` proceed.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Kills the upstream: its listener and every connection close at once.
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn handle_upstream(
    name: &'static str,
    seen: Arc<Seen>,
    gate: Arc<tokio::sync::Semaphore>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<UpBody>, std::convert::Infallible> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    *seen
        .by_method
        .lock()
        .unwrap()
        .entry(req.method().to_string())
        .or_default() += 1;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if path.ends_with("/gate") {
        gate.acquire().await.unwrap().forget();
    }
    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    if path.ends_with("/stream") {
        let n: usize = query.parse().unwrap_or(0);
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..n)
            .step_by(8192)
            .map(|off| Ok(Frame::data(Bytes::from(vec![b'x'; (n - off).min(8192)]))))
            .collect();
        let body = StreamBody::new(futures_lite_iter(chunks));
        return Ok(hyper::Response::new(BodyExt::boxed(body)));
    }
    let mut text = format!(
        "upstream: {name}\nmethod: {}\npath: {}\n",
        req.method(),
        req.uri()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    text.push_str(&format!("body-len: {}\nbody-sum: {sum}\n", body.len()));
    let resp = hyper::Response::builder()
        .header("x-upstream", name)
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("server", "test-upstream")
        .header("date", UPSTREAM_DATE)
        .body(Full::new(Bytes::from(text)).boxed())
        .unwrap();
    Ok(resp)
}

/// The `Date` the echo upstream sends (a proxy replaces it, as nginx does).
pub const UPSTREAM_DATE: &str = "Mon, 01 Jan 2001 00:00:00 GMT";

/// A `Stream` over a vector.
fn futures_lite_iter<T: Unpin>(items: Vec<T>) -> IterStream<T> {
    IterStream(items.into_iter())
}

pub struct IterStream<T>(std::vec::IntoIter<T>);

impl<T: Unpin> futures_core::Stream for IterStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// A raw TCP upstream that reads one request head and then resets the connection:
/// the "died after the request was sent" case.
pub struct ResetUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ResetUpstream {
    pub fn start() -> ResetUpstream {
        use tokio::io::AsyncReadExt;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Seen::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let s = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Some(m) = buf.split(|&b| b == b' ').next() {
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    *s.by_method
                        .lock()
                        .unwrap()
                        .entry(String::from_utf8_lossy(m).into_owned())
                        .or_default() += 1;
                }
                // Linger 0: close with RST, like a crashed process.
                #[expect(
                    deprecated,
                    reason = "a zero linger is the point here, and does not block"
                )]
                let _ = stream.set_linger(Some(Duration::ZERO));
                drop(stream);
            }
        });
        ResetUpstream {
            addr,
            seen,
            rt: Some(rt),
        }
    }
}

impl Drop for ResetUpstream {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Polls `f` until it returns Some, or panics after `WAIT`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a file that may not exist yet as a string.
pub fn read_string(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
