//! The server: accept connections, speak HTTP/1.1 or HTTP/2, route each request to a
//! virtual server and location, and hand it to the static or proxy handler.
//!
//! # Reload and drain
//! The running state (virtual servers, opened roots, upstream groups, logs) lives in one
//! `Arc<State>`. Each request takes its own clone when it starts, so SIGHUP swaps in a
//! new state without touching requests in flight: they finish on the state they started
//! with, and keep-alive connections pick up the new one on their next request. SIGTERM
//! stops accepting, asks every connection to finish its current request (HTTP/1 closes
//! after the response, HTTP/2 sends GOAWAY), and waits up to `limits.drain_timeout`.
//! A connection still in its TLS handshake or that has sent nothing yet has no request
//! to finish: it is closed at once. TLS settings are part of the state, so a reload
//! serves a renewed certificate to the connections accepted after it.
//!
//! # Protocol selection
//! Plain TCP: the first bytes decide between HTTP/1.1 and prior-knowledge h2c (the
//! connection preface). TLS: ALPN decides. This is done here rather than with
//! hyper-util's `auto` builder because that builder waits for the first bytes without a
//! timeout (an idle socket would be held forever) and does not expose hyper's
//! `max_header_size`.
//!
//! # 408 for slow clients
//! hyper enforces the header timeout by closing the connection silently. The connection's
//! I/O is wrapped in [`Guard`], which hands the socket back when hyper drops it; if part of
//! a request had arrived, we write the 408 nginx would send before closing.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::Error;
use crate::body::{self, Body, BoxError};
use crate::config::{Config, Limits, Listen, TlsFiles};
use crate::file_cache::FileCache;
use crate::logs::{AccessEntry, AccessLog, ErrorLog, Level};
use crate::proxy::{self, BodyLimits, ClientInfo};
use crate::rt::{ConnTimer, Drain};
use crate::sendfile;
use crate::static_files::{self, StaticRoot};
use crate::upstream::Group;

/// Everything a request needs, built from one configuration.
pub struct State {
    vhosts: Vec<VHost>,
    default_vhost: usize,
    limits: Limits,
    listen: Vec<Listen>,
    /// The TLS settings of each TLS `[[listen]]`, by its configured address: loaded with
    /// the rest, so SIGHUP serves a renewed certificate.
    tls: Vec<(SocketAddr, Arc<rustls::ServerConfig>)>,
    access: AccessLog,
    elog: ErrorLog,
}

struct VHost {
    exact: Vec<String>,
    /// `*.example.com` stored as `.example.com`.
    wildcard: Vec<String>,
    /// Longest prefix first.
    locations: Vec<(String, Action)>,
    error_pages: Vec<(StatusCode, Bytes)>,
}

enum Action {
    Static(Arc<StaticRoot>),
    Proxy(Arc<Group>),
}

impl State {
    /// Opens everything the configuration names (roots, error pages, logs); fails whole.
    pub fn build(config: &Config) -> Result<Self, Error> {
        config.validate()?;
        let groups: std::collections::BTreeMap<&str, Arc<Group>> = config
            .upstreams
            .iter()
            .map(|(name, g)| (name.as_str(), Arc::new(Group::new(name, g))))
            .collect();
        let cache = Arc::new(FileCache::new(
            config.file_cache.max_size,
            config.file_cache.max_file_size,
        ));
        let mut vhosts = Vec::new();
        for (si, s) in config.servers.iter().enumerate() {
            let mut locations = Vec::new();
            for (li, loc) in s.locations.iter().enumerate() {
                let action = match (&loc.root, &loc.proxy) {
                    (Some(root), _) => Action::Static(Arc::new(
                        StaticRoot::open(root, loc, cache.clone()).map_err(|source| {
                            Error::Open {
                                field: format!("server[{si}].location[{li}].root"),
                                path: root.clone(),
                                source,
                            }
                        })?,
                    )),
                    (None, Some(group)) => Action::Proxy(groups[group.as_str()].clone()),
                    (None, None) => unreachable!("validated: root or proxy"),
                };
                locations.push((loc.prefix.clone(), action));
            }
            locations.sort_by_key(|l| std::cmp::Reverse(l.0.len()));
            let mut error_pages = Vec::new();
            for (code, path) in &s.error_pages {
                let status = code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let page = std::fs::read(path).map_err(|source| Error::Open {
                    field: format!("server[{si}].error_pages.{code}"),
                    path: path.clone(),
                    source,
                })?;
                error_pages.push((status, Bytes::from(page)));
            }
            let (wild, exact): (Vec<_>, Vec<_>) = s
                .names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .partition(|n| n.starts_with("*."));
            vhosts.push(VHost {
                exact,
                wildcard: wild.into_iter().map(|w| w[1..].to_owned()).collect(),
                locations,
                error_pages,
            });
        }
        let open_log = |field: &str, spec: &str| Error::Open {
            field: field.to_owned(),
            path: spec.into(),
            source: io::Error::other("cannot open"),
        };
        let mut tls = Vec::new();
        for (i, l) in config.listen.iter().enumerate() {
            if let Some(files) = &l.tls {
                let cfg =
                    load_tls(files).map_err(|e| Error::Tls(format!("listen[{i}].tls: {e}")))?;
                tls.push((l.addr, cfg));
            }
        }
        Ok(Self {
            tls,
            default_vhost: config.servers.iter().position(|s| s.default).unwrap_or(0),
            vhosts,
            limits: config.limits.clone(),
            listen: config.listen.clone(),
            access: AccessLog::open(&config.log.access)
                .map_err(|_| open_log("log.access", &config.log.access))?,
            elog: ErrorLog::open(&config.log.error)
                .map_err(|_| open_log("log.error", &config.log.error))?,
        })
    }

    fn vhost(&self, host: Option<&str>) -> &VHost {
        if let Some(host) = host {
            // Names are stored lowercase; compare without allocating a lowercased copy.
            let host = host.trim_end_matches('.');
            if let Some(v) = self
                .vhosts
                .iter()
                .find(|v| v.exact.iter().any(|n| n.eq_ignore_ascii_case(host)))
            {
                return v;
            }
            // Longest matching wildcard wins, as in nginx.
            let best = self
                .vhosts
                .iter()
                .flat_map(|v| v.wildcard.iter().map(move |w| (w, v)))
                .filter(|(w, _)| {
                    host.len() > w.len()
                        && host.is_char_boundary(host.len() - w.len())
                        && host[host.len() - w.len()..].eq_ignore_ascii_case(w)
                })
                .max_by_key(|(w, _)| w.len());
            if let Some((_, v)) = best {
                return v;
            }
        }
        &self.vhosts[self.default_vhost]
    }
}

impl VHost {
    fn locate(&self, path: &[u8]) -> Option<&Action> {
        self.locations
            .iter()
            .find(|(p, _)| path.starts_with(p.as_bytes()))
            .map(|(_, a)| a)
    }

    fn error(&self, status: StatusCode, head: bool) -> Response<Body> {
        let mut resp = match self.error_pages.iter().find(|(s, _)| *s == status) {
            Some((_, page)) => {
                let mut r = Response::new(body::full(page.clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            None => body::status_response(
                status,
                &status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase(),
            ),
        };
        *resp.status_mut() = status;
        if head {
            *resp.body_mut() = body::empty();
        }
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            // The request body may be half read: do not try to parse the rest as the
            // next request.
            StatusCode::BAD_REQUEST
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::PAYLOAD_TOO_LARGE => {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

/// Loads a certificate chain and key into a rustls config offering h2 and http/1.1.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert {}: no certificate found",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert/key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Where a TLS listener's settings come from.
enum TlsSource {
    /// Given by the embedder ([`Server::serve`]).
    Fixed(Arc<rustls::ServerConfig>),
    /// The running configuration's `[[listen]]` with this address, so a reload's
    /// certificate serves the connections accepted after it; `initial` (what it was
    /// bound with) if that configuration has none, as when [`Server::run`] was given
    /// another configuration than the server's.
    Listen {
        addr: SocketAddr,
        initial: Arc<rustls::ServerConfig>,
    },
}

impl TlsSource {
    fn acceptor(&self, state: &State) -> tokio_rustls::TlsAcceptor {
        let cfg = match self {
            TlsSource::Fixed(cfg) => cfg,
            TlsSource::Listen { addr, initial } => state
                .tls
                .iter()
                .find(|(a, _)| a == addr)
                .map_or(initial, |(_, cfg)| cfg),
        };
        tokio_rustls::TlsAcceptor::from(cfg.clone())
    }
}

/// A server whose configuration can be swapped while it runs.
#[derive(Clone)]
pub struct Server {
    state: Arc<RwLock<Arc<State>>>,
}

impl Server {
    /// Builds the running state from a configuration.
    pub fn new(config: &Config) -> Result<Self, Error> {
        let state = State::build(config)?;
        Ok(Self {
            state: Arc::new(RwLock::new(Arc::new(state))),
        })
    }

    fn current(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies a new configuration to all future requests; requests in flight finish on
    /// the old one. On error the old configuration stays. Listener changes need a
    /// restart (sockets are not re-bound), and are reported in the error log.
    pub fn reload(&self, config: &Config) -> Result<(), Error> {
        let mut new = State::build(config)?;
        let old = self.current();
        // Certificates and keys of a TLS listener are reloaded; which sockets there are,
        // and whether each speaks TLS, is fixed at start.
        let addrs = |l: &[Listen]| {
            l.iter()
                .map(|l| (l.addr, l.tls.is_some()))
                .collect::<Vec<_>>()
        };
        if addrs(&old.listen) != addrs(&new.listen) {
            new.elog.log(
                Level::Warn,
                "listener changes need a restart; kept the old sockets",
                &[],
            );
            // What is bound stays what the next reload is compared with, and a TLS
            // socket the new file drops keeps its certificate.
            new.listen = old.listen.clone();
            for (addr, cfg) in &old.tls {
                if !new.tls.iter().any(|(a, _)| a == addr) {
                    new.tls.push((*addr, cfg.clone()));
                }
            }
        }
        new.elog.log(Level::Info, "configuration reloaded", &[]);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        Ok(())
    }

    /// Reopens the access and error log files by name (what SIGUSR1 does, after a
    /// rotator moved them). A file that cannot be opened keeps its old one.
    pub fn reopen_logs(&self) -> Result<(), Error> {
        let state = self.current();
        let access = state.access.reopen();
        let error = state.elog.reopen();
        for (field, r) in [("log.access", &access), ("log.error", &error)] {
            if let Err(e) = r {
                state.elog.log(
                    Level::Error,
                    "cannot reopen a log file; still writing to the old one",
                    &[("field", &field), ("error", e)],
                );
            }
        }
        access.and(error).map_err(Error::Io)
    }

    /// Re-reads a configuration file and applies it (what SIGHUP does). A failure is
    /// written to the running error log and returned; the old configuration stays.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<(), Error> {
        let result = Config::from_file(path)
            .map_err(Error::from)
            .and_then(|c| self.reload(&c));
        if let Err(e) = &result {
            self.current().elog.log(
                Level::Error,
                "reload failed; keeping the running configuration",
                &[("file", &path.display()), ("error", e)],
            );
        }
        result
    }

    /// Binds every `[[listen]]` of the configuration and serves them until `shutdown`.
    pub async fn run(
        &self,
        config: &Config,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut set = JoinSet::new();
        let mut bound = Vec::new();
        for l in &config.listen {
            let listener = TcpListener::bind(l.addr)
                .await
                .map_err(|source| Error::Bind {
                    addr: l.addr,
                    source,
                })?;
            bound.push(listener.local_addr()?);
            let tls = match &l.tls {
                Some(files) => Some(TlsSource::Listen {
                    addr: l.addr,
                    initial: load_tls(files).map_err(Error::Tls)?,
                }),
                None => None,
            };
            let this = self.clone();
            let mut rx = rx.clone();
            set.spawn(async move {
                this.serve_with(listener, tls, async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
            });
        }
        self.current().elog.log(
            Level::Info,
            "listening",
            // The bound addresses, so a config with port 0 can be found by whoever started us.
            &[("addrs", &format!("{bound:?}"))],
        );
        shutdown.await;
        let _ = tx.send(true);
        while let Some(r) = set.join_next().await {
            r.map_err(|e| Error::Io(io::Error::other(e)))??;
        }
        Ok(())
    }

    /// Serves one already-bound listener until `shutdown` completes, then drains. With
    /// `tls`, connections are TLS and ALPN picks h2 or http/1.1; without, plain HTTP/1.1
    /// and prior-knowledge h2c.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        self.serve_with(listener, tls.map(TlsSource::Fixed), shutdown)
            .await
    }

    async fn serve_with(
        &self,
        listener: TcpListener,
        tls: Option<TlsSource>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let drain = Arc::new(Drain::default());
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            self.current().elog.log(Level::Error, "accept failed", &[("error", &e)]);
                            // EMFILE and friends: back off instead of spinning on the error.
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let this = self.clone();
                    let drain = drain.clone();
                    let state = this.current();
                    let acceptor = tls.as_ref().map(|t| t.acceptor(&state));
                    conns.spawn(async move {
                        let timeout = state.limits.header_timeout;
                        match acceptor {
                            None => this.connection(stream, remote, false, None, &drain).await,
                            Some(acc) => match tokio::select! {
                                r = tokio::time::timeout(timeout, acc.accept(stream)) => r,
                                // No request yet, so nothing to finish.
                                () = drain.started() => return,
                            } {
                                Ok(Ok(tls)) => {
                                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                                    this.connection(tls, remote, true, Some(h2), &drain).await
                                }
                                Ok(Err(e)) => state.elog.log(Level::Warn, "TLS handshake failed", &[("client", &remote), ("error", &e)]),
                                Err(_) => state.elog.log(Level::Warn, "TLS handshake timed out", &[("client", &remote)]),
                            },
                        }
                    });
                }
            }
        }
        drop(listener);
        let drain_timeout = self.current().limits.drain_timeout;
        let drained = tokio::time::timeout(drain_timeout, async {
            drain.start();
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.current().elog.log(
                Level::Warn,
                "drain timed out; closing remaining connections",
                &[("connections", &conns.len())],
            );
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
        Ok(())
    }

    /// One client connection. `h2` is the ALPN verdict for TLS, `None` for plain TCP.
    async fn connection<I>(
        &self,
        mut io: I,
        remote: SocketAddr,
        https: bool,
        h2: Option<bool>,
        drain: &Drain,
    ) where
        I: Transport,
    {
        let state = self.current();
        let limits = state.limits.clone();
        let mut prefix = Vec::new();
        let h2 = match h2 {
            Some(h2) => h2,
            None => match tokio::time::timeout(
                limits.header_timeout,
                sniff(&mut io, &mut prefix, drain),
            )
            .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(_)) => return,
                // Nothing arrived: an idle connection, closed without a word.
                Err(_) if prefix.is_empty() => return,
                Err(_) => {
                    // Part of an h2 preface (or of "PRI"), then silence: a slow client.
                    let _ = write_408(&mut io).await;
                    state.access.write(&blank_entry(remote, 408), 0);
                    return;
                }
            },
        };
        let (ret_tx, ret_rx) = oneshot::channel();
        let guard = Guard {
            io: Some(io),
            prefix: Bytes::from(prefix),
            partial: false,
            ret: Some(ret_tx),
        };
        let this = self.clone();
        let info = Arc::new(ClientInfo::new(remote, https));
        let svc = service_fn(move |req| {
            let this = this.clone();
            let info = info.clone();
            async move { Ok::<_, Infallible>(this.handle(req, &info).await) }
        });
        let io = TokioIo::new(guard);
        let result = if h2 {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_header_list_size(limits.max_header_size as u32)
                .max_concurrent_streams(256)
                .keep_alive_interval(Some(limits.header_timeout));
            drain
                .watch(b.serve_connection(io, svc), |c| c.graceful_shutdown())
                .await
        } else {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(ConnTimer::default())
                .header_read_timeout(limits.header_timeout)
                .max_header_size(limits.max_header_size as usize)
                // A head that never completes is refused at this size too (431).
                .max_buf_size((limits.max_header_size as usize + 8192).max(64 << 10))
                .keep_alive(true);
            // hyper's default is the same 100 on the stack; setting it explicitly makes
            // hyper build the header array with a loop on every request.
            if limits.max_headers != 100 {
                b.max_headers(limits.max_headers);
            }
            drain
                .watch(b.serve_connection(io, svc), |c| c.graceful_shutdown())
                .await
        };
        let Ok((mut io, partial)) = ret_rx.await else {
            return;
        };
        if let Err(e) = &result
            && e.is_timeout()
            && partial
        {
            let _ = write_408(&mut io).await;
            state.access.write(&blank_entry(remote, 408), 0);
            state.elog.log(
                Level::Warn,
                "client sent its request head too slowly",
                &[("client", &remote)],
            );
        }
        linger(&mut io).await;
    }

    async fn handle(&self, req: Request<Incoming>, info: &ClientInfo) -> Response<Body> {
        let state = self.current();
        let head = req.method() == Method::HEAD;
        let entry = (!state.access.is_off()).then(|| AccessEntry {
            remote: info.remote,
            time: SystemTime::now(),
            request_line: format!(
                "{} {} {}",
                req.method(),
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or_else(|| req.uri().path()),
                version_str(req.version())
            ),
            status: 0,
            referer: header_bytes(&req, header::REFERER),
            user_agent: header_bytes(&req, header::USER_AGENT),
        });
        // If the client goes away before the answer (hyper then drops this future), the
        // request is still logged, with nginx's 499 and no bytes.
        let mut pending = Aborted {
            entry,
            state: &state,
        };
        let mut resp = route(&state, req, info, head).await;
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("web-tier"));
        match pending.entry.take() {
            None => resp,
            Some(mut entry) => {
                entry.status = resp.status().as_u16();
                resp.map(|b| {
                    Body::new(LogBody {
                        inner: b,
                        bytes: 0,
                        entry: Some(entry),
                        state: state.clone(),
                    })
                })
            }
        }
    }
}

async fn route(
    state: &State,
    mut req: Request<Incoming>,
    info: &ClientInfo,
    head: bool,
) -> Response<Body> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is a 400.
    let host_ok = hosts.next().is_none() && (host.is_some() || req.version() != Version::HTTP_11);
    // The target's authority, when it has one (absolute-form, or HTTP/2's :authority),
    // names the host whatever Host says (RFC 9112 §3.2.2).
    let host = match req.uri().authority() {
        Some(a) => Some(Ok(a.as_str())),
        None => host.map(|h| h.to_str().map_err(drop)),
    };
    let host_name = match host {
        None => Ok(None),
        Some(h) => h.and_then(host_name).map(Some),
    };
    let vhost = state.vhost(host_name.unwrap_or(None));
    if !host_ok || host_name.is_err() {
        return vhost.error(StatusCode::BAD_REQUEST, head);
    }
    if let Some(expect) = req.headers().get(header::EXPECT)
        && !expect.as_bytes().eq_ignore_ascii_case(b"100-continue")
    {
        return vhost.error(StatusCode::EXPECTATION_FAILED, head);
    }
    // As nginx: TRACE would echo the request's cookies and credentials back.
    if req.method() == Method::TRACE {
        return vhost.error(StatusCode::METHOD_NOT_ALLOWED, head);
    }
    // Locations match the decoded, normalised path, as in nginx, so `/api/../x` and
    // `//api/x` go where `/x` and `/api/x` go; what is sent on keeps the client's form.
    let action = match static_files::normalize_path(req.uri().path()) {
        Ok(path) => vhost.locate(&path),
        Err(status) => return vhost.error(status, head),
    };
    let Some(action) = action else {
        return vhost.error(StatusCode::NOT_FOUND, head);
    };
    let limits = BodyLimits {
        max_size: state.limits.max_body_size,
        timeout: state.limits.body_timeout,
    };
    match action {
        Action::Static(root) => {
            // A declared length over the limit is refused before any `100 Continue`.
            if req.body().size_hint().lower() > limits.max_size {
                return vhost.error(StatusCode::PAYLOAD_TOO_LARGE, head);
            }
            if !req.body().is_end_stream()
                && let Err(status) = drain(req.body_mut(), limits).await
            {
                return vhost.error(status, head);
            }
            let (parts, _) = req.into_parts();
            match static_files::serve(root.clone(), parts).await {
                Ok(r) => r,
                Err(status) => vhost.error(status, head),
            }
        }
        Action::Proxy(group) => {
            match proxy::forward(group.clone(), req, info, limits, &state.elog).await {
                Ok(r) => r,
                Err(e) => vhost.error(e.0, head),
            }
        }
    }
}

/// The host name a Host value or authority names, without its port; `Err` for one
/// nginx refuses with a 400 (its `ngx_http_validate_host`): empty, `..`, a path
/// separator, a control byte or space. A trailing dot is dropped.
fn host_name(h: &str) -> Result<&str, ()> {
    let b = h.as_bytes();
    let mut prev = 0;
    // Where the port starts, unless the name is a bracketed IPv6 address.
    let mut colon = None;
    for (i, &c) in b.iter().enumerate() {
        // Most bytes are none of those looked at: one table load tells.
        if HOST_BYTES[usize::from(c)] {
            match c {
                b'.' if prev == b'.' => return Err(()),
                b':' if colon.is_none() => colon = Some(i),
                b'.' | b':' => {}
                _ => return Err(()),
            }
        }
        prev = c;
    }
    let end = if b.first() == Some(&b'[') {
        b.iter().position(|&c| c == b']').map(|i| i + 1)
    } else {
        colon
    };
    let name = &h[..end.unwrap_or(b.len())];
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(());
    }
    Ok(name)
}

/// The bytes [`host_name`] looks at: those refused (control bytes, space, DEL, path
/// separators), `.` and `:`.
static HOST_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = matches!(c as u8, 0..=b' ' | 0x7f | b'/' | b'\\' | b'.' | b':');
        c += 1;
    }
    t
};

/// Reads and discards a request body sent to a static location, enforcing the same
/// limits as the proxy so a malformed or endless body gets its 4xx.
async fn drain(body: &mut Incoming, limits: BodyLimits) -> Result<(), StatusCode> {
    let mut total = 0u64;
    loop {
        match tokio::time::timeout(limits.timeout, body.frame()).await {
            Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
            Ok(None) => return Ok(()),
            Ok(Some(Err(_))) => return Err(StatusCode::BAD_REQUEST),
            Ok(Some(Ok(f))) => {
                total += f.data_ref().map_or(0, |d| d.len() as u64);
                if total > limits.max_size {
                    return Err(StatusCode::PAYLOAD_TOO_LARGE);
                }
            }
        }
    }
}

/// The field's bytes as sent (a cheap clone): nginx logs them escaped byte by byte.
fn header_bytes(req: &Request<Incoming>, name: header::HeaderName) -> Option<HeaderValue> {
    req.headers().get(name).cloned()
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/3.0",
    }
}

fn blank_entry(remote: SocketAddr, status: u16) -> AccessEntry {
    AccessEntry {
        remote,
        time: SystemTime::now(),
        request_line: String::new(),
        status,
        referer: None,
        user_agent: None,
    }
}

/// nginx's lingering close: after our side is done, read and discard what the client is
/// still sending for a short while. Closing a socket with unread input makes the kernel
/// send RST, which can destroy the error response (413, 400, 408) before the client has
/// read it. A client that already closed costs one read returning 0.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I) {
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut buf = [0u8; 8192];
        let mut left: usize = 1 << 20;
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || n >= left {
                break;
            }
            left -= n;
        }
    })
    .await;
}

async fn write_408<I: AsyncWrite + Unpin>(io: &mut I) -> io::Result<()> {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let msg = format!(
        "HTTP/1.1 408 Request Timeout\r\nDate: {date}\r\nServer: web-tier\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\nrequest timeout\n"
    );
    io.write_all(msg.as_bytes()).await?;
    io.shutdown().await
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes either are the h2 preface or cannot be; returns whether they
/// are. The bytes read are left in `buf` to be replayed to the protocol handler. A drain
/// that starts before the first byte ends it with an error: no request to finish.
async fn sniff<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    drain: &Drain,
) -> io::Result<bool> {
    loop {
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - buf.len();
        let n = if buf.is_empty() {
            tokio::select! {
                n = io.read(&mut chunk[..want]) => n?,
                () = drain.started() => return Err(io::ErrorKind::ConnectionAborted.into()),
            }
        } else {
            io.read(&mut chunk[..want]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[..] != H2_PREFACE[..buf.len()] {
            return Ok(false);
        }
        if buf.len() == H2_PREFACE.len() {
            return Ok(true);
        }
    }
}

/// A client connection's transport: plain TCP can `sendfile` cached bodies
/// ([`sendfile::poll_write`]); TLS has to encrypt them, so it copies.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The socket, if bytes written here go to it unchanged.
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

impl Transport for tokio::net::TcpStream {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }
}

impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

/// Connection I/O as hyper sees it: replays the sniffed prefix, tracks whether part of a
/// request has arrived since the last write, and hands the socket back when dropped.
struct Guard<I> {
    io: Option<I>,
    prefix: Bytes,
    partial: bool,
    ret: Option<oneshot::Sender<(I, bool)>>,
}

impl<I> Drop for Guard<I> {
    fn drop(&mut self) {
        if let (Some(io), Some(tx)) = (self.io.take(), self.ret.take()) {
            let _ = tx.send((io, self.partial));
        }
    }
}

/// Largest write that goes out as one buffer rather than as its parts.
const JOIN_MAX: usize = 4096;

/// Writes `bufs`, joined into one buffer first when they are several and small (the
/// usual small response: hyper's head, then the body). A `send` of one buffer costs the
/// kernel less than a `writev` of two: the vectored path adds the file-write checks and
/// the iovec import on top of the socket's own work.
fn poll_write_joined<W: AsyncWrite + ?Sized>(
    io: Pin<&mut W>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if bufs.len() < 2 || total > JOIN_MAX {
        return io.poll_write_vectored(cx, bufs);
    }
    let mut joined = [std::mem::MaybeUninit::<u8>::uninit(); JOIN_MAX];
    let mut len = 0;
    for b in bufs {
        joined[len..len + b.len()].write_copy_of_slice(b);
        len += b.len();
    }
    // SAFETY: the loop above initialised the first `len` bytes.
    let joined = unsafe { joined[..len].assume_init_ref() };
    io.poll_write(cx, joined)
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl<I: AsyncRead + Unpin> AsyncRead for Guard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            this.partial = true;
            return Poll::Ready(Ok(()));
        }
        let Some(io) = this.io.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let before = buf.filled().len();
        let res = Pin::new(io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.partial = true;
        }
        res
    }
}

impl<I: Transport> AsyncWrite for Guard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(io) = this.io.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let res = Pin::new(io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.partial = false;
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(io) = this.io.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let res = match io.tcp().and_then(|tcp| sendfile::poll_write(tcp, cx, bufs)) {
            Some(res) => res,
            None => poll_write_joined(Pin::new(io), cx, bufs),
        };
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.partial = false;
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
}

/// The access log entry of a request not answered yet; written with status 499 (nginx's
/// "client closed request") if the request is dropped before it is answered.
struct Aborted<'a> {
    entry: Option<AccessEntry>,
    state: &'a State,
}

impl Drop for Aborted<'_> {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.status = 499;
            self.state.access.write(&e, 0);
        }
    }
}

/// Counts the body bytes sent and writes the access log line when the response is done
/// (or the client went away), which is when nginx logs too.
struct LogBody {
    inner: Body,
    bytes: u64,
    entry: Option<AccessEntry>,
    state: Arc<State>,
}

impl HttpBody for LogBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &res {
            let n = f.data_ref().map_or(0, |d| d.len() as u64);
            self.bytes += n;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LogBody {
    fn drop(&mut self) {
        if let Some(e) = self.entry.take() {
            self.state.access.write(&e, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_as_nginx_validates_them() {
        for (h, want) in [
            ("example.com", "example.com"),
            ("Example.COM:8080", "Example.COM"),
            ("example.com.", "example.com"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("10.0.0.1:80", "10.0.0.1"),
        ] {
            assert_eq!(host_name(h), Ok(want), "{h}");
        }
        for h in [
            "",
            ".",
            ":80",
            "a..b",
            "a/b",
            "a\\b",
            "a b",
            "a\tb",
            "a\u{7f}",
            "a.test/../x",
            "a:80/x",
        ] {
            assert_eq!(host_name(h), Err(()), "{h:?}");
        }
    }
}
