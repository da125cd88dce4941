//! `cargo xtask bench [scenario]`: checks the machine is set up, builds every binary
//! (release), then runs `target/release/lb-bench`, which measures, prints progress and
//! PASS/MISS per target, and rewrites BENCHMARKS.md, bench/plots/*.svg and appends to
//! target/bench/results.jsonl.
//!
//! xtask does not link the benchmark code itself: `lb-bench` depends on `lb-userspace`,
//! whose build script needs the BPF toolchain that `cargo xtask setup` installs.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{cargo, run_checked, workspace};

pub fn run(
    scenarios: &[String],
    rounds: Option<u32>,
    quick: bool,
    list: bool,
) -> anyhow::Result<()> {
    crate::setup::run(true)
        .context("the machine is not set up: run `cargo xtask setup` as root")?;
    println!("==> building every binary (release; cargo shows progress)");
    run_checked(
        cargo().args(["build", "--release", "--workspace", "--bins"]),
        "cargo build",
    )?;
    let bin = workspace().join("target/release/lb-bench");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(workspace())
        .args(scenarios)
        .arg("--root")
        .arg(workspace());
    if let Some(n) = rounds {
        cmd.args(["--rounds", &n.to_string()]);
    }
    if quick {
        cmd.arg("--quick");
    }
    if list {
        cmd.arg("--list");
    }
    println!("==> {}", bin.display());
    let status = cmd
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("lb-bench exited with {status}");
    }
    Ok(())
}
