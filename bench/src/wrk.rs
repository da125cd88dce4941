//! wrk, the HTTP load generator every HTTP scenario uses: running it and reading its
//! `--latency` report.

use std::process::Command;

use anyhow::{Context as _, bail};

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
pub struct Wrk {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors (connect, read, write, timeout).
    pub errors: u64,
}

/// "1.23ms" / "870.00us" / "1.02s" / "1.00m" -> milliseconds.
fn latency_ms(s: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mul)
}

/// wrk's `--latency` output: requests, req/s, p50, p99, errors.
pub fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let (mut requests, mut rps, mut p50, mut p99) = (None, None, None, None);
    let mut errors = 0;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Requests/sec:", v, ..] => rps = v.parse().ok(),
            ["50%", v, ..] => p50 = latency_ms(v),
            ["99%", v, ..] => p99 = latency_ms(v),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n, ..] => errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    match (requests, rps, p50, p99) {
        (Some(requests), Some(rps), Some(p50_ms), Some(p99_ms)) => Ok(Wrk {
            requests,
            rps,
            p50_ms,
            p99_ms,
            errors,
        }),
        _ => bail!("could not parse wrk's output:\n{out}"),
    }
}

/// Runs wrk (`args` before the URL, e.g. `-t2 -c50 -d10s`) through `cmd`, which is the
/// start of the command line (`nsenter ...`, `taskset -c 0`, or nothing).
pub fn wrk_run(prefix: &[&str], args: &[&str], url: &str) -> anyhow::Result<(Wrk, String)> {
    let mut all: Vec<&str> = prefix.to_vec();
    all.push("wrk");
    all.extend_from_slice(args);
    all.extend_from_slice(&["--latency", url]);
    let out = lb_tests::run(Command::new(all[0]).args(&all[1..]))
        .context("running wrk (is Debian's wrk installed? cargo xtask setup)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((parse_wrk(&text)?, text))
}

/// CPU seconds (user + system) of this process's reaped children so far. Around one
/// [`wrk_run`] (and no other child reaped meanwhile) the difference is wrk's own CPU.
pub fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN cannot fail with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// ", 50 errors (Socket errors: connect 0, read 0, write 0, timeout 50)" for a progress
/// line, or nothing. wrk counts a request still unanswered after 2 s as a timeout.
pub fn error_note(w: &Wrk, out: &str) -> String {
    if w.errors == 0 {
        return String::new();
    }
    let detail: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Socket errors") || l.starts_with("Non-2xx"))
        .collect();
    format!(", {} errors ({})", w.errors, detail.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output_with_errors() {
        let out = "Running 3s test @ http://127.0.0.1:8081/1k.bin
  2 threads and 50 connections
  Latency Distribution
     50%  870.00us
     75%    1.22ms
     90%    1.60ms
     99%    2.50ms
  480000 requests in 10.00s, 560.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  48000.12
";
        let w = parse_wrk(out).unwrap();
        assert_eq!(w.requests, 480_000);
        assert!((w.p50_ms - 0.87).abs() < 1e-9);
        assert!((w.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!(w.errors, 12);
    }

    #[test]
    fn parses_wrk_latency_output() {
        let out = "Running 10s test @ http://10.88.0.100:8080/1k.bin
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.03ms  503.43us  12.34ms   80.00%
    Req/Sec    24.00k     1.20k   27.00k    70.00%
  Latency Distribution
     50%  870.00us
     75%    1.22ms
     90%    1.60ms
     99%    2.50ms
  480000 requests in 10.00s, 560.00MB read
Requests/sec:  48000.12
Transfer/sec:     56.00MB
";
        let w = parse_wrk(out).unwrap();
        let (n, rps, p50, p99) = (w.requests, w.rps, w.p50_ms, w.p99_ms);
        assert_eq!(n, 480_000);
        assert!((rps - 48000.12).abs() < 1e-6);
        assert!((p50 - 0.87).abs() < 1e-9);
        assert!((p99 - 2.5).abs() < 1e-9);
        assert_eq!(latency_ms("1.50s"), Some(1500.0));
    }
}
