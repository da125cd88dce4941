//! The XDP data plane with real packets: a client opens real TCP connections to the
//! VIP through the LB namespace (the real `lb run`, the real `xdp_lb` in driver mode,
//! and once in generic mode) to backend namespaces running real servers bound to the
//! VIP; replies return directly (DSR).

use std::collections::BTreeMap;

use lb_tests::lbnet::{LbNet, Opts};

/// Opens 1000 connections; each connection's bytes must come from one backend and the
/// spread must be within 15% of even.
fn spread(tag: &str, opts: Opts) {
    lb_tests::require_root();
    let mut net = LbNet::new(tag, opts).unwrap();
    net.start_controller().unwrap();
    // Attached the way the config asked: `xdpgeneric` for skb mode, `xdp` (driver).
    let link = net
        .lb
        .output(&["ip", "-d", "link", "show", "eth0"])
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    let generic = link.contains("xdpgeneric");
    assert_eq!(generic, net.opts.xdp_mode == "skb", "{link}");
    let names = net.fetch_names(1000).unwrap();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for n in names {
        *count.entry(n).or_default() += 1;
    }
    println!("{tag}: {count:?}");
    assert_eq!(count.len(), 3, "all three backends serve: {count:?}");
    let even = 1000.0 / 3.0;
    for (b, c) in &count {
        let dev = (*c as f64 - even).abs() / even;
        assert!(
            dev <= 0.15,
            "{b} got {c} of 1000 ({:.1}% off even)",
            dev * 100.0
        );
    }
    // The data plane counted what it forwarded, per backend and per exit reason.
    let st = net.status().unwrap();
    let svc = &st["services"][0];
    assert_eq!(svc["name"], "name");
    let fwd = if net.opts.mode == "encap" {
        "tx_encap"
    } else {
        "tx_l2"
    };
    assert!(
        st["reasons"][fwd]["packets"].as_u64().unwrap() >= 3000,
        "{}",
        st["reasons"]
    );
    for b in svc["backends"].as_array().unwrap() {
        assert!(b["packets"].as_u64().unwrap() > 0, "{b}");
    }
}

#[test]
fn l2_dsr_ipv4_1000_connections_spread_evenly() {
    spread("dsr4", Opts::default());
}

#[test]
fn l2_dsr_ipv6_1000_connections_spread_evenly() {
    spread(
        "dsr6",
        Opts {
            v6: true,
            ..Opts::default()
        },
    );
}

/// The same through generic (skb-mode) XDP, for NICs without a native XDP driver.
#[test]
fn l2_dsr_ipv4_generic_xdp_1000_connections_spread_evenly() {
    spread(
        "dsrskb",
        Opts {
            xdp_mode: "skb",
            ..Opts::default()
        },
    );
}

#[test]
fn ipip_ipv4_1000_connections_spread_evenly() {
    spread(
        "ipip4",
        Opts {
            mode: "encap",
            ..Opts::default()
        },
    );
}

#[test]
fn ipip_ipv6_1000_connections_spread_evenly() {
    spread(
        "ipip6",
        Opts {
            v6: true,
            mode: "encap",
            ..Opts::default()
        },
    );
}

/// Removing a backend from the config leaves established connections to the
/// surviving backends on their backend (conntrack + Maglev's minimal disruption).
#[test]
fn changing_the_backend_set_keeps_established_connections() {
    lb_tests::require_root();
    let mut net = LbNet::new("keep", Opts::default()).unwrap();
    net.start_controller().unwrap();
    let mut conns = Vec::new();
    for i in 0..30 {
        let mut c = net.echo_conn().unwrap();
        let b = c.roundtrip(&format!("hello {i}")).unwrap();
        conns.push((c, b));
    }
    assert!(
        conns.iter().any(|(_, b)| b == "b3"),
        "some connection on b3"
    );
    net.write_config(&[0, 1]).unwrap();
    net.lb_cmd(&["reload"]).unwrap();
    for (i, (c, b)) in conns.iter_mut().enumerate() {
        if b == "b3" {
            continue;
        }
        let now = c.roundtrip(&format!("again {i}")).unwrap();
        assert_eq!(&now, b, "connection {i} moved");
    }
    let names = net.fetch_names(60).unwrap();
    assert!(
        names.iter().all(|n| n != "b3"),
        "a removed backend got new connections"
    );
}
