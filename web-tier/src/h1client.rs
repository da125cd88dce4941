//! A lean HTTP/1.1 client for the proxy's most common request: one without a body
//! (`GET`, `HEAD`, `OPTIONS`, `DELETE`). Requests with a body keep going through hyper's
//! client (see [`crate::upstream`]), which writes the body and reads the answer at once.
//!
//! # Why not hyper's client for these too
//! Measured in the `web` benchmark's setup, over 10 connections: with hyper's client a
//! proxied `GET` cost web-tier about 19.5 us of CPU against nginx's 16, and nearly all
//! of the difference was user space. hyper's client side alone took about 2.6 us per
//! request: its dispatcher, the channel and one-shot between the request and the
//! connection, and the body channel. With this client the same request cost about
//! 16.5-17.5 us at the time (about nginx's after later work on the rest of the path),
//! and web-tier wakes wrk and the upstream about as often as nginx does (0.16 context
//! switches per request for each, against 0.28 before and nginx's 0.14 to 0.16).
//!
//! # What it does
//! - Writes the request head in one `write` (the headers come from a validated
//!   [`HeaderMap`], so no CR or LF can be smuggled in); the proxy's `X-Forwarded-*`
//!   fields are written after them, replacing any the client sent.
//! - Reads the answer's head with `httparse`, skipping 1xx interim answers; `101` is
//!   refused (no upgrades through the proxy). The head it hands on has no hop-by-hop
//!   fields and no `Date` or `Server` (the answer gets this server's own, as nginx
//!   does); its values are slices of the read buffer, not copies.
//! - Every wait (the write, the head, each read of the body) fails after the read
//!   timeout without progress (nginx's `proxy_read_timeout`); the timer stays with the
//!   connection and is re-armed, not made, for each exchange.
//! - Frames the body as RFC 9112 §6.3 says: none for `HEAD`, `204` and `304`; chunked
//!   with `Transfer-Encoding: chunked`; else by `Content-Length`; else until the
//!   upstream closes. As nginx does, an answer is refused (502) whatever its method or
//!   status when its framing fields could be read two ways: both fields, a transfer
//!   coding other than `chunked` alone, more than one field of either, a length that
//!   is not 1*DIGIT (a list such as `5, 5` too). hyper's client reads such answers, so
//!   the proxy checks its answers by the same rules ([`check_framing`]). An HTTP/1.0
//!   answer with `Transfer-Encoding` is read, and its connection not reused (RFC 9112
//!   §6.1). A head is at most 64 KiB, chunk sizes 1*HEXDIG fitting in 64 bits.
//! - Streams the body ([`LeanBody`]) as the client takes it and returns the connection
//!   to its pool at the end when it may be reused (HTTP/1.1 without `Connection:
//!   close`, nothing read past the answer).

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::proxy::is_hop_by_hop;
use crate::upstream::{ActiveGuard, Peer, ReadTimer};

/// Longest response head accepted (nginx's `proxy_buffer_size` is 4 or 8 KiB by default).
const MAX_HEAD: usize = 64 << 10;
/// Most header fields in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line or trailer field.
const MAX_LINE: usize = 4 << 10;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 << 10;

/// Whether a request goes by this client: no body, and a method that never has one.
pub fn handles(method: &Method, has_body: bool) -> bool {
    !has_body
        && matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
        )
}

/// One connection to an upstream server, with what was read from it and not used yet.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// Taken from the pool (it served an earlier request).
    reused: bool,
    /// The read timeout, for every wait on this connection: the request's write, the
    /// answer's head, each read of its body. It stays with the connection, so a
    /// pooled connection's next exchange re-arms it (for tokio, a later deadline on a
    /// registered timer is one atomic store) rather than registering a new one.
    timer: ReadTimer,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Not a byte of the request was written: it may go on another connection as is.
    #[error("the connection failed before the request was written: {0}")]
    Unsent(io::Error),
    /// The connection failed (reset, broken pipe) once the request or part of it was
    /// written, before a byte of the answer arrived.
    #[error("the connection failed before the upstream answered: {0}")]
    Unanswered(io::Error),
    /// Reading failed once part of the answer had arrived.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a byte of its answer.
    #[error("the upstream closed the connection without answering")]
    Closed,
    /// Nothing could be written or read for the read timeout.
    #[error("the upstream did not answer within the read timeout")]
    TimedOut,
    /// The answer's head is not valid HTTP/1.1 (or is one this proxy refuses).
    #[error("invalid answer from the upstream: {0}")]
    Malformed(&'static str),
}

impl Conn {
    /// A new connection; a wait on it fails after `read_timeout` without progress.
    pub fn new(io: TcpStream, read_timeout: Duration) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            reused: false,
            timer: ReadTimer::new(read_timeout),
        }
    }

    /// Whether it served an earlier request. An idempotent request that finds such a
    /// connection closed or reset without an answer is sent again on a new one (nginx
    /// does the same for its cached upstream connections): the upstream may have closed
    /// it just as the request went out.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Whether an idle pooled connection is still usable: nothing arrived on it (a close
    /// or stray bytes) since it was pooled. No system call unless the socket was
    /// reported readable.
    pub fn alive(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends a request without a body and reads the answer's head. The body is read by
    /// the [`LeanBody`] that [`Head::body`] makes.
    pub async fn send(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Head, SendError> {
        let head = encode(method, uri, headers, extra);
        self.timer.progress();
        let mut sent = 0;
        while sent < head.len() {
            match poll_fn(|cx| self.poll_write(cx, &head[sent..])).await {
                Ok(0) if sent == 0 => {
                    return Err(SendError::Unsent(io::ErrorKind::WriteZero.into()));
                }
                Ok(0) => return Err(SendError::Unanswered(io::ErrorKind::WriteZero.into())),
                Ok(n) => sent += n,
                Err(SendError::Io(e)) if sent == 0 => return Err(SendError::Unsent(e)),
                Err(SendError::Io(e)) => return Err(SendError::Unanswered(e)),
                Err(e) => return Err(e),
            }
        }
        // Whether a byte of the answer (an interim one included) has arrived.
        let mut answered = false;
        loop {
            if let Some(head) = self.parse_head(method)? {
                return Ok(head);
            }
            // An incomplete head already over the limit (a complete one is measured in
            // `parse_head`).
            if self.buf.len() > MAX_HEAD {
                return Err(SendError::Malformed("response head too large"));
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if answered => {
                    return Err(SendError::Malformed(
                        "connection closed inside the response head",
                    ));
                }
                Ok(0) => return Err(SendError::Closed),
                Ok(_) => answered = true,
                Err(SendError::Io(e)) if !answered => return Err(SendError::Unanswered(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes some of `data`, or fails once the read timeout passes without progress.
    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize, SendError>> {
        match Pin::new(&mut self.io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                self.timer.progress();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(SendError::Io(e))),
            Poll::Pending if self.timer.expired(cx) => Poll::Ready(Err(SendError::TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads what has arrived onto the buffer's end: the byte count, 0 at the upstream's
    /// close. Fails once the read timeout passes without a byte.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, SendError>> {
        self.buf.reserve(READ_CHUNK);
        let before = self.buf.len();
        let mut rb = ReadBuf::uninit(self.buf.spare_capacity_mut());
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                // SAFETY: poll_read initialised and filled `n` bytes of the spare
                // capacity, right after the buffer's current end.
                unsafe { self.buf.set_len(before + n) };
                self.timer.progress();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(SendError::Io(e))),
            Poll::Pending if self.timer.expired(cx) => Poll::Ready(Err(SendError::TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The final answer's head if the buffer holds it, after skipping 1xx answers.
    fn parse_head(&mut self, method: &Method) -> Result<Option<Head>, SendError> {
        loop {
            if self.buf.is_empty() {
                return Ok(None);
            }
            // Uninitialised: httparse fills what it uses (an initialised array of 100
            // fields was a loop of stores on every answer).
            let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut []);
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut r,
                &self.buf,
                &mut fields,
            ) {
                // However the reads fell (one can bring the rest of a head and much
                // more), a head is measured whole.
                Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                    return Err(SendError::Malformed("response head too large"));
                }
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(SendError::Malformed("too many header fields"));
                }
                Err(_) => return Err(SendError::Malformed("unparsable response head")),
            };
            let code = r.code.unwrap_or(0);
            if code == 101 {
                return Err(SendError::Malformed(
                    "101 Switching Protocols is not supported",
                ));
            }
            if (100..200).contains(&code) {
                self.buf.advance(len);
                continue;
            }
            let status =
                StatusCode::from_u16(code).map_err(|_| SendError::Malformed("bad status code"))?;
            // One pass over the fields: each name parsed once, the framing facts noted,
            // hop-by-hop fields left out (rather than removed from a map afterwards), and
            // so are `Date` and `Server`, which the answer gets from this server, as
            // with nginx (its default `proxy_hide_header`).
            // The values stay in the buffer: the head is split off it whole and each
            // value is a slice of that, as hyper does, not a copy of its own.
            let base = self.buf.as_ptr() as usize;
            let mut facts = Facts::default();
            let mut fields = Vec::with_capacity(r.headers.len());
            for f in r.headers.iter() {
                // Only the names passed on are parsed into a `HeaderName`.
                if !facts.see(f.name, f.value) {
                    continue;
                }
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| SendError::Malformed("bad header name"))?;
                let start = f.value.as_ptr() as usize - base;
                fields.push((name, start..start + f.value.len()));
            }
            let (state, keep) = facts.framing(method, status, r.version == Some(1))?;
            if facts.named {
                // `Connection` names other fields as hop-by-hop too (rare: it usually
                // says just `keep-alive` or `close`).
                let options: Vec<&[u8]> = r
                    .headers
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                    .flat_map(|f| list(f.value))
                    .collect();
                fields.retain(|(name, _)| {
                    !options
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case(name.as_str().as_bytes()))
                });
            }
            let head = self.buf.split_to(len).freeze();
            // Room for the `Server` field the server adds to every answer: a map that
            // has to grow for it copies itself.
            let mut map = HeaderMap::with_capacity(fields.len() + 1);
            for (name, span) in fields {
                let value = HeaderValue::from_maybe_shared(head.slice(span))
                    .map_err(|_| SendError::Malformed("bad header value"))?;
                map.append(name, value);
            }
            let mut response = Response::new(());
            *response.status_mut() = status;
            *response.headers_mut() = map;
            return Ok(Some(Head {
                response,
                state,
                keep,
            }));
        }
    }
}

/// An answer's head and how its body is framed.
pub struct Head {
    /// Status and header fields, without the hop-by-hop ones, `Date` and `Server`.
    pub response: Response<()>,
    /// Where reading the body starts.
    state: State,
    keep: bool,
}

impl Head {
    /// The body, reading from `conn`; at its end the connection goes back to `peer`'s
    /// pool (at most `cap` idle) if it may be reused.
    pub fn body(&self, conn: Conn, peer: Arc<Peer>, cap: usize, guard: ActiveGuard) -> LeanBody {
        LeanBody {
            conn: Some(conn),
            state: self.state,
            keep: self.keep,
            pool: Some((peer, cap)),
            _guard: guard,
        }
    }
}

/// The request head: origin-form target, HTTP/1.1, the fields of `headers` and then
/// those of `extra`, which replace any of the same name in `headers` (the proxy's
/// `X-Forwarded-*` fields, written here rather than inserted into the map, which would
/// often have to grow for them).
fn encode(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    extra: &[(HeaderName, HeaderValue)],
) -> Vec<u8> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut v = Vec::with_capacity(32 + target.len() + 48 * (headers.len() + extra.len()));
    v.extend_from_slice(method.as_str().as_bytes());
    v.push(b' ');
    v.extend_from_slice(target.as_bytes());
    v.extend_from_slice(b" HTTP/1.1\r\n");
    let replaced = |name: &HeaderName| extra.iter().any(|(n, _)| n == name);
    let fields = headers.iter().filter(|(name, _)| !replaced(name));
    for (name, value) in fields.chain(extra.iter().map(|(n, v)| (n, v))) {
        v.extend_from_slice(name.as_str().as_bytes());
        v.extend_from_slice(b": ");
        v.extend_from_slice(value.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v
}

/// The comma-separated items of a field value, trimmed, empty ones left out.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What an answer's framing depends on, noted field by field as the head is read.
#[derive(Default)]
struct Facts {
    /// `Connection: close` / `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// `Connection` names a field that is not hop-by-hop already.
    named: bool,
    /// A `Transfer-Encoding` field came (the body is chunked: any other value is a
    /// [`Facts::fault`]).
    transfer_encoding: bool,
    /// A `Content-Length` field came.
    content_length: bool,
    /// Its value, if valid (else there is a [`Facts::fault`]).
    length: u64,
    /// The first framing field seen that makes the answer unusable.
    fault: Option<&'static str>,
}

impl Facts {
    /// Notes what a field (its name as it came, in any case) says about the framing,
    /// and says whether it is passed on: not hop-by-hop, not `Date` or `Server`.
    fn see(&mut self, name: &str, value: &[u8]) -> bool {
        // The length first: most fields are decided by it alone.
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match name.len() {
            10 if is("connection") => {
                for t in list(value) {
                    self.close |= t.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                    self.named |= !is_hop_by_hop(t);
                }
                false
            }
            // nginx's rules for an upstream's answer (its upstream module's
            // `process_transfer_encoding` and `process_content_length`), stricter than
            // RFC 9112 §6.3 asks of a client: one field of each at most, exactly
            // `chunked`, a length of digits only (no list, even of equal values).
            // Anything else could be read two ways by whoever is behind this proxy.
            17 if is("transfer-encoding") => {
                if self.transfer_encoding {
                    self.refuse("more than one Transfer-Encoding field");
                } else if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    self.refuse("a Transfer-Encoding other than chunked");
                }
                self.transfer_encoding = true;
                false
            }
            14 if is("content-length") => {
                if self.content_length {
                    self.refuse("more than one Content-Length field");
                }
                self.content_length = true;
                match digits(value.trim_ascii()) {
                    Some(n) => self.length = n,
                    None => self.refuse("invalid Content-Length"),
                }
                true
            }
            4 if is("date") => false,
            6 if is("server") => false,
            _ => !is_hop_by_hop(name.as_bytes()),
        }
    }

    /// Notes a fault, unless an earlier one was noted.
    fn refuse(&mut self, why: &'static str) {
        self.fault.get_or_insert(why);
    }

    /// Why the framing fields make the answer unusable, whatever its method or status
    /// (nginx answers such an answer with 502, "upstream sent invalid header").
    fn fault(&self) -> Option<&'static str> {
        self.fault.or_else(|| {
            (self.transfer_encoding && self.content_length)
                .then_some("both Transfer-Encoding and Content-Length")
        })
    }

    /// How the body is delimited, as the state reading it starts in ([`State::Done`]:
    /// no body), and whether the connection may be reused after it (RFC 9112 §6.3 and
    /// §9.3).
    fn framing(
        &self,
        method: &Method,
        status: StatusCode,
        http11: bool,
    ) -> Result<(State, bool), SendError> {
        if let Some(why) = self.fault() {
            return Err(SendError::Malformed(why));
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding is read as it says
        // (as nginx does), and the connection is closed after it.
        let keep = if http11 {
            !self.close
        } else {
            self.keep_alive && !self.transfer_encoding
        };
        if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((State::Done, keep));
        }
        Ok(if self.transfer_encoding {
            (State::Chunk(Chunk::Size), keep)
        } else if self.content_length {
            (State::Length(self.length), keep)
        } else {
            (State::Close, false)
        })
    }
}

/// Refuses an answer whose framing fields the lean client would refuse (see
/// [`Facts::see`]): for hyper's client, which reads such answers (it keeps a
/// `Content-Length` next to `Transfer-Encoding: chunked`, accepts `5, 5`, reads
/// `Transfer-Encoding: gzip` to the close), so that both clients pass on the same.
pub(crate) fn check_framing(headers: &HeaderMap) -> Result<(), SendError> {
    let mut facts = Facts::default();
    for value in headers.get_all(http::header::TRANSFER_ENCODING) {
        facts.see("transfer-encoding", value.as_bytes());
    }
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        facts.see("content-length", value.as_bytes());
    }
    facts
        .fault()
        .map_or(Ok(()), |why| Err(SendError::Malformed(why)))
}

/// A decimal number of 1*DIGIT (no sign, no spaces), if it fits in a `u64`.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        let d = char::from(d).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A chunk-size line's size (RFC 9112 §7.1): 1*HEXDIG, then nothing, or `;` and the
/// chunk extensions (ignored), with optional whitespace before the `;` (BWS, §7.1.1).
/// Leading zeros are allowed; a size that does not fit in a `u64` is refused.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (hex, rest) = line.split_at(end);
    // After the digits: nothing, or `;` after optional spaces and tabs.
    let bws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    if hex.is_empty() || !(rest.is_empty() || rest.get(bws) == Some(&b';')) {
        return None;
    }
    let zeros = hex.iter().take_while(|&&b| b == b'0').count();
    let hex = &hex[zeros..];
    if hex.len() > 16 {
        return None;
    }
    hex.iter().try_fold(0u64, |n, &d| {
        Some((n << 4) | u64::from(char::from(d).to_digit(16)?))
    })
}

/// Where reading a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left of a `Content-Length` body.
    Length(u64),
    /// Inside a chunked body.
    Chunk(Chunk),
    /// The body runs until the upstream closes.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields, up to the empty line.
    Trailers,
}

/// What polling a body for its next frame gives.
type FramePoll = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// An upstream answer's body, read from its connection as the client takes it.
pub struct LeanBody {
    conn: Option<Conn>,
    state: State,
    keep: bool,
    /// Where the connection goes back at the end.
    pool: Option<(Arc<Peer>, usize)>,
    _guard: ActiveGuard,
}

impl LeanBody {
    /// The body ended: the connection goes back to its pool if it may be reused.
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some((peer, cap))) = (self.conn.take(), self.pool.take())
            && self.keep
            && conn.buf.is_empty()
        {
            peer.lean_checkin(
                Conn {
                    reused: true,
                    ..conn
                },
                cap,
            );
        }
    }

    /// The body failed: the connection is dropped (closed) and the body ends.
    fn fail(&mut self, err: impl Into<BoxError>) -> FramePoll {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(err.into())))
    }

    /// Decodes what the buffer holds: a data frame, the end, or `None` (read more).
    fn decode(&mut self) -> Option<FramePoll> {
        loop {
            let buf = &mut self.conn.as_mut()?.buf;
            match self.state {
                State::Done => return Some(Poll::Ready(None)),
                State::Length(0) => {
                    self.finish();
                    return Some(Poll::Ready(None));
                }
                State::Length(left) | State::Chunk(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return None;
                    }
                    let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = match self.state {
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::Chunk(Chunk::DataEnd),
                        _ => State::Chunk(Chunk::Data(left)),
                    };
                    return Some(Poll::Ready(Some(Ok(Frame::data(data)))));
                }
                State::Close => {
                    if buf.is_empty() {
                        return None;
                    }
                    let data = buf.split().freeze();
                    return Some(Poll::Ready(Some(Ok(Frame::data(data)))));
                }
                State::Chunk(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return None;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Some(self.fail("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Chunk(Chunk::Size);
                }
                State::Chunk(step @ (Chunk::Size | Chunk::Trailers)) => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_LINE {
                            return Some(self.fail("chunk-size line or trailer too long"));
                        }
                        return None;
                    };
                    let line = buf.split_to(end + 2);
                    let line = &line[..end];
                    if step == Chunk::Trailers {
                        if line.is_empty() {
                            self.finish();
                            return Some(Poll::Ready(None));
                        }
                        continue;
                    }
                    self.state = match chunk_size(line) {
                        None => return Some(self.fail("invalid chunk size")),
                        Some(0) => State::Chunk(Chunk::Trailers),
                        Some(n) => State::Chunk(Chunk::Data(n)),
                    };
                }
            }
        }
    }
}

impl HttpBody for LeanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> FramePoll {
        let this = &mut *self;
        loop {
            if let Some(ready) = this.decode() {
                return ready;
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state == State::Close => {
                    this.keep = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("the upstream closed the connection inside the body"),
                Ok(_) => {}
                Err(SendError::TimedOut) => return this.fail("upstream read timed out"),
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for LeanBody {
    fn drop(&mut self) {
        // A body with nothing left (HEAD, 204, 304, a length fully read) may be dropped
        // without its end being polled; its connection is still reusable.
        if self.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, UpstreamGroup, UpstreamServer};
    use crate::upstream::Group;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;

    /// An upstream on one connection at a time: each request head read gets the next
    /// scripted answer (written in pieces of `piece` bytes). A `None` closes the
    /// connection: right after the answer before it, or instead of answering when it
    /// comes first. Returns the address and the number of connections.
    fn scripted(
        answers: Vec<Option<&'static [u8]>>,
        piece: usize,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let mut answers = answers.into_iter().peekable();
            'accept: loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                loop {
                    let mut got = Vec::new();
                    let mut b = [0u8; 1024];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => continue 'accept,
                            Ok(n) => got.extend_from_slice(&b[..n]),
                        }
                    }
                    match answers.next() {
                        Some(Some(a)) => {
                            for part in a.chunks(piece) {
                                if s.write_all(part).await.is_err() {
                                    continue 'accept;
                                }
                                tokio::task::yield_now().await;
                            }
                            if answers.next_if(Option::is_none).is_some() {
                                continue 'accept;
                            }
                        }
                        Some(None) => continue 'accept,
                        None => return,
                    }
                }
            }
        });
        (addr, conns)
    }

    fn group(addr: SocketAddr) -> Group {
        let cfg = UpstreamGroup {
            balance: Balance::RoundRobin,
            servers: vec![UpstreamServer { addr, weight: 1 }],
            keepalive: 4,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            max_fails: 1,
            fail_timeout: Duration::from_secs(60),
        };
        Group::new("g", &cfg)
    }

    /// One exchange through the pool: the status, the body (or its error) and whether
    /// the connection went back to the pool.
    async fn exchange(
        g: &Group,
        method: Method,
    ) -> Result<(u16, Result<Vec<u8>, String>, usize), String> {
        let mut conn = g.lean_connection(0).await.map_err(|e| e.to_string())?;
        let uri: Uri = "/x".parse().unwrap();
        let head = conn
            .send(&method, &uri, &h(&[("host", "up")]), &[])
            .await
            .map_err(|e| e.to_string())?;
        let status = head.response.status().as_u16();
        let body = g.lean_body(0, &head, conn, g.begin(0));
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string());
        Ok((status, body, g.peers[0].lean_idle_len()))
    }

    #[tokio::test]
    async fn answers_are_framed_and_connections_reused_as_they_allow() {
        let answers: Vec<Option<&'static [u8]>> = vec![
            // Interim answers are skipped; a length-delimited body.
            Some(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
            // Chunked, with an extension and a trailer.
            Some(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n"),
            // HEAD: the length describes the GET; nothing follows.
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"),
            Some(b"HTTP/1.1 304 Not Modified\r\netag: \"e\"\r\n\r\n"),
            Some(b"HTTP/1.1 204 No Content\r\n\r\n"),
            // Connection: close, then a new connection.
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
        ];
        for piece in [usize::MAX, 1] {
            let (addr, conns) = scripted(answers.clone(), piece);
            let g = group(addr);
            assert_eq!(
                exchange(&g, Method::GET).await.unwrap(),
                (200, Ok(b"hello".to_vec()), 1)
            );
            assert_eq!(
                exchange(&g, Method::GET).await.unwrap(),
                (200, Ok(b"abc0123456789".to_vec()), 1)
            );
            assert_eq!(
                exchange(&g, Method::HEAD).await.unwrap(),
                (200, Ok(vec![]), 1)
            );
            assert_eq!(
                exchange(&g, Method::GET).await.unwrap(),
                (304, Ok(vec![]), 1)
            );
            assert_eq!(
                exchange(&g, Method::GET).await.unwrap(),
                (204, Ok(vec![]), 1)
            );
            assert_eq!(
                exchange(&g, Method::GET).await.unwrap(),
                (200, Ok(b"ok".to_vec()), 0)
            );
            assert_eq!(
                conns.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn bodies_to_the_close_and_http_1_0_chunked_are_not_reused() {
        // No length: the body runs to the close.
        let (addr, _) = scripted(vec![Some(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"), None], 3);
        let g = group(addr);
        assert_eq!(
            exchange(&g, Method::GET).await.unwrap(),
            (200, Ok(b"until the end".to_vec()), 0)
        );
        // HTTP/1.0 with Transfer-Encoding: read as chunked, then closed even though it
        // asks for keep-alive (RFC 9112 §6.1).
        let (addr, _) = scripted(
            vec![Some(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")],
            usize::MAX,
        );
        let g = group(addr);
        assert_eq!(
            exchange(&g, Method::GET).await.unwrap(),
            (200, Ok(b"hi".to_vec()), 0)
        );
        // HTTP/1.0 without keep-alive.
        let (addr, _) = scripted(
            vec![Some(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nz")],
            usize::MAX,
        );
        let g = group(addr);
        assert_eq!(
            exchange(&g, Method::GET).await.unwrap(),
            (200, Ok(b"z".to_vec()), 0)
        );
    }

    #[tokio::test]
    async fn bad_answers_fail_the_exchange() {
        let cases: [(Method, &'static [u8], &str); 16] = [
            (
                Method::GET,
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: ws\r\n\r\n",
                "101",
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx",
                "invalid Content-Length",
            ),
            // A list, even of one value repeated, is not a length (nginx: 502).
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello",
                "invalid Content-Length",
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "more than one Content-Length",
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
                "more than one Content-Length",
            ),
            // Both: whichever the client behind the proxy believes, it is wrong.
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                "both Transfer-Encoding and Content-Length",
            ),
            // Whatever the method or status.
            (
                Method::HEAD,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                "both Transfer-Encoding and Content-Length",
            ),
            (
                Method::GET,
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n",
                "both Transfer-Encoding and Content-Length",
            ),
            (
                Method::GET,
                b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: gzip\r\n\r\n",
                "other than chunked",
            ),
            // Transfer codings other than `chunked` alone.
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzzz",
                "other than chunked",
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                "other than chunked",
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                "more than one Transfer-Encoding",
            ),
            (Method::GET, b"HTTP/1.1 2000 OK\r\n\r\n", "unparsable"),
            (Method::GET, b"HTTX/1.1 200 OK\r\n\r\n", "unparsable"),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
                "unparsable",
            ),
        ];
        for (method, answer, want) in cases {
            let (addr, _) = scripted(vec![Some(answer)], usize::MAX);
            let err = exchange(&group(addr), method).await.unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(answer)
            );
        }
        // A head that never ends within the limit.
        let huge: &'static [u8] = Box::leak(
            [
                b"HTTP/1.1 200 OK\r\nx: ".as_slice(),
                &vec![b'a'; MAX_HEAD + 10],
            ]
            .concat()
            .into_boxed_slice(),
        );
        let (addr, _) = scripted(vec![Some(huge)], usize::MAX);
        let err = exchange(&group(addr), Method::GET).await.unwrap_err();
        assert!(err.contains("too large"), "{err}");
        // The limit is exact, however the reads fall: a head one byte over it is refused
        // even when it ends in the read that crossed the limit.
        let head = |len: usize| -> &'static [u8] {
            let start = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx: ".as_slice();
            let fill = len - start.len() - 4;
            Box::leak(
                [start, &vec![b'a'; fill], b"\r\n\r\n"]
                    .concat()
                    .into_boxed_slice(),
            )
        };
        let (addr, _) = scripted(vec![Some(head(MAX_HEAD))], usize::MAX);
        assert_eq!(
            exchange(&group(addr), Method::GET).await.unwrap(),
            (200, Ok(vec![]), 1)
        );
        let (addr, _) = scripted(vec![Some(head(MAX_HEAD + 1))], usize::MAX);
        let err = exchange(&group(addr), Method::GET).await.unwrap_err();
        assert!(err.contains("too large"), "{err}");
        // Closed before answering; closed inside the head.
        let (addr, _) = scripted(vec![None], usize::MAX);
        let err = exchange(&group(addr), Method::GET).await.unwrap_err();
        assert!(err.contains("without answering"), "{err}");
    }

    #[tokio::test]
    async fn bad_bodies_fail_the_body_and_drop_the_connection() {
        let cases: [&'static [u8]; 7] = [
            // Shorter than its length, then closed.
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabX\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n11111111111111111\r\n",
            // A sign or spaces around the size.
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n+2\r\nab\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n 2\r\nab\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n",
        ];
        for answer in cases {
            let (addr, _) = scripted(vec![Some(answer), None], usize::MAX);
            let (status, body, pooled) = exchange(&group(addr), Method::GET).await.unwrap();
            assert_eq!(status, 200);
            assert!(
                body.is_err(),
                "{:?}: {body:?}",
                String::from_utf8_lossy(answer)
            );
            assert_eq!(pooled, 0);
        }
    }

    #[tokio::test]
    async fn chunk_sizes_may_have_leading_zeros_and_space_before_extensions() {
        let (addr, _) = scripted(
            vec![Some(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n00000000000000000003\r\nabc\r\n2 \t;ext=\"x\"\r\nde\r\n000\r\n\r\n")],
            usize::MAX,
        );
        assert_eq!(
            exchange(&group(addr), Method::GET).await.unwrap(),
            (200, Ok(b"abcde".to_vec()), 1)
        );
    }

    #[test]
    fn chunk_size_is_hex_digits_then_extensions() {
        for (line, want) in [
            (&b"0"[..], Some(0)),
            (b"1a", Some(26)),
            (b"A;x=1", Some(10)),
            (b"a ;x", Some(10)),
            (b"a\t ;", Some(10)),
            (b"0000000000000000000000ffffffffffffffff", Some(u64::MAX)),
            (b"10000000000000000", None),
            (b"", None),
            (b";x", None),
            (b"+a", None),
            (b"-0", None),
            (b" a", None),
            (b"a ", None),
            (b"a b", None),
            (b"0x1", None),
            (b"1g", None),
        ] {
            assert_eq!(
                chunk_size(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[tokio::test]
    async fn a_reset_before_the_answer_is_told_apart() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut conn = Conn::new(
            TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap(),
            Duration::from_secs(5),
        );
        let (server, _) = listener.accept().await.unwrap();
        let reset = tokio::spawn(async move {
            // Closed with the request unread: the kernel answers with a reset.
            server.readable().await.unwrap();
            drop(server);
        });
        let uri: Uri = "/x".parse().unwrap();
        let err = conn
            .send(&Method::GET, &uri, &h(&[("host", "up")]), &[])
            .await
            .err()
            .expect("no answer");
        assert!(matches!(err, SendError::Unanswered(_)), "{err:?}");
        reset.await.unwrap();
    }

    /// Waits (up to 10 s) for an idle connection to be seen as dead.
    async fn dies(conn: &mut Conn) -> bool {
        for _ in 0..10_000 {
            if !conn.alive() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_idle_connection_is_dead_once_the_upstream_closes_it_or_talks_out_of_turn() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Closed by the upstream.
        let mut conn = Conn::new(
            TcpStream::connect(addr).await.unwrap(),
            Duration::from_secs(5),
        );
        let (server, _) = listener.accept().await.unwrap();
        assert!(conn.alive(), "nothing happened yet");
        drop(server);
        assert!(dies(&mut conn).await, "the close was not noticed");
        // Bytes nobody asked for.
        let mut conn = Conn::new(
            TcpStream::connect(addr).await.unwrap(),
            Duration::from_secs(5),
        );
        let (mut server, _) = listener.accept().await.unwrap();
        assert!(conn.alive());
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert!(dies(&mut conn).await, "the stray bytes were not noticed");
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn hop_by_hop_date_and_server_fields_are_not_passed_on() {
        let mut facts = Facts::default();
        for name in [
            "Connection",
            "keep-alive",
            "Proxy-Connection",
            "TE",
            "Trailer",
            "transfer-encoding",
            "Upgrade",
            "Proxy-Authorization",
            "Date",
            "SERVER",
        ] {
            assert!(!facts.see(name, b"x"), "{name} passed on");
        }
        for name in [
            "Content-Length",
            "content-type",
            "ETag",
            "X-Date",
            "Servers",
        ] {
            assert!(facts.see(name, b"1"), "{name} left out");
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = Method::GET;
        let ok = StatusCode::OK;
        let f = |m: &Method, s: StatusCode, p: &[(&str, &str)], v11: bool| {
            let mut facts = Facts::default();
            for (name, value) in p {
                facts.see(name, value.as_bytes());
            }
            facts.framing(m, s, v11).map_err(|e| e.to_string())
        };
        assert_eq!(
            f(&get, ok, &[("content-length", "5")], true),
            Ok((State::Length(5), true))
        );
        assert_eq!(
            f(
                &get,
                ok,
                &[("content-length", "18446744073709551615")],
                true
            ),
            Ok((State::Length(u64::MAX), true))
        );
        assert!(
            f(
                &get,
                ok,
                &[("content-length", "18446744073709551616")],
                true
            )
            .is_err()
        );
        assert!(f(&get, ok, &[("content-length", "5, 5")], true).is_err());
        assert!(f(&get, ok, &[("content-length", "5, 6")], true).is_err());
        assert!(
            f(
                &get,
                ok,
                &[("content-length", "5"), ("content-length", "6")],
                true
            )
            .is_err()
        );
        assert!(f(&get, ok, &[("content-length", "+5")], true).is_err());
        assert!(f(&get, ok, &[("content-length", "")], true).is_err());
        assert!(
            f(
                &get,
                ok,
                &[("content-length", "5"), ("content-length", "5")],
                true
            )
            .is_err()
        );
        assert_eq!(
            f(&get, ok, &[("transfer-encoding", "chunked")], true),
            Ok((State::Chunk(Chunk::Size), true))
        );
        for te in ["gzip, chunked", "chunked, chunked", "identity", "gzip", ""] {
            assert!(
                f(&get, ok, &[("transfer-encoding", te)], true).is_err(),
                "{te}"
            );
        }
        // Both: refused (502), whatever the method or status.
        for (m, s) in [
            (&get, ok),
            (&Method::HEAD, ok),
            (&get, StatusCode::NO_CONTENT),
            (&get, StatusCode::NOT_MODIFIED),
        ] {
            assert!(
                f(
                    m,
                    s,
                    &[("transfer-encoding", "chunked"), ("content-length", "5")],
                    true
                )
                .is_err()
            );
        }
        // Field names as they come and `chunked` in any case, the value trimmed.
        assert_eq!(
            f(&get, ok, &[("Transfer-Encoding", " Chunked ")], true),
            Ok((State::Chunk(Chunk::Size), true))
        );
        assert!(
            f(
                &get,
                ok,
                &[("Content-Length", "5"), ("TRANSFER-ENCODING", "chunked")],
                true
            )
            .is_err()
        );
        assert_eq!(
            f(
                &get,
                ok,
                &[("CONTENT-LENGTH", "3"), ("Connection", "close")],
                true
            ),
            Ok((State::Length(3), false))
        );
        assert_eq!(f(&get, ok, &[], true), Ok((State::Close, false)));
        assert_eq!(
            f(&Method::HEAD, ok, &[("content-length", "5")], true),
            Ok((State::Done, true))
        );
        assert_eq!(
            f(&get, StatusCode::NO_CONTENT, &[], true),
            Ok((State::Done, true))
        );
        assert_eq!(
            f(
                &get,
                StatusCode::NOT_MODIFIED,
                &[("content-length", "9")],
                true
            ),
            Ok((State::Done, true))
        );
        assert_eq!(
            f(
                &get,
                ok,
                &[("content-length", "1"), ("connection", "Close")],
                true
            ),
            Ok((State::Length(1), false))
        );
        assert_eq!(
            f(&get, ok, &[("content-length", "1")], false),
            Ok((State::Length(1), false))
        );
        assert_eq!(
            f(
                &get,
                ok,
                &[("content-length", "1"), ("connection", "keep-alive")],
                false
            ),
            Ok((State::Length(1), true))
        );
        // HTTP/1.0 with Transfer-Encoding: read as it says, never reused (RFC 9112
        // §6.1), even when it has no body.
        for m in [&get, &Method::HEAD] {
            assert_eq!(
                f(
                    m,
                    ok,
                    &[
                        ("transfer-encoding", "chunked"),
                        ("connection", "keep-alive")
                    ],
                    false
                )
                .map(|(_, keep)| keep),
                Ok(false)
            );
        }
    }

    #[test]
    fn hyper_answers_are_checked_by_the_same_rules() {
        let check = |p: &[(&str, &str)]| check_framing(&h(p)).map_err(|e| e.to_string());
        assert_eq!(check(&[("content-length", "5")]), Ok(()));
        assert_eq!(check(&[("transfer-encoding", "chunked")]), Ok(()));
        assert_eq!(check(&[("x-other", "1")]), Ok(()));
        for bad in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "5, 5")],
            &[("content-length", "5"), ("content-length", "5")],
            &[("content-length", "x")],
            &[("transfer-encoding", "gzip")],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ],
        ] {
            let err = check(bad).unwrap_err();
            assert!(
                err.starts_with("invalid answer from the upstream"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn the_head_is_origin_form_with_the_fields_given() {
        let uri: Uri = "http://example.com/a/b?c=d".parse().unwrap();
        let head = encode(
            &Method::GET,
            &uri,
            &h(&[("host", "x"), ("x-real-ip", "6.6.6.6"), ("accept", "*/*")]),
            &[
                (
                    HeaderName::from_static("x-forwarded-for"),
                    HeaderValue::from_static("1.2.3.4"),
                ),
                (
                    HeaderName::from_static("x-real-ip"),
                    HeaderValue::from_static("1.2.3.4"),
                ),
            ],
        );
        // The extra fields come last and replace those of the same name.
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nhost: x\r\naccept: */*\r\n\
             x-forwarded-for: 1.2.3.4\r\nx-real-ip: 1.2.3.4\r\n\r\n"
        );
    }
}
