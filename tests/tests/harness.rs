//! The harness and the build chain, end to end: the controller binary loads the
//! embedded XDP object, attaches a program in driver mode to a veth inside a
//! namespace, real packets cross it, and the program's per-CPU counter holds exactly
//! the number sent. Also: the harness leaves nothing behind.

use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::Counter;
use lb_tests::{BpfPins, Topology, bin_path};

#[test]
fn controller_attaches_xdp_in_a_namespace_and_counts_exactly() {
    lb_tests::require_root();
    let mut topo = Topology::new("proof").unwrap();
    let pins = BpfPins::new("proof").unwrap();
    let a = topo.ns("a").unwrap();
    let b = topo.ns("b").unwrap();
    // No IPv6 on the link: no router solicitations or MLD reports in the count.
    for ns in [&a, &b] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            .unwrap();
    }
    topo.veth(&a, "veth0", &b, "veth0").unwrap();
    a.addr("veth0", "10.78.0.1/24").unwrap();
    b.addr("veth0", "10.78.0.2/24").unwrap();
    // Permanent neighbour entries both ways: no ARP frames in the count either.
    let mac_a = a.mac("veth0").unwrap();
    let mac_b = b.mac("veth0").unwrap();
    a.run(&[
        "ip",
        "neigh",
        "replace",
        "10.78.0.2",
        "lladdr",
        &mac_b,
        "dev",
        "veth0",
        "nud",
        "permanent",
    ])
    .unwrap();
    b.run(&[
        "ip",
        "neigh",
        "replace",
        "10.78.0.1",
        "lladdr",
        &mac_a,
        "dev",
        "veth0",
        "nud",
        "permanent",
    ])
    .unwrap();

    let pin = pins.dir.join("count");
    let lb = bin_path("lb");
    b.run(&[
        lb.to_str().unwrap(),
        "xdp",
        "attach",
        "--prog",
        "xdp_count",
        "--iface",
        "veth0",
        "--pin",
        pin.to_str().unwrap(),
        "--xdp-mode",
        "drv",
    ])
    .unwrap();
    let link = b
        .run(&["ip", "-d", "link", "show", "dev", "veth0"])
        .unwrap();
    assert!(
        link.contains("xdpdrv") || link.contains("prog/xdp"),
        "not attached in driver mode: {link}"
    );
    assert!(
        !link.contains("xdpgeneric"),
        "attached in generic mode: {link}"
    );

    const N: u32 = 200;
    let out = a
        .run(&[
            "ping",
            "-c",
            &N.to_string(),
            "-i",
            "0.002",
            "-q",
            "10.78.0.2",
        ])
        .unwrap();
    assert!(out.contains(&format!("{N} received")), "{out}");

    let data = MapData::from_pin(lb::dataplane::sink_pin(&pin)).unwrap();
    let counter: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
    let total = lb::dataplane::sum(&counter.get(&0, 0).unwrap());
    assert_eq!(
        total.packets,
        u64::from(N),
        "every echo request crossed xdp_count once"
    );
    // ICMP echo of 64 bytes payload: 14 + 20 + 8 + 56 = 98 bytes per frame.
    assert_eq!(total.bytes, u64::from(N) * 98);

    // Detach through the CLI; the program is gone from the link.
    b.run(&[
        lb.to_str().unwrap(),
        "xdp",
        "detach",
        "--pin",
        pin.to_str().unwrap(),
    ])
    .unwrap();
    let link = b
        .run(&["ip", "-d", "link", "show", "dev", "veth0"])
        .unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "still attached after detach: {link}"
    );
}

#[test]
fn topology_is_removed_on_drop_even_on_panic() {
    lb_tests::require_root();
    let names: Vec<String> = std::panic::catch_unwind(|| {
        let mut topo = Topology::new("panic").unwrap();
        let x = topo.ns("x").unwrap();
        let y = topo.ns("y").unwrap();
        topo.veth(&x, "v0", &y, "v0").unwrap();
        let p = x.spawn(&["sleep", "600"]).unwrap();
        topo.adopt(p);
        let names = topo
            .namespaces()
            .iter()
            .map(|n| n.name().to_owned())
            .collect::<Vec<_>>();
        std::panic::panic_any(names);
    })
    .unwrap_err()
    .downcast::<Vec<String>>()
    .map(|b| *b)
    .unwrap();
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.contains(&n), "{n} survived the panic");
    }
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 600"])
        .output()
        .unwrap();
    let me = std::process::id().to_string();
    // A `sleep 600` of ours would be a child of this process.
    for pid in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.split_whitespace().nth(3) != Some(&me),
            "sleep {pid} survived"
        );
    }
}
