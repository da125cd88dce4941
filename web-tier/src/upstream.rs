//! Upstream groups: server selection (weighted round robin, least connections), passive
//! health (nginx's `max_fails` / `fail_timeout`) and per-server keep-alive pools.
//!
//! The pool is our own rather than hyper-util's legacy client because the retry rules
//! need to know whether a request left this process: with `hyper::client::conn`, a
//! connect failure leaves the request (and its streaming body) in our hands, and
//! `try_send_request` hands it back when a pooled connection died before sending. That is
//! what lets a POST be retried after a refused connect but never after it was sent.
//!
//! Requests without a body (`GET`, `HEAD`, `OPTIONS`, `DELETE`) do not use hyper's
//! client at all but the lean one in [`crate::h1client`], with a pool of its own per
//! server (up to `keepalive` idle connections each).
//!
//! # Who drives a connection
//! hyper's client connection is a future that does the actual reading and writing. It
//! is not spawned as a task of its own: the request that holds the connection drives
//! it, first while waiting for the response head ([`Upstream::send`]) and then from the
//! response body ([`UpstreamBody`]) as the client's connection pulls it. That saves the
//! task switches between a connection task and the request (several per request, each
//! a wake-up, a poll of both hyper state machines and a channel hand-off), and gives
//! natural back-pressure: nothing is read from the upstream faster than the client
//! takes it. An idle pooled connection is not polled at all; it is driven once when
//! taken from the pool, which finishes the previous exchange and notices a close.
//!
//! # Wakes from inside the task's own poll
//! Driving the connection inline means its parts wake each other while the task is
//! polling them: queueing a request wakes the connection's receiver, and the connection
//! completing the response wakes the future waiting for it. Each such wake marks the
//! running task to be polled again, and tokio puts a task woken during its own poll at
//! the back of the run queue. That extra poll finds nothing to do (measured under wrk:
//! 2.6 task polls per proxied request where 2 suffice), and when its turn comes it can
//! take what has since become ready for that connection (the next response, the next
//! client request) ahead of connections whose events came first. So the connection is
//! polled with a [`Relay`] waker: a wake that happens while the holder is polling the
//! connection is noted and answered by polling again at once, and a wake from outside
//! (the socket became readable, a timer fired) goes to the task as usual. With it, a
//! proxied request takes 2.0 polls.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::body::{Body, BoxError};
use crate::config::{Balance, UpstreamGroup};
use crate::h1client;
use crate::lock;

/// A running upstream group.
pub struct Group {
    /// Name from the config (`[upstream.NAME]`).
    pub name: String,
    balance: Balance,
    /// The servers, in config order.
    pub peers: Vec<Arc<Peer>>,
    /// Smooth weighted round robin state: each peer's current weight.
    current: Mutex<Vec<i64>>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout (to the response head and between body chunks).
    pub read_timeout: Duration,
    max_fails: u32,
    fail_timeout: Duration,
    keepalive: usize,
}

/// One upstream server.
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    weight: i64,
    /// Requests in flight (for least connections).
    active: AtomicUsize,
    health: Mutex<Health>,
    #[expect(
        clippy::vec_box,
        reason = "a connection is ~700 bytes and moves through several futures per request; \
                  the box makes each move a pointer copy"
    )]
    idle: Mutex<Vec<Box<Upstream>>>,
    /// Idle connections of the lean client ([`crate::h1client`]), a pool of their own.
    lean_idle: Mutex<Vec<h1client::Conn>>,
}

#[derive(Default)]
struct Health {
    fails: u32,
    window_start: Option<Instant>,
    down_until: Option<Instant>,
}

/// Why a connection to an upstream could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection within `connect_timeout`.
    #[error("connect timed out")]
    Timeout,
    /// Refused, unreachable, reset.
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP/1 handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

impl Group {
    /// Builds a group from its validated config.
    pub fn new(name: &str, cfg: &UpstreamGroup) -> Self {
        Self {
            name: name.to_owned(),
            balance: cfg.balance,
            peers: cfg
                .servers
                .iter()
                .map(|s| {
                    Arc::new(Peer {
                        addr: s.addr,
                        weight: i64::from(s.weight),
                        active: AtomicUsize::new(0),
                        health: Mutex::new(Health::default()),
                        idle: Mutex::new(Vec::new()),
                        lean_idle: Mutex::new(Vec::new()),
                    })
                })
                .collect(),
            current: Mutex::new(vec![0; cfg.servers.len()]),
            connect_timeout: cfg.connect_timeout,
            read_timeout: cfg.read_timeout,
            max_fails: cfg.max_fails,
            fail_timeout: cfg.fail_timeout,
            keepalive: cfg.keepalive,
        }
    }

    /// Picks the next peer, skipping those already tried for this request and those
    /// marked down. `None` means no live upstream (502).
    pub fn select(&self, tried: &[usize]) -> Option<usize> {
        // The clock is only read when some server is marked down.
        let now = std::cell::OnceCell::new();
        let now = || *now.get_or_init(Instant::now);
        if self.peers.len() == 1 {
            // One server: never marked down (see `record_failure`), and balancing has
            // nothing to choose (smooth round robin would add and take back the same
            // weight).
            return tried.is_empty().then_some(0);
        }
        let mut cands: Vec<usize> = (0..self.peers.len())
            .filter(|i| !tried.contains(i) && self.peers[*i].available(now))
            .collect();
        if cands.is_empty() {
            return None;
        }
        if self.balance == Balance::LeastConn {
            // Compare active/weight without division: a*wb < b*wa.
            let load = |i: usize| {
                let p = &self.peers[i];
                (p.active.load(Ordering::Relaxed) as i64, p.weight)
            };
            let (ba, bw) = cands
                .iter()
                .map(|&i| load(i))
                .min_by(|(a, wa), (b, wb)| (a * wb).cmp(&(b * wa)))
                .unwrap_or((0, 1));
            cands.retain(|&i| {
                let (a, w) = load(i);
                a * bw == ba * w
            });
        }
        Some(self.smooth_wrr(&cands))
    }

    /// nginx's smooth weighted round robin: every candidate gains its weight, the
    /// largest wins and pays back the total. Spreads a 5:1:1 group as a,a,b,a,c,a,a
    /// rather than a,a,a,a,a,b,c.
    fn smooth_wrr(&self, cands: &[usize]) -> usize {
        let mut cur = lock(&self.current);
        let total: i64 = cands.iter().map(|&i| self.peers[i].weight).sum();
        let mut best = cands[0];
        for &i in cands {
            cur[i] += self.peers[i].weight;
            if cur[i] > cur[best] {
                best = i;
            }
        }
        cur[best] -= total;
        best
    }

    /// Records a failed attempt; returns true if this marked the peer down. The only
    /// server of a group is never marked down (nginx ignores `max_fails` there):
    /// refusing every request for `fail_timeout` after one failure helps nobody when
    /// there is no other server to send them to.
    pub fn record_failure(&self, i: usize) -> bool {
        if self.max_fails == 0 || self.peers.len() == 1 {
            return false;
        }
        let now = Instant::now();
        let mut h = lock(&self.peers[i].health);
        if h.window_start
            .is_none_or(|s| now.duration_since(s) > self.fail_timeout)
        {
            h.window_start = Some(now);
            h.fails = 0;
        }
        h.fails += 1;
        if h.fails >= self.max_fails {
            h.down_until = Some(now + self.fail_timeout);
            h.fails = 0;
            h.window_start = None;
            return true;
        }
        false
    }

    /// Records a success: the failure count starts over.
    pub fn record_success(&self, i: usize) {
        let mut h = lock(&self.peers[i].health);
        h.fails = 0;
        h.window_start = None;
        h.down_until = None;
    }

    /// A ready connection to peer `i`: pooled if one is alive, else a new one.
    pub async fn connection(&self, i: usize) -> Result<Box<Upstream>, ConnectError> {
        let peer = &self.peers[i];
        loop {
            let pooled = {
                let mut idle = lock(&peer.idle);
                idle.pop()
            };
            let Some(mut up) = pooled else { break };
            // A pooled connection becomes ready once its previous response finished,
            // which it has; an error means the upstream closed it meanwhile. Usually it
            // is ready at once: ask before arming a timer.
            match std::future::poll_fn(|cx| Poll::Ready(up.poll_ready(cx))).await {
                Poll::Ready(Ok(())) => return Ok(up),
                Poll::Ready(Err(())) => continue,
                Poll::Pending => {}
            }
            let ready = std::future::poll_fn(|cx| up.poll_ready(cx));
            if let Ok(Ok(())) = tokio::time::timeout(self.connect_timeout, ready).await {
                return Ok(up);
            }
        }
        let stream = self.dial(peer).await?;
        let (sender, conn) = tokio::time::timeout(
            self.connect_timeout,
            hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| ConnectError::Timeout)??;
        Ok(Box::new(Upstream::new(sender, conn)))
    }

    /// A new TCP connection to `peer` (within `connect_timeout`), with Nagle off.
    async fn dial(&self, peer: &Peer) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(peer.addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// A connection to peer `i` for the lean client: a pooled one that is still open,
    /// else a new one.
    pub async fn lean_connection(&self, i: usize) -> Result<h1client::Conn, ConnectError> {
        let peer = &self.peers[i];
        loop {
            let pooled = lock(&peer.lean_idle).pop();
            let Some(mut c) = pooled else { break };
            if c.alive() {
                return Ok(c);
            }
        }
        Ok(h1client::Conn::new(
            self.dial(peer).await?,
            self.read_timeout,
        ))
    }

    /// The body of a lean exchange's answer, returning `conn` to peer `i`'s pool at its
    /// end.
    pub fn lean_body(
        &self,
        i: usize,
        head: &h1client::Head,
        conn: h1client::Conn,
        guard: ActiveGuard,
    ) -> h1client::LeanBody {
        head.body(conn, self.peers[i].clone(), self.keepalive, guard)
    }

    /// Marks a request in flight on peer `i` until the guard drops.
    pub fn begin(&self, i: usize) -> ActiveGuard {
        self.peers[i].active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.peers[i].clone())
    }

    /// Wraps an upstream response body: enforces the read timeout between chunks and
    /// returns the connection to the pool once the body has been read to its end.
    pub fn response_body(
        &self,
        i: usize,
        body: Incoming,
        up: Box<Upstream>,
        guard: ActiveGuard,
    ) -> UpstreamBody {
        UpstreamBody {
            inner: body,
            ret: Some((up, self.peers[i].clone(), self.keepalive)),
            timer: ReadTimer::new(self.read_timeout),
            _guard: guard,
        }
    }

    /// Requests in flight on peer `i`.
    pub fn active(&self, i: usize) -> usize {
        self.peers[i].active.load(Ordering::Relaxed)
    }
}

impl Peer {
    /// Idle lean connections pooled for this server.
    #[cfg(test)]
    pub(crate) fn lean_idle_len(&self) -> usize {
        lock(&self.lean_idle).len()
    }

    /// Pools an idle lean connection (at most `cap` per server).
    pub(crate) fn lean_checkin(&self, conn: h1client::Conn, cap: usize) {
        let mut idle = lock(&self.lean_idle);
        if idle.len() < cap {
            idle.push(conn);
        }
    }

    fn available(&self, now: impl FnOnce() -> Instant) -> bool {
        let h = lock(&self.health);
        h.down_until.is_none_or(|t| now() >= t)
    }

    fn checkin(&self, up: Box<Upstream>, cap: usize) {
        if up.conn.is_none() || up.sender.is_closed() {
            return;
        }
        // The task that held it is done with it; do not keep that task alive.
        up.relay.forget();
        let mut idle = lock(&self.idle);
        if idle.len() < cap {
            idle.push(up);
        }
    }
}

type UpstreamConn = Connection<TokioIo<TcpStream>, Body>;

/// One HTTP/1.1 connection to an upstream server: the handle requests are sent on, and
/// the connection future that does the I/O (driven by whoever holds it; see the module
/// docs).
pub struct Upstream {
    sender: SendRequest<Body>,
    /// `None` once the connection has finished (closed or failed).
    conn: Option<UpstreamConn>,
    relay: Arc<Relay>,
    /// `relay` as a waker, made once per connection.
    waker: Waker,
}

impl Upstream {
    fn new(sender: SendRequest<Body>, conn: UpstreamConn) -> Self {
        let relay = Arc::new(Relay::default());
        Self {
            sender,
            conn: Some(conn),
            waker: Waker::from(relay.clone()),
            relay,
        }
    }

    /// Polls `f` with the relay as waker, on behalf of the task polling with `cx`: a
    /// wake from inside `f` means "poll again", which is done here at once (a few
    /// times at most; then the task is rescheduled as tokio would have).
    fn inline<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Self, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.relay.register(cx.waker());
        let waker = self.waker.clone();
        let mut inner = Context::from_waker(&waker);
        for _ in 0..4 {
            self.relay.enter();
            let res = f(self, &mut inner);
            if res.is_ready() {
                self.relay.leave();
                return res;
            }
            if !self.relay.leave() {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Lets the connection do whatever I/O it can without waiting.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn
            && Pin::new(conn).poll(cx).is_ready()
        {
            // Dropping the finished connection fails whatever was still queued on it,
            // handing back requests that were never written.
            self.conn = None;
        }
    }

    /// Ready for a request; `Err` if the connection is gone.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.inline(cx, |up, cx| {
            up.drive(cx);
            if up.conn.is_none() {
                return Poll::Ready(Err(()));
            }
            up.sender.poll_ready(cx).map(|r| r.map_err(drop))
        })
    }

    /// Sends `req` and waits for the response head, driving the connection meanwhile.
    /// As with hyper's `try_send_request`, a request that was never written comes back
    /// inside the error.
    pub async fn send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        // Queueing wakes the connection, which is driven right below anyway.
        self.relay.enter();
        let fut = self.sender.try_send_request(req);
        self.relay.leave();
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            self.inline(cx, |up, cx| {
                up.drive(cx);
                fut.as_mut().poll(cx)
            })
        })
        .await
    }
}

/// The waker a connection is polled with; see the module docs.
#[derive(Default)]
struct Relay {
    /// The waker of the task holding the connection.
    task: Mutex<Option<Waker>>,
    /// [`INSIDE`] and [`MISSED`].
    state: AtomicU8,
}

/// The holder is polling the connection.
const INSIDE: u8 = 1;
/// A wake came while [`INSIDE`].
const MISSED: u8 = 2;

impl Relay {
    fn register(&self, waker: &Waker) {
        let mut task = lock(&self.task);
        match &mut *task {
            Some(w) => w.clone_from(waker),
            None => *task = Some(waker.clone()),
        }
    }

    fn forget(&self) {
        *lock(&self.task) = None;
    }

    fn enter(&self) {
        self.state.store(INSIDE, Ordering::SeqCst);
    }

    /// Whether a wake came since [`Relay::enter`].
    fn leave(&self) -> bool {
        self.state.swap(0, Ordering::SeqCst) & MISSED != 0
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // One atomic step decides: either the holder is inside and will see MISSED
        // when it leaves, or it is not and the task is woken.
        let inside = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s & INSIDE != 0).then_some(s | MISSED)
            })
            .is_ok();
        if !inside && let Some(w) = &*lock(&self.task) {
            w.wake_by_ref();
        }
    }
}

/// Counts a request as in flight on a peer while alive.
pub struct ActiveGuard(Arc<Peer>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The upstream's response body on its way to the client.
pub struct UpstreamBody {
    inner: Incoming,
    /// The connection, to drive while the body is read and to pool once it is done.
    ret: Option<(Box<Upstream>, Arc<Peer>, usize)>,
    timer: ReadTimer,
    _guard: ActiveGuard,
}

/// An upstream read timeout (nginx's `proxy_read_timeout`): it runs while an upstream
/// read, or a lean client's write, waits, and starts over after progress.
pub(crate) struct ReadTimer {
    timeout: Duration,
    /// Made on the first wait: a small body often never waits.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait (a frame ends the wait).
    waiting: bool,
}

impl ReadTimer {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            waiting: false,
        }
    }

    /// Something arrived: the next wait starts a new timeout.
    pub(crate) fn progress(&mut self) {
        self.waiting = false;
    }

    /// Called when a read or write would wait: starts the timeout if this wait is new,
    /// and says whether it has run out.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !std::mem::replace(&mut self.waiting, true) {
            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = &mut this.inner;
        let res = match &mut this.ret {
            Some((up, _, _)) => up.inline(cx, |up, cx| {
                match Pin::new(&mut *inner).poll_frame(cx) {
                    // The body is fed by the connection: let it read, then look again.
                    Poll::Pending => {
                        up.drive(cx);
                        Pin::new(&mut *inner).poll_frame(cx)
                    }
                    res => res,
                }
            }),
            None => Pin::new(inner).poll_frame(cx),
        };
        match res {
            Poll::Ready(Some(Ok(f))) => {
                this.timer.progress();
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.ret = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some((s, p, cap)) = this.ret.take() {
                    p.checkin(s, cap);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.timer.expired(cx) {
                    // Dropping the connection with the half-read body closes it.
                    this.ret = None;
                    return Poll::Ready(Some(Err("upstream read timed out".into())));
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

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body with nothing in it (HEAD, 204, 304, Content-Length: 0) may never be
        // polled; its connection is still reusable.
        if self.inner.is_end_stream()
            && let Some((s, p, cap)) = self.ret.take()
        {
            p.checkin(s, cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamServer;

    fn group(balance: Balance, weights: &[u32], max_fails: u32) -> Group {
        let cfg = UpstreamGroup {
            balance,
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| UpstreamServer {
                    addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                    weight: w,
                })
                .collect(),
            keepalive: 4,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_fails,
            fail_timeout: Duration::from_secs(60),
        };
        Group::new("g", &cfg)
    }

    /// Counts the wakes of the task that polls with it.
    #[derive(Default)]
    struct Wakes {
        count: AtomicUsize,
        notify: tokio::sync::Notify,
    }

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.notify.notify_one();
        }
    }

    /// Polls `fut` by hand until it is ready, asserting that no poll wakes its own task
    /// (which would make tokio poll the task again, out of turn) and that the wakes from
    /// outside (the upstream's answer arriving) do reach it.
    async fn poll_alone<F: Future>(fut: F, wakes: &Arc<Wakes>) -> F::Output {
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            let before = wakes.count.load(Ordering::SeqCst);
            let res = fut.as_mut().poll(&mut cx);
            assert_eq!(
                wakes.count.load(Ordering::SeqCst),
                before,
                "the task was woken from inside its own poll"
            );
            if let Poll::Ready(v) = res {
                return v;
            }
            tokio::time::timeout(Duration::from_secs(10), wakes.notify.notified())
                .await
                .expect("the upstream's answer never woke the task");
        }
    }

    #[tokio::test]
    async fn a_proxied_exchange_wakes_its_task_only_from_outside() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, mut go_rx) = tokio::sync::mpsc::channel::<()>(2);
        // One connection, two exchanges; each answer waits for the test's go.
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            for _ in 0..2 {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the proxy closed the connection");
                    got.extend_from_slice(&buf[..n]);
                }
                go_rx.recv().await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            s
        });
        let mut g = group(Balance::RoundRobin, &[1], 1);
        Arc::get_mut(&mut g.peers[0]).unwrap().addr = addr;
        for round in 0..2 {
            let wakes = Arc::new(Wakes::default());
            // The second round takes the pooled connection: its first poll finishes the
            // previous exchange, and queueing the request wakes the connection.
            let mut up = poll_alone(g.connection(0), &wakes).await.unwrap();
            if round == 1 {
                assert_eq!(
                    g.peers[0].idle.lock().unwrap().len(),
                    0,
                    "not the pooled one"
                );
            }
            let req = Request::get("/x")
                .header(http::header::HOST, "up")
                .body(crate::body::empty())
                .unwrap();
            let send = up.send(req);
            let sent = {
                let mut send = std::pin::pin!(send);
                let waker = Waker::from(wakes.clone());
                let mut cx = Context::from_waker(&waker);
                let before = wakes.count.load(Ordering::SeqCst);
                assert!(send.as_mut().poll(&mut cx).is_pending());
                assert_eq!(
                    wakes.count.load(Ordering::SeqCst),
                    before,
                    "queueing the request woke its own task"
                );
                go_tx.send(()).await.unwrap();
                poll_alone(send, &wakes).await
            };
            let (_, body) = sent.unwrap().into_parts();
            let guard = g.begin(0);
            let mut body = g.response_body(0, body, up, guard);
            let mut bytes = Vec::new();
            while let Some(frame) = poll_alone(
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
                &wakes,
            )
            .await
            {
                if let Ok(data) = frame.unwrap().into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            assert_eq!(bytes, b"ok");
            drop(body);
            assert_eq!(g.peers[0].idle.lock().unwrap().len(), 1, "not pooled again");
        }
        drop(server.await.unwrap());
    }

    #[test]
    fn smooth_weighted_round_robin() {
        let g = group(Balance::RoundRobin, &[5, 1, 1], 1);
        let picks: Vec<usize> = (0..7).map(|_| g.select(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let g = group(Balance::RoundRobin, &[1, 1], 1);
        let picks: Vec<usize> = (0..4).map(|_| g.select(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn least_conn_prefers_idle_weighted() {
        let g = group(Balance::LeastConn, &[1, 1, 2], 1);
        let _a = g.begin(0);
        let _b = g.begin(2);
        // Loads: 1/1, 0/1, 1/2 -> peer 1.
        assert_eq!(g.select(&[]), Some(1));
        let _c = g.begin(1);
        // Loads: 1/1, 1/1, 1/2 -> peer 2.
        assert_eq!(g.select(&[]), Some(2));
        drop(_a);
        assert_eq!(g.active(0), 0);
        assert_eq!(g.select(&[]), Some(0));
    }

    #[test]
    fn passive_health_marks_down_and_skips_tried() {
        let g = group(Balance::RoundRobin, &[1, 1], 2);
        assert!(!g.record_failure(0));
        assert!(g.record_failure(0));
        for _ in 0..4 {
            assert_eq!(g.select(&[]), Some(1));
        }
        assert_eq!(g.select(&[1]), None);
        g.record_success(0);
        assert_eq!(g.select(&[1]), Some(0));
        // max_fails = 0 never marks down.
        let g = group(Balance::RoundRobin, &[1, 1], 0);
        assert!(!g.record_failure(0));
        assert_eq!(g.select(&[1]), Some(0));
    }

    #[test]
    fn the_only_server_of_a_group_is_never_marked_down() {
        let g = group(Balance::RoundRobin, &[1], 1);
        for _ in 0..3 {
            assert!(!g.record_failure(0));
            assert_eq!(g.select(&[]), Some(0));
        }
    }
}
