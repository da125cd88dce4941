//! The `lb` controller against the real data plane in network namespaces: health
//! checks, drain, reload, hitless restart after `kill -9`, rejected reloads, metrics
//! and clean shutdown.

use std::time::Duration;

use lb_tests::{
    bin_path,
    lbnet::{LbNet, Opts},
    wait_for,
};

fn backend_health(net: &LbNet, addr: &str) -> String {
    let st = net.status().unwrap();
    st["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr)
        .map(|b| b["health"].as_str().unwrap().to_owned())
        .unwrap()
}

#[test]
fn a_failing_backend_leaves_the_ring_and_rejoins_after_rise() {
    lb_tests::require_root();
    let mut net = LbNet::new("health", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let b2 = net.backend_addrs[1].to_string();
    assert_eq!(backend_health(&net, &b2), "up");

    net.stop_server(1);
    wait_for("b2 marked down", Duration::from_secs(10), || {
        (backend_health(&net, &b2) == "down").then_some(())
    });
    let names = net.fetch_names(90).unwrap();
    assert!(
        names.iter().all(|n| n != "b2"),
        "new flows went to a down backend"
    );
    assert!(names.iter().any(|n| n == "b1") && names.iter().any(|n| n == "b3"));

    net.start_server(1).unwrap();
    wait_for("b2 back up", Duration::from_secs(10), || {
        (backend_health(&net, &b2) == "up").then_some(())
    });
    let names = net.fetch_names(90).unwrap();
    assert!(
        names.iter().any(|n| n == "b2"),
        "b2 did not rejoin: {names:?}"
    );
    let st = net.status().unwrap();
    let b = &st["services"][0]["backends"][1];
    assert_eq!(b["transitions"], 2, "{b}");
}

#[test]
fn drain_keeps_established_connections_and_stops_new_ones() {
    lb_tests::require_root();
    let mut net = LbNet::new("drain", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let mut conns = Vec::new();
    for i in 0..30 {
        let mut c = net.echo_conn().unwrap();
        let b = c.roundtrip(&format!("m{i}")).unwrap();
        conns.push((c, b));
    }
    assert!(conns.iter().any(|(_, b)| b == "b1"));
    let b1 = net.backend_addrs[0].to_string();
    net.lb_cmd(&["backend", "drain", &b1]).unwrap();
    for (i, (c, b)) in conns.iter_mut().enumerate() {
        assert_eq!(
            &c.roundtrip(&format!("again{i}")).unwrap(),
            b,
            "connection {i} moved"
        );
    }
    let names = net.fetch_names(90).unwrap();
    assert!(
        names.iter().all(|n| n != "b1"),
        "a drained backend got new flows"
    );
    let st = net.status().unwrap();
    assert_eq!(st["services"][0]["backends"][0]["admin"], "drained");
    assert_eq!(st["services"][0]["backends"][0]["ring_slots"], 0);

    net.lb_cmd(&["backend", "enable", &b1]).unwrap();
    let names = net.fetch_names(90).unwrap();
    assert!(
        names.iter().any(|n| n == "b1"),
        "enable did not bring b1 back"
    );
    // A weight for an unknown backend is refused with a message.
    let e = net
        .lb_cmd(&["backend", "weight", "10.77.0.99", "3"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no backend 10.77.0.99"), "{e}");
}

/// The config split into its service sections, to drop or restore one.
fn without_service(text: &str, name: &str) -> String {
    let mut parts = text.split("[[services]]");
    let head = parts.next().unwrap().to_owned();
    parts
        .filter(|p| !p.contains(&format!("name = \"{name}\"")))
        .fold(head, |acc, p| acc + "[[services]]" + p)
}

#[test]
fn reload_adds_and_removes_a_service_without_touching_another() {
    lb_tests::require_root();
    let mut net = LbNet::new("reload", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let mut conns: Vec<_> = (0..10)
        .map(|i| {
            let mut c = net.echo_conn().unwrap();
            let b = c.roundtrip(&format!("x{i}")).unwrap();
            (c, b)
        })
        .collect();
    let full = net.config_text(&[0, 1, 2]);
    let before = net.status().unwrap();
    let rebuilds = before["ring_rebuilds"].as_u64().unwrap();
    let services = before["services"].as_array().unwrap().len();

    std::fs::write(&net.config, without_service(&full, "name")).unwrap();
    net.lb_cmd(&["reload"]).unwrap();
    let st = net.status().unwrap();
    assert_eq!(st["services"].as_array().unwrap().len(), services - 1);
    assert_eq!(
        st["ring_rebuilds"].as_u64().unwrap(),
        rebuilds,
        "removing a service rewrote a ring"
    );
    assert!(
        net.fetch_name().is_err(),
        "the removed service still answers"
    );
    for (c, b) in &mut conns {
        assert_eq!(&c.roundtrip("still").unwrap(), b);
    }

    std::fs::write(&net.config, &full).unwrap();
    net.lb_cmd(&["reload"]).unwrap();
    let st = net.status().unwrap();
    assert_eq!(
        st["ring_rebuilds"].as_u64().unwrap(),
        rebuilds + 1,
        "only the re-added ring was written"
    );
    assert_eq!(net.fetch_names(3).unwrap().len(), 3);
    for (c, b) in &mut conns {
        assert_eq!(&c.roundtrip("still").unwrap(), b);
    }
}

#[test]
fn a_bad_reload_is_rejected_whole_and_traffic_continues() {
    lb_tests::require_root();
    let mut net = LbNet::new("badrel", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let good = net.config_text(&[0, 1, 2]);
    // Valid TOML, valid first service, broken second service: nothing may apply,
    // not even the first service's change (b3 dropped).
    let bad = without_service(&good, "zzz")
        .replacen(
            &format!("{{ address = \"{}\"", net.backend_addrs[2]),
            "{ address = \"10.77.0.250\"",
            1,
        )
        .replacen("ring_size = 65537", "ring_size = 65536", 2);
    assert_ne!(bad, good);
    std::fs::write(&net.config, &bad).unwrap();
    let e = net.lb_cmd(&["reload"]).unwrap_err().to_string();
    assert!(e.contains("ring_size"), "{e}");
    assert!(e.contains("lb.toml:"), "names the file: {e}");
    let st = net.status().unwrap();
    assert_eq!(st["reload_failures"], 1);
    assert_eq!(st["services"][0]["backends"].as_array().unwrap().len(), 3);
    let names = net.fetch_names(60).unwrap();
    assert!(
        names.iter().any(|n| n == "b3"),
        "the old config stopped applying"
    );
    // SIGHUP takes the same path.
    net.controller.as_ref().unwrap().signal(libc::SIGHUP);
    wait_for("second rejected reload", Duration::from_secs(5), || {
        (net.status().unwrap()["reload_failures"] == 2).then_some(())
    });
}

#[test]
fn kill_9_and_restart_keep_forwarding_and_adopt_the_pinned_state() {
    lb_tests::require_root();
    let mut net = LbNet::new("hitless", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let mut conn = net.echo_conn().unwrap();
    let first = conn.roundtrip("before").unwrap();
    let entries = net.status().unwrap()["conntrack_entries"].as_u64().unwrap();
    assert!(entries > 0);

    net.controller.as_mut().unwrap().stop(libc::SIGKILL);
    // No controller: the pinned program keeps forwarding, old and new flows alike.
    for i in 0..20 {
        assert_eq!(conn.roundtrip(&format!("orphan{i}")).unwrap(), first);
    }
    assert_eq!(net.fetch_names(30).unwrap().len(), 30);

    net.start_controller().unwrap();
    let st = net.status().unwrap();
    assert_eq!(st["adopted"], true);
    assert_eq!(st["ring_rebuilds"], 0, "adopting rewrote a ring");
    assert!(
        st["conntrack_entries"].as_u64().unwrap() >= entries,
        "the connection table was flushed"
    );
    assert_eq!(conn.roundtrip("after").unwrap(), first);
}

/// A restart adopts pinned state only if it is the data plane the config describes: pins
/// attached to another interface, or in another XDP mode, are refused with the way out
/// (they used to be adopted silently, the old interface balanced and status naming the
/// new one) and left running. A changed `conntrack_size` is adopted with a warning, and
/// status reports the table's real size.
#[test]
fn a_restart_refuses_pins_from_another_interface_or_mode() {
    lb_tests::require_root();
    let mut net = LbNet::new("adoptck", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let mut conn = net.echo_conn().unwrap();
    let first = conn.roundtrip("before").unwrap();
    net.controller.as_mut().unwrap().stop(libc::SIGKILL);
    // A second interface on the LB node (a veth pair; this kernel has no dummy).
    net.lb
        .run(&[
            "ip", "link", "add", "lbother", "type", "veth", "peer", "name", "lbpeer",
        ])
        .unwrap();
    net.lb.run(&["ip", "link", "set", "lbother", "up"]).unwrap();

    let text = net.config_text(&[0, 1, 2]);
    let other_if = text.replace("interface = \"eth0\"", "interface = \"lbother\"");
    let (ok, log) = run_to_exit(&net, &other_if, Duration::from_secs(10));
    assert!(!ok, "{log}");
    assert!(log.contains("is not attached to lbother"), "{log}");
    assert!(log.contains("rm -r /sys/fs/bpf/lb-"), "{log}");

    let other_mode = text.replace("xdp_mode = \"drv\"", "xdp_mode = \"skb\"");
    assert_ne!(other_mode, text);
    let (ok, log) = run_to_exit(&net, &other_mode, Duration::from_secs(10));
    assert!(!ok, "{log}");
    assert!(
        log.contains("attached to eth0 in xdp_mode drv, the config says skb"),
        "{log}"
    );
    // Refused, and still forwarding on the pinned program.
    assert!(xdp_attached(&net));
    assert_eq!(conn.roundtrip("refused").unwrap(), first);

    let bigger = text.replace("conntrack_size = 65536", "conntrack_size = 131072");
    assert_ne!(bigger, text);
    std::fs::write(&net.config, bigger).unwrap();
    net.start_controller().unwrap();
    let st = net.status().unwrap();
    assert_eq!(st["adopted"], true);
    assert_eq!(st["conntrack_size"], 65536, "{st}");
    assert!(
        net.controller_log().contains(
            "the adopted connection table has 65536 entries, not conntrack_size = 131072"
        ),
        "{}",
        net.controller_log()
    );
    assert_eq!(conn.roundtrip("after").unwrap(), first);
}

#[test]
fn metrics_and_clean_shutdown() {
    lb_tests::require_root();
    let mut net = LbNet::new("metrics", Opts::default()).unwrap();
    net.start_controller().unwrap();
    net.fetch_names(10).unwrap();
    let m = net
        .lb
        .run(&["curl", "-sf", "http://127.0.0.1:9100/metrics"])
        .unwrap();
    let b1 = net.backend_addrs[0];
    assert!(
        m.contains(&format!(
            "lb_backend_up{{service=\"name\",backend=\"{b1}\"}} 1"
        )),
        "{m}"
    );
    assert!(m.contains("lb_exit_packets_total{reason=\"tx_l2\"}"), "{m}");
    assert!(m.contains("lb_conntrack_entries "), "{m}");
    let pins = format!("/sys/fs/bpf/lb-{}", net.instance);
    assert!(std::path::Path::new(&pins).join("link").exists());

    let mut ctl = net.controller.take().unwrap();
    ctl.signal(libc::SIGTERM);
    let st = ctl
        .wait_exit(Duration::from_secs(10))
        .expect("lb run exits on SIGTERM");
    assert!(st.success(), "{st}");
    assert!(
        !std::path::Path::new(&pins).exists(),
        "pins left after a clean shutdown"
    );
    let link = net
        .lb
        .run(&["ip", "-d", "link", "show", "dev", "eth0"])
        .unwrap();
    assert!(!link.contains("prog/xdp"), "still attached: {link}");
}

#[test]
fn lb_check_names_the_problem_in_bad_files() {
    lb_tests::require_root();
    let dir = lb_tests::lbnet::TempDir::new("check").unwrap();
    let path = dir.0.join("bad.toml");
    let cases = [
        ("interface = \"eth0\"\nbogus = 1\n", "unknown field"),
        ("interface = \"eth0\"\nxdp_mode = \"fast\"\n", "fast"),
        (
            "interface = \"eth0\"\n[[services]]\nname = \"a\"\nvip = \"10.0.0.1\"\nproto = \"tcp\"\nport = 80\nring_size = 100\n",
            "ring_size",
        ),
        (
            "interface = \"eth0\"\n[[services]]\nname = \"a\"\nvip = \"nope\"\nproto = \"tcp\"\nport = 80\n",
            "vip",
        ),
        ("", "interface"),
        // Passed `lb check`, then failed `lb run` with E2BIG.
        (
            "interface = \"eth0\"\nconntrack_size = 4294967295\n",
            "conntrack_size",
        ),
        // Wrapped to 0.45 ms in the data plane.
        (
            "interface = \"eth0\"\nudp_timeout_ms = 18446744073710\n",
            "udp_timeout_ms",
        ),
        (
            "interface = \"eth0\"\nudp_timeout_ms = 0\n",
            "udp_timeout_ms",
        ),
        ("interface = \"eth 0\"\n", "interface"),
        // Probed port 0 and marked every backend down.
        (
            "interface = \"eth0\"\n[[services]]\nname = \"a\"\nvip = \"10.0.0.1\"\nproto = \"tcp\"\nport = 0\nbackends = [ { address = \"10.0.0.2\" } ]\n",
            "health.port",
        ),
        // Would have forged Prometheus series.
        (
            "interface = \"eth0\"\n[[services]]\nname = \"a\\\"b\"\nvip = \"10.0.0.1\"\nproto = \"tcp\"\nport = 80\n",
            "services[0].name",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(bin_path("lb"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && err.contains("bad.toml"),
            "{text:?}: {err}"
        );
    }
    std::fs::write(&path, "interface = \"eth0\"\n").unwrap();
    let out = std::process::Command::new(bin_path("lb"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// A lone non-first fragment to the VIP is dropped (`drop_frag_orphan`) and reported
/// through aya-log, off the forwarding path, into the controller's log; also by a
/// controller that adopted the running program (it used to forward only the records of
/// a program it had loaded itself).
#[test]
fn xdp_debug_events_reach_the_controller_log_through_aya_log() {
    lb_tests::require_root();
    let mut net = LbNet::new("ayalog", Opts::default()).unwrap();
    net.start_controller().unwrap();
    // An IPv4 UDP fragment at offset 64 bytes with IP id `id`, through a raw socket.
    let send_fragment = |net: &LbNet, id: u16| {
        let script = format!(
            "import socket,struct\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
             payload=b'x'*32\n\
             h=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(payload),{id},8,64,17,0,socket.inet_aton('{}'),socket.inet_aton('{}'))\n\
             s.sendto(h+payload,('{}',0))\n",
            net.client_addr, net.vip, net.vip
        );
        net.client.run(&["python3", "-c", &script]).unwrap();
    };
    send_fragment(&net, 0x4242);
    wait_for(
        "the orphan fragment counted",
        Duration::from_secs(5),
        || (net.status().unwrap()["reasons"]["drop_frag_orphan"]["packets"] == 1).then_some(()),
    );
    wait_for("the aya-log line", Duration::from_secs(5), || {
        net.controller_log()
            .contains("orphan fragment id 16962 dropped")
            .then_some(())
    });

    net.controller.as_mut().unwrap().stop(libc::SIGKILL);
    net.start_controller().unwrap();
    assert_eq!(net.status().unwrap()["adopted"], true);
    send_fragment(&net, 0x4343);
    wait_for(
        "the aya-log line after adopting",
        Duration::from_secs(5),
        || {
            net.controller_log()
                .contains("orphan fragment id 17219 dropped")
                .then_some(())
        },
    );
}

/// `lb reload` used to report success while ignoring `[failover]`, `conntrack_size`,
/// `metrics` and `admin_socket`: now it refuses the whole reload, names those fields,
/// counts a failure, and status keeps reporting what runs.
#[test]
fn a_reload_that_changes_start_up_settings_is_refused_whole() {
    lb_tests::require_root();
    let mut net = LbNet::new("fixed", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let good = net.config_text(&[0, 1, 2]);
    // A change a reload applies (b3 dropped) next to two it cannot.
    let bad = good
        .replace("conntrack_size = 65536", "conntrack_size = 131072")
        .replacen(
            "hash_seed = 7",
            "hash_seed = 7\nmetrics = \"127.0.0.1:9199\"",
            1,
        )
        .replace(
            &format!(
                ", {{ address = \"{}\", mac = \"{}\" }}",
                net.backend_addrs[2], net.backend_macs[2]
            ),
            "",
        );
    assert_ne!(bad, good);
    assert!(!bad.contains(&net.backend_addrs[2].to_string()));
    std::fs::write(&net.config, &bad).unwrap();
    let e = net.lb_cmd(&["reload"]).unwrap_err().to_string();
    assert!(
        e.contains("conntrack_size") && e.contains("metrics") && e.contains("nothing was reloaded"),
        "{e}"
    );
    let st = net.status().unwrap();
    assert_eq!(st["reload_failures"], 1);
    assert_eq!(st["reloads"], 0);
    assert_eq!(st["conntrack_size"], 65536, "status reports what runs");
    assert_eq!(
        st["services"][0]["backends"].as_array().unwrap().len(),
        3,
        "part of a refused reload was applied"
    );
    // The file put back: reloads work again.
    std::fs::write(&net.config, &good).unwrap();
    net.lb_cmd(&["reload"]).unwrap();
    assert_eq!(net.status().unwrap()["reloads"], 1);
}

/// A backend list that does not fit the backends map (4096 entries, id 0 reserved) is
/// refused by validation, and does not use up ids: the next reload that adds one
/// backend applies. After one such reload, every later one that added a backend
/// failed ("index is 4097 but max_entries is 4096").
#[test]
fn a_refused_oversized_reload_does_not_block_later_ones() {
    lb_tests::require_root();
    let mut net = LbNet::new("bigrel", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let good = net.config_text(&[0, 1, 2]);
    let extra: Vec<String> = (0..4093)
        .map(|i| {
            format!(
                "{{ address = \"10.78.{}.{}\", mac = \"02:00:00:00:{:02x}:{:02x}\" }}",
                i / 250,
                i % 250 + 1,
                i / 256,
                i % 256
            )
        })
        .collect();
    let big = good.replacen(
        "backends = [ ",
        &format!("backends = [ {}, ", extra.join(", ")),
        1,
    );
    std::fs::write(&net.config, &big).unwrap();
    let e = net.lb_cmd(&["reload"]).unwrap_err().to_string();
    assert!(
        e.contains("distinct backend addresses") && e.contains("4095"),
        "{e}"
    );
    assert_eq!(net.status().unwrap()["reload_failures"], 1);

    // One more backend (a host on the segment that serves nothing) fits.
    let added = "{ address = \"10.77.0.99\", mac = \"02:00:00:00:00:99\" }";
    let plus = good.replacen("backends = [ ", &format!("backends = [ {added}, "), 1);
    std::fs::write(&net.config, &plus).unwrap();
    net.lb_cmd(&["reload"]).unwrap();
    let st = net.status().unwrap();
    let backends = st["services"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 4);
    let id = backends
        .iter()
        .find(|b| b["address"] == "10.77.0.99")
        .map(|b| b["id"].as_u64().unwrap())
        .unwrap();
    assert_eq!(id, 4, "the next free id");
}

/// Runs `lb run` on the LB node with `text` as its config and waits up to `limit` for
/// it to exit by itself; returns whether it succeeded and its log.
fn run_to_exit(net: &LbNet, text: &str, limit: Duration) -> (bool, String) {
    let path = net.config.with_file_name("start.toml");
    let log = net.config.with_file_name("start.log");
    std::fs::write(&path, text).unwrap();
    let mut cmd = net.lb.cmd(bin_path("lb").to_str().unwrap());
    cmd.args(["run", "--config", path.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap());
    let mut p = net.lb.spawn_cmd(&mut cmd).unwrap();
    let status = p.wait_exit(limit);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("lb run still running after {limit:?}:\n{text}"));
    (status.success(), text)
}

fn xdp_attached(net: &LbNet) -> bool {
    net.lb
        .run(&["ip", "-d", "link", "show", "dev", "eth0"])
        .unwrap()
        .contains("prog/xdp")
}

/// `lb run` failing after it attached (here: its `[failover]` cannot start, the
/// interface named there does not exist) detaches the program and removes the pins it
/// created; one that adopted a running data plane leaves it attached and forwarding.
/// A failed start used to leave XDP attached and the pins behind (and a broken
/// failover section was only logged, the node serving without it).
#[test]
fn a_failed_start_removes_what_it_attached_and_keeps_what_it_adopted() {
    lb_tests::require_root();
    let mut net = LbNet::new("failst", Opts::default()).unwrap();
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/lb-{}", net.instance));
    let failover = "\n[failover]\ninterface = \"nosuch0\"\nvrid = 42\npriority = 100\n\
                    advert_interval_ms = 100\nvips = [\"10.77.0.100\"]\n";
    let broken = format!("{}{failover}", net.config_text(&[0, 1, 2]));

    let (ok, log) = run_to_exit(&net, &broken, Duration::from_secs(20));
    assert!(!ok, "lb run succeeded:\n{log}");
    assert!(log.contains("failover") && log.contains("nosuch0"), "{log}");
    assert!(log.contains("detached"), "{log}");
    assert!(!pins.exists(), "pins left after a failed start:\n{log}");
    assert!(
        !xdp_attached(&net),
        "XDP left attached after a failed start"
    );

    // A running data plane, its controller killed: the failed start adopts it and
    // must leave it as it was.
    net.start_controller().unwrap();
    net.controller.as_mut().unwrap().stop(libc::SIGKILL);
    let (ok, log) = run_to_exit(&net, &broken, Duration::from_secs(20));
    assert!(!ok, "lb run succeeded:\n{log}");
    assert!(log.contains("adopted data plane is left"), "{log}");
    assert!(pins.join("link").exists(), "the adopted pins were removed");
    assert!(xdp_attached(&net));
    assert_eq!(net.fetch_names(3).unwrap().len(), 3, "forwarding stopped");
    // And the next good start adopts it.
    net.start_controller().unwrap();
    assert_eq!(net.status().unwrap()["adopted"], true);
}

/// A missing interface is reported at once, before backend MACs are resolved (each
/// unresolvable one took 5 s of ARP first).
#[test]
fn a_missing_interface_fails_before_arp() {
    lb_tests::require_root();
    let net = LbNet::new("noif", Opts::default()).unwrap();
    let text = net
        .config_text(&[0])
        .replace("interface = \"eth0\"", "interface = \"nosuch0\"")
        .replace(
            &format!(
                "{{ address = \"{}\", mac = \"{}\" }}",
                net.backend_addrs[0], net.backend_macs[0]
            ),
            "{ address = \"10.77.0.201\" }, { address = \"10.77.0.202\" }",
        );
    assert!(text.contains("10.77.0.201"));
    // Resolving two silent backends would take 10 s.
    let (ok, log) = run_to_exit(&net, &text, Duration::from_secs(5));
    assert!(!ok);
    assert!(
        log.contains("nosuch0") && log.contains("does it exist"),
        "{log}"
    );
    assert!(!log.contains("could not resolve"), "{log}");
}

/// The admin socket answers a line that is not UTF-8 with an error and keeps serving
/// the connection (it used to close it silently); a line over 64 KiB gets an error and
/// the connection is closed instead of being buffered whole.
#[test]
fn the_admin_socket_survives_bad_lines() {
    use std::io::{BufRead as _, BufReader, Write as _};
    lb_tests::require_root();
    let mut net = LbNet::new("admin", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let conn = std::os::unix::net::UnixStream::connect(net.socket()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut answer = || {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    };
    w.write_all(b"{\"cmd\":\"sta\xfftus\"}\n{\"cmd\":\"status\"}\n{\"cmd\":\"status\",\"x\":1}\n")
        .unwrap();
    let a: serde_json::Value = serde_json::from_str(&answer()).unwrap();
    assert!(a["error"].as_str().unwrap().contains("UTF-8"), "{a}");
    let b: serde_json::Value = serde_json::from_str(&answer()).unwrap();
    assert_eq!(b["ok"], true, "{b}");
    let c: serde_json::Value = serde_json::from_str(&answer()).unwrap();
    assert!(
        c["error"].as_str().unwrap().contains("unknown field"),
        "{c}"
    );

    // 1 MiB without a newline: refused after 64 KiB, the connection closed.
    let big = vec![b'x'; 1 << 20];
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&big);
    });
    let d: serde_json::Value = serde_json::from_str(&answer()).unwrap();
    assert!(
        d["error"].as_str().unwrap().contains("longer than 65536"),
        "{d}"
    );
    // The server closes with the rest of the megabyte unread in its receive queue, so
    // the kernel may end the stream with ECONNRESET (after the queued reply) rather
    // than a plain end of file; either is the close this asserts.
    let mut rest = String::new();
    match r.read_line(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection stays open: {other:?} {rest:?}"),
    }
    writer.join().unwrap();
    // The controller serves other connections as before.
    assert_eq!(net.status().unwrap()["reload_failures"], 0);
}
