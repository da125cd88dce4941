//! `lb-bench`: the benchmark suite behind `cargo xtask bench [scenario]`.
//!
//! Every scenario measures the load balancer beside a baseline on the same machine in
//! the same round (a trivial XDP program, direct access, HAProxy, ...), runs several
//! rounds (`--rounds N`, default 3), and reports the median and min-max over rounds.
//! Results go to `BENCHMARKS.md` (one section per scenario; sections of scenarios that did
//! not run are kept), `bench/plots/<scenario>.svg`, and one JSON object per row appended
//! to `target/bench/results.jsonl`. Targets print PASS or MISS; nothing fails on a miss.
//! A round is flagged noisy from `/proc/stat`: steal time, and for scenarios pinned to
//! one core, the other cores' busy time.
//!
//! Run it through `cargo xtask bench` (which builds everything first, release); directly:
//! `target/release/lb-bench [SCENARIO]... [--rounds N] [--quick] [--list]`, as root.
//!
//! # Adding a scenario
//! 1. Create `bench/src/scenarios/<name>.rs` exporting
//!    `pub const SCENARIO: Scenario = Scenario { name, description, method, pinned, run }`:
//!    `method` is the Markdown paragraph BENCHMARKS.md prints above the table (the
//!    set-up and how to read it); `pinned` says whether the measured work runs on
//!    `ctx.cpu` only (use [`ctx::Ctx::pinned`] for in-process work, `--cpu`/`taskset`
//!    for children).
//! 2. `run(&mut Ctx) -> anyhow::Result<Vec<Row>>` is ONE round: build what it needs
//!    (`lb_tests::Topology` for namespaces, [`support::Controller`] for `lb run`, RAII
//!    guards for processes, so everything is removed on return, error or panic),
//!    measure the candidate and its baseline, and return rows:
//!    `Row::new("metric", value, "unit").vs("baseline name", baseline_value)` plus
//!    `.target(Check::RatioAtLeast(0.95), ">= 0.95x direct")` where the issue sets one.
//!    Keep metric names stable (rows aggregate across rounds by name). Print progress
//!    with `ctx.progress(..)`; shorten durations under `ctx.quick` (`ctx.pick(full, quick)`).
//! 3. Add `pub mod <name>;` and `&<name>::SCENARIO` to [`scenarios::ALL`] (the order
//!    there is the order of BENCHMARKS.md).
//!
//! Never assert on timing; a scenario fails (returns `Err`) only when it could not
//! measure.
//!
//! # Layout
//! - [`ctx`]: `Ctx`, `Row`, targets, the `/proc/stat` noise probe
//! - [`scenarios`]: the registry and the scenarios
//! - [`support`]: the controller and helpers shared by namespace scenarios
//! - [`report`]: aggregation, JSON lines, console, BENCHMARKS.md
//! - [`plot`]: the SVG charts
//! - [`wrk`]: running wrk and reading its report
//! - [`interrupt`]: Ctrl-C / SIGTERM remove what the run created

mod ctx;
mod interrupt;
mod plot;
mod report;
mod scenarios;
mod support;
mod wrk;

use std::{collections::BTreeMap, path::PathBuf, time::SystemTime};

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::{
    ctx::{Check, Ctx, Probe, rfc3339},
    report::{Machine, Round},
    scenarios::ALL,
};

#[derive(Parser)]
#[command(
    name = "lb-bench",
    about = "Benchmarks of the XDP load balancer against its peers (run as root; see BENCHMARKS.md)"
)]
struct Cli {
    /// Scenarios to run (default: all). `--list` names them.
    scenarios: Vec<String>,
    /// Rounds per scenario (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// One round with short runs: a smoke check of the machinery, not a measurement.
    #[arg(long, conflicts_with = "rounds")]
    quick: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Workspace root (BENCHMARKS.md, bench/plots, target/bench).
    #[arg(long)]
    root: Option<PathBuf>,
    /// CPU to pin measured work to (default: the last one).
    #[arg(long)]
    cpu: Option<usize>,
}

/// `--cpu` must name a CPU this process may run on: `taskset` and the pinned threads
/// would otherwise fail only once a round has built its namespaces, with a message
/// about whatever they were starting.
fn check_cpu(cpu: Option<usize>, ncpu: usize) -> anyhow::Result<()> {
    if let Some(c) = cpu
        && c >= ncpu
    {
        bail!(
            "--cpu {c}: this machine has CPUs 0..={} (leave --cpu out for the last one)",
            ncpu - 1
        );
    }
    Ok(())
}

/// The scenarios `names` asks for, in that order (all of them if none); an unknown or
/// repeated name is refused (a repeat used to run the scenario twice over).
fn choose(names: &[String]) -> anyhow::Result<Vec<&'static scenarios::Scenario>> {
    if names.is_empty() {
        return Ok(ALL.to_vec());
    }
    let mut chosen: Vec<&'static scenarios::Scenario> = Vec::with_capacity(names.len());
    for n in names {
        let s = ALL.iter().copied().find(|s| s.name == n).with_context(|| {
            format!(
                "no scenario {n:?}; there are: {}",
                ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        if chosen.iter().any(|c| c.name == s.name) {
            bail!("scenario {n:?} is named twice");
        }
        chosen.push(s);
    }
    Ok(chosen)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.list {
        for s in ALL {
            println!("{:<12} {}", s.name, s.description);
        }
        return Ok(());
    }
    let chosen = choose(&cli.scenarios)?;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_cpu(cli.cpu, ncpu)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load XDP programs and create network namespaces: run as root");
    }
    // Before any thread starts or anything is created.
    interrupt::install()?;
    let root = cli.root.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map_or_else(|| PathBuf::from("."), ToOwned::to_owned)
    });
    let exe = std::env::current_exe().context("locating lb-bench")?;
    let lb = exe.with_file_name("lb");
    if !lb.exists() {
        bail!(
            "{} not found: build it first (`cargo build --release --workspace --bins`; `cargo xtask bench` does)",
            lb.display()
        );
    }
    let rounds = if cli.quick { 1 } else { cli.rounds };
    let machine = Machine::probe();
    let jsonl = root.join("target/bench/results.jsonl");
    println!(
        "lb-bench: {} on {} ({} cores), Linux {}; {} round(s){}; measured work pinned to CPU {}",
        chosen.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
        machine.cpu,
        machine.cores,
        machine.kernel,
        rounds,
        if cli.quick { ", quick" } else { "" },
        cli.cpu.unwrap_or(ncpu - 1)
    );

    let mut sections = BTreeMap::new();
    let mut failures = Vec::new();
    let mut all_sums = Vec::new();
    for sc in &chosen {
        let mut ctx = Ctx {
            scenario: sc.name,
            round: 0,
            rounds,
            quick: cli.quick,
            cpu: cli.cpu.unwrap_or(ncpu - 1),
            root: root.clone(),
            lb: lb.clone(),
        };
        let mut done = Vec::new();
        let mut failed = None;
        let started = SystemTime::now();
        for r in 1..=rounds {
            ctx.round = r;
            ctx.progress(sc.description);
            let probe = Probe::start()?;
            let result = (sc.run)(&mut ctx);
            interrupt::park_if_stopping();
            match result {
                Ok(rows) => {
                    let noise = probe.finish(sc.pinned.then_some(ctx.cpu))?;
                    if noise.noisy() {
                        ctx.progress(format!("noisy round: {}", noise.describe()));
                    }
                    let round = Round {
                        round: r,
                        noise,
                        rows,
                    };
                    report::append_jsonl(&jsonl, sc.name, &round, &rfc3339(SystemTime::now()))?;
                    done.push(round);
                }
                Err(e) => {
                    eprintln!("[{} {r}/{rounds}] FAILED: {e:#}", sc.name);
                    failed = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        let sums = report::summarize(&done);
        report::print_console(sc.name, &sums);
        let (svg, rel) = report::plot_path(&root, sc.name);
        let plotted = !sums.is_empty()
            && match report::draw_plot(&svg, sc, &sums) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("plot {}: {e:#}", svg.display());
                    false
                }
            };
        sections.insert(
            sc.name.to_owned(),
            report::section(
                sc,
                &sums,
                &done,
                &machine,
                &rfc3339(started),
                cli.quick,
                plotted.then_some(rel.as_str()),
                failed.as_deref(),
            ),
        );
        if let Some(e) = failed {
            failures.push((sc.name, e));
        }
        all_sums.push((sc.name, sums));
    }
    let order: Vec<&str> = ALL.iter().map(|s| s.name).collect();
    let md = root.join("BENCHMARKS.md");
    report::write_markdown(&md, &order, &sections)?;

    println!("\n== targets");
    let mut misses = 0;
    for (name, sums) in &all_sums {
        for s in sums.iter().filter(|s| s.target.is_some()) {
            let t = s.target.as_ref().map_or("", |t| t.text.as_str());
            let verdict = match s.met {
                Some(true) => "PASS",
                Some(false) => {
                    misses += 1;
                    "MISS"
                }
                None => "n/a",
            };
            let got = match s.target.as_ref().map(|t| t.check) {
                Some(Check::RatioAtLeast(_) | Check::RatioAtMost(_)) => s
                    .ratio
                    .map(|r| format!("{:.2}x", r.median))
                    .unwrap_or_default(),
                Some(Check::DiffAtMost(_)) => s
                    .diff
                    .map(|d| format!("{:+.2} {} over", d.median, s.unit))
                    .unwrap_or_default(),
                _ => format!("{} {}", report::fmt_num(s.value.median), s.unit),
            };
            println!(
                "{verdict:<5} {name:<10} {:<40} {got:>12}  (target {t})",
                s.metric
            );
        }
    }
    println!(
        "\nwrote {}, bench/plots/*.svg, appended to {}{}",
        md.display(),
        jsonl.display(),
        if misses > 0 {
            format!("; {misses} target(s) missed (reported, not failed)")
        } else {
            String::new()
        }
    );
    if !failures.is_empty() {
        for (n, e) in &failures {
            eprintln!("scenario {n} could not run: {e}");
        }
        bail!("{} scenario(s) could not run", failures.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn rounds_zero_is_refused() {
        let e = Cli::try_parse_from(["lb-bench", "--rounds", "0"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("--rounds"), "{e}");
        assert!(Cli::try_parse_from(["lb-bench", "--rounds", "-1"]).is_err());
        assert_eq!(
            Cli::try_parse_from(["lb-bench", "--rounds", "2"])
                .unwrap()
                .rounds,
            2
        );
    }

    #[test]
    fn quick_and_rounds_conflict() {
        assert!(Cli::try_parse_from(["lb-bench", "--quick", "--rounds", "5"]).is_err());
        assert!(Cli::try_parse_from(["lb-bench", "--quick"]).is_ok());
    }

    #[test]
    fn scenarios_are_chosen_once_each() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(choose(&[]).unwrap().len(), ALL.len());
        let two = choose(&names(&["web", "xdp"])).unwrap();
        assert_eq!(
            two.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["web", "xdp"]
        );
        let e = choose(&names(&["http", "http"])).err().unwrap().to_string();
        assert!(e.contains("named twice"), "{e}");
        let e = choose(&names(&["nosuch"])).err().unwrap().to_string();
        assert!(e.contains("there are: xdp"), "{e}");
    }

    #[test]
    fn cpu_out_of_range_is_refused() {
        assert!(check_cpu(None, 2).is_ok());
        assert!(check_cpu(Some(1), 2).is_ok());
        let e = check_cpu(Some(2), 2).unwrap_err().to_string();
        assert!(e.contains("0..=1"), "{e}");
        assert!(check_cpu(Some(5000), 2).is_err());
    }
}
