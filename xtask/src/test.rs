//! `cargo xtask test`: setup (installs what is missing), lint, unit tests, then every
//! integration-test file of every package as its own suite. Prints one summary line
//! per suite and a final `N passed, N failed` line; exits non-zero on any failure or
//! on anything a test left behind (namespaces, bpffs pins, temporary directories and
//! admin sockets of the harness, and processes).

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{cargo, workspace};

struct Outcome {
    name: String,
    passed: u32,
    failed: u32,
    ok: bool,
    secs: f64,
}

/// Packages with integration tests in `<dir>/tests/*.rs`.
const PACKAGES: &[(&str, &str)] = &[
    ("web-tier", "web-tier"),
    ("app-tier", "app-tier"),
    ("lb-tests", "tests"),
];

pub fn run(filter: Option<&str>, no_lint: bool) -> anyhow::Result<()> {
    crate::setup::run(false)?;
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let mut results = Vec::new();

    if !no_lint && filter.is_none() {
        results.push(step(
            "fmt",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )?);
        results.push(step(
            "clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?);
    }
    println!("==> building binaries used by the integration tests");
    crate::run_checked(
        cargo().args(["build", "--workspace", "--bins"]),
        "cargo build",
    )?;
    if wanted("unit") {
        results.push(suite(
            "unit",
            cargo().args([
                "test",
                "--workspace",
                "--exclude",
                "lb-ebpf",
                "--lib",
                "--bins",
            ]),
        )?);
    }
    for (pkg, dir) in PACKAGES {
        let tests = workspace().join(dir).join("tests");
        let mut files: Vec<String> = std::fs::read_dir(&tests)
            .map(|rd| {
                // Cargo's test targets: `tests/<name>.rs` and `tests/<name>/main.rs`.
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if e.path().join("main.rs").is_file() {
                            return Some(n);
                        }
                        n.strip_suffix(".rs").map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for t in files {
            let name = format!("{pkg}/{t}");
            if wanted(&name) {
                results.push(suite(
                    &name,
                    cargo().args(["test", "-p", pkg, "--test", &t]),
                )?);
            }
        }
    }

    let mut leftovers = harness_leftovers();
    leftovers.extend(leftover_processes());
    println!("\n==> summary");
    let (mut passed, mut failed) = (0, 0);
    for r in &results {
        println!(
            "suite {:<28} {:>4} passed {:>3} failed  {:>6.1}s  {}",
            r.name,
            r.passed,
            r.failed,
            r.secs,
            if r.ok { "ok" } else { "FAILED" }
        );
        passed += r.passed;
        failed += r.failed;
    }
    let bad: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.name.as_str())
        .collect();
    if !leftovers.is_empty() {
        println!("left behind by the tests: {}", leftovers.join(" "));
    }
    println!("{passed} passed, {failed} failed");
    if results.is_empty() {
        bail!("no suite matched; nothing was tested");
    }
    if !bad.is_empty() {
        bail!("failed suites: {}", bad.join(", "));
    }
    if !leftovers.is_empty() {
        bail!("the tests left namespaces, pins or processes behind: a cleanup path has a hole");
    }
    Ok(())
}

/// A lint step: pass/fail only.
fn step(name: &str, cmd: &mut Command) -> anyhow::Result<Outcome> {
    println!("==> {name}");
    let start = Instant::now();
    let ok = cmd
        .status()
        .with_context(|| format!("running {name}"))?
        .success();
    Ok(Outcome {
        name: name.into(),
        passed: u32::from(ok),
        failed: u32::from(!ok),
        ok,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// A cargo test run: echoes its output and adds up its `test result:` lines.
fn suite(name: &str, cmd: &mut Command) -> anyhow::Result<Outcome> {
    println!("==> suite {name}");
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running suite {name}"))?;
    let (mut passed, mut failed, mut ran) = (0, 0, 0);
    let out = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            ran += 1;
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait()?;
    // A suite that ran no test at all proves nothing: count it as a failure.
    let ok = status.success() && ran > 0 && passed > 0;
    if ran > 0 && passed == 0 && failed == 0 {
        println!("suite {name} ran no test");
    }
    Ok(Outcome {
        name: name.into(),
        passed,
        failed,
        ok,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// `"ok. 3 passed; 0 failed; ..."` -> the number before `what`.
fn count(s: &str, what: &str) -> u32 {
    s.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(what.trim())
                .map(str::trim)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Processes still running from this workspace's target directory (the binaries the
/// tests start: lb, web-tier, app-tier, lb-vrrp, ...) or MariaDB servers on a test
/// data directory: each one is a cleanup hole.
fn leftover_processes() -> Vec<String> {
    let target = workspace().join("target");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ours = (exe.starts_with(&target) && !exe.ends_with("xtask"))
            || (exe.ends_with("mariadbd") && cmdline.contains("/tmp/"))
            // Peers the tests start (nginx, haproxy, keepalived, tcpdump, ...) name a
            // file in a harness directory (`/tmp/lbt-<pid>-...`) on their command line.
            || harness_names(&cmdline).any(creator_gone);
        if ours {
            out.push(format!("process {pid} ({})", cmdline.trim()));
        }
    }
    out
}

/// The harness names (`lbt-<pid>-...`) inside `text`, each from `lbt-` to the next
/// character that cannot be part of one.
fn harness_names(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("lbt-").filter_map(move |(i, _)| {
        // A name starts a word or a path component.
        let starts = i == 0 || matches!(text.as_bytes()[i - 1], b'/' | b' ' | b'=' | b'"');
        let rest = &text[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        starts.then_some(&rest[..end])
    })
}

/// Whether the PID in a harness name (`lbt-<pid>-...`) no longer runs: what such a
/// process left is a leftover, not the work of a run still going on.
fn creator_gone(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix("lbt-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return false;
    };
    // SAFETY: signal 0 only probes for existence.
    unsafe { libc::kill(pid, 0) != 0 }
}

/// Entries of `dir` named by the harness for a process that is gone: temporary
/// directories with configs, logs and data, controllers' admin sockets.
fn dead_harness_entries(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lbt-") && creator_gone(n))
        .map(|n| dir.join(n).display().to_string())
        .collect();
    out.sort();
    out
}

fn harness_leftovers() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("lbt-"))
        .map(|n| format!("namespace {n}"))
        .chain(
            std::fs::read_dir("/sys/fs/bpf")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("lbt-") || n.starts_with("lb-lbt-"))
                .map(|n| format!("bpffs pin /sys/fs/bpf/{n}")),
        )
        .chain(
            dead_harness_entries(&std::env::temp_dir())
                .into_iter()
                .map(|p| format!("temporary directory {p}")),
        )
        .chain(
            dead_harness_entries(std::path::Path::new("/run/lb"))
                .into_iter()
                .map(|p| format!("admin socket {p}")),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_harness_names_in_command_lines() {
        let cmd = "nginx -p /tmp/lbt-4242-3-http/nginx1 -e /tmp/lbt-4242-3-http/nginx1/error.log";
        let names: Vec<&str> = harness_names(cmd).collect();
        assert_eq!(names, ["lbt-4242-3-http", "lbt-4242-3-http"]);
        let ka = "keepalived -n -f /tmp/lbt-7-fo-1/lb1-keepalived.conf";
        assert_eq!(harness_names(ka).collect::<Vec<_>>(), ["lbt-7-fo-1"]);
        assert_eq!(harness_names("sleep 600").count(), 0);
        assert_eq!(harness_names("x --name=foolbt-1-2").count(), 0);
    }

    #[test]
    fn creator_of_a_name() {
        let me = std::process::id();
        assert!(!creator_gone(&format!("lbt-{me}-0-x")));
        assert!(!creator_gone("lbt-notapid-0"));
        assert!(!creator_gone("other-1-2"));
        // PIDs are at most 2^22 on Linux.
        assert!(creator_gone("lbt-99999999-0-x"));
    }
}
