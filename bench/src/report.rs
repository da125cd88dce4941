//! Turning rounds of rows into results: medians and ranges, PASS/MISS against targets,
//! the JSON-lines log, the console table, the BENCHMARKS.md section and the plot.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    ctx::{Noise, Row, Target},
    plot,
    scenarios::Scenario,
};

/// Median and range of one quantity over rounds.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// About three significant digits.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// One round of a scenario as it ran.
pub struct Round {
    pub round: u32,
    pub noise: Noise,
    pub rows: Vec<Row>,
}

/// One metric over all rounds.
pub struct Summary {
    pub metric: String,
    pub unit: &'static str,
    pub baseline: Option<String>,
    pub value: Stat,
    pub baseline_value: Option<Stat>,
    pub ratio: Option<Stat>,
    /// Per-round value minus baseline (what a difference target is checked against).
    pub diff: Option<Stat>,
    pub target: Option<Target>,
    pub met: Option<bool>,
    pub rounds: usize,
    pub noisy_rounds: usize,
}

/// Aggregates rounds by metric, in the order metrics first appeared.
pub fn summarize(rounds: &[Round]) -> Vec<Summary> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<(&Row, bool)>> = BTreeMap::new();
    for r in rounds {
        for row in &r.rows {
            if !by.contains_key(&row.metric) {
                order.push(row.metric.clone());
            }
            by.entry(row.metric.clone())
                .or_default()
                .push((row, r.noise.noisy()));
        }
    }
    order
        .into_iter()
        .filter_map(|m| {
            let rows = by.remove(&m)?;
            let first = rows.first()?.0;
            let value = Stat::of(&rows.iter().map(|(r, _)| r.value).collect::<Vec<_>>())?;
            let bvals: Vec<f64> = rows
                .iter()
                .filter_map(|(r, _)| r.baseline.as_ref().map(|b| b.1))
                .collect();
            let ratios: Vec<f64> = rows.iter().filter_map(|(r, _)| r.ratio()).collect();
            let baseline_value = Stat::of(&bvals);
            let ratio = Stat::of(&ratios);
            let target = first.target.clone();
            // Ratio and difference targets use the median of the per-round ratios or
            // differences (the comparison is within a round); value targets the median.
            let diffs: Vec<f64> = rows
                .iter()
                .filter_map(|(r, _)| r.baseline.as_ref().map(|b| r.value - b.1))
                .collect();
            let diff = Stat::of(&diffs);
            let met = target.as_ref().and_then(|t| match t.check {
                crate::ctx::Check::RatioAtLeast(_) | crate::ctx::Check::RatioAtMost(_) => {
                    t.met(ratio?.median, Some(1.0))
                }
                crate::ctx::Check::DiffAtMost(_) => t.met(diff?.median, Some(0.0)),
                _ => t.met(value.median, baseline_value.map(|b| b.median)),
            });
            Some(Summary {
                unit: first.unit,
                baseline: first.baseline.as_ref().map(|b| b.0.clone()),
                value,
                baseline_value,
                ratio,
                diff,
                target,
                met,
                rounds: rows.len(),
                noisy_rounds: rows.iter().filter(|(_, n)| *n).count(),
                metric: m,
            })
        })
        .collect()
}

/// Appends one JSON object per row to `path`.
pub fn append_jsonl(path: &Path, scenario: &str, round: &Round, time: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for r in &round.rows {
        let v = serde_json::json!({
            "scenario": scenario,
            "metric": r.metric,
            "value": r.value,
            "unit": r.unit,
            "baseline": r.baseline.as_ref().map(|b| b.0.clone()),
            "baseline_value": r.baseline.as_ref().map(|b| b.1),
            "ratio": r.ratio(),
            "round": round.round,
            "time": time,
            "noisy": round.noise.noisy(),
        });
        writeln!(f, "{v}")?;
    }
    Ok(())
}

fn verdict(s: &Summary) -> &'static str {
    match s.met {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None if s.target.is_some() => "n/a",
        None => "",
    }
}

fn range(s: &Stat) -> String {
    format!("{}–{}", fmt_num(s.min), fmt_num(s.max))
}

/// The console table of one scenario.
pub fn print_console(name: &str, sums: &[Summary]) {
    println!("\n== {name}");
    println!(
        "{:<40} {:>10} {:>19} {:>8} {:>24} {:>7} {:>14}  RESULT",
        "METRIC", "MEDIAN", "MIN-MAX", "UNIT", "BASELINE (MEDIAN)", "RATIO", "TARGET"
    );
    for s in sums {
        let base = match (&s.baseline, &s.baseline_value) {
            (Some(n), Some(v)) => format!("{n} {}", fmt_num(v.median)),
            _ => String::new(),
        };
        let ratio = s
            .ratio
            .map(|r| format!("{:.2}x", r.median))
            .unwrap_or_default();
        println!(
            "{:<40} {:>10} {:>19} {:>8} {:>24} {:>7} {:>14}  {}{}",
            s.metric,
            fmt_num(s.value.median),
            range(&s.value),
            s.unit,
            base,
            ratio,
            s.target.as_ref().map_or("", |t| t.text.as_str()),
            verdict(s),
            if s.noisy_rounds > 0 {
                format!(" ({} noisy round(s))", s.noisy_rounds)
            } else {
                String::new()
            }
        );
    }
}

/// What the report says about the machine.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".into(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_gib: mem_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
        }
    }
}

/// The BENCHMARKS.md section of one scenario, markers included.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename the arguments"
)]
pub fn section(
    sc: &Scenario,
    sums: &[Summary],
    rounds: &[Round],
    machine: &Machine,
    date: &str,
    quick: bool,
    plot_rel: Option<&str>,
    failed: Option<&str>,
) -> String {
    let mut s = format!(
        "<!-- bench:{}:begin -->\n## `{}`: {}\n\n",
        sc.name, sc.name, sc.description
    );
    s += &format!(
        "Measured {date} on {} ({} cores, {:.0} GiB), Linux {}, {} round(s){}.\n\n",
        machine.cpu,
        machine.cores,
        machine.mem_gib,
        machine.kernel,
        rounds.len(),
        if quick {
            " with `--quick` (short runs: a smoke check, not a measurement)"
        } else {
            ""
        }
    );
    s += sc.method.trim();
    s += "\n\n";
    if let Some(e) = failed {
        s += &format!("**The scenario failed:** `{}`\n\n", e.replace('`', "'"));
    }
    if !sums.is_empty() {
        s += "| metric | median | min–max | unit | baseline (same round) | baseline median | ratio median (min–max) | target | result |\n";
        s += "|---|---:|---:|---|---|---:|---:|---|---|\n";
        for x in sums {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {}{} |\n",
                x.metric,
                fmt_num(x.value.median),
                range(&x.value),
                x.unit,
                x.baseline.as_deref().unwrap_or(""),
                x.baseline_value
                    .map(|b| fmt_num(b.median))
                    .unwrap_or_default(),
                match (&x.target, x.diff) {
                    (Some(t), Some(d)) if matches!(t.check, crate::ctx::Check::DiffAtMost(_)) =>
                        format!(
                            "{:+.2} {} ({:+.2}–{:+.2}) over",
                            d.median, x.unit, d.min, d.max
                        ),
                    _ => x
                        .ratio
                        .map(|r| format!("{:.2}x ({:.2}–{:.2})", r.median, r.min, r.max))
                        .unwrap_or_default(),
                },
                x.target.as_ref().map_or("", |t| t.text.as_str()),
                match x.met {
                    Some(true) => "**PASS**",
                    Some(false) => "**MISS**",
                    None if x.target.is_some() => "n/a",
                    None => "",
                },
                if x.noisy_rounds > 0 {
                    format!(" ⚠ {}/{} noisy", x.noisy_rounds, x.rounds)
                } else {
                    String::new()
                }
            );
        }
        s += "\nNoise per round: ";
        s += &rounds
            .iter()
            .map(|r| {
                format!(
                    "{}{} {}",
                    if r.noise.noisy() { "⚠ " } else { "" },
                    r.round,
                    r.noise.describe()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        s += ".\n\n";
    }
    if let Some(p) = plot_rel {
        s += &format!("![{}]({p})\n\n", sc.name);
    }
    s += &format!("<!-- bench:{}:end -->\n", sc.name);
    s
}

/// The plot of one scenario: one panel per unit.
pub fn draw_plot(path: &Path, sc: &Scenario, sums: &[Summary]) -> anyhow::Result<()> {
    let mut panels: Vec<plot::Panel> = Vec::new();
    for x in sums {
        let bar = plot::Bar {
            label: x.metric.clone(),
            value: x.value,
            baseline: x.baseline.clone().zip(x.baseline_value),
        };
        match panels.iter_mut().find(|p| p.unit == x.unit) {
            Some(p) => p.bars.push(bar),
            None => panels.push(plot::Panel {
                unit: x.unit.to_owned(),
                bars: vec![bar],
            }),
        }
    }
    plot::draw(path, &format!("{}: {}", sc.name, sc.description), &panels)
}

pub const HEADER: &str = "# Benchmarks

Generated by `cargo xtask bench` (every scenario) or `cargo xtask bench <scenario>` (that
section only; the others keep their last results). Do not edit by hand: the command
rewrites this file and the plots in `bench/plots/`.

How to read the tables:
- Every scenario runs several rounds (default 3, `--rounds N`); a table shows the median
  over rounds and the min–max range.
- The candidate and its baseline are measured in the same round, and the ratio is taken
  within the round (its median over rounds is what a target is checked against), so a
  slow round slows both sides alike. A target on a difference (`<= direct + 1 us`) is
  checked the same way, on the median of the per-round differences, which that row
  shows instead of a ratio.
- A round is flagged noisy (⚠) when steal time exceeded 2% of all CPU time, or, for a
  scenario whose measured work is pinned to one core, when the other cores were more than
  15% busy (something else was running).
- A target prints PASS or MISS; the benchmarks never fail on a miss, and no test asserts
  on timing.
- Every row is also appended to `target/bench/results.jsonl` as one JSON object per line:
  `scenario, metric, value, unit, baseline, baseline_value, ratio, round, time, noisy`.

";

/// Rewrites `file`: the header, then each scenario's section in registry order, taking
/// the new ones from `fresh` and keeping the old text of scenarios that did not run.
pub fn write_markdown(
    file: &Path,
    order: &[&str],
    fresh: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(file).unwrap_or_default();
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut rest = old.as_str();
    while let Some(b) = rest.find("<!-- bench:") {
        let after = &rest[b + 11..];
        let Some(colon) = after.find(":begin -->") else {
            break;
        };
        let name = after[..colon].to_owned();
        let end_marker = format!("<!-- bench:{name}:end -->");
        let Some(e) = rest.find(&end_marker) else {
            break;
        };
        let end = e + end_marker.len();
        kept.push((name, format!("{}\n", &rest[b..end])));
        rest = &rest[end..];
    }
    let mut out = HEADER.to_owned();
    for name in order {
        if let Some(s) = fresh.get(*name) {
            out += s;
            out += "\n";
        } else if let Some((_, s)) = kept.iter().find(|(n, _)| n == name) {
            out += s;
            out += "\n";
        }
    }
    for (name, s) in &kept {
        if !order.contains(&name.as_str()) {
            out += s;
            out += "\n";
        }
    }
    std::fs::write(file, out.trim_end().to_owned() + "\n")
        .with_context(|| format!("writing {}", file.display()))
}

/// `bench/plots/<scenario>.svg` under `root`, and the same path relative to it.
pub fn plot_path(root: &Path, scenario: &str) -> (PathBuf, String) {
    let rel = format!("bench/plots/{scenario}.svg");
    (root.join(&rel), rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_targets_compare_within_rounds() {
        use crate::ctx::{Check, Noise};
        // In two rounds of three the candidate is 0.5 over its baseline, but the two
        // medians come from different rounds and are 2.5 apart.
        let round = |n: u32, value: f64, base: f64| Round {
            round: n,
            noise: Noise::default(),
            rows: vec![
                Row::new("cpu", value, "us")
                    .vs("direct", base)
                    .target(Check::DiffAtMost(1.0), "<= direct + 1 us"),
            ],
        };
        let s = summarize(&[
            round(1, 33.5, 33.0),
            round(2, 31.5, 31.0),
            round(3, 35.5, 30.0),
        ]);
        assert_eq!(s[0].met, Some(true));
        let s = summarize(&[
            round(1, 33.5, 31.0),
            round(2, 31.5, 31.0),
            round(3, 35.5, 34.0),
        ]);
        assert_eq!(s[0].met, Some(false), "1.5 over in the median round");
    }

    #[test]
    fn median_and_range() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Stat::of(&[4.0, 1.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn sections_are_replaced_and_kept() {
        let dir = std::env::temp_dir().join(format!("lb-bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("B.md");
        let sec = |n: &str, body: &str| {
            format!("<!-- bench:{n}:begin -->\n{body}\n<!-- bench:{n}:end -->\n")
        };
        let mut fresh = BTreeMap::new();
        fresh.insert("a".to_owned(), sec("a", "A1"));
        fresh.insert("b".to_owned(), sec("b", "B1"));
        fresh.insert("web".to_owned(), sec("web", "W1"));
        write_markdown(&f, &["a", "b", "web"], &fresh).unwrap();
        let mut fresh = BTreeMap::new();
        fresh.insert("b".to_owned(), sec("b", "B2"));
        write_markdown(&f, &["a", "b"], &fresh).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("# Benchmarks"));
        let (a, b, w) = (
            text.find("A1").unwrap(),
            text.find("B2").unwrap(),
            text.find("W1").unwrap(),
        );
        assert!(a < b && b < w, "{text}");
        assert!(!text.contains("B1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
