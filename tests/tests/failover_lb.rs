//! Failover test 5: two real `lb run` nodes (XDP data plane + VRRP) share the VIP; a
//! long-lived TCP stream and a keep-alive HTTP connection through the VIP survive a
//! hard failure of the master with zero resets and no lost data.
//!
//! Why it works: both nodes build identical rings from the same config (same hash
//! seed, same backend ids), and with direct server return the LB holds no TCP state
//! that matters: lb2 has never seen these flows, misses its connection table, and the
//! ring sends each flow to the backend lb1 had chosen.

use std::time::{Duration, Instant};

use lb_tests::{
    lbnet::{LbNet, Opts},
    wait_for,
};

fn vrrp_state(st: &serde_json::Value) -> String {
    st["failover"]["state"].as_str().unwrap_or("?").to_owned()
}

#[test]
fn established_connections_survive_a_hard_failover_between_xdp_lbs() {
    lb_tests::require_root();
    let mut net = LbNet::new(
        "folb",
        Opts {
            failover: true,
            ..Opts::default()
        },
    )
    .unwrap();
    net.start_controller().unwrap();
    wait_for("lb1 master", Duration::from_secs(10), || {
        (vrrp_state(&net.status().unwrap()) == "Master").then_some(())
    });
    net.start_standby().unwrap();
    wait_for("lb2 backup", Duration::from_secs(10), || {
        (vrrp_state(&net.standby_status().unwrap()) == "Backup").then_some(())
    });

    let mut stream = net.echo_conn().unwrap();
    let mut http = net.http_conn().unwrap();
    let stream_backend = stream.roundtrip("seq 0").unwrap();
    let http_backend = http.get().unwrap();
    for i in 1..50 {
        assert_eq!(
            stream.roundtrip(&format!("seq {i}")).unwrap(),
            stream_backend
        );
    }
    // Traffic so far went through lb1.
    let lb1_fwd = net.status().unwrap()["reasons"]["tx_l2"]["packets"]
        .as_u64()
        .unwrap();
    assert!(lb1_fwd > 50, "lb1 forwarded {lb1_fwd}");

    // The backup forwarded nothing: frames flooded to it by the bridge are for lb1's MAC.
    let st2 = net.standby_status().unwrap();
    assert_eq!(
        st2["reasons"]["tx_l2"]["packets"], 0,
        "the backup forwarded traffic it does not own"
    );

    // Hard failure: the controller dies with SIGKILL (no priority 0, VIP left behind)
    // and lb1's port goes down.
    let killed = Instant::now();
    net.controller.as_mut().unwrap().stop(libc::SIGKILL);
    net.sw.run(&["ip", "link", "set", "plb", "down"]).unwrap();

    // Every message of the stream and every HTTP request must come back, in order,
    // from the same backend: no reset, no loss (a lost echo would be a read timeout).
    let diag = |net: &LbNet| {
        format!(
            "lb2: {}\nclient neighbours: {}",
            net.standby_status()
                .map(|s| format!("{} {}", s["failover"], s["reasons"]))
                .unwrap_or_default(),
            net.client.run(&["ip", "neigh"]).unwrap_or_default()
        )
    };
    let mut slowest = Duration::ZERO;
    for i in 50..150 {
        let t = Instant::now();
        let got = stream
            .roundtrip(&format!("seq {i}"))
            .unwrap_or_else(|e| panic!("stream at {i}: {e}\n{}", diag(&net)));
        assert_eq!(got, stream_backend, "stream moved at {i}");
        assert_eq!(
            http.get().unwrap(),
            http_backend,
            "keep-alive connection moved at {i}"
        );
        slowest = slowest.max(t.elapsed());
    }
    let st2 = net.standby_status().unwrap();
    assert_eq!(
        vrrp_state(&st2),
        "Master",
        "traffic resumed, so lb2 must have taken over"
    );
    let lb2_fwd = st2["reasons"]["tx_l2"]["packets"].as_u64().unwrap();
    assert!(
        lb2_fwd >= 200,
        "lb2 carried the connections after the failover ({lb2_fwd})"
    );
    let vip = net.vip.to_string();
    let addrs = net
        .standby
        .as_ref()
        .unwrap()
        .ns
        .run(&["ip", "-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(addrs.contains(&vip), "lb2 owns the VIP: {addrs}");
    // New connections work too.
    assert_eq!(net.fetch_names(20).unwrap().len(), 20);
    println!(
        "hard failover: longest stall of one roundtrip {slowest:?}; all 100 stream and 100 HTTP roundtrips after the kill succeeded ({:?} since the kill)",
        killed.elapsed()
    );
}
