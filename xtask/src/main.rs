//! `cargo xtask`: the project's one entry point for setting up a machine, building,
//! running and testing.
//!
//! # Layout
//! - [`setup`]: installs what a fresh Debian 12 machine lacks (idempotent)
//! - [`test`]: runs every suite and prints a summary line per suite
//! - [`bench`]: builds and runs the benchmark suite (`lb-bench`)
//! - this file: the command line, `build`, `run` and `demo`

mod bench;
mod setup;
mod test;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, run and test the XDP load balancer and its tiers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks: Debian packages, bpf-linker, the BPF toolchain
    /// link, the bpffs mount. Idempotent; says what it did.
    Setup {
        /// Only check, install nothing; fail if something is missing.
        #[arg(long)]
        check: bool,
    },
    /// Build the XDP object and every binary (release).
    Build,
    /// Build and run the `lb` controller: `cargo xtask run -- run --config lb.toml`.
    Run {
        /// Arguments for `lb`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, lint, unit tests, then the privileged integration tests; a summary line per
    /// suite; non-zero on any failure.
    Test {
        /// Only suites whose name contains this.
        filter: Option<String>,
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// The whole design in network namespaces with sample traffic and a live view:
    /// setup, release build, then `lb-demo` (keys break things; Ctrl-C tears down).
    Demo {
        /// Break things automatically on a schedule.
        #[arg(long)]
        chaos: bool,
        /// Remove the leftovers of a demo that crashed.
        #[arg(long, conflicts_with_all = ["chaos", "duration"])]
        down: bool,
        /// Exit after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
    },
    /// Benchmarks against the peers on this machine (all scenarios, or the named ones):
    /// writes BENCHMARKS.md, bench/plots/*.svg, target/bench/results.jsonl.
    Bench {
        /// Scenarios to run (default: all; `--list` names them).
        scenarios: Vec<String>,
        /// Rounds per scenario (default 3).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: Option<u32>,
        /// One round of short runs: a smoke check, not a measurement.
        #[arg(long, conflicts_with = "rounds")]
        quick: bool,
        /// List the scenarios.
        #[arg(long)]
        list: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup { check } => setup::run(check),
        Cmd::Build => build(),
        Cmd::Run { args } => {
            build()?;
            let lb = workspace().join("target/release/lb");
            let status = Command::new(&lb)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", lb.display()))?;
            if !status.success() {
                bail!("lb exited with {status}");
            }
            Ok(())
        }
        Cmd::Test { filter, no_lint } => test::run(filter.as_deref(), no_lint),
        Cmd::Demo {
            chaos,
            down,
            duration,
        } => demo(chaos, down, duration),
        Cmd::Bench {
            scenarios,
            rounds,
            quick,
            list,
        } => bench::run(&scenarios, rounds, quick, list),
    }
}

/// The workspace root (xtask's parent).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo` as the one running us (respects the rustup toolchain in use).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

/// Runs `cmd`, failing with `what` if it does not exit 0.
pub fn run_checked(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn build() -> anyhow::Result<()> {
    setup::run(true).context("the machine is not set up: run `cargo xtask setup` as root")?;
    println!("==> building the XDP object and all binaries (release; cargo shows progress)");
    run_checked(
        cargo().args(["build", "--release", "--workspace", "--bins"]),
        "cargo build",
    )?;
    let lb = workspace().join("target/release/lb");
    println!("==> built {} (the XDP object is embedded)", lb.display());
    Ok(())
}

/// `cargo xtask demo`: setup (installs what is missing), release build, then replaces
/// this process with `lb-demo` so the terminal and Ctrl-C go straight to it.
fn demo(chaos: bool, down: bool, duration: Option<u64>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let bin = workspace().join("target/release/lb-demo");
    // Cleaning up after a crash needs neither packages nor a fresh build.
    if !(down && bin.exists()) {
        setup::run(false)?;
        println!("==> building every binary (release; cargo shows progress)");
        run_checked(
            cargo().args(["build", "--release", "--workspace", "--bins"]),
            "cargo build",
        )?;
    }
    let mut cmd = Command::new(&bin);
    if chaos {
        cmd.arg("--chaos");
    }
    if down {
        cmd.arg("--down");
    }
    if let Some(d) = duration {
        cmd.args(["--duration", &d.to_string()]);
    }
    let err = cmd.exec();
    Err(err).with_context(|| format!("running {}", bin.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
    }

    #[test]
    fn bench_rounds_must_be_positive() {
        assert!(parse(&["bench", "--rounds", "0"]).is_err());
        assert!(parse(&["bench", "--rounds", "-2"]).is_err());
        assert!(parse(&["bench", "--quick", "--rounds", "3"]).is_err());
        assert!(parse(&["bench", "http", "--rounds", "2"]).is_ok());
    }

    #[test]
    fn demo_down_takes_no_run_options() {
        assert!(parse(&["demo", "--down", "--duration", "5"]).is_err());
        assert!(parse(&["demo", "--down", "--chaos"]).is_err());
        assert!(parse(&["demo", "--down"]).is_ok());
        assert!(parse(&["demo", "--chaos", "--duration", "5"]).is_ok());
    }
}
