//! `lb pktgen`: a pktgen-class traffic generator for the benchmarks.
//!
//! Two engines:
//! - **kernel**: where the kernel has pktgen (`/proc/net/pktgen`), drive it. Kernel
//!   pktgen only builds UDP, so TCP traffic always uses the other engine.
//! - **xdp-live** (this kernel: no `CONFIG_NET_PKTGEN`): `BPF_PROG_RUN` of `xdp_gen`
//!   in XDP live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`), the mechanism of xdp-tools'
//!   `xdp-trafficgen`. The kernel runs the program `repeat` times on frames from a page
//!   pool initialised from our template; each XDP_TX goes out of the interface named in
//!   the context's `ingress_ifindex` (so the calling thread must be in that interface's
//!   network namespace). `xdp_gen` gives each frame the next of `--flows` distinct
//!   source port/address pairs and fixes the checksums incrementally.
//!
//! On a veth, XDP_TX only delivers when the PEER end runs an XDP program (an
//! `xdp_pass`, or the `xdp_sink` that counts what arrives). With `--sink PIN` the
//! generator reads that sink's per-CPU counter before and after, so the forwarded rate
//! is measured at the receiving end, not assumed.
//!
//! # Layout
//! - [`PktgenArgs`], [`run`]: the command line
//! - [`FrameSpec`], [`build_frame`]: the template frame and the generator's config
//! - [`generate`]: the engines, returning a [`Report`]

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions},
};
use lb_common::{Counter, PROTO_TCP, PROTO_UDP, hash::csum_fold};

use crate::dataplane::{LoadOptions, load_object, load_program, sum};

pub use lb_common::pktgen::{
    GenConfig, MAP_GEN_CONFIG, PORT_STRIDE, PORTS_PER_ADDR, PROG_FWD_FLOOR, PROG_GEN,
    TEMPLATE_WORDS,
};
/// Largest live-frames batch the kernel accepts.
const MAX_BATCH: u32 = 256;
/// Where kernel pktgen lives when it is built.
const PROC_PKTGEN: &str = "/proc/net/pktgen";

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Traffic {
    /// UDP datagrams.
    Udp,
    /// TCP SYNs: every packet opens a connection (the LB's SYN path).
    Syn,
    /// TCP ACKs: established-flow traffic (the LB's conntrack-hit path).
    Ack,
}

/// Which generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Kernel pktgen when present and the traffic is UDP, else xdp-live.
    Auto,
    /// Kernel pktgen (`/proc/net/pktgen`).
    Kernel,
    /// BPF_PROG_RUN in XDP live-frames mode.
    XdpLive,
}

/// Command-line options of `lb pktgen`.
#[derive(clap::Args, Debug, Clone)]
pub struct PktgenArgs {
    /// Interface to send out of (in this process's network namespace).
    #[arg(long, short)]
    pub iface: String,
    /// IPv6 (default IPv4).
    #[arg(long, short = '6')]
    pub ipv6: bool,
    /// Packet kind.
    #[arg(long, value_enum, default_value = "udp")]
    pub traffic: Traffic,
    /// Frame size in bytes as counted on the wire, 4-byte FCS included (64 = minimum
    /// Ethernet frame; the buffer sent is 4 bytes shorter). Raised to what the headers need.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Distinct flows (source port and the low 16 bits of the source address vary).
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Packets per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to run (ignored with --count).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Send exactly this many frames, then stop.
    #[arg(long)]
    pub count: Option<u64>,
    /// Destination MAC (the next hop: the LB, or the receiver).
    #[arg(long, default_value = "ff:ff:ff:ff:ff:ff")]
    pub dst_mac: String,
    /// Source MAC (default: the interface's).
    #[arg(long)]
    pub src_mac: Option<String>,
    /// Source address of flow 0 (default 10.99.0.1 / fd00:99::1:0).
    #[arg(long)]
    pub src: Option<IpAddr>,
    /// Destination address, e.g. the VIP (default 10.200.0.1 / fd00:200::1).
    #[arg(long)]
    pub dst: Option<IpAddr>,
    /// Source port of flow 0.
    #[arg(long, default_value_t = 1024)]
    pub sport: u16,
    /// Destination port.
    #[arg(long, default_value_t = 80)]
    pub dport: u16,
    /// Frames per live-frames batch (1-256).
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Pin the generator to this CPU (everything it triggers on a veth runs there too).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Read the per-CPU counter of the `xdp_sink` whose link is pinned at PIN (as given
    /// to `lb xdp attach --pin`), and report what arrived.
    #[arg(long, value_name = "PIN")]
    pub sink: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: Engine,
    /// XDP program that makes the frames (xdp-live); `xdp_tx` sends the template
    /// unchanged, which measures what the flow rewriting costs.
    #[arg(long, default_value = PROG_GEN, hide = true)]
    pub prog: String,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What a run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub engine: &'static str,
    pub traffic: Traffic,
    pub frame_bytes: usize,
    pub flows: u32,
    pub sent: u64,
    pub seconds: f64,
    pub sent_pps: f64,
    /// Frames the sink counted, when `--sink` was given.
    pub received: Option<u64>,
    pub received_pps: Option<f64>,
}

/// Runs the generator with `args` and prints its report.
pub fn run(args: &PktgenArgs) -> anyhow::Result<()> {
    let r = generate(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let mut line = format!(
            "{}: sent {} frames of {} bytes over {} flows in {:.2} s: {:.3} Mpps",
            r.engine,
            r.sent,
            r.frame_bytes,
            r.flows,
            r.seconds,
            r.sent_pps / 1e6
        );
        if let (Some(n), Some(pps)) = (r.received, r.received_pps) {
            let _ = write!(line, "; sink counted {n} ({:.3} Mpps)", pps / 1e6);
        }
        println!("{line}");
    }
    Ok(())
}

/// The template frame's shape.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub traffic: Traffic,
    /// Frame bytes without FCS.
    pub len: usize,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

const ETH_LEN: usize = 14;

/// Bytes of Ethernet + IP + L4 headers.
pub fn header_len(v6: bool, traffic: Traffic) -> usize {
    ETH_LEN + if v6 { 40 } else { 20 } + if traffic == Traffic::Udp { 8 } else { 20 }
}

fn sum_words(bytes: &[u8]) -> u64 {
    bytes
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn l4_checksum(src: &IpAddr, dst: &IpAddr, proto: u8, seg: &[u8]) -> u16 {
    let mut s = match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => sum_words(&a.octets()) + sum_words(&b.octets()),
        (IpAddr::V6(a), IpAddr::V6(b)) => sum_words(&a.octets()) + sum_words(&b.octets()),
        _ => 0,
    };
    s += u64::from(proto) + seg.len() as u64 + sum_words(seg);
    match csum_fold(s) {
        0 => 0xffff,
        c => c,
    }
}

/// Builds the template frame and the generator config for `flows` flows. Checksums
/// are complete (no offload metadata survives an XDP_TX).
pub fn build_frame(spec: &FrameSpec, flows: u32) -> anyhow::Result<(Vec<u8>, GenConfig)> {
    let v6 = match (spec.src, spec.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => bail!("source and destination must be of one address family"),
    };
    let hdr = header_len(v6, spec.traffic);
    anyhow::ensure!(
        spec.len >= hdr && spec.len <= 3000,
        "frame length {} outside {hdr}..=3000 bytes",
        spec.len
    );
    let mut f = vec![0u8; spec.len];
    f[0..6].copy_from_slice(&spec.dst_mac);
    f[6..12].copy_from_slice(&spec.src_mac);
    let l4 = if v6 { ETH_LEN + 40 } else { ETH_LEN + 20 };
    let ip_len = spec.len - ETH_LEN;
    let l4_len = spec.len - l4;
    let proto = if spec.traffic == Traffic::Udp {
        PROTO_UDP
    } else {
        PROTO_TCP
    };
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut f[ETH_LEN..ETH_LEN + 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = csum_fold(sum_words(ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let ip = &mut f[ETH_LEN..ETH_LEN + 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
        }
        _ => unreachable!("checked above"),
    }
    f[l4..l4 + 2].copy_from_slice(&spec.sport.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&spec.dport.to_be_bytes());
    let csum_off = if spec.traffic == Traffic::Udp {
        f[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        l4 + 6
    } else {
        f[l4 + 4..l4 + 8].copy_from_slice(&0x1000_0000u32.to_be_bytes()); // seq
        if spec.traffic == Traffic::Ack {
            f[l4 + 8..l4 + 12].copy_from_slice(&0x2000_0000u32.to_be_bytes());
        }
        f[l4 + 12] = 5 << 4;
        f[l4 + 13] = if spec.traffic == Traffic::Syn {
            0x02
        } else {
            0x10
        };
        f[l4 + 14..l4 + 16].copy_from_slice(&0xffffu16.to_be_bytes());
        l4 + 16
    };
    let c = l4_checksum(&spec.src, &spec.dst, proto, &f[l4..]);
    f[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());

    let src_off = if v6 {
        ETH_LEN + 8 + 14
    } else {
        ETH_LEN + 12 + 2
    };
    let hdr_len = hdr.min(TEMPLATE_WORDS * 8);
    let mut template = [0u64; TEMPLATE_WORDS];
    for (i, w) in template.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        for (j, x) in b.iter_mut().enumerate() {
            *x = f.get(i * 8 + j).copied().unwrap_or(0);
        }
        // The program stores these words as they lie in memory.
        *w = u64::from_ne_bytes(b);
    }
    let cfg = GenConfig {
        flows: flows.max(1),
        hdr_len: hdr_len as u32,
        src_off: src_off as u32,
        sport_off: l4 as u32,
        l4_csum_off: csum_off as u32,
        ip_csum_off: if v6 { 0 } else { (ETH_LEN + 10) as u32 },
        sport_base: spec.sport,
        src_base: u16::from_be_bytes([f[src_off], f[src_off + 1]]),
        _pad: 0,
        template,
    };
    Ok((f, cfg))
}

/// Source port and last 16 source-address bits of flow `n` (what `xdp_gen` writes).
pub fn flow_fields(cfg: &GenConfig, n: u32) -> (u16, u16) {
    let sport = cfg
        .sport_base
        .wrapping_add(((n % PORTS_PER_ADDR) * PORT_STRIDE % PORTS_PER_ADDR) as u16);
    let src = cfg.src_base.wrapping_add((n / PORTS_PER_ADDR) as u16);
    (sport, src)
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    crate::config::parse_mac(s).with_context(|| format!("{s:?} is not a MAC address"))
}

/// MAC of `iface` in this thread's network namespace (SIOCGIFHWADDR).
pub fn iface_mac(iface: &str) -> anyhow::Result<[u8; 6]> {
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    anyhow::ensure!(iface.len() < req.ifr_name.len(), "interface name too long");
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills `req`, which outlives the call.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r != 0 {
        bail!("reading the MAC of {iface}: {err}");
    }
    // SAFETY: the kernel filled ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(iface).context("interface name")?;
    // SAFETY: NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no interface {iface} in this network namespace");
    }
    Ok(idx)
}

/// Pins the calling thread to `cpu`.
pub fn pin_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads the per-CPU packet counter of a sink: `pin` is the link pin given to
/// `lb xdp attach` (its counter sits at [`crate::dataplane::sink_pin`]) or the counter
/// map's own pin.
pub fn read_sink(pin: &Path) -> anyhow::Result<u64> {
    let counter = crate::dataplane::sink_pin(pin);
    let path = if counter.exists() {
        counter
    } else {
        pin.to_owned()
    };
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening the sink counter {}", path.display()))?;
    let map: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(aya::maps::Map::from_map_data(data)?)
            .context("the sink counter is not a per-CPU array")?;
    Ok(sum(&map.get(&0, 0)?).packets)
}

fn spec_from(args: &PktgenArgs) -> anyhow::Result<FrameSpec> {
    let (src, dst) = if args.ipv6 {
        (
            args.src.unwrap_or("fd00:99::1:0".parse()?),
            args.dst.unwrap_or("fd00:200::1".parse()?),
        )
    } else {
        (
            args.src.unwrap_or("10.99.0.1".parse()?),
            args.dst.unwrap_or("10.200.0.1".parse()?),
        )
    };
    anyhow::ensure!(
        src.is_ipv6() == args.ipv6 && dst.is_ipv6() == args.ipv6,
        "--src/--dst must be IPv{} addresses",
        if args.ipv6 { 6 } else { 4 }
    );
    let min = header_len(args.ipv6, args.traffic) + 4;
    Ok(FrameSpec {
        traffic: args.traffic,
        len: args.size.max(min).max(64) - 4,
        src_mac: match &args.src_mac {
            Some(m) => parse_mac(m)?,
            None => iface_mac(&args.iface)?,
        },
        dst_mac: parse_mac(&args.dst_mac)?,
        src,
        dst,
        sport: args.sport,
        dport: args.dport,
    })
}

/// Progress line every second on stderr.
struct Progress {
    quiet: bool,
    start: Instant,
    last: Instant,
    last_sent: u64,
    last_rx: u64,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Self {
            quiet,
            start: now,
            last: now,
            last_sent: 0,
            last_rx: 0,
        }
    }

    fn tick(&mut self, engine: &str, sent: u64, rx: Option<u64>) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        if self.quiet || dt < 1.0 {
            return;
        }
        let mut line = format!(
            "pktgen {engine}: {:6.1} s  sent {:>12}  {:7.3} Mpps",
            now.duration_since(self.start).as_secs_f64(),
            sent,
            (sent - self.last_sent) as f64 / dt / 1e6
        );
        if let Some(rx) = rx {
            let _ = write!(
                line,
                "  sink {:7.3} Mpps",
                rx.saturating_sub(self.last_rx) as f64 / dt / 1e6
            );
            self.last_rx = rx;
        }
        eprintln!("{line}");
        self.last = now;
        self.last_sent = sent;
    }
}

/// Runs the generator; returns what it sent (and what the sink counted).
pub fn generate(args: &PktgenArgs) -> anyhow::Result<Report> {
    if let Some(cpu) = args.cpu {
        pin_cpu(cpu)?;
    }
    let kernel = Path::new(PROC_PKTGEN).join("pgctrl").exists();
    let engine = match args.engine {
        Engine::Auto if kernel && args.traffic == Traffic::Udp => Engine::Kernel,
        Engine::Auto => Engine::XdpLive,
        Engine::Kernel if !kernel => bail!(
            "this kernel has no pktgen ({PROC_PKTGEN}; CONFIG_NET_PKTGEN / `modprobe pktgen`): use --engine xdp-live"
        ),
        Engine::Kernel if args.traffic != Traffic::Udp => {
            bail!("kernel pktgen only builds UDP: use --engine xdp-live for TCP")
        }
        e => e,
    };
    let spec = spec_from(args)?;
    let sink_before = args.sink.as_deref().map(read_sink).transpose()?;
    let (name, sent, seconds) = match engine {
        Engine::Kernel => ("kernel", kernel_pktgen(args, &spec)?, None),
        _ => {
            let (sent, secs) = xdp_live(args, &spec, sink_before)?;
            ("xdp-live", sent, Some(secs))
        }
    };
    let seconds = seconds.unwrap_or(args.duration);
    // Frames still in flight between generator and sink: let them land.
    std::thread::sleep(Duration::from_millis(50));
    let received = match (&args.sink, sink_before) {
        (Some(pin), Some(before)) => Some(read_sink(pin)?.saturating_sub(before)),
        _ => None,
    };
    Ok(Report {
        engine: name,
        traffic: args.traffic,
        frame_bytes: spec.len + 4,
        flows: args.flows.max(1),
        sent,
        seconds,
        sent_pps: sent as f64 / seconds.max(1e-9),
        received,
        received_pps: received.map(|n| n as f64 / seconds.max(1e-9)),
    })
}

/// The live-frames engine; returns frames sent and seconds taken.
fn xdp_live(args: &PktgenArgs, spec: &FrameSpec, sink0: Option<u64>) -> anyhow::Result<(u64, f64)> {
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch),
        "--batch must be 1..={MAX_BATCH}"
    );
    let (frame, cfg) = build_frame(spec, args.flows)?;
    let ifindex = ifindex(&args.iface)?;
    // Small maps: this object only runs the generator.
    let mut ebpf = load_object(&LoadOptions {
        conntrack_size: 1024,
        max_services: 1,
    })?;
    {
        let mut map: Array<_, GenConfig> = Array::try_from(
            ebpf.map_mut(MAP_GEN_CONFIG)
                .context("the XDP object has no generator config map (rebuild lb)")?,
        )?;
        map.set(0, cfg, 0).context("writing the generator config")?;
    }
    let prog = load_program(&mut ebpf, &args.prog)?;
    let _parked = Parked::new(prog, args.quiet);
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex. The kernel wants data = data_meta = 0 and data_end = the length.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());

    let limit = args.count;
    let deadline = Duration::from_secs_f64(args.duration.max(0.0));
    // Per syscall: unpaced, ~10 ms of frames at 7 Mpps; paced, 1 ms of the rate.
    let chunk: u64 = if args.rate > 0 {
        (args.rate / 1000).clamp(1, 1 << 16)
    } else {
        1 << 16
    };
    let mut progress = Progress::new(args.quiet);
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = start.elapsed();
        let want = match limit {
            Some(n) if sent >= n => break,
            Some(n) => (n - sent).min(chunk),
            None if elapsed >= deadline => break,
            None => chunk,
        };
        if args.rate > 0 {
            // Send only what the rate allows so far; sleep until the next chunk is due.
            let due = (elapsed.as_secs_f64() * args.rate as f64) as u64;
            if sent >= due {
                let wake = (sent + want) as f64 / args.rate as f64;
                let now = start.elapsed().as_secs_f64();
                if wake > now {
                    std::thread::sleep(Duration::from_secs_f64((wake - now).min(0.05)));
                }
                continue;
            }
        }
        let want = want.min(u64::from(u32::MAX)) as u32;
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            repeat: want,
            attrs: TestRunAttrs::new().xdp_live_frames(args.batch),
            ..TestRunOptions::new()
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "BPF_PROG_RUN in live-frames mode on {}: {e} (needs Linux >= 5.18)",
                args.iface
            )
        })?;
        sent += u64::from(want);
        let rx = match (&args.sink, sink0) {
            (Some(p), Some(b)) if !args.quiet => read_sink(p).ok().map(|n| n - b.min(n)),
            _ => None,
        };
        progress.tick("xdp-live", sent, rx);
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

/// Keeps the generator program attached (driver mode) to an idle veth pair of its own
/// while it runs.
///
/// Why: every `BPF_PROG_RUN` of an XDP program adds it to the kernel's XDP dispatcher
/// and removes it again afterwards, and each change waits for an RCU grace period
/// (`bpf_dispatcher_change_prog` -> `synchronize_rcu`): measured here, that left the
/// generator idle two thirds of the time (~2 Mpps instead of ~6+). While the program is
/// attached somewhere the dispatcher already holds it, the per-run add/remove only
/// moves a reference count, and no grace period is waited for. The pair stays down, so
/// nothing ever runs the program through it; it is deleted on drop.
struct Parked {
    name: Option<String>,
}

impl Parked {
    fn new(prog: &mut aya::programs::Xdp, quiet: bool) -> Self {
        let name = format!("lbpg{}", std::process::id());
        let peer = format!("{name}p");
        let ok = std::process::Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if !quiet {
                eprintln!(
                    "pktgen: could not create the veth pair that keeps the generator in the XDP dispatcher; running slower"
                );
            }
            return Self { name: None };
        }
        let parked = Self { name: Some(name) };
        if let Some(n) = &parked.name
            && let Err(e) = prog.attach(n, aya::programs::XdpMode::Driver)
            && !quiet
        {
            eprintln!("pktgen: parking the generator on {n}: {e}; running slower");
        }
        parked
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(n) = &self.name {
            // Deleting one end removes both and detaches the program.
            let _ = std::process::Command::new("ip")
                .args(["link", "del", n])
                .status();
        }
    }
}

fn pg_write(file: &Path, cmd: &str) -> anyhow::Result<()> {
    std::fs::write(file, cmd).with_context(|| format!("writing {cmd:?} to {}", file.display()))?;
    // pktgen answers in the same file: "Result: OK: ..." or an error text.
    let back = std::fs::read_to_string(file).unwrap_or_default();
    if let Some(line) = back.lines().find(|l| l.starts_with("Result:"))
        && !line.contains("OK")
    {
        bail!("pktgen rejected {cmd:?}: {line}");
    }
    Ok(())
}

/// Drives kernel pktgen (UDP only); returns frames sent.
///
/// Not exercised on the machine this was written on (its kernel has no pktgen); the
/// command set is the one in Documentation/networking/pktgen.rst.
fn kernel_pktgen(args: &PktgenArgs, spec: &FrameSpec) -> anyhow::Result<u64> {
    let root = Path::new(PROC_PKTGEN);
    let thread = root.join(format!("kpktgend_{}", args.cpu.unwrap_or(0)));
    pg_write(&thread, "rem_device_all")?;
    pg_write(&thread, &format!("add_device {}", args.iface))?;
    let dev = root.join(&args.iface);
    let count = args.count.unwrap_or(0);
    let mut cmds = vec![
        format!("count {count}"),
        "clone_skb 0".to_owned(),
        format!("pkt_size {}", spec.len),
        // Nanoseconds between packets; 0 = as fast as possible.
        format!(
            "delay {}",
            1_000_000_000u64.checked_div(args.rate).unwrap_or(0)
        ),
        format!(
            "dst_mac {}",
            spec.dst_mac.map(|b| format!("{b:02x}")).join(":")
        ),
        format!("udp_dst_min {}", spec.dport),
        format!("udp_dst_max {}", spec.dport),
    ];
    let flows = args.flows.max(1);
    let ports = flows.min(PORTS_PER_ADDR);
    cmds.push(format!("udp_src_min {}", spec.sport));
    cmds.push(format!("udp_src_max {}", u32::from(spec.sport) + ports - 1));
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let hi = u32::from(s) + (flows - 1) / PORTS_PER_ADDR;
            cmds.push(format!("dst {d}"));
            cmds.push(format!("src_min {s}"));
            cmds.push(format!("src_max {}", std::net::Ipv4Addr::from(hi)));
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            cmds.push(format!("dst6 {d}"));
            cmds.push(format!("src6 {s}"));
        }
        _ => bail!("mixed address families"),
    }
    cmds.push("flag UDPSRC_RND".to_owned());
    cmds.push(format!("flows {flows}"));
    for c in &cmds {
        pg_write(&dev, c)?;
    }
    let ctrl = root.join("pgctrl");
    // `start` blocks until pktgen stops: run it on a thread, stop it after --duration.
    let runner = {
        let ctrl = ctrl.clone();
        std::thread::spawn(move || std::fs::write(&ctrl, "start"))
    };
    let start = Instant::now();
    let mut progress = Progress::new(args.quiet);
    let sofar = || -> u64 {
        std::fs::read_to_string(&dev)
            .ok()
            .and_then(|t| {
                let i = t.find("pkts-sofar:")?;
                t[i + 11..].split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    while !runner.is_finished() {
        if args.count.is_none() && start.elapsed().as_secs_f64() >= args.duration {
            let _ = std::fs::write(&ctrl, "stop");
        }
        std::thread::sleep(Duration::from_millis(100));
        progress.tick("kernel", sofar(), None);
    }
    let _ = runner.join();
    let sent = sofar();
    let _ = pg_write(&thread, "rem_device_all");
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host mirror of `xdp_gen`: template copy, flow fields, incremental checksums.
    fn apply(cfg: &GenConfig, frame: &mut [u8], n: u32) {
        let mut t = Vec::new();
        for w in cfg.template {
            t.extend_from_slice(&w.to_ne_bytes());
        }
        let h = cfg.hdr_len as usize;
        frame[..h].copy_from_slice(&t[..h]);
        let (sport, src) = flow_fields(cfg, n);
        let put = |f: &mut [u8], off: u32, v: u16| {
            f[off as usize..off as usize + 2].copy_from_slice(&v.to_be_bytes());
        };
        let get = |f: &[u8], off: u32| u16::from_be_bytes([f[off as usize], f[off as usize + 1]]);
        let repl = |c: u16, old: u16, new: u16| {
            csum_fold(u64::from(!c) + u64::from(!old) + u64::from(new))
        };
        put(frame, cfg.sport_off, sport);
        put(frame, cfg.src_off, src);
        let mut c = repl(get(frame, cfg.l4_csum_off), cfg.sport_base, sport);
        c = repl(c, cfg.src_base, src);
        put(frame, cfg.l4_csum_off, if c == 0 { 0xffff } else { c });
        if cfg.ip_csum_off != 0 {
            let c = repl(get(frame, cfg.ip_csum_off), cfg.src_base, src);
            put(frame, cfg.ip_csum_off, c);
        }
    }

    fn verify(frame: &[u8]) {
        let v6 = frame[12] == 0x86;
        let (l4, proto, src, dst): (usize, u8, IpAddr, IpAddr) = if v6 {
            let a: [u8; 16] = frame[22..38].try_into().unwrap();
            let b: [u8; 16] = frame[38..54].try_into().unwrap();
            (54, frame[20], a.into(), b.into())
        } else {
            assert_eq!(csum_fold(sum_words(&frame[14..34])), 0, "IPv4 header sum");
            let a: [u8; 4] = frame[26..30].try_into().unwrap();
            let b: [u8; 4] = frame[30..34].try_into().unwrap();
            (34, frame[23], a.into(), b.into())
        };
        let mut s = match (src, dst) {
            (IpAddr::V4(a), IpAddr::V4(b)) => sum_words(&a.octets()) + sum_words(&b.octets()),
            (IpAddr::V6(a), IpAddr::V6(b)) => sum_words(&a.octets()) + sum_words(&b.octets()),
            _ => unreachable!(),
        };
        s += u64::from(proto) + (frame.len() - l4) as u64 + sum_words(&frame[l4..]);
        assert_eq!(csum_fold(s), 0, "L4 checksum of {frame:02x?}");
    }

    #[test]
    fn every_flow_has_valid_checksums_and_distinct_tuples() {
        for (src, dst) in [
            ("10.99.0.1", "10.200.0.1"),
            ("fd00:99::1:0", "fd00:200::1"),
            ("10.99.255.250", "10.200.0.1"),
        ] {
            for traffic in [Traffic::Udp, Traffic::Syn, Traffic::Ack] {
                for len in [60, 74, 100, 1500] {
                    let spec = FrameSpec {
                        traffic,
                        len,
                        src_mac: [2, 0, 0, 0, 0, 1],
                        dst_mac: [2, 0, 0, 0, 0, 2],
                        src: src.parse().unwrap(),
                        dst: dst.parse().unwrap(),
                        sport: 1024,
                        dport: 80,
                    };
                    let Ok((mut frame, cfg)) = build_frame(&spec, 200_000) else {
                        assert!(len < header_len(spec.src.is_ipv6(), traffic));
                        continue;
                    };
                    verify(&frame);
                    let mut seen = std::collections::BTreeSet::new();
                    for n in (0..200_000).step_by(997).chain([59_999, 60_000, 199_999]) {
                        // Dirty the frame the way a later hop would, as a recycled page.
                        frame[..14].fill(0xee);
                        apply(&cfg, &mut frame, n);
                        verify(&frame);
                        assert!(seen.insert(flow_fields(&cfg, n)), "flow {n} repeats");
                    }
                }
            }
        }
    }

    #[test]
    fn ports_permute() {
        let cfg = GenConfig {
            sport_base: 1024,
            ..GenConfig::default()
        };
        let ports: std::collections::BTreeSet<u16> = (0..PORTS_PER_ADDR)
            .map(|n| flow_fields(&cfg, n).0)
            .collect();
        assert_eq!(ports.len(), PORTS_PER_ADDR as usize);
    }
}
