//! `dataplane`: forwarded packets per second through `xdp_lb`, attached by the real
//! controller, in a generator -> LB -> sink chain of namespaces, beside a trivial
//! redirect forwarder in the LB's place (the floor of this machine).

use std::path::PathBuf;

use anyhow::Context as _;
use lb::{
    dataplane::{AttachMode, LoadOptions, load_object, load_program, pin_link},
    pktgen::PROG_FWD_FLOOR,
};
use lb_tests::{BpfPins, Ns, Topology, in_netns};

use super::Scenario;
use crate::{
    ctx::{Check, Ctx, Row},
    support::{Controller, TempDir, attach_helper, instance_name},
};

pub const SCENARIO: Scenario = Scenario {
    name: "dataplane",
    description: "forwarded Mpps: xdp_lb (L2 DSR, IP-in-IP; IPv4, IPv6; 1 / 1k / 1M flows; all-SYN) vs a trivial redirect forwarder",
    method: "\
Three namespaces joined by two veth pairs, every hop in XDP, no bridge and no socket in
the path:

```text
[gen] eth0 ──veth── eth0 [lb] eth1 ──veth── eth0 [sink]
 lb pktgen           xdp_lb (lb run)          xdp_sink: per-CPU counter, XDP_DROP
 (XDP_TX of          or xdp_fwd_floor
  live frames)       ── XDP_REDIRECT ──>
```

- The generator is `lb pktgen` (`BPF_PROG_RUN` of `xdp_gen` in XDP live-frames mode:
  this kernel has no pktgen), pinned to one core, sending TCP frames to the VIP
  (64 bytes IPv4, 78 bytes IPv6) from N distinct flows (source port and address vary).
- The LB node runs the real controller (`lb run`), one service with 4 backends whose
  `interface = \"eth1\"`: `xdp_lb` forwards with XDP_REDIRECT through its devmap (with
  L2 DSR the LB would otherwise send out of the port it received on; a second veth gives
  a clean one-way chain). Backend MACs are the sink's.
- The sink counts what arrives; the rate is the sink's count over the generator's
  sending time, so it is what was forwarded, not what was offered.
- The floor is `xdp_fwd_floor` in the LB's place: swap MACs, XDP_REDIRECT to the same
  port, one counter. Same generator, same frames, measured right before and right
  after each block of LB runs (per mode and address family); the mean of the two is the
  baseline of that block's rows.
- On veth everything a frame triggers runs on the sending core (the peer's NAPI runs in
  the generator's softirq), so a rate is one core's budget for generator + forwarder +
  sink; the ratio LB / floor is the share the LB leaves of it. The other core should be
  idle: if it is not, the round is flagged noisy.
- `ack` = established-flow traffic (conntrack hit after the first packet of each flow;
  each flow count is warmed up with one pass over its flows before measuring); `syn` =
  every packet a TCP SYN (ring lookup and conntrack write). The connection table has
  2M entries, so 1M flows fit. The target (>= 0.80x floor) applies at 1k flows, ack.",
    pinned: true,
    run,
};

const VIP4: &str = "10.200.0.1";
const VIP6: &str = "fd00:200::1";
const BACKENDS: usize = 4;

/// The namespaces and what lives in them; everything is removed on drop.
struct Chain {
    generator: Ns,
    lb: Ns,
    lb_mac: String,
    sink_mac: String,
    sink_pin: PathBuf,
    dir: TempDir,
    // Dropped last: pins (detaching the sink), then namespaces.
    pins: BpfPins,
    _topo: Topology,
}

fn chain(ctx: &Ctx) -> anyhow::Result<Chain> {
    let mut topo = Topology::new("dp")?;
    let generator = topo.ns("gen")?;
    let lb = topo.ns("lb")?;
    let sink = topo.ns("sink")?;
    topo.veth(&generator, "eth0", &lb, "eth0")?;
    topo.veth(&lb, "eth1", &sink, "eth0")?;
    let pins = BpfPins::new("dp")?;
    let sink_pin = pins.dir.join("sink");
    attach_helper(&sink, &ctx.lb, "xdp_sink", "eth0", &sink_pin)?;
    Ok(Chain {
        lb_mac: lb.mac("eth0")?,
        sink_mac: sink.mac("eth0")?,
        generator,
        lb,
        sink_pin,
        dir: TempDir::new("dp")?,
        pins,
        _topo: topo,
    })
}

/// Attaches the floor forwarder on the LB node (eth0 -> eth1) and pins its link at the
/// returned path; removing the pin detaches it.
fn attach_floor(chain: &Chain) -> anyhow::Result<PathBuf> {
    let pin = chain.pins.dir.join("floor");
    let p = pin.clone();
    in_netns(&chain.lb, move || -> anyhow::Result<()> {
        let mut ebpf = load_object(&LoadOptions {
            conntrack_size: 1024,
            max_services: 1,
        })?;
        let eth1 = lb_tests_ifindex("eth1")?;
        {
            let mut ports: aya::maps::DevMap<_> = aya::maps::DevMap::try_from(
                ebpf.map_mut(lb_common::MAP_TX_PORTS)
                    .context("no devmap in the object")?,
            )?;
            ports.set(0, eth1, None, 0)?;
        }
        let prog = load_program(&mut ebpf, PROG_FWD_FLOOR)?;
        let id = prog
            .attach("eth0", AttachMode::Drv.into())
            .context("attaching xdp_fwd_floor")?;
        pin_link(prog, id, &p)?;
        Ok(())
    })??;
    Ok(pin)
}

fn lb_tests_ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    anyhow::ensure!(i != 0, "no interface {name}");
    Ok(i)
}

fn config(chain: &Chain, instance: &str, mode: &str, v6: bool) -> String {
    let (vip, net) = if v6 {
        (VIP6, "fd00:201::")
    } else {
        (VIP4, "10.201.0.")
    };
    let backends: Vec<String> = (1..=BACKENDS)
        .map(|i| {
            format!(
                "{{ address = \"{net}{i}\", mac = \"{}\", interface = \"eth1\" }}",
                chain.sink_mac
            )
        })
        .collect();
    format!(
        "instance = \"{instance}\"\ninterface = \"eth0\"\nhash_seed = 7\nconntrack_size = 2097152\n\n\
         [[services]]\nname = \"bench\"\nvip = \"{vip}\"\nproto = \"tcp\"\nport = 80\nmode = \"{mode}\"\n\
         health = {{ kind = \"none\" }}\nbackends = [ {} ]\n",
        backends.join(", ")
    )
}

/// What one `lb pktgen` run reported.
struct Sent {
    sent_mpps: f64,
    received_mpps: f64,
    received: u64,
    sent: u64,
}

/// Runs `lb pktgen` in the generator namespace: `count` frames, or `secs` seconds.
fn pktgen(
    ctx: &Ctx,
    chain: &Chain,
    v6: bool,
    traffic: &str,
    flows: u32,
    secs: f64,
    count: Option<u64>,
) -> anyhow::Result<Sent> {
    let flows_s = flows.to_string();
    let cpu = ctx.cpu.to_string();
    let secs_s = format!("{secs}");
    let count_s = count.map(|c| c.to_string());
    let vip = if v6 { VIP6 } else { VIP4 };
    let mut args = vec![
        ctx.lb_str()?,
        "pktgen",
        "--iface",
        "eth0",
        "--engine",
        "xdp-live",
        "--traffic",
        traffic,
        "--flows",
        &flows_s,
        "--dst-mac",
        &chain.lb_mac,
        "--dst",
        vip,
        "--dport",
        "80",
        "--cpu",
        &cpu,
        "--sink",
        chain.sink_pin.to_str().context("path")?,
        "--json",
        "--quiet",
    ];
    if v6 {
        args.push("-6");
    }
    match &count_s {
        Some(c) => args.extend(["--count", c.as_str()]),
        None => args.extend(["--duration", secs_s.as_str()]),
    }
    let out = chain.generator.run(&args)?;
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).context("parsing lb pktgen --json")?;
    Ok(Sent {
        sent_mpps: v["sent_pps"].as_f64().unwrap_or(0.0) / 1e6,
        received_mpps: v["received_pps"].as_f64().unwrap_or(0.0) / 1e6,
        received: v["received"].as_u64().unwrap_or(0),
        sent: v["sent"].as_u64().unwrap_or(0),
    })
}

fn fam(v6: bool) -> &'static str {
    if v6 { "ipv6" } else { "ipv4" }
}

fn flows_label(n: u32) -> String {
    match n {
        1 => "1-flow".into(),
        n if n % 1_000_000 == 0 => format!("{}M-flows", n / 1_000_000),
        n if n % 1000 == 0 => format!("{}k-flows", n / 1000),
        n => format!("{n}-flows"),
    }
}

/// The floor forwarder's rate at 1k flows (the generator's work per frame does not
/// depend on the flow count) over `secs`, measured `when` ("before", "after") a block
/// of LB runs.
fn floor(
    ctx: &Ctx,
    chain: &Chain,
    v6: bool,
    secs: f64,
    block: &str,
    when: &str,
) -> anyhow::Result<f64> {
    let pin = attach_floor(chain)?;
    pktgen(ctx, chain, v6, "ack", 1000, secs, Some(100_000))?;
    let s = pktgen(ctx, chain, v6, "ack", 1000, secs, None)?;
    std::fs::remove_file(&pin).context("detaching the floor forwarder")?;
    ctx.progress(format!(
        "{block}: floor {when} {:.2} Mpps at the sink (sent {:.2})",
        s.received_mpps, s.sent_mpps
    ));
    Ok(s.received_mpps)
}

fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(3.0, 1.0);
    let chain = chain(ctx)?;
    let mut rows = Vec::new();

    let cases: &[(&str, u32)] = &[("ack", 1), ("ack", 1000), ("ack", 1_000_000), ("syn", 1000)];
    for mode in ["l2", "encap"] {
        for v6 in [false, true] {
            let block = format!("{mode} {}", fam(v6));
            let before = floor(ctx, &chain, v6, secs, &block, "before")?;
            let instance = instance_name();
            let ctl = Controller::start(
                &chain.lb,
                &ctx.lb,
                &chain.dir.0,
                &instance,
                &config(&chain, &instance, mode, v6),
            )?;
            let mut runs = Vec::new();
            for &(traffic, flows) in cases {
                // One pass over every flow first, so "ack" measures established flows.
                let warm = u64::from(flows).max(100_000);
                pktgen(ctx, &chain, v6, traffic, flows, secs, Some(warm))?;
                let s = pktgen(ctx, &chain, v6, traffic, flows, secs, None)?;
                let metric = format!("{block} {} {traffic}", flows_label(flows));
                ctx.progress(format!(
                    "{metric}: {:.2} Mpps at the sink (sent {:.2}), floor before {before:.2} -> {:.2}x{}",
                    s.received_mpps,
                    s.sent_mpps,
                    s.received_mpps / before,
                    if s.received < s.sent * 99 / 100 {
                        format!(
                            " ({:.1}% of the frames sent did not reach the sink)",
                            100.0 * (s.sent - s.received) as f64 / s.sent.max(1) as f64
                        )
                    } else {
                        String::new()
                    }
                ));
                runs.push((metric, traffic, flows, s.received_mpps));
            }
            // The controller saw the traffic as forwarded (not passed or dropped).
            if let Ok(st) = ctl.status(&chain.lb, &ctx.lb) {
                let r = &st["reasons"];
                let fwd = ["redirect_l2", "tx_encap", "tx_l2"]
                    .iter()
                    .map(|k| r[*k]["packets"].as_u64().unwrap_or(0))
                    .sum::<u64>();
                let other: u64 = r
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.starts_with("drop") || k.starts_with("pass"))
                    .map(|(_, v)| v["packets"].as_u64().unwrap_or(0))
                    .sum();
                ctx.progress(format!(
                    "{block}: xdp_lb forwarded {fwd} frames, passed or dropped {other}"
                ));
            }
            drop(ctl);
            // The floor again after the block: the baseline is the mean of the two, so
            // drift of this shared machine during the block weighs on both sides.
            let after = floor(ctx, &chain, v6, secs, &block, "after")?;
            let base = (before + after) / 2.0;
            rows.push(Row::new(
                format!("{block} floor (xdp_fwd_floor)"),
                base,
                "Mpps",
            ));
            for (metric, traffic, flows, mpps) in runs {
                let mut row = Row::new(metric, mpps, "Mpps").vs("xdp_fwd_floor", base);
                if traffic == "ack" && flows == 1000 {
                    row = row.target(Check::RatioAtLeast(0.8), ">= 0.80x floor");
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
