//! `cargo xtask test`: setup (installs what is missing), lint, unit tests, then every
//! integration-test file of every package as its own suite. Prints one summary line
//! per suite and a final `N passed, N failed` line; exits non-zero on any failure or
//! on anything a test left behind (namespaces, bpffs pins, temporary directories and
//! admin sockets of the harness, and processes).

use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufRead as _, BufReader},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cargo, workspace};

struct Outcome {
    name: String,
    passed: u32,
    failed: u32,
    ok: bool,
    secs: f64,
    /// What was left behind when the suite ended (namespaces, pins, processes, ...).
    left: Vec<String>,
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
    // Checked after every suite, not once at the end: the next suite's first
    // `Topology::new` removes the leftovers of dead processes, so a suite's holes would
    // be filled before a final check could see them. What was there before this run
    // (another run's crash) is not charged to any suite.
    let mut seen: BTreeSet<String> = leftovers().into_iter().collect();
    let mut checked = |mut o: Outcome| {
        o.left = leftovers()
            .into_iter()
            .filter(|l| seen.insert(l.clone()))
            .collect();
        if !o.left.is_empty() {
            println!("suite {} left behind: {}", o.name, o.left.join(" "));
        }
        o
    };

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
        results.push(checked(suite(
            "unit",
            cargo().args([
                "test",
                "--workspace",
                "--exclude",
                "lb-ebpf",
                "--lib",
                "--bins",
            ]),
        )?));
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
                results.push(checked(suite(
                    &name,
                    cargo().args(["test", "-p", pkg, "--test", &t]),
                )?));
            }
        }
    }

    println!("\n==> summary");
    let (mut passed, mut failed) = (0, 0);
    for r in &results {
        println!(
            "suite {:<28} {:>4} passed {:>3} failed  {:>6.1}s  {}{}",
            r.name,
            r.passed,
            r.failed,
            r.secs,
            if r.ok { "ok" } else { "FAILED" },
            if r.left.is_empty() {
                String::new()
            } else {
                format!("  LEFT {} BEHIND", r.left.len())
            }
        );
        passed += r.passed;
        failed += r.failed;
    }
    let bad: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.name.as_str())
        .collect();
    let leaky: Vec<String> = results
        .iter()
        .filter(|r| !r.left.is_empty())
        .map(|r| format!("{} ({})", r.name, r.left.join(" ")))
        .collect();
    if !leaky.is_empty() {
        println!("left behind by the tests: {}", leaky.join("; "));
    }
    println!("{passed} passed, {failed} failed");
    if results.is_empty() {
        bail!("no suite matched; nothing was tested");
    }
    if !bad.is_empty() {
        bail!("failed suites: {}", bad.join(", "));
    }
    if !leaky.is_empty() {
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
        left: Vec::new(),
    })
}

/// A cargo test run: echoes its output and adds up its `test result:` lines.
///
/// The output goes through a file, not a pipe: a process a test leaked (nginx, a
/// controller) inherits the test's stdout, and a pipe would not reach end-of-file
/// until that process exits, so the runner would hang instead of reporting the leak.
/// Here the suite ends when cargo exits.
fn suite(name: &str, cmd: &mut Command) -> anyhow::Result<Outcome> {
    println!("==> suite {name}");
    let start = Instant::now();
    let path = workspace()
        .join("target")
        .join(format!("xtask-suite-{}.out", std::process::id()));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut child = cmd
        .stdout(file)
        .spawn()
        .with_context(|| format!("running suite {name}"))?;
    let mut reader =
        BufReader::new(File::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let _ = std::fs::remove_file(&path);
    let (mut passed, mut failed, mut ran) = (0, 0, 0);
    let mut line = String::new();
    let status = loop {
        // Polled before reading: everything cargo wrote before it exited is read below.
        let exited = child.try_wait()?;
        loop {
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            tally(&line, &mut passed, &mut failed, &mut ran);
            line.clear();
        }
        if let Some(status) = exited {
            if !line.is_empty() {
                tally(&line, &mut passed, &mut failed, &mut ran);
            }
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
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
        left: Vec::new(),
    })
}

/// Echoes one line of a suite's output and counts its `test result:` line.
fn tally(line: &str, passed: &mut u32, failed: &mut u32, ran: &mut u32) {
    let line = line.trim_end_matches('\n');
    println!("{line}");
    if let Some(rest) = line.strip_prefix("test result: ") {
        *ran += 1;
        *passed += count(rest, " passed");
        *failed += count(rest, " failed");
    }
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

/// Everything left behind right now.
fn leftovers() -> Vec<String> {
    let mut v = harness_leftovers();
    v.extend(leftover_processes());
    v
}

fn harness_leftovers() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        // A name whose process still runs belongs to a run in progress (another
        // `cargo xtask test`, a demo), not to a suite of this one that ended.
        .filter(|n| n.starts_with("lbt-") && creator_gone(n))
        .map(|n| format!("namespace {n}"))
        .chain(
            std::fs::read_dir("/sys/fs/bpf")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| creator_gone(n.strip_prefix("lb-").unwrap_or(n)))
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
