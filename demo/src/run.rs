//! One demo at a time, and cleanup after a crash.
//!
//! [`Lock`] holds an exclusive `flock` on `/run/lb-demo.lock` (with the holder's PID
//! in it) for the life of a demo: the kernel drops it when the process dies, so a
//! crashed demo never blocks the next one, and a second demo while one runs is refused
//! with the first one's PID. The state file `/run/lb-demo.state` records what a
//! running demo created (namespaces, PIDs, pins, sockets, its directory); [`down`]
//! removes what a crashed run left behind.

use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::Infra;

pub const LOCK: &str = "/run/lb-demo.lock";
pub const STATE: &str = "/run/lb-demo.state";

/// The demo's lock; released when dropped (or when the process dies).
pub struct Lock {
    _file: File,
}

/// PID written in the lock file, if any.
fn holder(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl Lock {
    /// Takes the lock, or says who holds it.
    pub fn acquire() -> anyhow::Result<Lock> {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(LOCK)
            .with_context(|| format!("opening {LOCK} (run as root)"))?;
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let pid = holder(&mut file).map_or("unknown".to_owned(), |p| p.to_string());
            bail!(
                "another demo is already running (PID {pid}); quit it first (q or Ctrl-C in its \
                 terminal), or if it hangs, kill it and run `cargo xtask demo --down`"
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Lock { _file: file })
    }
}

/// Whether a demo holds the lock now (its PID).
pub fn running_demo() -> Option<u32> {
    let mut file = File::options().read(true).write(true).open(LOCK).ok()?;
    // SAFETY: flock on a descriptor we own; released right away when we get it.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    holder(&mut file).or(Some(0))
}

/// Writes what `infra` consists of to the state file.
pub fn record(infra: &Infra) -> anyhow::Result<()> {
    let v = json!({
        "pid": std::process::id(),
        "dir": infra.dir,
        "namespaces": infra.namespaces(),
        "processes": infra.pids().iter().map(|(p, prog)| json!({"pid": p, "program": prog})).collect::<Vec<_>>(),
        "pins": infra.pin_paths(),
        "sockets": infra.sockets(),
    });
    let tmp = format!("{STATE}.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&v)?)?;
    std::fs::rename(&tmp, STATE).context("writing the demo's state file")
}

/// Removes the state file (a clean exit).
pub fn forget() {
    let _ = std::fs::remove_file(STATE);
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only probes for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// File name of the program `pid` runs (`/proc/<pid>/exe`), without the ` (deleted)`
/// the kernel appends once the binary was replaced (a rebuild).
fn exe_name(pid: u32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    Some(
        name.strip_suffix(" (deleted)")
            .map_or(name.clone(), str::to_owned),
    )
}

/// `--down`: removes the leftovers of a crashed demo (and of crashed test runs of the
/// same harness). Refuses while a demo runs. Returns a line per thing removed.
pub fn down() -> anyhow::Result<Vec<String>> {
    if let Some(pid) = running_demo() {
        bail!(
            "a demo is running (PID {pid}): quit it with q or Ctrl-C; --down only removes what a crashed run left"
        );
    }
    let mut done = Vec::new();
    if let Ok(text) = std::fs::read_to_string(STATE) {
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        for p in v["processes"].as_array().into_iter().flatten() {
            let (Some(pid), Some(prog)) = (p["pid"].as_u64(), p["program"].as_str()) else {
                continue;
            };
            let pid = pid as u32;
            let base = Path::new(prog)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Only if the PID still runs the program we started (PIDs are reused: a
            // substring of the command line, e.g. "lb", matches unrelated programs).
            if pid > 0
                && alive(pid as i32)
                && !base.is_empty()
                && exe_name(pid) == Some(base.clone())
            {
                // SAFETY: kill(2) on a PID recorded by the demo, checked above.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                done.push(format!("killed {base} (PID {pid})"));
            }
        }
        for ns in v["namespaces"].as_array().into_iter().flatten() {
            let Some(ns) = ns.as_str() else { continue };
            if Path::new("/run/netns").join(ns).exists() {
                if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        if let Ok(pid) = pid.parse::<i32>() {
                            // SAFETY: kill(2) on a process inside the demo's namespace.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                }
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
                done.push(format!("deleted namespace {ns}"));
            }
        }
        for key in ["pins", "dir"] {
            let paths: Vec<PathBuf> = match &v[key] {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|p| p.as_str().map(PathBuf::from))
                    .collect(),
                Value::String(s) => vec![PathBuf::from(s)],
                _ => Vec::new(),
            };
            for p in paths {
                if p.exists() && std::fs::remove_dir_all(&p).is_ok() {
                    done.push(format!("removed {}", p.display()));
                }
            }
        }
        for s in v["sockets"].as_array().into_iter().flatten() {
            if let Some(s) = s.as_str()
                && std::fs::remove_file(s).is_ok()
            {
                done.push(format!("removed {s}"));
            }
        }
        forget();
    }
    // Whatever else the harness created for a process that is gone (a run that
    // crashed before it wrote its state file).
    let before = netns_count();
    lb_tests::cleanup_leftovers();
    let after = netns_count();
    if before > after {
        done.push(format!(
            "deleted {} other harness namespace(s) of dead processes",
            before - after
        ));
    }
    done.extend(remove_dead_files(&std::env::temp_dir(), ""));
    done.extend(remove_dead_files(Path::new("/run/lb"), ".sock"));
    Ok(done)
}

fn netns_count() -> usize {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with(lb_tests::NS_PREFIX))
                .count()
        })
        .unwrap_or(0)
}

/// Removes `lbt-<pid>-...` entries of `dir` (ending in `suffix`) whose PID is gone.
fn remove_dead_files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return done;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{}-", lb_tests::NS_PREFIX)) else {
            continue;
        };
        if !name.ends_with(suffix) {
            continue;
        }
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let p = e.path();
        if lb_tests::remove_path(&p) {
            done.push(format!("removed {}", p.display()));
        }
    }
    done
}
