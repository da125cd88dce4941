//! Prometheus metrics, rendered by hand in the text exposition format (version 0.0.4).
//!
//! A dozen series do not justify a metrics framework: a mutex-guarded map per family is
//! plenty at this request rate and keeps the dependency list short. Route labels are the
//! axum route *template* (`/api/v1/states/{state_id}`), never the raw path, and method
//! labels are the standard methods or `OTHER` (any token is a valid method), so a
//! client cannot blow up cardinality by requesting random ids or inventing methods.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Pool occupancy, sampled when `/metrics` is scraped.
#[derive(Debug, Clone)]
pub struct PoolSample {
    /// `primary` or `replica0`, `replica1`...
    pub target: String,
    /// Open connections.
    pub size: u32,
    /// Open and idle.
    pub idle: u32,
    /// The pool's ceiling.
    pub max: u32,
}

/// All counters of one server process.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    db_acquires: Mutex<BTreeMap<String, u64>>,
    replica_fallbacks: AtomicU64,
    db_unavailable: AtomicU64,
    db_busy: AtomicU64,
    timeouts: AtomicU64,
}

/// The `method` label: the method's name if it is one clients of an API send (GET,
/// HEAD, POST, PUT, DELETE, PATCH, OPTIONS), else `OTHER` (TRACE, CONNECT, WebDAV's,
/// invented ones: any token is a method, and each would be a series forever).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let key = (method_label(method).to_string(), route.to_string(), status);
        *lock(&self.requests).entry(key).or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut latency = lock(&self.latency);
        let h = latency.entry(route.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Counts a connection handed out by `target` (`primary`, `replica0`...).
    pub fn observe_acquire(&self, target: &str) {
        *lock(&self.db_acquires)
            .entry(target.to_string())
            .or_default() += 1;
    }

    /// How many connections `target` has handed out so far (tests prove routing with it).
    pub fn acquires(&self, target: &str) -> u64 {
        lock(&self.db_acquires).get(target).copied().unwrap_or(0)
    }

    /// Counts a read that wanted a replica but got the primary.
    pub fn observe_replica_fallback(&self) {
        self.replica_fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads served by the primary because no replica was up.
    pub fn replica_fallbacks(&self) -> u64 {
        self.replica_fallbacks.load(Ordering::Relaxed)
    }

    /// Counts a request refused because the primary was unreachable.
    pub fn observe_db_unavailable(&self) {
        self.db_unavailable.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused because every connection to the primary stayed busy.
    pub fn observe_db_busy(&self) {
        self.db_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request cut off by the request timeout.
    pub fn observe_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, pools: &[PoolSample]) -> String {
        let mut out = String::new();
        out.push_str("# HELP app_http_requests_total HTTP requests answered, by route template and status.\n");
        out.push_str("# TYPE app_http_requests_total counter\n");
        for ((method, route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "app_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                esc(method),
                esc(route)
            );
        }
        out.push_str(
            "# HELP app_http_request_duration_seconds Time from request to response head.\n",
        );
        out.push_str("# TYPE app_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            let route = esc(route);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "app_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "app_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "app_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "app_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP app_db_pool_connections Open database connections by pool and state.\n",
        );
        out.push_str("# TYPE app_db_pool_connections gauge\n");
        for p in pools {
            let t = esc(&p.target);
            let _ = writeln!(
                out,
                "app_db_pool_connections{{target=\"{t}\",state=\"idle\"}} {}",
                p.idle
            );
            let _ = writeln!(
                out,
                "app_db_pool_connections{{target=\"{t}\",state=\"in_use\"}} {}",
                p.size.saturating_sub(p.idle)
            );
        }
        out.push_str("# HELP app_db_pool_max_connections Configured ceiling of each pool.\n");
        out.push_str("# TYPE app_db_pool_max_connections gauge\n");
        for p in pools {
            let _ = writeln!(
                out,
                "app_db_pool_max_connections{{target=\"{}\"}} {}",
                esc(&p.target),
                p.max
            );
        }
        out.push_str("# HELP app_db_acquires_total Connections handed to requests, by pool.\n");
        out.push_str("# TYPE app_db_acquires_total counter\n");
        for (target, n) in lock(&self.db_acquires).iter() {
            let _ = writeln!(
                out,
                "app_db_acquires_total{{target=\"{}\"}} {n}",
                esc(target)
            );
        }
        let scalars = [
            (
                "app_db_replica_fallbacks_total",
                "Reads sent to the primary because no replica was reachable.",
                &self.replica_fallbacks,
            ),
            (
                "app_db_unavailable_total",
                "Requests answered 503 because the primary was unreachable.",
                &self.db_unavailable,
            ),
            (
                "app_db_busy_total",
                "Requests answered 503 because every connection to the primary stayed in use for acquire_timeout_ms.",
                &self.db_busy,
            ),
            (
                "app_http_request_timeouts_total",
                "Requests answered 503 because they ran past request_timeout_ms.",
                &self.timeouts,
            ),
        ];
        for (name, help, v) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// A poisoned metrics lock only means a panic elsewhere mid-increment; the counts are
/// still usable, so carry on rather than take the process down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Escapes a label value (backslash, quote, newline) per the exposition format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.observe_request(
            &Method::GET,
            "/api/v1/states",
            200,
            Duration::from_millis(3),
        );
        m.observe_request(&Method::GET, "/api/v1/states", 200, Duration::from_secs(20));
        m.observe_acquire("replica0");
        let text = m.render(&[PoolSample {
            target: "primary".into(),
            size: 3,
            idle: 1,
            max: 10,
        }]);
        assert!(text.contains(
            "app_http_requests_total{method=\"GET\",route=\"/api/v1/states\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "app_http_request_duration_seconds_bucket{route=\"/api/v1/states\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "app_http_request_duration_seconds_bucket{route=\"/api/v1/states\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("app_db_pool_connections{target=\"primary\",state=\"in_use\"} 2"));
        assert!(text.contains("app_db_acquires_total{target=\"replica0\"} 1"));
    }

    #[test]
    fn invented_methods_share_one_series() {
        let m = Metrics::default();
        for token in ["FOO", "BAR", "get", "PROPFIND", "TRACE", "CONNECT"] {
            let method = Method::from_bytes(token.as_bytes()).unwrap();
            m.observe_request(&method, "/api/v1/states", 405, Duration::ZERO);
        }
        m.observe_request(&Method::PATCH, "/api/v1/states", 405, Duration::ZERO);
        let text = m.render(&[]);
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("app_http_requests_total{"))
            .collect();
        assert_eq!(
            series,
            [
                "app_http_requests_total{method=\"OTHER\",route=\"/api/v1/states\",status=\"405\"} 6",
                "app_http_requests_total{method=\"PATCH\",route=\"/api/v1/states\",status=\"405\"} 1",
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
