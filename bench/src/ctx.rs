//! What a scenario gets ([`Ctx`]) and gives back ([`Row`]), and the noise probe that
//! watches each round from `/proc/stat`.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

/// Handed to a scenario's `run` once per round.
pub struct Ctx {
    /// Name of the scenario running.
    pub scenario: &'static str,
    /// This round, 1-based.
    pub round: u32,
    pub rounds: u32,
    /// `--quick`: one round, short durations; a smoke check, not a measurement.
    pub quick: bool,
    /// The CPU to pin measured work to (`pinned` scenarios): the other cores' busy time
    /// during the round is then noise, and reported as such.
    pub cpu: usize,
    /// The workspace root (BENCHMARKS.md, bench/plots, target/bench).
    #[allow(
        dead_code,
        reason = "for scenarios that need files of the workspace (web and app fixtures)"
    )]
    pub root: PathBuf,
    /// The `lb` binary built next to `lb-bench`.
    pub lb: PathBuf,
}

impl Ctx {
    /// A progress line: `[scenario 2/3] msg`.
    pub fn progress(&self, msg: impl AsRef<str>) {
        println!(
            "[{} {}/{}] {}",
            self.scenario,
            self.round,
            self.rounds,
            msg.as_ref()
        );
    }

    /// `full`, or `quick` under `--quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Runs `f` on a thread pinned to [`Ctx::cpu`] (so children spawned elsewhere do not
    /// inherit the pinning).
    pub fn pinned<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let cpu = self.cpu;
        std::thread::scope(|s| {
            s.spawn(move || {
                lb::pktgen::pin_cpu(cpu)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the pinned benchmark thread panicked"))?
        })
    }

    /// Path of the lb binary as a string (for command lines).
    pub fn lb_str(&self) -> anyhow::Result<&str> {
        self.lb.to_str().context("non-UTF-8 path to lb")
    }
}

/// What a target compares, evaluated on the medians over rounds.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// value / baseline >= x
    RatioAtLeast(f64),
    /// value / baseline <= x
    RatioAtMost(f64),
    /// value <= x (in the row's unit)
    ValueAtMost(f64),
    /// value - baseline <= x (in the row's unit)
    DiffAtMost(f64),
}

/// A target from the issue, attached to the rows it applies to.
#[derive(Clone, Debug)]
pub struct Target {
    pub check: Check,
    /// How the report states it, e.g. ">= 0.80x floor".
    pub text: String,
}

impl Target {
    pub fn new(check: Check, text: impl Into<String>) -> Self {
        Self {
            check,
            text: text.into(),
        }
    }

    /// Whether the medians meet it; `None` when a baseline it needs is missing.
    pub fn met(&self, value: f64, baseline: Option<f64>) -> Option<bool> {
        Some(match self.check {
            Check::RatioAtLeast(x) => value / baseline? >= x,
            Check::RatioAtMost(x) => value / baseline? <= x,
            Check::ValueAtMost(x) => value <= x,
            Check::DiffAtMost(x) => value - baseline? <= x,
        })
    }
}

/// One measurement of one round.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured, stable across rounds and runs (rows aggregate by it).
    pub metric: String,
    pub value: f64,
    pub unit: &'static str,
    /// What the row is compared with, measured in the same round.
    pub baseline: Option<(String, f64)>,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(metric: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            metric: metric.into(),
            value,
            unit,
            baseline: None,
            target: None,
        }
    }

    /// Compared with `name`, which measured `value` in the same round.
    pub fn vs(mut self, name: impl Into<String>, value: f64) -> Self {
        self.baseline = Some((name.into(), value));
        self
    }

    pub fn target(mut self, check: Check, text: impl Into<String>) -> Self {
        self.target = Some(Target::new(check, text));
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|(_, b)| self.value / b)
            .filter(|r| r.is_finite())
    }
}

/// One `cpu` line of /proc/stat, in jiffies.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub idle: u64,
    pub steal: u64,
}

impl CpuTimes {
    fn total(&self) -> u64 {
        self.busy + self.idle + self.steal
    }
}

/// /proc/stat: the aggregate line and one per CPU.
pub fn cpu_times() -> anyhow::Result<(CpuTimes, Vec<CpuTimes>)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut all = CpuTimes::default();
    let mut per = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let mut f = line.split_whitespace();
        let name = f.next().unwrap_or("");
        // user nice system idle iowait irq softirq steal (guest time is inside user/nice).
        let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        let t = CpuTimes {
            busy: v[0] + v[1] + v[2] + v[5] + v[6],
            idle: v[3] + v[4],
            steal: v[7],
        };
        if name == "cpu" {
            all = t;
        } else {
            per.push(t);
        }
    }
    Ok((all, per))
}

/// Jiffies per second (`USER_HZ`).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Steal above this share of all CPU time makes a round noisy.
pub const STEAL_NOISY_PCT: f64 = 2.0;
/// In a pinned scenario, the other cores busier than this make a round noisy.
pub const OTHER_BUSY_NOISY_PCT: f64 = 15.0;

/// What the noise probe saw during one round.
#[derive(Clone, Debug, Default)]
pub struct Noise {
    pub steal_pct: f64,
    /// Busy share of the cores the scenario did not pin to (pinned scenarios only).
    pub other_busy_pct: Option<f64>,
}

impl Noise {
    pub fn noisy(&self) -> bool {
        self.steal_pct > STEAL_NOISY_PCT
            || self
                .other_busy_pct
                .is_some_and(|b| b > OTHER_BUSY_NOISY_PCT)
    }

    pub fn describe(&self) -> String {
        match self.other_busy_pct {
            Some(b) => format!("steal {:.1}%, other cores busy {:.0}%", self.steal_pct, b),
            None => format!("steal {:.1}%", self.steal_pct),
        }
    }
}

/// A /proc/stat snapshot at the start of a round.
pub struct Probe {
    start: (CpuTimes, Vec<CpuTimes>),
}

impl Probe {
    pub fn start() -> anyhow::Result<Self> {
        Ok(Self {
            start: cpu_times()?,
        })
    }

    /// Noise since `start`; `pinned` names the CPU the measured work ran on.
    pub fn finish(&self, pinned: Option<usize>) -> anyhow::Result<Noise> {
        let (all, per) = cpu_times()?;
        let d = |a: &CpuTimes, b: &CpuTimes| CpuTimes {
            busy: a.busy.saturating_sub(b.busy),
            idle: a.idle.saturating_sub(b.idle),
            steal: a.steal.saturating_sub(b.steal),
        };
        let total = d(&all, &self.start.0);
        let steal_pct = 100.0 * total.steal as f64 / total.total().max(1) as f64;
        let other_busy_pct = pinned.map(|cpu| {
            let (mut busy, mut tot) = (0, 0);
            for (i, (now, then)) in per.iter().zip(&self.start.1).enumerate() {
                if i != cpu {
                    let x = d(now, then);
                    busy += x.busy;
                    tot += x.total();
                }
            }
            100.0 * busy as f64 / tot.max(1) as f64
        });
        Ok(Noise {
            steal_pct,
            other_busy_pct,
        })
    }
}

/// RFC 3339 UTC time of `t`, e.g. `2026-05-01T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(rfc3339(t), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn targets() {
        let t = Target::new(Check::RatioAtLeast(0.8), "");
        assert_eq!(t.met(8.0, Some(10.0)), Some(true));
        assert_eq!(t.met(7.9, Some(10.0)), Some(false));
        assert_eq!(t.met(7.9, None), None);
        let t = Target::new(Check::DiffAtMost(1.0), "");
        assert_eq!(t.met(14.5, Some(13.6)), Some(true));
        let t = Target::new(Check::ValueAtMost(1.8), "");
        assert_eq!(t.met(2.0, None), Some(false));
    }
}
