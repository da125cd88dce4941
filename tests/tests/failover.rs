//! VRRPv3 failover between two load-balancer nodes, in network namespaces.
//!
//! ```text
//!   client ──┐
//!   lb1 ─────┤ br0 (namespace "sw")
//!   lb2 ─────┘
//! ```
//! Each LB node runs `lb-vrrp` (the VRRP runtime of the controller without the XDP
//! data plane) or keepalived, and a small TCP server answering its own name on port
//! 8080, so "traffic to the VIP" shows which node owns it. The client captures ARP and
//! VRRP with tcpdump; failover times are printed from those timestamps, never asserted
//! (they depend on the machine's load).
//!
//! Needs root, iproute2, tcpdump, nftables and keepalived (`cargo xtask setup`), and
//! the `lb-vrrp` binary built in the same target directory first:
//! `cargo build -p lb-userspace --bin lb-vrrp && cargo test -p lb-tests --test failover`.
//!
//! Test 5 of the failover issue (TCP streams through the XDP LB surviving failover)
//! lives with the data-plane tests.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lb_tests::keepalived::Keepalived;
use lb_tests::lbnet::TempDir;
use lb_tests::vrrp_lan::{Lan, VrrpNodeConfig, lb_vrrp_command};
use lb_tests::{Ns, Proc, Topology, bin_path, in_netns, wait_for};
use serde_json::Value;

const SUBNET: &str = "10.201.0";
const VIP: &str = "10.201.0.100";
const VIP6: &str = "fd00:201::100";
const VRID: u8 = 51;
const SERVICE_PORT: u16 = 8080;
/// Adverts every 100 ms: Master_Down_Interval is ~0.35 s, so each wait below is
/// bounded by a few seconds even on a loaded machine.
const ADVERT_MS: u32 = 100;
const LIMIT: Duration = Duration::from_secs(10);

/// One LB node of the lab.
struct Node {
    name: &'static str,
    ns: Ns,
    addr: String,
    mac: String,
    /// The bridge-side port of this node's link.
    port: &'static str,
    proc: Option<Proc>,
    status: PathBuf,
    log: PathBuf,
}

/// client + lb1 + lb2 on one bridge; everything is removed on drop (namespaces by the
/// topology, processes by PID), and on a failing test the node logs are printed.
struct Lab {
    nodes: Vec<Node>,
    client: Ns,
    sw: Ns,
    dir: TempDir,
    // Held for its Drop, and last: the processes above die before the namespaces go.
    _topo: Topology,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        Self::try_new(tag, false).expect("building the namespace lab")
    }

    fn new_v6(tag: &str) -> Lab {
        Self::try_new(tag, true).expect("building the namespace lab")
    }

    fn try_new(tag: &str, v6: bool) -> anyhow::Result<Lab> {
        let mut topo = Topology::new(tag)?;
        let dir = TempDir::new(tag)?;
        let lan = Lan::new(&mut topo, SUBNET, v6.then_some("fd00:201::"))?;
        let mut nodes = Vec::new();
        for n in lan.nodes {
            serve_name(&n.ns, n.name)?;
            nodes.push(Node {
                name: n.name,
                mac: n.ns.mac("eth0")?,
                ns: n.ns,
                addr: n.addr,
                port: n.port,
                proc: None,
                status: dir.0.join(format!("{}.json", n.name)),
                log: dir.0.join(format!("{}.log", n.name)),
            });
        }
        let (client, sw) = (lan.client, lan.sw);
        Ok(Lab {
            nodes,
            client,
            sw,
            dir,
            _topo: topo,
        })
    }

    /// Starts `lb-vrrp` on node `i` with `priority` and extra TOML lines.
    fn start(&mut self, i: usize, priority: u8, extra: &str) {
        self.start_with_vips(i, priority, &format!("[\"{VIP}\"]"), extra);
    }

    fn start_with_vips(&mut self, i: usize, priority: u8, vips: &str, extra: &str) {
        let node = &mut self.nodes[i];
        let cfg = self.dir.0.join(format!("{}.toml", node.name));
        let _ = std::fs::remove_file(&node.status);
        let mut cmd = lb_vrrp_command(
            &node.ns,
            &bin_path("lb-vrrp"),
            &cfg,
            &node.status,
            &VrrpNodeConfig {
                vrid: VRID,
                priority,
                advert_ms: ADVERT_MS,
                vips,
                extra,
            },
        )
        .expect("the lb-vrrp command");
        let log = File::create(&node.log).expect("log file");
        cmd.stdout(log.try_clone().expect("log fd")).stderr(log);
        node.proc = Some(node.ns.spawn_cmd(&mut cmd).expect("spawning lb-vrrp"));
    }

    /// Starts keepalived as the peer on node `i`.
    fn start_keepalived(&mut self, i: usize, priority: u8, extra: &str) {
        let node = &mut self.nodes[i];
        let mut cmd = Keepalived {
            name: node.name,
            vrid: VRID,
            priority,
            advert_ms: ADVERT_MS,
            vip: VIP,
            extra,
        }
        .command(&node.ns, &self.dir.0)
        .expect("writing keepalived.conf");
        let log = File::create(&node.log).expect("log file");
        cmd.stdout(log.try_clone().expect("log fd")).stderr(log);
        node.proc = Some(node.ns.spawn_cmd(&mut cmd).expect("spawning keepalived"));
    }

    fn status(&self, i: usize) -> Option<Value> {
        let text = std::fs::read_to_string(&self.nodes[i].status).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn state(&self, i: usize) -> Option<String> {
        self.status(i)?["state"].as_str().map(str::to_owned)
    }

    fn counter(&self, i: usize, name: &str) -> u64 {
        self.status(i)
            .and_then(|s| s["counters"][name].as_u64())
            .unwrap_or(0)
    }

    fn wait_state(&self, i: usize, state: &str) {
        let what = format!("{} to be {state}", self.nodes[i].name);
        wait_for(&what, LIMIT, || {
            (self.state(i).as_deref() == Some(state)).then_some(())
        });
    }

    fn has_addr(&self, i: usize, addr: &str) -> bool {
        let out = self.nodes[i]
            .ns
            .run(&["ip", "-o", "addr", "show", "dev", "eth0"])
            .unwrap_or_default();
        out.split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }

    fn has_vip(&self, i: usize) -> bool {
        self.has_addr(i, VIP)
    }

    fn keepalived_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Connects from the client to the VIP and returns the name of the node that
    /// answered, if any.
    fn fetch(&self) -> Option<String> {
        let addr: SocketAddr = format!("{VIP}:{SERVICE_PORT}").parse().expect("addr");
        in_netns(&self.client, move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
            let mut name = String::new();
            s.read_to_string(&mut name).ok()?;
            Some(name)
        })
        .ok()
        .flatten()
    }

    /// The MAC the client's neighbour table holds for the VIP.
    fn client_vip_mac(&self) -> Option<String> {
        let out = self
            .client
            .run(&["ip", "neigh", "show", VIP, "dev", "eth0"])
            .ok()?;
        let mut w = out.split_whitespace();
        w.find(|x| *x == "lladdr").and(w.next()).map(str::to_owned)
    }

    /// Hard-kills node `i`'s process by PID (no priority 0, VIPs left behind).
    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.stop(libc::SIGKILL);
        }
    }

    /// SIGTERM (graceful) and wait for the exit; returns whether it exited cleanly.
    fn stop(&mut self, i: usize) -> bool {
        let Some(mut p) = self.nodes[i].proc.take() else {
            return false;
        };
        p.signal(libc::SIGTERM);
        match p.wait_exit(LIMIT) {
            Some(st) => st.success(),
            None => panic!("{} did not stop within {LIMIT:?}", self.nodes[i].name),
        }
    }

    fn port_down(&self, i: usize) {
        self.sw
            .run(&["ip", "link", "set", self.nodes[i].port, "down"])
            .expect("port down");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // Graceful first so lb-vrrp removes its VIPs.
            if let Some(mut p) = n.proc.take() {
                p.terminate(Duration::from_secs(2));
            }
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                eprintln!("---- {} log ----\n{log}", n.name);
            }
        }
    }
}

/// A TCP server inside `ns` that answers every connection with `name` (the listener
/// is bound from a thread that entered the namespace; it serves from a plain thread).
fn serve_name(ns: &Ns, name: &'static str) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, SERVICE_PORT));
    let l = in_netns(ns, move || TcpListener::bind(addr))??;
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(name.as_bytes());
        }
    });
    Ok(())
}

/// tcpdump on the client's link, stopped (by PID) on drop.
struct Capture {
    proc: Option<Proc>,
    out: PathBuf,
}

impl Capture {
    fn start(ns: &Ns, dir: &Path, tag: &str, filter: &str) -> Capture {
        let out = dir.join(format!("{tag}.txt"));
        let err = dir.join(format!("{tag}.err"));
        let mut cmd = ns.cmd("tcpdump");
        // --immediate-mode: without it libpcap hands packets over in blocks up to a
        // second late, and the last block is lost when tcpdump is stopped.
        cmd.args(["-i", "eth0", "-n", "-tt", "-l", "--immediate-mode", filter])
            .stdout(File::create(&out).expect("capture file"))
            .stderr(File::create(&err).expect("capture err"));
        let proc = ns.spawn_cmd(&mut cmd).expect("spawning tcpdump");
        wait_for("tcpdump to listen", LIMIT, || {
            std::fs::read_to_string(&err)
                .ok()
                .filter(|e| e.contains("listening on"))
        });
        Capture {
            proc: Some(proc),
            out,
        }
    }

    /// Stops tcpdump and returns its lines.
    fn finish(mut self) -> Vec<(f64, String)> {
        if let Some(mut p) = self.proc.take() {
            p.stop(libc::SIGINT);
        }
        self.lines()
    }

    /// The lines so far as (epoch seconds, text) (tcpdump runs line-buffered).
    fn lines(&self) -> Vec<(f64, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (ts, rest) = l.split_once(' ')?;
                Some((ts.parse().ok()?, rest.to_owned()))
            })
            .collect()
    }
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn is_advert_from(line: &str, src: &str) -> bool {
    line.starts_with(&format!("IP {src} > ")) && line.contains("VRRPv3, Advertisement")
}

fn is_garp(line: &str) -> bool {
    line.contains(&format!("ARP, Request who-has {VIP} tell {VIP}"))
}

fn first_after(lines: &[(f64, String)], t: f64, f: impl Fn(&str) -> bool) -> Option<f64> {
    lines
        .iter()
        .find(|(ts, l)| *ts >= t && f(l))
        .map(|(ts, _)| *ts)
}

fn last_before(lines: &[(f64, String)], t: f64, f: impl Fn(&str) -> bool) -> Option<f64> {
    lines
        .iter()
        .rev()
        .find(|(ts, l)| *ts <= t && f(l))
        .map(|(ts, _)| *ts)
}

fn ms(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.1} ms", (b - a) * 1000.0),
        _ => "n/a".to_owned(),
    }
}

/// Brings lb1 (priority 200) up as master and lb2 (priority 100) as backup, and the
/// client talking to lb1 through the VIP.
fn master_and_backup(lab: &mut Lab, extra: &str) {
    lab.start(0, 200, extra);
    lab.wait_state(0, "Master");
    lab.start(1, 100, extra);
    lab.wait_state(1, "Backup");
    wait_for("lb2 to hear lb1", LIMIT, || {
        (lab.counter(1, "adverts_rx") > 0).then_some(())
    });
    let who = wait_for("the client to reach the VIP", LIMIT, || lab.fetch());
    assert_eq!(who, "lb1");
    assert!(lab.has_vip(0) && !lab.has_vip(1), "VIP only on lb1");
}

/// Test 1: hard failure of the master (process killed, its bridge port down).
#[test]
fn hard_failure_backup_takes_over_and_announces() {
    let mut lab = Lab::new("vhard");
    master_and_backup(&mut lab, "");
    assert_eq!(
        lab.client_vip_mac().as_deref(),
        Some(lab.nodes[0].mac.as_str())
    );

    let cap = Capture::start(&lab.client, &lab.dir.0, "hard", "arp or proto 112");
    let a1 = lab.nodes[0].addr.clone();
    wait_for("the capture to see lb1's adverts", LIMIT, || {
        cap.lines()
            .iter()
            .any(|(_, l)| is_advert_from(l, &a1))
            .then_some(())
    });
    let t_fail = now_epoch();
    let started = Instant::now();
    lab.kill(0);
    lab.port_down(0);

    lab.wait_state(1, "Master");
    let detected = started.elapsed();
    assert!(lab.has_vip(1), "lb2 owns the VIP");
    // The client's ARP entry moves to lb2 only through the gratuitous ARP (it was
    // REACHABLE for lb1's MAC and nothing else would refresh it this quickly).
    let lb2_mac = lab.nodes[1].mac.clone();
    wait_for("the client's ARP entry to point at lb2", LIMIT, || {
        (lab.client_vip_mac().as_deref() == Some(lb2_mac.as_str())).then_some(())
    });
    let who = wait_for("traffic to the VIP to resume", LIMIT, || lab.fetch());
    let resumed = started.elapsed();
    assert_eq!(who, "lb2");

    let lines = cap.finish();
    let garp = first_after(&lines, t_fail, is_garp);
    assert!(
        garp.is_some(),
        "the client saw no gratuitous ARP: {lines:?}"
    );
    let a2 = lab.nodes[1].addr.clone();
    let last_lb1 = last_before(&lines, t_fail + 1.0, |l| is_advert_from(l, &a1));
    let first_lb2 = first_after(&lines, t_fail, |l| is_advert_from(l, &a2));
    println!(
        "hard failover: kill -> first lb2 advert {}, kill -> first GARP {}, last lb1 advert -> first GARP {}; \
         status saw MASTER after {detected:?}, traffic resumed after {resumed:?} \
         (Master_Down_Interval for priority 100 at 100 ms = 360.9 ms)",
        ms(Some(t_fail), first_lb2),
        ms(Some(t_fail), garp),
        ms(last_lb1, garp),
    );
    assert!(lab.counter(1, "garp_tx") >= 1);
}

/// Test 2: graceful stop: priority 0, takeover after about Skew_Time.
#[test]
fn graceful_stop_hands_over_after_skew_time() {
    let mut lab = Lab::new("vgrace");
    master_and_backup(&mut lab, "");
    let cap = Capture::start(&lab.client, &lab.dir.0, "grace", "arp or proto 112");
    let t_stop = now_epoch();
    assert!(lab.stop(0), "lb1 exits cleanly on SIGTERM");
    assert!(!lab.has_vip(0), "a stopped node removes its VIPs");
    lab.wait_state(1, "Master");
    assert!(lab.has_vip(1));
    assert_eq!(wait_for("traffic to the VIP", LIMIT, || lab.fetch()), "lb2");
    wait_for("lb2 to count the priority 0 advert", LIMIT, || {
        (lab.counter(1, "priority_zero_rx") >= 1).then_some(())
    });

    let lines = cap.finish();
    let (a1, a2) = (lab.nodes[0].addr.clone(), lab.nodes[1].addr.clone());
    let prio0 = first_after(&lines, t_stop, |l| {
        is_advert_from(l, &a1) && l.contains("prio 0,")
    });
    assert!(prio0.is_some(), "lb1 sent no priority 0 advert: {lines:?}");
    let first_lb2 = first_after(&lines, t_stop, |l| is_advert_from(l, &a2));
    let garp = first_after(&lines, t_stop, is_garp);
    println!(
        "graceful failover: priority 0 -> first lb2 advert {}, -> first GARP {} \
         (Skew_Time for priority 100 at 100 ms = 60.9 ms; a hard failure waits 360.9 ms)",
        ms(prio0, first_lb2),
        ms(prio0, garp)
    );
}

/// Test 3a: a higher-priority node that comes back preempts the lower master.
#[test]
fn preemption_when_higher_priority_returns() {
    let mut lab = Lab::new("vpre");
    lab.start(1, 100, "");
    lab.wait_state(1, "Master");
    assert_eq!(wait_for("traffic to lb2", LIMIT, || lab.fetch()), "lb2");

    let started = Instant::now();
    lab.start(0, 200, "");
    lab.wait_state(0, "Master");
    lab.wait_state(1, "Backup");
    println!("preemption took {:?} from lb1's start", started.elapsed());
    wait_for("the VIP to leave lb2", LIMIT, || {
        (!lab.has_vip(1)).then_some(())
    });
    assert!(lab.has_vip(0));
    assert_eq!(
        wait_for("traffic to lb1", LIMIT, || lab
            .fetch()
            .filter(|n| n == "lb1")),
        "lb1"
    );
}

/// Test 3b: with `preempt = false` the higher-priority node stays backup.
#[test]
fn no_preemption_when_disabled() {
    let mut lab = Lab::new("vnopre");
    lab.start(1, 100, "");
    lab.wait_state(1, "Master");
    lab.start(0, 200, "preempt = false");
    lab.wait_state(0, "Backup");
    wait_for("lb1 to accept lb2 as master", LIMIT, || {
        (lab.status(0)?["master"].as_str()? == format!("{SUBNET}.2")).then_some(())
    });
    // Watch for 20 advert intervals (more than 5 Master_Down_Intervals): a node that
    // preempted, or flapped, would have done so by then.
    let until = Instant::now() + Duration::from_millis(u64::from(ADVERT_MS) * 20);
    while Instant::now() < until {
        assert_eq!(lab.state(0).as_deref(), Some("Backup"), "lb1 preempted");
        assert_eq!(lab.state(1).as_deref(), Some("Master"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.counter(0, "transitions"), 1, "lb1: only INIT -> BACKUP");
    assert!(lab.has_vip(1) && !lab.has_vip(0));
}

fn keepalived_available() -> bool {
    let ok = Command::new("keepalived")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: keepalived is not installed (cargo xtask setup installs it)");
    }
    ok
}

/// Test 4a: keepalived is master, lb-vrrp the backup; keepalived stops gracefully.
#[test]
fn keepalived_master_lb_vrrp_backup() {
    if !keepalived_available() {
        return;
    }
    let mut lab = Lab::new("vkam");
    lab.start_keepalived(1, 200, "");
    wait_for("keepalived to become master", LIMIT, || {
        lab.keepalived_log(1)
            .contains("Entering MASTER STATE")
            .then_some(())
    });
    lab.start(0, 100, "");
    lab.wait_state(0, "Backup");
    wait_for("lb-vrrp to accept keepalived's adverts", LIMIT, || {
        (lab.counter(0, "adverts_rx") >= 5).then_some(())
    });
    let st = lab.status(0).expect("status");
    assert_eq!(st["master"].as_str(), Some(format!("{SUBNET}.2").as_str()));
    let c = &st["counters"];
    for k in [
        "malformed_checksum",
        "malformed_version",
        "malformed_addr_count",
        "bad_ttl",
        "addr_list_err",
        "own_src",
    ] {
        assert_eq!(c[k].as_u64(), Some(0), "{k} with keepalived: {st}");
    }
    assert_eq!(
        wait_for("traffic to keepalived's node", LIMIT, || lab.fetch()),
        "lb2"
    );

    let cap = Capture::start(&lab.client, &lab.dir.0, "kam", "arp or proto 112");
    let t_stop = now_epoch();
    assert!(lab.stop(1), "keepalived exits on SIGTERM");
    lab.wait_state(0, "Master");
    wait_for("lb-vrrp's gratuitous ARP", LIMIT, || {
        (lab.counter(0, "garp_tx") > 0).then_some(())
    });
    let lines = cap.finish();
    let a2 = lab.nodes[1].addr.clone();
    let prio0 = first_after(&lines, t_stop, |l| {
        is_advert_from(l, &a2) && l.contains("prio 0,")
    });
    println!(
        "keepalived SIGTERM -> its priority 0 {}, priority 0 -> lb-vrrp's first GARP {}",
        ms(Some(t_stop), prio0),
        ms(prio0, first_after(&lines, t_stop, is_garp))
    );
    assert!(
        lab.counter(0, "priority_zero_rx") >= 1,
        "keepalived sent priority 0"
    );
    assert!(lab.has_vip(0) && !lab.has_vip(1));
    assert_eq!(wait_for("traffic to lb1", LIMIT, || lab.fetch()), "lb1");
}

/// Test 4b: lb-vrrp is master, keepalived the backup; lb-vrrp stops gracefully.
#[test]
fn lb_vrrp_master_keepalived_backup() {
    if !keepalived_available() {
        return;
    }
    let mut lab = Lab::new("vkab");
    lab.start(0, 200, "");
    lab.wait_state(0, "Master");
    lab.start_keepalived(1, 100, "");
    wait_for("keepalived to start as backup", LIMIT, || {
        lab.keepalived_log(1)
            .contains("Entering BACKUP STATE")
            .then_some(())
    });
    // keepalived's Master_Down_Interval is ~0.36 s: if it rejected our adverts
    // (checksum, TTL, address list...) it would turn master within this window.
    let until = Instant::now() + Duration::from_millis(u64::from(ADVERT_MS) * 20);
    while Instant::now() < until {
        let log = lab.keepalived_log(1);
        assert!(
            !log.contains("Entering MASTER STATE"),
            "keepalived did not accept lb-vrrp's adverts:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!lab.has_vip(1));
    assert_eq!(lab.state(0).as_deref(), Some("Master"));

    let started = Instant::now();
    assert!(lab.stop(0));
    wait_for("keepalived to take over", LIMIT, || {
        lab.keepalived_log(1)
            .contains("Entering MASTER STATE")
            .then_some(())
    });
    println!(
        "lb-vrrp stop -> keepalived MASTER in {:?}",
        started.elapsed()
    );
    wait_for("the VIP on keepalived's node", LIMIT, || {
        lab.has_vip(1).then_some(())
    });
    assert!(!lab.has_vip(0));
    assert_eq!(wait_for("traffic to lb2", LIMIT, || lab.fetch()), "lb2");
    let log = lab.keepalived_log(1);
    assert!(
        !log.contains("bogus") && !log.contains("invalid"),
        "keepalived complained about our packets:\n{log}"
    );
}

/// Test 6: adverts blocked between the nodes (nftables on the bridge), then healed:
/// exactly one master afterwards - by the RFC tie-break on equal priorities, the one
/// with the higher address - and the VIP only on it.
#[test]
fn split_brain_heals_to_one_master() {
    let mut lab = Lab::new("vsplit");
    lab.start(0, 100, "");
    lab.wait_state(0, "Master");
    lab.start(1, 100, "");
    lab.wait_state(1, "Backup");

    lab.sw
        .run(&[
            "nft",
            "add table bridge vrrpblk; \
             add chain bridge vrrpblk adverts { type filter hook forward priority 0; }; \
             add rule bridge vrrpblk adverts ether type ip ip protocol 112 drop",
        ])
        .expect("nft block");
    lab.wait_state(1, "Master");
    assert_eq!(
        lab.state(0).as_deref(),
        Some("Master"),
        "split brain: both master"
    );
    assert!(lab.has_vip(0) && lab.has_vip(1), "split brain: VIP on both");

    let started = Instant::now();
    lab.sw
        .run(&["nft", "delete table bridge vrrpblk"])
        .expect("nft heal");
    wait_for("exactly one master after healing", LIMIT, || {
        let states = (lab.state(0)?, lab.state(1)?);
        (states == ("Backup".to_owned(), "Master".to_owned())).then_some(())
    });
    println!("split brain healed in {:?}", started.elapsed());
    wait_for("the VIP only on lb2", LIMIT, || {
        (!lab.has_vip(0) && lab.has_vip(1)).then_some(())
    });
    // Stable afterwards: no flapping over 20 advert intervals.
    let transitions = (lab.counter(0, "transitions"), lab.counter(1, "transitions"));
    let until = Instant::now() + Duration::from_millis(u64::from(ADVERT_MS) * 20);
    while Instant::now() < until {
        assert_eq!(lab.state(0).as_deref(), Some("Backup"));
        assert_eq!(lab.state(1).as_deref(), Some("Master"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        (lab.counter(0, "transitions"), lab.counter(1, "transitions")),
        transitions,
        "flapped after healing"
    );
    assert!(!lab.has_vip(0) && lab.has_vip(1));
}

/// The VRRP checksum (pseudo-header + message), for building forged packets.
fn vrrp_checksum(src: [u8; 4], dst: [u8; 4], msg: &[u8]) -> u16 {
    let mut data = Vec::new();
    data.extend_from_slice(&src);
    data.extend_from_slice(&dst);
    data.extend_from_slice(&[0, 112]);
    data.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    data.extend_from_slice(msg);
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A VRRP message with a correct checksum for the given fields.
fn forged(src: [u8; 4], dst: [u8; 4], vrid: u8, prio: u8, interval_cs: u16) -> Vec<u8> {
    let mut m = vec![0x31, vrid, prio, 1];
    m.extend_from_slice(&interval_cs.to_be_bytes());
    m.extend_from_slice(&[0, 0, 10, 201, 0, 100]);
    let c = vrrp_checksum(src, dst, &m);
    m[6..8].copy_from_slice(&c.to_be_bytes());
    m
}

/// The flood's packets for one destination (the checksum depends on it), each with
/// the TTL to send it with.
fn flood_packets(dst: [u8; 4]) -> Vec<(Vec<u8>, u8)> {
    let src = [10, 201, 0, 10];
    let good = forged(src, dst, VRID, 254, 10);
    let mut bad_version = good.clone();
    bad_version[0] = 0x21;
    let mut bad_type = good.clone();
    bad_type[0] = 0x3f;
    let mut bad_sum = good.clone();
    bad_sum[7] ^= 0xff;
    let mut bad_count = good.clone();
    bad_count[3] = 9;
    vec![
        (vec![], 255),
        (vec![0x31, VRID, 254], 255),
        (bad_version, 255),
        (bad_type, 255),
        (bad_sum, 255),
        (bad_count, 255),
        (good[..11].to_vec(), 255),
        (forged(src, dst, VRID, 254, 0), 255), // zero interval
        // Well-formed takeover attempts that must still be dropped:
        (good, 64),                           // TTL != 255: off-link or forged
        (forged(src, dst, VRID, 0, 10), 1),   // priority 0 with TTL 1
        (forged(src, dst, 99, 255, 10), 255), // another VRID
        ((0..=255u8).collect(), 255),         // noise
    ]
}

/// Sends [`flood_packets`] as protocol-112 datagrams from the client to the VRRP group
/// and to both nodes, `rounds` times; returns how many went out.
fn flood(client: &Ns, rounds: usize) -> usize {
    let ifindex = client.ifindex("eth0").expect("client ifindex");
    in_netns(client, move || {
        let dsts = [[224, 0, 0, 18], [10, 201, 0, 1], [10, 201, 0, 2]];
        let per_dst: Vec<_> = dsts.iter().map(|&d| (d, flood_packets(d))).collect();
        let sock = RawSender::new(112, ifindex);
        let mut sent = 0;
        for _ in 0..rounds {
            for (dst, msgs) in &per_dst {
                for (msg, ttl) in msgs {
                    sock.set_ttl(*ttl);
                    sent += usize::from(sock.send(*dst, msg));
                }
            }
        }
        sent
    })
    .expect("flood from the client")
}

/// A raw IPv4 socket for `proto` that sends multicast out of `ifindex` (the client has
/// no multicast route); closed when dropped.
struct RawSender(libc::c_int);

impl RawSender {
    fn new(proto: libc::c_int, ifindex: u32) -> RawSender {
        // SAFETY: plain socket syscalls; the pointer passed is to a live local of the
        // size given.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, proto);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex as i32,
            };
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&raw const mreq).cast(),
                size_of::<libc::ip_mreqn>() as u32,
            );
            RawSender(fd)
        }
    }

    /// The TTL of what is sent next, unicast or multicast.
    fn set_ttl(&self, ttl: u8) {
        let ttl = libc::c_int::from(ttl);
        for opt in [libc::IP_TTL, libc::IP_MULTICAST_TTL] {
            // SAFETY: setsockopt on the descriptor this owns, from a live local.
            unsafe {
                libc::setsockopt(
                    self.0,
                    libc::IPPROTO_IP,
                    opt,
                    (&raw const ttl).cast(),
                    size_of::<libc::c_int>() as u32,
                );
            }
        }
    }

    /// Sends `msg` to `dst`; whether it went out.
    fn send(&self, dst: [u8; 4], msg: &[u8]) -> bool {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto on the descriptor this owns; both pointers are to live values
        // of the lengths given.
        let r = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const sin).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        r >= 0
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this owns, once.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// Test 7: a flood of malformed and forged VRRP packets changes nothing.
#[test]
fn malformed_flood_changes_nothing() {
    let mut lab = Lab::new("vflood");
    master_and_backup(&mut lab, "");
    let before = (lab.counter(0, "transitions"), lab.counter(1, "transitions"));

    let started = Instant::now();
    let sent = flood(&lab.client, 1000);
    println!("flooded {sent} packets in {:?}", started.elapsed());
    assert!(sent >= 30_000, "the flood did not go out: {sent}");

    // Both nodes keep running and count what they dropped, by reason.
    for i in 0..2 {
        assert!(
            lab.nodes[i].proc.as_mut().is_some_and(Proc::alive),
            "{} died",
            lab.nodes[i].name
        );
    }
    for i in 0..2 {
        wait_for("the nodes to count the flood by reason", LIMIT, || {
            let s = lab.status(i)?;
            let c = &s["counters"];
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            [
                "malformed_version",
                "malformed_type",
                "malformed_checksum",
                "malformed_addr_count",
                "malformed_short",
                "malformed_interval",
                "bad_ttl",
                "foreign_vrid",
            ]
            .iter()
            .all(|k| n(k) > 0)
            .then_some(())
        });
    }
    println!(
        "lb1 counters after the flood: {}",
        lab.status(0).expect("status")["counters"]
    );
    assert_eq!(lab.state(0).as_deref(), Some("Master"));
    assert_eq!(lab.state(1).as_deref(), Some("Backup"));
    assert_eq!(
        (lab.counter(0, "transitions"), lab.counter(1, "transitions")),
        before,
        "the flood caused a transition"
    );
    assert!(lab.has_vip(0) && !lab.has_vip(1));
    assert_eq!(lab.fetch().as_deref(), Some("lb1"));
}

/// A VRRP message with a correct checksum listing `addrs` (any number, even none).
fn forged_with_addrs(src: [u8; 4], dst: [u8; 4], vrid: u8, prio: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
    let mut m = vec![
        0x31,
        vrid,
        prio,
        addrs.len() as u8,
        0,
        ADVERT_MS as u8 / 10,
        0,
        0,
    ];
    for a in addrs {
        m.extend_from_slice(a);
    }
    let c = vrrp_checksum(src, dst, &m);
    m[6..8].copy_from_slice(&c.to_be_bytes());
    m
}

/// Sends each `(source, destination, VRRP message)` from the client `rounds` times,
/// with TTL 255 and a hand-built IPv4 header, so the source can be any address;
/// returns how many went out.
fn send_spoofed(client: &Ns, packets: &[([u8; 4], [u8; 4], Vec<u8>)], rounds: usize) -> usize {
    let ifindex = client.ifindex("eth0").expect("client ifindex");
    let frames: Vec<([u8; 4], Vec<u8>)> = packets
        .iter()
        .map(|(src, dst, msg)| {
            let len = (20 + msg.len()) as u16;
            let mut f = vec![0x45, 0xc0];
            f.extend_from_slice(&len.to_be_bytes());
            // id, no fragmentation, TTL 255, protocol 112; the kernel fills the
            // header checksum of an IPPROTO_RAW datagram.
            f.extend_from_slice(&[0, 0, 0x40, 0, 255, 112, 0, 0]);
            f.extend_from_slice(src);
            f.extend_from_slice(dst);
            f.extend_from_slice(msg);
            (*dst, f)
        })
        .collect();
    in_netns(client, move || {
        let sock = RawSender::new(libc::IPPROTO_RAW, ifindex);
        let mut sent = 0;
        for _ in 0..rounds {
            for (dst, frame) in &frames {
                sent += usize::from(sock.send(*dst, frame));
            }
        }
        sent
    })
    .expect("sending from the client")
}

/// Lines of node `i`'s log saying it dropped a packet for `reason`.
fn drop_lines(lab: &Lab, i: usize, reason: &str) -> Vec<String> {
    std::fs::read_to_string(&lab.nodes[i].log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("dropped a packet") && l.contains(&format!("({reason})")))
        .map(str::to_owned)
        .collect()
}

/// Higher-priority adverts for our VRID whose address list is not ours (no address
/// at all, a foreign address, our VIP twice) and adverts carrying the master's own
/// source address are dropped, counted and logged (at info, rate-limited): the master
/// keeps the VIP. A priority-254 advert with no address used to make it yield.
#[test]
fn adverts_with_a_wrong_address_list_change_nothing() {
    let mut lab = Lab::new("vaddr");
    // Let lb1's kernel deliver datagrams from its own address (it drops them as
    // martians otherwise), so the VRRP layer's own-source check is what is tested.
    lab.nodes[0]
        .ns
        .sysctl("net.ipv4.conf.eth0.accept_local", "1")
        .expect("accept_local");
    master_and_backup(&mut lab, "");
    let before = (lab.counter(0, "transitions"), lab.counter(1, "transitions"));

    let client = [10, 201, 0, 10];
    let lb1 = [10, 201, 0, 1];
    let vip = [10, 201, 0, 100];
    let mut packets = Vec::new();
    for dst in [[224, 0, 0, 18], lb1, [10, 201, 0, 2]] {
        for addrs in [&[][..], &[vip, [10, 201, 0, 200]][..], &[vip, vip][..]] {
            packets.push((
                client,
                dst,
                forged_with_addrs(client, dst, VRID, 254, addrs),
            ));
        }
        // lb1's own address as the source: lb1 drops it (own_src); to lb2 it is an
        // ordinary advert from its master.
        packets.push((lb1, dst, forged_with_addrs(lb1, dst, VRID, 254, &[vip])));
    }
    let started = Instant::now();
    let sent = send_spoofed(&lab.client, &packets, 200);
    assert!(sent >= 2000, "the adverts did not go out: {sent}");
    let unmoved = |lab: &Lab| {
        assert_eq!(
            (lab.counter(0, "transitions"), lab.counter(1, "transitions")),
            before,
            "a bad advert caused a transition"
        );
    };
    wait_for("lb1 to count the bad adverts", LIMIT, || {
        unmoved(&lab);
        (lab.counter(0, "addr_list_err") > 0 && lab.counter(0, "own_src") > 0).then_some(())
    });
    wait_for("lb2 to count the bad adverts", LIMIT, || {
        unmoved(&lab);
        (lab.counter(1, "addr_list_err") > 0).then_some(())
    });
    // Logged at info, the first at once; at most one line per second per reason.
    let lines = wait_for("lb1 to log the drops", LIMIT, || {
        unmoved(&lab);
        let l = drop_lines(&lab, 0, "addr_list");
        (!l.is_empty() && !drop_lines(&lab, 0, "own_src").is_empty()).then_some(l)
    });
    let allowed = 1 + started.elapsed().as_secs() as usize + 1;
    assert!(
        lines.len() <= allowed,
        "{} addr_list lines for {:?} of adverts: not rate-limited",
        lines.len(),
        started.elapsed()
    );
    assert!(lines[0].contains(" INFO "), "{}", lines[0]);

    // A second burst more than a second later: one more line, with the count of the
    // drops it stands for.
    wait_for("a second to pass since the first burst", LIMIT, || {
        (started.elapsed() > Duration::from_millis(1100)).then_some(())
    });
    send_spoofed(&lab.client, &packets, 50);
    wait_for("a line counting the drops not logged", LIMIT, || {
        unmoved(&lab);
        drop_lines(&lab, 0, "addr_list")
            .iter()
            .any(|l| l.contains("more addr_list drops"))
            .then_some(())
    });

    assert_eq!(lab.state(0).as_deref(), Some("Master"));
    assert_eq!(lab.state(1).as_deref(), Some("Backup"));
    unmoved(&lab);
    assert!(lab.has_vip(0) && !lab.has_vip(1));
    assert_eq!(lab.fetch().as_deref(), Some("lb1"));
}

/// IPv6: graceful handover with unsolicited neighbour advertisements.
#[test]
fn ipv6_graceful_stop_sends_unsolicited_na() {
    let mut lab = Lab::new_v6("vsix");
    let vips = format!("[\"{VIP6}\"]");
    lab.start_with_vips(0, 200, &vips, "");
    lab.wait_state(0, "Master");
    lab.start_with_vips(1, 100, &vips, "");
    lab.wait_state(1, "Backup");
    assert!(lab.has_addr(0, VIP6) && !lab.has_addr(1, VIP6));

    let cap = Capture::start(&lab.client, &lab.dir.0, "six", "icmp6 or proto 112");
    let t_stop = now_epoch();
    assert!(lab.stop(0));
    lab.wait_state(1, "Master");
    assert!(lab.has_addr(1, VIP6) && !lab.has_addr(0, VIP6));
    let lines = cap.finish();
    let na = first_after(&lines, t_stop, |l| {
        l.contains("ff02::1: ICMP6, neighbor advertisement")
            && l.contains(&format!("tgt is {VIP6}"))
    });
    assert!(na.is_some(), "no unsolicited NA for the VIP: {lines:?}");
    let prio0 = first_after(&lines, t_stop, |l| {
        l.contains("ff02::12") && l.contains("prio 0,")
    });
    println!(
        "IPv6 graceful failover: priority 0 -> first NA {}",
        ms(prio0, na)
    );
}

/// Unicast peers, with multicast VRRP dropped on the bridge: adverts still flow, and
/// a graceful stop still hands over after Skew_Time.
#[test]
fn unicast_peers_work_without_multicast() {
    let mut lab = Lab::new("vuni");
    lab.sw
        .run(&[
            "nft",
            "add table bridge nomcast; \
             add chain bridge nomcast adverts { type filter hook forward priority 0; }; \
             add rule bridge nomcast adverts ether type ip ip daddr 224.0.0.18 drop",
        ])
        .expect("nft block multicast");
    let peer = |i: usize| format!("unicast_peers = [\"{SUBNET}.{}\"]", i + 1);
    lab.start(0, 200, &peer(1));
    lab.wait_state(0, "Master");
    lab.start(1, 100, &peer(0));
    lab.wait_state(1, "Backup");
    wait_for("lb2 to hear lb1 by unicast", LIMIT, || {
        (lab.counter(1, "adverts_rx") >= 5).then_some(())
    });
    assert!(lab.has_vip(0) && !lab.has_vip(1));
    assert!(lab.stop(0));
    lab.wait_state(1, "Master");
    assert!(lab.counter(1, "priority_zero_rx") >= 1);
    assert!(lab.has_vip(1) && !lab.has_vip(0));
}

/// Tracking: the master's interface going down puts it in FAULT (VIPs removed, the
/// backup takes over); when it comes back it preempts again. The notify command sees
/// every transition.
#[test]
fn interface_down_faults_and_recovers_with_notify() {
    let mut lab = Lab::new("vtrack");
    let notify = lab.dir.0.join("lb1.notify");
    // `sh -c 'echo >> FILE "$@"' sh STATE VRID` appends "STATE VRID".
    master_and_backup(&mut lab, "");
    lab.stop(0);
    lab.wait_state(1, "Master");
    lab.start(
        0,
        200,
        &format!("notify = \"echo >> {}\"", notify.display()),
    );
    lab.wait_state(0, "Master");
    lab.wait_state(1, "Backup");

    lab.nodes[0]
        .ns
        .run(&["ip", "link", "set", "eth0", "down"])
        .expect("eth0 down");
    lab.wait_state(0, "Fault");
    assert_eq!(
        lab.status(0).expect("status")["fault"].as_str(),
        Some("InterfaceDown")
    );
    assert!(!lab.has_vip(0), "a faulted node drops its VIPs");
    lab.wait_state(1, "Master");
    assert_eq!(wait_for("traffic to lb2", LIMIT, || lab.fetch()), "lb2");

    lab.nodes[0]
        .ns
        .run(&["ip", "link", "set", "eth0", "up"])
        .expect("eth0 up");
    lab.wait_state(0, "Master");
    lab.wait_state(1, "Backup");
    wait_for("the VIP back on lb1 only", LIMIT, || {
        (lab.has_vip(0) && !lab.has_vip(1)).then_some(())
    });
    let expected = [
        "BACKUP 51",
        "MASTER 51",
        "FAULT 51",
        "BACKUP 51",
        "MASTER 51",
    ];
    let seen = wait_for("every transition notified", LIMIT, || {
        let text = std::fs::read_to_string(&notify).ok()?;
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= expected.len()).then_some(lines)
    });
    assert_eq!(seen, expected);
}
