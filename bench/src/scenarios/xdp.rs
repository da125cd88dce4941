//! `xdp`: nanoseconds per packet of `xdp_lb` through `BPF_PROG_TEST_RUN` with `repeat`,
//! on the conntrack-hit path and the SYN path, beside the trivial `xdp_tx` measured in
//! the same round (the floor).

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::Context as _;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb::{
    config::{Config, parse_mac},
    dataplane::{Dataplane, LoadOptions, load_object, load_program},
    pktgen::{FrameSpec, Traffic, build_frame},
    reconcile::{Reconciler, Runtime},
};
use lb_common::reason;

use super::Scenario;
use crate::ctx::{Check, Ctx, Row};

pub const SCENARIO: Scenario = Scenario {
    name: "xdp",
    description: "xdp_lb ns/packet (BPF_PROG_TEST_RUN) vs a trivial XDP_TX program",
    method: "\
The XDP object is loaded in-process with one TCP service (VIP port 80, L2 direct server
return, 4 backends, Maglev ring of 65537) written by the controller's own reconciler.
`BPF_PROG_TEST_RUN` runs a program `repeat` times on one frame (no NIC, no driver) and
reports the mean time per run; each figure is the median of 7 calls of 1M repeats (100k
under `--quick`) on a thread pinned to one core.
- **hit path**: a TCP ACK of a flow already in the connection table (the first run
  inserts it; the counters confirm every other run was a hit). Established TCP is
  served from the per-CPU flow cache in front of the table (an array slot, no hash-map
  call); every 256th packet of a flow goes through the table itself.
- **SYN path**: a TCP SYN, which always takes the ring (`ring_slot(flow_hash, M)`) and
  rewrites its conntrack entry. The same frame repeats, so after the first run this is
  the SYN of a tuple already in the table (a retransmission): the entry is rewritten in
  place. A SYN of a new tuple also pays an LRU insert, which this figure does not show.
  The service lookup comes from the per-CPU service cache (valid until the controller
  next writes a change).
- **floor**: `xdp_tx` (swap MACs, XDP_TX, one per-CPU counter) on the same frame.
Frames are 64 bytes (IPv4) and 78 bytes (IPv6, the smallest TCP frame). The ratio is LB
time / floor time within the round.",
    pinned: true,
    run,
};

const VIP4: &str = "10.200.0.1";
const VIP6: &str = "fd00:200::1";

fn config() -> anyhow::Result<Config> {
    let mut text = String::from("instance = \"bench\"\ninterface = \"eth0\"\nhash_seed = 7\n");
    for (name, vip, net) in [("v4", VIP4, "10.201.0."), ("v6", VIP6, "fd00:201::")] {
        let backends: Vec<String> = (1..=4)
            .map(|i| format!("{{ address = \"{net}{i}\", mac = \"02:00:00:00:02:0{i}\" }}"))
            .collect();
        text += &format!(
            "[[services]]\nname = \"{name}\"\nvip = \"{vip}\"\nproto = \"tcp\"\nport = 80\nmode = \"l2\"\n\
             health = {{ kind = \"none\" }}\nbackends = [ {} ]\n",
            backends.join(", ")
        );
    }
    Ok(Config::parse(&text, "xdp-bench.toml")?)
}

fn frame(v6: bool, traffic: Traffic) -> anyhow::Result<Vec<u8>> {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        ("fd00:99::1:0".parse()?, VIP6.parse()?)
    } else {
        ("10.99.0.1".parse()?, VIP4.parse()?)
    };
    let len = if v6 { 74 } else { 60 };
    let spec = FrameSpec {
        traffic,
        len,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src,
        dst,
        sport: 40000,
        dport: 80,
    };
    Ok(build_frame(&spec, 1)?.0)
}

/// Median over `calls` of the kernel's mean ns per run with `repeat`.
fn ns_per_packet(prog: &Xdp, frame: &[u8], repeat: u32, calls: usize) -> anyhow::Result<f64> {
    let mut v = Vec::with_capacity(calls);
    for _ in 0..calls {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN with repeat")?;
        v.push(r.duration.as_nanos() as f64);
    }
    crate::report::Stat::of(&v)
        .map(|s| s.median)
        .context("no runs")
}

fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let repeat = ctx.pick(1_000_000, 100_000);
    let progress = |m: String| ctx.progress(m);
    ctx.pinned(|| -> anyhow::Result<Vec<Row>> {
        let cfg = config()?;
        let mut dp = Dataplane::load(&LoadOptions {
            conntrack_size: 65536,
            max_services: 4,
        })?;
        let mut rt = Runtime::default();
        for s in cfg.services() {
            for b in &s.backends {
                let mac = b.mac.as_deref().and_then(parse_mac).context("backend MAC")?;
                rt.macs.insert(b.address, mac);
            }
        }
        Reconciler::default().apply(&mut dp.maps, &cfg, &rt)?;
        let mut floor_obj = load_object(&LoadOptions {
            conntrack_size: 1024,
            max_services: 1,
        })?;
        let floor = load_program(&mut floor_obj, lb_common::PROG_TX)?;
        let lb = dp.program().context("xdp_lb not loaded")?;
        let mut rows = Vec::new();
        let mut counts = BTreeMap::new();
        for v6 in [false, true] {
            let fam = if v6 { "ipv6" } else { "ipv4" };
            let ack = frame(v6, Traffic::Ack)?;
            let syn = frame(v6, Traffic::Syn)?;
            let floor_ns = ns_per_packet(floor, &ack, repeat, 7)?;
            let hits_now = |dp: &Dataplane| -> anyhow::Result<u64> {
                Ok(dp.reason(reason::EVENT_CONNTRACK_HIT)?.packets
                    + dp.reason(reason::EVENT_FLOW_CACHE_HIT)?.packets)
            };
            let hit0 = hits_now(&dp)?;
            let hit_ns = ns_per_packet(lb, &ack, repeat, 7)?;
            let hits = hits_now(&dp)? - hit0;
            let syn_ns = ns_per_packet(lb, &syn, repeat, 7)?;
            counts.insert(fam, hits);
            progress(format!(
                "{fam}: floor {floor_ns:.1} ns, hit path {hit_ns:.1} ns ({hits} conntrack hits of {} runs), SYN path {syn_ns:.1} ns",
                7 * u64::from(repeat)
            ));
            rows.push(Row::new(format!("{fam} floor xdp_tx"), floor_ns, "ns/pkt"));
            rows.push(
                Row::new(format!("{fam} hit path (TCP ACK, conntrack hit)"), hit_ns, "ns/pkt")
                    .vs("xdp_tx_floor", floor_ns)
                    .target(Check::RatioAtMost(3.0), "<= 3x floor"),
            );
            rows.push(
                Row::new(format!("{fam} SYN path (ring + conntrack write)"), syn_ns, "ns/pkt")
                    .vs("xdp_tx_floor", floor_ns)
                    .target(Check::RatioAtMost(5.0), "<= 5x floor"),
            );
        }
        for (fam, hits) in counts {
            if hits + 1 < 7 * u64::from(repeat) {
                progress(format!(
                    "warning: {fam} hit path saw only {hits} conntrack hits: the figure is not the hit path"
                ));
            }
        }
        Ok(rows)
    })?
}
