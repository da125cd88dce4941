//! `cargo xtask setup`: makes a fresh Debian 12 machine (as root) able to build, run,
//! test and benchmark the project, and says what it did. A second run changes nothing
//! and says so. `--check` only reports (used by `build` and `test`).

use std::{fs, os::unix::fs::symlink, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::run_checked;

/// Debian packages and why each is needed.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "Rust 1.96 whose library source builds for the BPF target",
    ),
    (
        "cargo-web",
        "the cargo of that toolchain (aya-build runs it)",
    ),
    (
        "rust-web-src",
        "core's source for -Z build-std=core on bpfel-unknown-none",
    ),
    (
        "iproute2",
        "ip netns / ip link / ip addr for the test topologies",
    ),
    (
        "iputils-ping",
        "ping: neighbour warm-up and reachability checks in tests",
    ),
    (
        "util-linux",
        "nsenter: enter a namespace without remounting /sys (bpffs)",
    ),
    (
        "nftables",
        "per-layer access control in the demo and split-brain tests",
    ),
    (
        "mariadb-server",
        "the database behind the app tier (tests start their own)",
    ),
    (
        "mariadb-client",
        "mariadb-admin and the client used by the test harness",
    ),
    ("nginx", "web-tier benchmark peer"),
    ("haproxy", "load-balancer benchmark peer (TCP mode)"),
    (
        "keepalived",
        "VRRP interoperability peer and failover benchmark peer",
    ),
    ("wrk", "HTTP load generator for benchmarks"),
    ("curl", "HTTP client in tests"),
    (
        "tcpdump",
        "packet captures (gratuitous ARP, failover timing)",
    ),
    ("ethtool", "veth offload settings and XDP counters"),
    (
        "chromium",
        "headless browser check of /hbnb through the VIP",
    ),
    (
        "gunicorn",
        "app-tier benchmark peer (Gunicorn + Flask + PyMySQL)",
    ),
    ("python3-flask", "app-tier benchmark peer"),
    ("python3-pymysql", "app-tier benchmark peer"),
    (
        "python3-venv",
        "a private Python environment for REDbot (the HTTP checker web-tier's tests run)",
    ),
];

/// REDbot, the HTTP lint web-tier's tests run against its static files. It is not
/// packaged by Debian, so it comes from PyPI into a virtual environment of its own;
/// `web-tier/tests/redbot.rs` looks for it here.
const REDBOT_VENV: &str = "/opt/lb-redbot";
const REDBOT_VERSION: &str = "2.7.1";

const BPF_LINKER_VERSION: &str = "0.10.0";
/// rustup name under which Debian's toolchain is linked (lb-userspace/build.rs uses it).
const TOOLCHAIN: &str = "lb-bpf";
/// Folder holding only a link to LLVM 22's libLLVM (bpf-linker loads the first one it
/// finds in LD_LIBRARY_PATH, and /usr/lib also holds LLVM 14 and 15).
const LLVM_DIR: &str = "/usr/local/lib/lb-bpf-llvm";
const LLVM_LIB: &str = "/usr/lib/x86_64-linux-gnu/libLLVM.so.22.1";

pub fn run(check_only: bool) -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("this project needs Linux (XDP, BPF, network namespaces)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: setup installs packages, mounts bpffs and loads BPF programs");
    }
    let mut done = Vec::new();
    let mut missing = Vec::new();

    let pkgs: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if !pkgs.is_empty() {
        if check_only {
            missing.push(format!("Debian packages: {}", pkgs.join(" ")));
        } else {
            println!("==> installing Debian packages: {}", pkgs.join(" "));
            for (p, why) in PACKAGES.iter().filter(|(p, _)| pkgs.contains(p)) {
                println!("    {p}: {why}");
            }
            run_checked(
                Command::new("apt-get").args(["update", "-q"]),
                "apt-get update",
            )?;
            run_checked(
                Command::new("apt-get")
                    .args(["install", "-y", "-q"])
                    .args(&pkgs)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                "apt-get install",
            )?;
            done.push(format!("installed {}", pkgs.join(" ")));
        }
    }

    if !bpf_linker_ok() {
        if check_only {
            missing.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
        } else {
            println!(
                "==> cargo install bpf-linker@{BPF_LINKER_VERSION} --locked (about 3 minutes)"
            );
            run_checked(
                Command::new("cargo").args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                ]),
                "installing bpf-linker",
            )?;
            done.push(format!("installed bpf-linker {BPF_LINKER_VERSION}"));
        }
    }

    if !toolchain_linked() {
        if check_only {
            missing.push(format!("rustup toolchain {TOOLCHAIN}"));
        } else {
            run_checked(
                Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, "/usr"]),
                "rustup toolchain link",
            )?;
            done.push(format!(
                "linked Debian's Rust as rustup toolchain {TOOLCHAIN}"
            ));
        }
    }

    let link = Path::new(LLVM_DIR).join("libLLVM.so.22.1");
    if fs::read_link(&link).ok().as_deref() != Some(Path::new(LLVM_LIB)) {
        if check_only {
            missing.push(format!("{}", link.display()));
        } else {
            if !Path::new(LLVM_LIB).exists() {
                bail!("{LLVM_LIB} is missing although rustc-web is installed; reinstall it");
            }
            fs::create_dir_all(LLVM_DIR).with_context(|| format!("creating {LLVM_DIR}"))?;
            let _ = fs::remove_file(&link);
            symlink(LLVM_LIB, &link).with_context(|| format!("linking {}", link.display()))?;
            done.push(format!("linked {} for bpf-linker", link.display()));
        }
    }

    if !redbot_ok() {
        if check_only {
            missing.push(format!("REDbot {REDBOT_VERSION} in {REDBOT_VENV}"));
        } else {
            println!("==> REDbot {REDBOT_VERSION} from PyPI into {REDBOT_VENV}");
            run_checked(
                Command::new("python3").args(["-m", "venv", "--clear", REDBOT_VENV]),
                "creating REDbot's virtual environment",
            )?;
            run_checked(
                Command::new(format!("{REDBOT_VENV}/bin/pip")).args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    &format!("redbot=={REDBOT_VERSION}"),
                ]),
                "pip install redbot",
            )?;
            done.push(format!(
                "installed REDbot {REDBOT_VERSION} in {REDBOT_VENV}"
            ));
        }
    }

    if !bpffs_mounted() {
        if check_only {
            missing.push("bpffs at /sys/fs/bpf".into());
        } else {
            run_checked(
                Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]),
                "mounting bpffs",
            )?;
            done.push("mounted bpffs at /sys/fs/bpf".into());
        }
    }

    if check_only {
        if !missing.is_empty() {
            bail!("missing: {} (run `cargo xtask setup`)", missing.join("; "));
        }
        println!("==> setup check: everything is in place");
    } else if done.is_empty() {
        println!("==> setup: nothing to do, everything is already in place");
    } else {
        println!("==> setup done:");
        for d in done {
            println!("    {d}");
        }
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

fn redbot_ok() -> bool {
    Command::new(format!("{REDBOT_VENV}/bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('redbot'))",
        ])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == REDBOT_VERSION)
}

fn toolchain_linked() -> bool {
    Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            let (_, at, ty) = (f.next(), f.next(), f.next());
            at == Some("/sys/fs/bpf") && ty == Some("bpf")
        })
}
