//! Reverse proxy: forward a request to an upstream group and stream the answer back.
//!
//! Retry rules (nginx's `proxy_next_upstream error timeout`): a request that never left
//! this process (connect refused or timed out, pooled connection found dead) is tried on
//! the next server whatever its method. Once sent, it is retried only if its method is
//! idempotent (RFC 9110 §9.2.2) *and* it had no body, since a streamed body cannot be
//! replayed. One without a body that a reused connection loses (closed or reset before
//! a byte of the answer) is sent again and not held against the server: the upstream
//! may have closed the idle connection just as the request went out. An invalid answer
//! (nginx's `invalid_header`, not in its default list) counts against the server but is
//! not retried: the client gets the 502. Error classes:
//! connect/read timeout -> 504; refused, reset, an invalid answer head, or no live
//! upstream -> 502; the client's own body being too large, too slow or malformed ->
//! 413 / 408 / 400, and the upstream is not blamed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::body::{Body, BoxError};
use crate::conditional::list_items;
use crate::h1client;
use crate::logs::{ErrorLog, Level};
use crate::upstream::Group;

/// Per-request facts the proxy needs from the connection.
pub struct ClientInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Whether the client connection is TLS.
    pub https: bool,
    /// The client's IP as a header value (`X-Real-IP`), formatted once per connection.
    ip: HeaderValue,
}

impl ClientInfo {
    /// Facts about a client connection from `remote`.
    pub fn new(remote: SocketAddr, https: bool) -> Self {
        let ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { remote, https, ip }
    }
}

/// Body limits the proxy enforces while streaming.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    /// Largest accepted body.
    pub max_size: u64,
    /// Longest wait between two reads of the body.
    pub timeout: Duration,
}

/// Headers meaningful only for a single connection (RFC 9110 §7.6.1), never forwarded.
const HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// [`HOP_NAMES`] typed, since `remove("te")` would parse the name on every call
/// (`from_static` gives the standard names their standard form, as `header::TE` is).
static HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static(HOP_NAMES[0]),
    HeaderName::from_static(HOP_NAMES[1]),
    HeaderName::from_static(HOP_NAMES[2]),
    HeaderName::from_static(HOP_NAMES[3]),
    HeaderName::from_static(HOP_NAMES[4]),
    HeaderName::from_static(HOP_NAMES[5]),
    HeaderName::from_static(HOP_NAMES[6]),
    HeaderName::from_static(HOP_NAMES[7]),
];

/// The index of a header name (lower case, as [`HeaderName`] keeps it) among the
/// hop-by-hop names.
pub fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    let name = name.as_str();
    HOP_NAMES.iter().position(|n| *n == name)
}

/// Whether `token` (in any case, as a `Connection` option comes) is a hop-by-hop name.
pub fn is_hop_by_hop(token: &[u8]) -> bool {
    HOP_NAMES
        .iter()
        .any(|n| token.eq_ignore_ascii_case(n.as_bytes()))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
///
/// Most messages carry few of them (a response usually just `Connection: keep-alive`),
/// so the names are looked over once and only those present are removed: a `remove` is
/// a hash lookup, and this runs twice per proxied request (in a profile of proxied
/// requests it took 1.8% of the CPU removing every name, 0.8% this way).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = [false; HOP_NAMES.len()];
    for name in h.keys() {
        if let Some(i) = hop_by_hop(name) {
            present[i] = true;
        }
    }
    // Index 0 is `Connection`. The options it names go too; those that are hop-by-hop
    // names already (`keep-alive`, by far the most common) are removed below.
    if present[0] {
        let mut named: Vec<HeaderName> = Vec::new();
        for t in list_items(h, header::CONNECTION) {
            if !is_hop_by_hop(t.as_bytes())
                && let Ok(n) = HeaderName::from_bytes(t.as_bytes())
            {
                named.push(n);
            }
        }
        for n in named {
            h.remove(n);
        }
    }
    for (n, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        h.remove(n);
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const BODY_TOO_LARGE: u8 = 1;
const BODY_TIMEOUT: u8 = 2;
const BODY_MALFORMED: u8 = 3;

/// Shared between the request body on its way up and the code waiting for the answer.
#[derive(Default)]
struct BodyState {
    fault: AtomicU8,
    /// Bytes read so far: progress keeps the read timeout from firing on a slow upload.
    read: AtomicU64,
    done: AtomicBool,
}

impl BodyState {
    fn fault_status(&self) -> Option<StatusCode> {
        match self.fault.load(Ordering::Acquire) {
            BODY_TOO_LARGE => Some(StatusCode::PAYLOAD_TOO_LARGE),
            BODY_TIMEOUT => Some(StatusCode::REQUEST_TIMEOUT),
            BODY_MALFORMED => Some(StatusCode::BAD_REQUEST),
            _ => None,
        }
    }
}

/// The client's request body, checked for size and pace as it streams upstream.
struct ClientBody {
    inner: Incoming,
    limits: BodyLimits,
    sleep: Pin<Box<Sleep>>,
    state: Arc<BodyState>,
}

impl ClientBody {
    fn fail(&self, code: u8, msg: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state.fault.store(code, Ordering::Release);
        Poll::Ready(Some(Err(msg.into())))
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                let total = this.state.read.fetch_add(n, Ordering::AcqRel) + n;
                if total > this.limits.max_size {
                    return this.fail(BODY_TOO_LARGE, "request body too large");
                }
                let deadline = tokio::time::Instant::now() + this.limits.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => this.fail(BODY_MALFORMED, "malformed request body"),
            Poll::Ready(None) => {
                this.state.done.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_ready() {
                    return this.fail(BODY_TIMEOUT, "request body timed out");
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `X-Forwarded-For` sent upstream: every one the client sent, in order, joined
/// with ", ", then the client's address (nginx's `$proxy_add_x_forwarded_for`).
fn forwarded_for(headers: &HeaderMap, client: &ClientInfo) -> HeaderValue {
    let mut prev = headers.get_all(X_FORWARDED_FOR).into_iter();
    let Some(first) = prev.next() else {
        return client.ip.clone();
    };
    let mut v = first.as_bytes().to_vec();
    for more in prev {
        v.extend_from_slice(b", ");
        v.extend_from_slice(more.as_bytes());
    }
    v.extend_from_slice(b", ");
    v.extend_from_slice(client.ip.as_bytes());
    // Valid field values joined by valid bytes: this cannot fail.
    HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or_else(|_| client.ip.clone())
}

/// An error the edge answers itself (rendered with the virtual server's error page).
#[derive(Debug)]
pub struct ProxyError(pub StatusCode);

/// Forwards `req` to `group` and returns the upstream's response with a streaming body.
pub async fn forward(
    group: Arc<Group>,
    req: Request<Incoming>,
    client: &ClientInfo,
    limits: BodyLimits,
    elog: &ErrorLog,
) -> Result<Response<Body>, ProxyError> {
    let (parts, incoming) = req.into_parts();
    // A declared length (hyper's size hint is the Content-Length) over the limit is
    // refused before anything is sent.
    if incoming.size_hint().lower() > limits.max_size {
        return Err(ProxyError(StatusCode::PAYLOAD_TOO_LARGE));
    }

    let mut headers = parts.headers;
    // Host is preserved. The target's authority, when there is one (HTTP/2's
    // :authority, an absolute-form target), is the host and replaces any Host field
    // (RFC 9112 §3.2.2), as it chose the server block. A request with neither (HTTP/1.0
    // allows that) gets the group's name, as nginx sends its `$proxy_host`: the
    // upstream hears HTTP/1.1, which requires a Host (RFC 9112 §3.2).
    let host = match parts.uri.authority() {
        Some(auth) => Some(HeaderValue::from_str(auth.as_str())),
        // HTTP/1.1 requests without one were refused already.
        None if parts.version != http::Version::HTTP_11 && !headers.contains_key(header::HOST) => {
            Some(HeaderValue::from_str(&group.name))
        }
        None => None,
    };
    if let Some(Ok(v)) = host {
        headers.insert(header::HOST, v);
    }
    strip_hop_by_hop(&mut headers);
    let xff = forwarded_for(&headers, client);
    // These replace any the client sent.
    let forwarded = [
        (X_FORWARDED_FOR, xff),
        (X_REAL_IP, client.ip.clone()),
        (
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if client.https { "https" } else { "http" }),
        ),
    ];
    // Origin form for the upstream; HTTP/2 requests arrive in absolute form.
    let uri = match parts.uri.path_and_query() {
        Some(_) if parts.uri.scheme().is_none() && parts.uri.authority().is_none() => parts.uri,
        Some(pq) => http::Uri::from(pq.clone()),
        None => http::Uri::from_static("/"),
    };
    let method = parts.method;

    let has_body = !incoming.is_end_stream();
    let lean = h1client::handles(&method, has_body);
    if !lean {
        for (name, value) in &forwarded {
            headers.insert(name, value.clone());
        }
    }
    let mut shared = None;
    let mut body = if has_body {
        let state = Arc::new(BodyState::default());
        shared = Some(state.clone());
        Some(Body::new(ClientBody {
            inner: incoming,
            limits,
            sleep: Box::pin(tokio::time::sleep(limits.timeout)),
            state,
        }))
    } else {
        None
    };
    // Without a body nothing ever records progress or a fault: share one idle state.
    static NO_BODY: BodyState = BodyState {
        fault: AtomicU8::new(0),
        read: AtomicU64::new(0),
        done: AtomicBool::new(false),
    };
    let state: &BodyState = shared.as_deref().unwrap_or(&NO_BODY);
    let replayable = idempotent(&method) && !has_body;
    let build = |headers: HeaderMap, body: Body| -> Request<Body> {
        let mut r = Request::new(body);
        *r.method_mut() = method.clone();
        *r.uri_mut() = uri.clone();
        *r.version_mut() = Version::HTTP_11;
        *r.headers_mut() = headers;
        r
    };
    // The lean client borrows the fields for every try. hyper's takes a request: a sent
    // one is only sent again to another server, so its headers are kept for that only
    // when there is one to go to.
    let spare = (!lean && replayable && group.peers.len() > 1).then(|| headers.clone());
    // A request in hand that has not been sent yet (None once a body was consumed).
    let mut pending: Option<Request<Body>> = if lean {
        None
    } else {
        Some(build(
            std::mem::take(&mut headers),
            body.take().unwrap_or_else(crate::body::empty),
        ))
    };

    let mut tried: Vec<usize> = Vec::new();
    let mut last = StatusCode::BAD_GATEWAY;
    // Stale pooled connections do not count as a try of that server; bound the loop anyway.
    let mut budget = group.peers.len() * 2 + 2;
    let mut no_live = false;
    while budget > 0 {
        budget -= 1;
        let Some(i) = group.select(&tried) else {
            no_live = tried.is_empty();
            break;
        };
        let peer = group.peers[i].addr;
        let attempt = if lean {
            lean_attempt(&group, i, &method, &uri, &headers, &forwarded).await
        } else {
            let req = match (pending.take(), &spare) {
                (Some(r), _) => Some(r),
                (None, Some(h)) => Some(build(h.clone(), crate::body::empty())),
                (None, None) => None,
            };
            match req {
                Some(req) => hyper_attempt(&group, i, req, state, &mut pending).await,
                None => break,
            }
        };
        match attempt {
            Attempt::Answer(resp) => return Ok(resp),
            Attempt::ClientFault(status) => return Err(ProxyError(status)),
            // Same server or next, the request is intact.
            Attempt::Unsent => continue,
            Attempt::ConnectFailed(e) => {
                tried.push(i);
                last = match e {
                    crate::upstream::ConnectError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let down = group.record_failure(i);
                elog.log(
                    Level::Warn,
                    "upstream connect failed",
                    &[
                        ("upstream", &group.name),
                        ("peer", &peer),
                        ("error", &e),
                        ("marked_down", &down),
                        ("client", &client.remote),
                    ],
                );
                continue;
            }
            Attempt::Failed { error, invalid } => {
                tried.push(i);
                last = StatusCode::BAD_GATEWAY;
                let down = group.record_failure(i);
                elog.log(
                    Level::Warn,
                    "upstream request failed",
                    &[
                        ("upstream", &group.name),
                        ("peer", &peer),
                        ("error", &error),
                        ("marked_down", &down),
                        ("method", &method),
                        ("client", &client.remote),
                    ],
                );
                if invalid {
                    break;
                }
            }
            Attempt::TimedOut => {
                tried.push(i);
                last = StatusCode::GATEWAY_TIMEOUT;
                let down = group.record_failure(i);
                elog.log(
                    Level::Warn,
                    "upstream read timed out",
                    &[
                        ("upstream", &group.name),
                        ("peer", &peer),
                        ("marked_down", &down),
                        ("method", &method),
                        ("client", &client.remote),
                    ],
                );
            }
        }
        if !replayable {
            // Sent, and not safe to send again.
            break;
        }
    }
    if no_live {
        elog.log(
            Level::Error,
            "no live upstreams",
            &[("upstream", &group.name), ("client", &client.remote)],
        );
    }
    Err(ProxyError(last))
}

/// How one try on one server went.
enum Attempt {
    Answer(Response<Body>),
    /// The client's own body was too large, too slow or malformed: not the upstream's
    /// fault.
    ClientFault(StatusCode),
    /// The connection failed before the request left: try again, same server or next.
    Unsent,
    ConnectFailed(crate::upstream::ConnectError),
    /// Sent, then the exchange failed; `invalid` if the upstream answered with a head
    /// this proxy refuses (retried on no other server, as nginx's default).
    Failed {
        error: BoxError,
        invalid: bool,
    },
    TimedOut,
}

/// One try through the lean client (requests without a body).
async fn lean_attempt(
    group: &Group,
    i: usize,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    forwarded: &[(HeaderName, HeaderValue)],
) -> Attempt {
    let mut conn = match group.lean_connection(i).await {
        Ok(c) => c,
        Err(e) => return Attempt::ConnectFailed(e),
    };
    let guard = group.begin(i);
    let reused = conn.reused();
    match conn.send(method, uri, headers, forwarded).await {
        Ok(head) => {
            group.record_success(i);
            let body = group.lean_body(i, &head, conn, guard);
            // The lean client leaves the hop-by-hop fields, `Date` and `Server` out of
            // the head it builds.
            let (parts, ()) = head.response.into_parts();
            Attempt::Answer(Response::from_parts(parts, Body::new(body)))
        }
        Err(h1client::SendError::Unsent(_)) => Attempt::Unsent,
        // A pooled connection the upstream closed or reset just as the request went out:
        // sent again (every method the lean client takes is idempotent, see
        // `h1client::handles`), and not held against the server.
        Err(h1client::SendError::Closed | h1client::SendError::Unanswered(_)) if reused => {
            Attempt::Unsent
        }
        Err(h1client::SendError::TimedOut) => Attempt::TimedOut,
        Err(e) => Attempt::Failed {
            invalid: matches!(e, h1client::SendError::Malformed(_)),
            error: e.into(),
        },
    }
}

/// One try through hyper's client (requests with a body, or methods that may have
/// one). A request that never left comes back in `pending`.
async fn hyper_attempt(
    group: &Group,
    i: usize,
    req: Request<Body>,
    state: &BodyState,
    pending: &mut Option<Request<Body>>,
) -> Attempt {
    let mut up = match group.connection(i).await {
        Ok(s) => s,
        Err(e) => {
            *pending = Some(req);
            return Attempt::ConnectFailed(e);
        }
    };
    let guard = group.begin(i);
    match wait_with_progress(up.send(req), group.read_timeout, state).await {
        Some(Ok(resp)) => {
            // Framing the lean client would refuse, hyper reads (a `Content-Length` next
            // to `Transfer-Encoding` would reach the client with a chunked body's bytes):
            // refused the same way. Dropping `up` closes the connection.
            if let Err(e) = h1client::check_framing(resp.headers()) {
                return Attempt::Failed {
                    error: e.into(),
                    invalid: true,
                };
            }
            group.record_success(i);
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            // As nginx does by default (`proxy_hide_header`): the answer carries this
            // server's own `Date` (hyper's) and `Server` (set for every answer).
            rparts.headers.remove(header::DATE);
            rparts.headers.remove(header::SERVER);
            let body = group.response_body(i, rbody, up, guard);
            Attempt::Answer(Response::from_parts(rparts, Body::new(body)))
        }
        Some(Err(mut e)) => {
            if let Some(status) = state.fault_status() {
                return Attempt::ClientFault(status);
            }
            if let Some(unsent) = e.take_message() {
                *pending = Some(unsent);
                return Attempt::Unsent;
            }
            let e = e.into_error();
            Attempt::Failed {
                invalid: e.is_parse(),
                error: e.into(),
            }
        }
        None => match state.fault_status() {
            Some(status) => Attempt::ClientFault(status),
            None => Attempt::TimedOut,
        },
    }
}

/// Waits for the response head; `None` on read timeout. The timer restarts while the
/// client is still uploading, so a large, steady upload is not mistaken for a dead
/// upstream (nginx starts `proxy_read_timeout` after the request is sent).
async fn wait_with_progress<F, T>(fut: F, timeout: Duration, state: &BodyState) -> Option<T>
where
    F: Future<Output = T>,
{
    tokio::pin!(fut);
    let mut seen = state.read.load(Ordering::Acquire);
    loop {
        match tokio::time::timeout(timeout, &mut fut).await {
            Ok(v) => return Some(v),
            Err(_) => {
                let now = state.read.load(Ordering::Acquire);
                if state.done.load(Ordering::Acquire) || now == seen {
                    return None;
                }
                seen = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_named() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-keep"], "yes");

        // Options in any case, several Connection headers, and `close` as a name.
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("Close, X-One"));
        h.append("connection", HeaderValue::from_static(" KEEP-ALIVE ,x-two"));
        for n in [
            "x-one",
            "x-two",
            "close",
            "keep-alive",
            "proxy-connection",
            "te",
        ] {
            h.insert(n, HeaderValue::from_static("1"));
        }
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-keep"]);

        // Nothing hop-by-hop: nothing changes.
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
