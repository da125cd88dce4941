//! `lb pktgen` and the `xdp_sink` counter, end to end over a veth pair: the generator
//! sends exactly the frames it is asked for and the sink counts exactly what arrives;
//! the frames are valid (the receiver's own UDP stack, which verifies checksums, accepts
//! every one) and come from the asked number of distinct flows. No timing assertions:
//! the benchmarks measure rates, this only proves the tools count right.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use lb_tests::{BpfPins, Ns, Topology, bin_path, in_netns};

fn lb() -> String {
    bin_path("lb").to_str().expect("utf-8 path").to_owned()
}

fn attach(ns: &Ns, prog: &str, pin: &Path) {
    ns.run(&[
        &lb(),
        "xdp",
        "attach",
        "--prog",
        prog,
        "--iface",
        "veth0",
        "--pin",
        pin.to_str().unwrap(),
    ])
    .unwrap();
}

fn pktgen(ns: &Ns, extra: &[&str]) -> serde_json::Value {
    let lb = lb();
    let mut args = vec![
        lb.as_str(),
        "pktgen",
        "--iface",
        "veth0",
        "--json",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let out = ns.run(&args).unwrap();
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn pktgen_sends_exactly_n_and_the_sink_counts_exactly_n() {
    let mut t = Topology::new("pktgen").unwrap();
    let a = t.ns("a").unwrap();
    let b = t.ns("b").unwrap();
    // No IPv6 on the sending side: its router solicitations would reach the sink too.
    a.sysctl("net.ipv6.conf.default.disable_ipv6", "1").unwrap();
    a.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    t.veth(&a, "veth0", &b, "veth0").unwrap();
    let pins = BpfPins::new("pktgen").unwrap();
    let sink = pins.dir.join("sink");
    // XDP_TX on a veth only arrives when the peer runs XDP: the sink is that program.
    attach(&b, "xdp_sink", &sink);
    let sink_s = sink.to_str().unwrap();
    for (traffic, v6, flows) in [
        ("udp", false, "1"),
        ("ack", false, "1000"),
        ("syn", true, "70000"),
        ("udp", true, "7"),
    ] {
        let mut args = vec![
            "--traffic",
            traffic,
            "--count",
            "5000",
            "--flows",
            flows,
            "--sink",
            sink_s,
        ];
        if v6 {
            args.push("-6");
        }
        let r = pktgen(&a, &args);
        assert_eq!(r["sent"], 5000, "{traffic} v6={v6}: {r}");
        assert_eq!(
            r["received"], 5000,
            "{traffic} v6={v6}: the sink counted what was sent: {r}"
        );
    }
}

#[test]
fn pktgen_frames_pass_the_receivers_checksums_with_distinct_flows() {
    let mut t = Topology::new("pktgenudp").unwrap();
    let a = t.ns("a").unwrap();
    let b = t.ns("b").unwrap();
    t.veth(&a, "veth0", &b, "veth0").unwrap();
    a.addr("veth0", "10.79.0.1/24").unwrap();
    b.addr("veth0", "10.79.0.2/24").unwrap();
    a.addr("veth0", "fd00:79::1/64").unwrap();
    b.addr("veth0", "fd00:79::2/64").unwrap();
    let pins = BpfPins::new("pktgenudp").unwrap();
    attach(&b, "xdp_pass", &pins.dir.join("pass"));
    let mac = b.mac("veth0").unwrap();
    for (src, dst, v6) in [
        ("10.79.0.1", "10.79.0.2", false),
        ("fd00:79::1", "fd00:79::2", true),
    ] {
        let bind: SocketAddr = format!("{}:9000", if v6 { "[::]" } else { "0.0.0.0" })
            .parse()
            .unwrap();
        let sock = in_netns(&b, move || UdpSocket::bind(bind))
            .unwrap()
            .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        // Room for every datagram even if this thread is not scheduled for a while
        // (SO_RCVBUFFORCE: we are root; the default buffer holds ~50 of them).
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        const N: u64 = 400;
        const FLOWS: u64 = 40;
        // Read while the generator sends: the frames arrive faster than a socket
        // buffer's worth.
        let reader = std::thread::spawn(move || {
            let mut got = 0u64;
            let mut ports = BTreeSet::new();
            let mut lens = BTreeSet::new();
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = sock.recv_from(&mut buf) {
                lens.insert(len);
                ports.insert((from.ip().to_string(), from.port()));
                got += 1;
            }
            (got, ports, lens)
        });
        let (n, f) = (N.to_string(), FLOWS.to_string());
        let mut args = vec![
            "--traffic",
            "udp",
            "--count",
            &n,
            "--flows",
            &f,
            "--dst-mac",
            &mac,
            "--src",
            src,
            "--dst",
            dst,
            "--dport",
            "9000",
            "--size",
            "128",
            "--rate",
            "20000",
        ];
        if v6 {
            args.push("-6");
        }
        let r = pktgen(&a, &args);
        assert_eq!(r["sent"], N, "{r}");
        let (got, ports, lens) = reader.join().unwrap();
        // 128-byte frame without FCS: 124 - 14 - IP header - 8 (UDP header).
        let want = 124 - 14 - if v6 { 40 } else { 20 } - 8;
        assert_eq!(lens, BTreeSet::from([want]), "datagram lengths");
        assert!(ports.iter().all(|(ip, _)| ip == src), "{ports:?}");
        assert_eq!(
            got, N,
            "every frame passed the receiver's IP/UDP checks (v6={v6})"
        );
        assert_eq!(ports.len() as u64, FLOWS, "distinct source ports (v6={v6})");
    }
}
