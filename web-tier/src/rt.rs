//! Two pieces of runtime glue for hyper's server connections, each doing per request
//! only what a request needs.
//!
//! - [`ConnTimer`]: hyper's timer for one HTTP/1 connection. hyper arms the header-read
//!   timeout at the start of every request head and drops it once the head is in. With
//!   `hyper_util`'s `TokioTimer` that is a boxed tokio `Sleep` made, registered in
//!   tokio's timer wheel and taken out of it again on every request (in a callgrind
//!   count of a proxied request, about 760 of its 22,500 instructions). This timer keeps
//!   the connection's tokio `Sleep` between requests and re-arms it: for tokio, a later
//!   deadline on a registered timer is one atomic store.
//! - [`Drain`]: the signal that tells connections to finish their request and close
//!   (shutdown). `hyper_util`'s graceful watcher polls a `watch` channel on every poll
//!   of the connection, which takes a lock each time (about 500 instructions per proxied
//!   request); a [`Drain`] watcher registers the connection's waker once and then reads
//!   one flag.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

type TokioSleep = Pin<Box<tokio::time::Sleep>>;

/// hyper's timer for one connection: the sleeps it hands out share one tokio timer,
/// which a dropped sleep gives back for the next.
#[derive(Clone, Default)]
pub struct ConnTimer {
    spare: Arc<Mutex<Option<TokioSleep>>>,
}

/// A sleep handed to hyper; its tokio timer goes back to the connection when dropped.
struct Kept {
    inner: Option<TokioSleep>,
    home: Arc<Mutex<Option<TokioSleep>>>,
}

impl Future for Kept {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.inner.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl hyper::rt::Sleep for Kept {}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(s) = self.inner.take() {
            *lock(&self.home) = Some(s);
        }
    }
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let spare = lock(&self.spare).take();
        let inner = match spare {
            Some(mut s) => {
                s.as_mut().reset(deadline);
                s
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Box::pin(Kept {
            inner: Some(inner),
            home: self.spare.clone(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Kept>() {
            Some(mut kept) => {
                if let Some(s) = kept.inner.as_mut() {
                    s.as_mut()
                        .reset(tokio::time::Instant::from_std(new_deadline));
                }
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> Instant {
        // tokio's clock, so a paused test clock holds for hyper too.
        tokio::time::Instant::now().into_std()
    }
}

/// Tells the connections it watches to finish their current request and close.
#[derive(Default)]
pub struct Drain {
    started: AtomicBool,
    next_id: AtomicU64,
    /// The waker of every watched connection's task, by watcher id.
    wakers: Mutex<HashMap<u64, Waker>>,
    /// For connections not handed to hyper yet ([`Drain::started`]).
    notify: tokio::sync::Notify,
}

impl Drain {
    /// Starts draining: every watched connection shuts down gracefully (hyper finishes
    /// the request in hand and closes), and so does any watched from now on.
    pub fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        for w in lock(&self.wakers).values() {
            w.wake_by_ref();
        }
        self.notify.notify_waiters();
    }

    /// Completes once draining has started: for a connection still in its TLS handshake
    /// or waiting for its first byte, which has no request to finish.
    pub async fn started(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a start in between still wakes us.
            notified.as_mut().enable();
            if self.started.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Runs `conn` to its end; once draining starts, `shutdown` is called on it (hyper's
    /// `graceful_shutdown`).
    pub fn watch<C, F>(&self, conn: C, shutdown: F) -> Watched<'_, C, F>
    where
        C: Future,
        F: FnMut(Pin<&mut C>) + Unpin,
    {
        Watched {
            conn: Box::pin(conn),
            shutdown,
            watcher: Watcher {
                drain: self,
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                waker: None,
                shut: false,
            },
        }
    }
}

/// A connection watched by a [`Drain`] (see [`Drain::watch`]).
pub struct Watched<'a, C, F> {
    conn: Pin<Box<C>>,
    shutdown: F,
    watcher: Watcher<'a>,
}

impl<C, F> Future for Watched<'_, C, F>
where
    C: Future,
    F: FnMut(Pin<&mut C>) + Unpin,
{
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        if this.watcher.draining(cx) {
            (this.shutdown)(this.conn.as_mut());
        }
        this.conn.as_mut().poll(cx)
    }
}

/// One connection's registration with a [`Drain`].
struct Watcher<'a> {
    drain: &'a Drain,
    id: u64,
    /// The waker registered last; a poll with the same one does not register again.
    waker: Option<Waker>,
    shut: bool,
}

impl Watcher<'_> {
    /// Whether the connection should start its graceful shutdown now (true once).
    fn draining(&mut self, cx: &Context<'_>) -> bool {
        if self.shut {
            return false;
        }
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            lock(&self.drain.wakers).insert(self.id, w.clone());
            self.waker = Some(w);
        }
        // Read after registering: a drain that starts after this read wakes the task.
        self.shut = self.drain.started.load(Ordering::SeqCst);
        self.shut
    }
}

impl Drop for Watcher<'_> {
    fn drop(&mut self) {
        if self.waker.is_some() {
            lock(&self.drain.wakers).remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test]
    async fn a_kept_timer_fires_at_its_latest_deadline_and_is_reused() {
        const HOUR: Duration = Duration::from_secs(3600);
        let t = ConnTimer::default();
        let mut s = t.sleep(Duration::from_millis(20));
        // Re-armed later before it fires: the first deadline passes without it.
        t.reset(&mut s, t.now() + HOUR);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            poll_once(&mut s).is_pending(),
            "fired at its first deadline"
        );
        // Re-armed to a deadline already past: it fires.
        t.reset(&mut s, t.now());
        tokio::time::timeout(Duration::from_secs(30), &mut s)
            .await
            .expect("did not fire at its deadline");
        // Dropped, its tokio timer goes back and the next sleep uses it, elapsed as it is.
        drop(s);
        assert!(lock(&t.spare).is_some());
        let mut next = t.sleep(HOUR);
        assert!(lock(&t.spare).is_none(), "the kept timer was not reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            poll_once(&mut next).is_pending(),
            "a reused timer fired early"
        );
    }

    fn poll_once(s: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        s.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A connection that ends only once told to shut down.
    #[derive(Default)]
    struct Conn {
        shut: bool,
    }

    impl Future for Conn {
        type Output = bool;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<bool> {
            if self.shut {
                Poll::Ready(true)
            } else {
                Poll::Pending
            }
        }
    }

    fn shut(c: Pin<&mut Conn>) {
        c.get_mut().shut = true;
    }

    #[tokio::test]
    async fn draining_wakes_watched_connections_and_stops_them() {
        let drain = Arc::new(Drain::default());
        let (a, b) = (drain.clone(), drain.clone());
        let one = tokio::spawn(async move { a.watch(Conn::default(), shut).await });
        let two = tokio::spawn(async move { b.watch(Conn::default(), shut).await });
        // Both register, and neither ends on its own.
        for _ in 0..100 {
            if lock(&drain.wakers).len() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(lock(&drain.wakers).len(), 2);
        assert!(!one.is_finished() && !two.is_finished());
        drain.start();
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            assert!(one.await.unwrap() && two.await.unwrap());
        });
        done.await.expect("a watched connection was not drained");
        assert!(
            lock(&drain.wakers).is_empty(),
            "a finished watcher stayed registered"
        );
        // Watched after the start: shut down at its first poll.
        assert!(drain.watch(Conn::default(), shut).await);
    }
}
