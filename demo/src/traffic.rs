//! Sample traffic through the VIP: a few workers in the client namespace, each on a
//! keep-alive connection for a few requests and then a new one (so new flows keep
//! being spread by the LB), cycling over the static page, a static file, the API and
//! the `/hbnb` page. Counts outcomes by status and by failure kind, and (for the
//! tests) can keep every request's start, end and outcome.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_tests::Ns;

use crate::{
    http::{Conn, Failure},
    netns, plan,
};

/// What the demo fetches.
pub const PATHS: &[&str] = &[
    "/",
    "/static/styles/4-common.css",
    "/api/v1/places",
    "/hbnb",
];

#[derive(Clone, Debug)]
pub struct TrafficOpts {
    pub workers: usize,
    pub paths: Vec<&'static str>,
    /// Requests per connection before opening a new one.
    pub per_conn: u32,
    /// Pause between a worker's requests.
    pub pace: Duration,
    /// Per-request timeout (connect, and each read/write).
    pub timeout: Duration,
    /// Keep every request in [`Stats::records`].
    pub record: bool,
}

impl Default for TrafficOpts {
    fn default() -> Self {
        TrafficOpts {
            workers: 4,
            paths: PATHS.to_vec(),
            per_conn: 4,
            pace: Duration::from_millis(40),
            timeout: Duration::from_secs(2),
            record: false,
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Record {
    pub start: Instant,
    pub end: Instant,
    pub path: &'static str,
    pub outcome: Result<u16, Failure>,
}

/// Counters shared by the workers.
#[derive(Default)]
pub struct Stats {
    pub ok: AtomicU64,
    pub by_status: Mutex<BTreeMap<u16, u64>>,
    pub failures: Mutex<BTreeMap<Failure, u64>>,
    pub records: Mutex<Vec<Record>>,
}

impl Stats {
    /// Requests answered 2xx/3xx.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Answers with status >= 400, by status.
    pub fn errors_by_status(&self) -> BTreeMap<u16, u64> {
        lock(&self.by_status)
            .iter()
            .filter(|(s, _)| **s >= 400)
            .map(|(s, n)| (*s, *n))
            .collect()
    }

    /// Requests without an answer, by kind.
    pub fn failures(&self) -> BTreeMap<Failure, u64> {
        lock(&self.failures).clone()
    }

    pub fn records(&self) -> Vec<Record> {
        lock(&self.records).clone()
    }

    fn note(&self, rec: Record, keep: bool) {
        match rec.outcome {
            Ok(s) => {
                if s < 400 {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                }
                *lock(&self.by_status).entry(s).or_default() += 1;
            }
            Err(f) => *lock(&self.failures).entry(f).or_default() += 1,
        }
        if keep {
            lock(&self.records).push(rec);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Running workers; stopped (and joined) by [`Traffic::stop`] or on drop.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
    pub stats: Arc<Stats>,
}

impl Traffic {
    pub fn start(client: &Ns, opts: TrafficOpts) -> anyhow::Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut workers = Vec::new();
        for w in 0..opts.workers {
            let (stop, stats, opts) = (stop.clone(), stats.clone(), opts.clone());
            workers.push(netns::spawn_in(
                client,
                &format!("traffic{w}"),
                move || {
                    worker(w, &opts, &stop, &stats);
                },
            )?);
        }
        Ok(Traffic {
            stop,
            workers,
            stats,
        })
    }

    /// Stops the workers and waits for them (each finishes its current request).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(w: usize, opts: &TrafficOpts, stop: &AtomicBool, stats: &Stats) {
    let mut n = w;
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let path = opts.paths[n % opts.paths.len()];
        n += 1;
        let start = Instant::now();
        let outcome = match conn.take() {
            Some(c) => Ok(c),
            None => Conn::open(plan::vip_http(), opts.timeout),
        }
        .and_then(|mut c| {
            let r = c.get(path);
            if !c.closed && c.served < opts.per_conn {
                conn = Some(c);
            }
            r
        });
        let outcome = outcome.map(|r| r.status);
        let failed = outcome.is_err();
        stats.note(
            Record {
                start,
                end: Instant::now(),
                path,
                outcome,
            },
            opts.record,
        );
        // After a failure, back off a little so a dead VIP is not hammered.
        std::thread::sleep(if failed {
            opts.pace.max(Duration::from_millis(100))
        } else {
            opts.pace
        });
    }
}
