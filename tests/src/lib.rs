//! The network-namespace test harness shared by the privileged integration and
//! end-to-end tests.
//!
//! A [`Topology`] owns everything a test creates: namespaces, veth pairs, bridges and
//! processes. Dropping it (also while a test panics) kills the processes by PID and
//! deletes the namespaces, which takes their links with them. Names carry a per-test
//! prefix plus the creating process's PID, so tests run in parallel without clashing,
//! and leftovers of a crashed run (whose PID is gone) are removed on the next start,
//! never reused.
//!
//! # Layout
//! - [`Topology`], [`Ns`]: namespaces, links, addresses, sysctls, commands
//! - [`Proc`]: a process spawned inside a namespace, killed on drop
//! - [`bin_path`]: where the workspace's binaries were built
//! - [`require_root`]: the one place that decides whether privileged tests can run
//! - [`BpfPins`]: a bpffs directory for a test's pins, removed on drop
//! - [`lbnet`]: a ready client / LB / backends topology with real servers and `lb run`
//! - [`keepalived`]: keepalived as a VRRP peer (configuration and command line)
//! - [`checksums`]: every checksum of a frame, re-verified with etherparse
//! - [`addr`]: test addresses in the data plane's map layout
//! - [`vrrp_lan`]: a client and two VRRP nodes on one bridge, and `lb-vrrp`'s command

pub mod addr;
pub mod checksums;
pub mod keepalived;
pub mod lbnet;
pub mod vrrp_lan;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Every namespace this harness creates starts with this, so leftovers are findable.
pub const NS_PREFIX: &str = "lbt";

/// Fails loudly when the tests cannot do what they claim: they need root for
/// namespaces and BPF. A privileged suite that silently skipped would prove nothing.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces and load XDP programs: run them as root (cargo xtask test)"
    );
}

/// Path of a binary of this workspace in the target directory the tests were built in.
pub fn bin_path(name: &str) -> PathBuf {
    // tests live in target/<profile>/deps/; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo build --workspace --bins` (cargo xtask test does)",
        p.display()
    );
    p
}

/// Runs a command to completion; error (with its stderr) unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread that has entered `ns`'s network namespace (only that thread
/// moves), so in-process code such as the controller library can attach XDP programs to
/// interfaces inside the namespace. File descriptors it opens stay usable afterwards.
pub fn in_netns<T: Send>(ns: &Ns, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(format!("/run/netns/{}", ns.name()))
        .with_context(|| format!("opening namespace {}", ns.name()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a namespace fd we just opened.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                anyhow::bail!(
                    "setns into {}: {}",
                    ns.name(),
                    std::io::Error::last_os_error()
                );
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread in {} panicked", ns.name()))?
    })
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A number unique within this process (for names).
pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A directory in bpffs for one test's pins; removed (unpinning everything in it,
/// which detaches pinned links) on drop.
pub struct BpfPins {
    pub dir: PathBuf,
}

impl BpfPins {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/{NS_PREFIX}-{}-{}-{tag}",
            std::process::id(),
            next_seq()
        ));
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating {} (is bpffs mounted? cargo xtask setup mounts it)",
                dir.display()
            )
        })?;
        Ok(Self { dir })
    }
}

impl Drop for BpfPins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A namespace of a [`Topology`].
#[derive(Clone, Debug)]
pub struct Ns {
    name: String,
}

impl Ns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` inside the namespace as a [`Command`], to add arguments or env.
    ///
    /// Enters only the network namespace (`nsenter --net`), unlike `ip netns exec`,
    /// which also remounts `/sys` and so hides the bpffs at `/sys/fs/bpf` where the
    /// controller pins its program, link and maps.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `args` inside the namespace; error unless it exits 0. Returns stdout.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let (p, rest) = args.split_first().context("empty command")?;
        let out = run(self.cmd(p).args(rest))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `args` inside the namespace and returns its output whatever the exit code.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let (p, rest) = args.split_first().context("empty command")?;
        self.cmd(p)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .context("spawning command in namespace")
    }

    pub fn addr(&self, ifname: &str, cidr: &str) -> anyhow::Result<()> {
        let mut args = vec!["ip", "addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.run(&args).map(drop)
    }

    /// Computes checksums in software on `ifname`'s transmit path. A veth normally
    /// hands the peer packets whose checksum is still to be filled in (CHECKSUM_PARTIAL);
    /// that note is lost when an XDP program bounces the frame with XDP_TX, so the
    /// receiver sees a bad checksum and drops it. A physical NIC fills checksums in
    /// before the wire, so this only makes veth behave like one.
    pub fn sw_checksums(&self, ifname: &str) -> anyhow::Result<()> {
        self.run(&["ethtool", "-K", ifname, "tx", "off"]).map(drop)
    }

    pub fn up(&self, ifname: &str) -> anyhow::Result<()> {
        self.run(&["ip", "link", "set", ifname, "up"]).map(drop)
    }

    pub fn route(&self, spec: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["ip", "route", "add"];
        if spec.iter().any(|s| s.contains(':')) {
            args = vec!["ip", "-6", "route", "add"];
        }
        args.extend_from_slice(spec);
        self.run(&args).map(drop)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// MAC address of `ifname` as "aa:bb:...".
    pub fn mac(&self, ifname: &str) -> anyhow::Result<String> {
        // `ip -o link show dev X`: "3: X@if2: <...> ... link/ether aa:bb:.. brd ..."
        let out = self.run(&["ip", "-o", "link", "show", "dev", ifname])?;
        let mut words = out.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .and_then(|_| words.next())
            .map(str::to_owned)
            .with_context(|| format!("no MAC for {ifname} in {out:?}"))
    }

    /// ifindex of `ifname` inside the namespace.
    pub fn ifindex(&self, ifname: &str) -> anyhow::Result<u32> {
        let out = self.run(&["ip", "-o", "link", "show", "dev", ifname])?;
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no ifindex for {ifname} in {out:?}"))
    }

    /// Spawns a long-running process inside the namespace.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<Proc> {
        let (p, rest) = args.split_first().context("empty command")?;
        self.spawn_cmd(self.cmd(p).args(rest))
    }

    pub fn spawn_cmd(&self, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Proc { child: Some(child) })
    }
}

/// A process started by a test; killed (by its PID) and reaped on drop.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `sig` to the process (by PID).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on a child we own and have not reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Signals and waits for the exit, returning the status.
    pub fn stop(&mut self, sig: i32) -> Option<std::process::ExitStatus> {
        self.signal(sig);
        self.child.take().and_then(|mut c| c.wait().ok())
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Graceful stop: SIGTERM, up to `grace` for the exit, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if self.wait_exit(grace).is_none() {
            self.stop(libc::SIGKILL);
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Namespaces and links of one test; everything is removed on drop.
pub struct Topology {
    tag: String,
    namespaces: Vec<Ns>,
    procs: Vec<Proc>,
}

impl Topology {
    /// A new, empty topology for the test `test` (letters, digits; short: Linux
    /// interface names are limited to 15 bytes, so keep namespace-local names short).
    pub fn new(test: &str) -> anyhow::Result<Self> {
        require_root();
        cleanup_on_signal();
        remove_leftovers();
        let pid = std::process::id();
        let seq = next_seq();
        Ok(Self {
            tag: format!("{NS_PREFIX}-{pid}-{seq}-{test}"),
            namespaces: Vec::new(),
            procs: Vec::new(),
        })
    }

    /// Creates namespace `short` (loopback up).
    pub fn ns(&mut self, short: &str) -> anyhow::Result<Ns> {
        let name = format!("{}-{short}", self.tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Ns { name };
        self.namespaces.push(ns.clone());
        ns.up("lo")?;
        Ok(ns)
    }

    /// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
    pub fn veth(&mut self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> anyhow::Result<()> {
        // Created in `a` directly, so no interface ever appears in the host namespace.
        a.run(&[
            "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
        ])?;
        a.up(a_if)?;
        b.up(b_if)
    }

    /// A bridge `br` inside `ns`, up, with IPv6 DAD off and no STP delay.
    pub fn bridge(&mut self, ns: &Ns, br: &str) -> anyhow::Result<()> {
        ns.run(&[
            "ip",
            "link",
            "add",
            br,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        ns.up(br)
    }

    /// Connects `ifname` of `ns` to `br` in `bridge_ns` through a new veth pair whose
    /// bridge-side end is called `port`.
    pub fn plug(
        &mut self,
        ns: &Ns,
        ifname: &str,
        bridge_ns: &Ns,
        br: &str,
        port: &str,
    ) -> anyhow::Result<()> {
        self.veth(ns, ifname, bridge_ns, port)?;
        bridge_ns.run(&["ip", "link", "set", port, "master", br])?;
        Ok(())
    }

    /// Keeps `p` alive until the topology drops (processes die before namespaces).
    pub fn adopt(&mut self, p: Proc) {
        self.procs.push(p);
    }

    pub fn namespaces(&self) -> &[Ns] {
        &self.namespaces
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.procs.clear();
        for ns in self.namespaces.drain(..) {
            // Anything a test started in the namespace by other means still holds it:
            // kill those by PID first (only processes inside our own namespace).
            kill_ns_pids(&ns.name);
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        }
    }
}

fn kill_ns_pids(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2); the PID was listed as living in our namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Whether the PID embedded in a harness name (`lbt-<pid>-...`) is gone.
fn creator_gone(name: &str) -> bool {
    let mut parts = name.splitn(3, '-');
    if parts.next() != Some(NS_PREFIX) {
        return false;
    }
    let Some(pid) = parts.next().and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    // SAFETY: kill with signal 0 only probes for existence.
    unsafe { libc::kill(pid, 0) != 0 }
}

/// Removes bpffs pins (`lbt-*`, and controller pins `lb-lbt-*`) of dead test runs.
fn remove_leftover_pins() {
    let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let bare = name.strip_prefix("lb-").unwrap_or(&name);
        if creator_gone(bare) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes namespaces of earlier runs whose creating process is gone.
fn remove_leftovers() {
    remove_leftover_pins();
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if creator_gone(name) {
            kill_ns_pids(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Removes every leftover namespace of this harness whose creator is gone (for
/// `cargo xtask test`'s final check and `cargo xtask demo --down`).
pub fn cleanup_leftovers() {
    remove_leftovers();
}

/// Write end of the pipe the signal handler of [`cleanup_on_signal`] writes to.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the descriptor stays open for good.
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(Ordering::Relaxed),
            (&raw const b).cast(),
            1,
        )
    };
}

/// Makes Ctrl-C, SIGTERM and SIGHUP clean up: their default action ends the process
/// without unwinding, so no [`Topology`], [`Proc`] or [`BpfPins`] would drop and a
/// test interrupted under `cargo test` left its namespaces, processes and pins until
/// the next run. The handler only wakes a thread, which kills this process's
/// descendants, removes what the harness named after it ([`remove_created_by`]) and
/// exits with 128 + the signal. Installed once, by the first [`Topology::new`], and
/// only for signals still at their default action: a program with its own handling
/// (the demo tears down itself; `lb-bench` takes them with `sigwait`) keeps it.
fn cleanup_on_signal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        let read_fd = fds[0];
        let spawned = std::thread::Builder::new()
            .name("lbt-signals".into())
            .spawn(move || {
                let mut b = 0u8;
                // SAFETY: read(2) of one byte into a local.
                while unsafe { libc::read(read_fd, (&raw mut b).cast(), 1) } != 1 {
                    if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                        return;
                    }
                }
                let sig = i32::from(b);
                // Straight to fd 2: eprintln! from a thread a test spawned is captured
                // by the test harness, and this process ends without printing it.
                let say = |s: String| {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "{s}");
                };
                say(format!(
                    "\nlb-tests: signal {sig}: removing what this process created"
                ));
                // Twice: the test's own thread may have started something meanwhile.
                for _ in 0..2 {
                    let mut done = kill_descendants();
                    done.extend(remove_created_by(std::process::id()));
                    for line in done {
                        say(format!("  {line}"));
                    }
                }
                // SAFETY: ends the process without running other threads' code.
                unsafe { libc::_exit(128 + sig) };
            });
        if spawned.is_err() {
            return;
        }
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction with a zeroed struct reads the current action; the new
            // one is a handler that only calls write(2).
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                    || old.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                act.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, std::ptr::null_mut());
            }
        }
    });
}

/// SIGKILLs every process whose parent chain leads to this one (read from /proc).
pub fn kill_descendants() -> Vec<String> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.filter_map(Result::ok) {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Zombies are dead already (killed before, not yet reaped).
            if let Some((state, ppid)) = state_and_parent(&stat)
                && state != "Z"
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut done = Vec::new();
    let mut todo = vec![std::process::id()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if seen.insert(c) {
                todo.push(c);
            }
        }
    }
    for pid in seen {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // SAFETY: kill(2) on a process whose parent chain leads to this process.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
            done.push(format!("killed {} (PID {pid})", comm.trim()));
        }
    }
    done
}

/// The state and parent PID from a `/proc/<pid>/stat` line: `pid (comm) state ppid
/// ...`, where comm may hold spaces and parentheses (so parse after the last `)`).
fn state_and_parent(stat: &str) -> Option<(&str, u32)> {
    let mut f = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = f.next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// Whether `name` is a harness name (`lbt-<pid>-...`, or a controller's `lb-lbt-<pid>-...`
/// pin directory) made by process `pid`.
fn made_by(name: &str, pid: u32) -> bool {
    let bare = name.strip_prefix("lb-").unwrap_or(name);
    bare.strip_prefix(NS_PREFIX)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_prefix(pid.to_string().as_str()))
        .is_some_and(|r| r.starts_with('-'))
}

/// Removes everything this harness named for process `pid`, whether that process still
/// runs or not: its namespaces (after killing the processes inside them), its bpffs pin
/// directories (which detaches pinned links), its temporary directories and its
/// controllers' admin sockets. For a process that is interrupted (SIGINT, SIGTERM) and
/// exits without unwinding, so its guards never drop. Returns a line per thing removed.
pub fn remove_created_by(pid: u32) -> Vec<String> {
    let mut done = Vec::new();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if made_by(name, pid) {
                kill_ns_pids(name);
                let ok = Command::new("ip")
                    .args(["netns", "del", name])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    done.push(format!("deleted namespace {name}"));
                }
            }
        }
    }
    for dir in [
        PathBuf::from("/sys/fs/bpf"),
        std::env::temp_dir(),
        PathBuf::from("/run/lb"),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            if !made_by(&e.file_name().to_string_lossy(), pid) {
                continue;
            }
            let p = e.path();
            if remove_path(&p) {
                done.push(format!("removed {}", p.display()));
            }
        }
    }
    done
}

/// Removes a directory with its contents, or a file; whether it is gone now.
pub fn remove_path(p: &Path) -> bool {
    if p.is_dir() {
        std::fs::remove_dir_all(p).is_ok()
    } else {
        std::fs::remove_file(p).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::{made_by, state_and_parent};

    #[test]
    fn parent_from_stat() {
        assert_eq!(
            state_and_parent("42 (nginx) S 7 42 42 0 -1"),
            Some(("S", 7))
        );
        assert_eq!(state_and_parent("42 (a) b) (c) Z 9 1 1"), Some(("Z", 9)));
        assert_eq!(state_and_parent("garbage"), None);
    }

    #[test]
    fn made_by_matches_only_that_pid() {
        assert!(made_by("lbt-123-4-http-sw", 123));
        assert!(made_by("lb-lbt-123-7", 123));
        assert!(made_by("lbt-123-0-web", 123));
        assert!(!made_by("lbt-1234-0-web", 123));
        assert!(!made_by("lbt-12-0-web", 123));
        assert!(!made_by("lbt-123", 123));
        assert!(!made_by("xlbt-123-0", 123));
        assert!(!made_by("lb-123-0", 123));
    }
}
