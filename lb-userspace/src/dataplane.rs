//! The data plane's lifecycle and its maps: load the embedded XDP object, attach it to
//! a NIC, pin program link and maps in bpffs so a restarted controller adopts them
//! (hitless restart), and typed access to every map.
//!
//! Pin layout, one directory per instance: `<bpffs>/lb-<instance>/` holding the maps
//! by their `lb_common::MAP_*` names and `link` (the XDP link). While `link` is pinned
//! the program stays attached whatever happens to the controller process.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use lb_common::{
    Backend, Config, Counter, Flow, FlowKey, MAP_BACKENDS, MAP_CONFIG, MAP_CONNTRACK, MAP_RINGS,
    MAP_SERVICES, MAP_SINK, MAP_STATS_BACKEND, MAP_STATS_REASON, MAP_STATS_SERVICE, MAP_TX_PORTS,
    Service, ServiceKey,
};

/// Where bpffs is mounted (`cargo xtask setup` mounts it).
pub const BPFFS: &str = "/sys/fs/bpf";

/// Sizes chosen at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Connection-table entries.
    pub conntrack_size: u32,
    /// Services the ring block is sized for (each takes 2 x 65537 x 4 bytes).
    pub max_services: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            conntrack_size: lb_common::CONNTRACK_SIZE,
            max_services: lb_common::MAX_SERVICES,
        }
    }
}

/// XDP attach mode, as the CLI spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode: the fast path.
    Drv,
    /// Generic mode: works on any device, much slower.
    Skb,
}

impl std::fmt::Display for AttachMode {
    /// As the config and the CLI spell it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Drv => "drv",
            Self::Skb => "skb",
        })
    }
}

impl From<AttachMode> for XdpMode {
    fn from(m: AttachMode) -> Self {
        match m {
            AttachMode::Drv => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// Typed handles on every map of `xdp_lb`.
pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub backends: Array<MapData, Backend>,
    pub rings: Array<MapData, u32>,
    pub conntrack: HashMap<MapData, FlowKey, Flow>,
    pub config: Array<MapData, Config>,
    pub stats_reason: PerCpuArray<MapData, Counter>,
    pub stats_service: PerCpuArray<MapData, Counter>,
    pub stats_backend: PerCpuArray<MapData, Counter>,
    pub tx_ports: DevMap<MapData>,
}

/// Maps pinned per instance.
const PINNED_MAPS: [&str; 9] = [
    MAP_SERVICES,
    MAP_BACKENDS,
    MAP_RINGS,
    MAP_CONNTRACK,
    MAP_CONFIG,
    MAP_STATS_REASON,
    MAP_STATS_SERVICE,
    MAP_STATS_BACKEND,
    MAP_TX_PORTS,
];

/// A loaded (and possibly attached) data plane.
pub struct Dataplane {
    /// The object, when this process loaded it (None after adopting pins).
    ebpf: Option<Ebpf>,
    pub maps: Maps,
    pin_dir: Option<PathBuf>,
    link: Option<PinnedLink>,
    /// Whether the state was adopted from pins left by an earlier controller.
    pub adopted: bool,
    /// Kernel id of the attached `xdp_lb` when adopted (the pinned link's program).
    adopted_program: Option<u32>,
}

/// Map `name` from `get`, as its typed handle.
fn typed<T>(get: &mut impl FnMut(&str) -> anyhow::Result<Map>, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(get(name)?).with_context(|| format!("map {name} has an unexpected type"))
}

impl Maps {
    /// Typed handles from `get`, which yields each map by name.
    fn assemble(mut get: impl FnMut(&str) -> anyhow::Result<Map>) -> anyhow::Result<Self> {
        Ok(Self {
            services: typed(&mut get, MAP_SERVICES)?,
            backends: typed(&mut get, MAP_BACKENDS)?,
            rings: typed(&mut get, MAP_RINGS)?,
            conntrack: typed(&mut get, MAP_CONNTRACK)?,
            config: typed(&mut get, MAP_CONFIG)?,
            stats_reason: typed(&mut get, MAP_STATS_REASON)?,
            stats_service: typed(&mut get, MAP_STATS_SERVICE)?,
            stats_backend: typed(&mut get, MAP_STATS_BACKEND)?,
            tx_ports: typed(&mut get, MAP_TX_PORTS)?,
        })
    }

    /// Takes the maps out of a freshly loaded object.
    fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Self::assemble(|name| {
            ebpf.take_map(name)
                .with_context(|| format!("the XDP object has no map {name}"))
        })
    }

    /// Opens the maps an earlier controller pinned in `dir`.
    fn from_pins(dir: &Path) -> anyhow::Result<Self> {
        Self::assemble(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            Map::from_map_data(data).with_context(|| format!("pinned map {name}"))
        })
    }
}

/// Pins every map `xdp_lb` uses (the sink counter is only for tests and benchmarks).
fn pin_maps(ebpf: &Ebpf, dir: &Path) -> anyhow::Result<()> {
    for name in PINNED_MAPS {
        let map = ebpf
            .map(name)
            .with_context(|| format!("the XDP object has no map {name}"))?;
        map.pin(dir.join(name))
            .with_context(|| format!("pinning {name} in {}", dir.display()))?;
    }
    Ok(())
}

/// Sum of a per-CPU counter over all CPUs.
pub fn sum(values: &PerCpuValues<Counter>) -> Counter {
    values.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

/// Loads the embedded object with the given sizes (nothing attached, nothing pinned).
pub fn load_object(opts: &LoadOptions) -> anyhow::Result<Ebpf> {
    let bytes = crate::object::bytes()?;
    let rings = opts
        .max_services
        .checked_mul(2 * lb_common::RING_MAX)
        .context("max_services too large")?;
    // The flow cache is one array with a region of FLOW_CACHE_SLOTS per possible CPU.
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("{path}: {e}"))?;
    let flow_cache = u32::try_from(cpus)
        .ok()
        .and_then(|n| n.checked_mul(lb_common::FLOW_CACHE_SLOTS))
        .context("too many CPUs for the flow cache")?;
    EbpfLoader::new()
        .map_max_entries(MAP_CONNTRACK, opts.conntrack_size)
        .map_max_entries(lb_common::MAP_FLOW_CACHE, flow_cache)
        .map_max_entries(MAP_SERVICES, opts.max_services * 2)
        .map_max_entries(MAP_RINGS, rings)
        .map_max_entries(MAP_STATS_SERVICE, opts.max_services)
        .load(bytes)
        .with_context(|| {
            format!(
                "loading the XDP object with a {}-entry connection table (the kernel \
                 preallocates it, ~104 bytes an entry: lower conntrack_size if memory is \
                 short; otherwise check that this kernel has BPF and BTF)",
                opts.conntrack_size
            )
        })
}

/// Loads program `name` of `ebpf` into the kernel (runs the verifier).
pub fn load_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("the XDP object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))?;
    if prog.fd().is_err() {
        prog.load()
            .with_context(|| format!("the kernel's verifier rejected {name}"))?;
    }
    Ok(prog)
}

/// Runs `prog` once on `frame` with BPF_PROG_TEST_RUN; returns the action and the
/// frame as the program left it.
pub fn test_run(prog: &Xdp, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    // Room for encapsulation (+40) and for ICMP replies.
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

/// Pins `link` (from `take_link`) of an XDP program at `path`.
pub fn pin_link(
    prog: &mut Xdp,
    id: aya::programs::xdp::XdpLinkId,
    path: &Path,
) -> anyhow::Result<PinnedLink> {
    let link = prog.take_link(id).context("taking the XDP link")?;
    let fd: FdLink = link.try_into().context(
        "this kernel attached XDP through netlink, not a bpf_link; pinning needs Linux >= 5.9",
    )?;
    fd.pin(path)
        .with_context(|| format!("pinning the XDP link at {}", path.display()))
}

impl Dataplane {
    /// Directory holding the pins of `instance`.
    pub fn pin_dir(instance: &str) -> PathBuf {
        Path::new(BPFFS).join(format!("lb-{instance}"))
    }

    /// Loads the object without attaching or pinning (fixtures, benchmarks).
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        let mut ebpf = load_object(opts)?;
        load_program(&mut ebpf, lb_common::PROG_LB)?;
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self {
            ebpf: Some(ebpf),
            maps,
            pin_dir: None,
            link: None,
            adopted: false,
            adopted_program: None,
        })
    }

    /// Attaches `xdp_lb` to `iface` and pins link and maps under the instance's
    /// directory, or adopts them when an earlier controller left them there.
    pub fn attach_or_adopt(
        instance: &str,
        iface: &str,
        mode: AttachMode,
        opts: &LoadOptions,
    ) -> anyhow::Result<Self> {
        let dir = Self::pin_dir(instance);
        ensure_bpffs()?;
        if dir.join("link").exists() {
            let maps = Maps::from_pins(&dir).with_context(|| {
                format!(
                    "adopting the pinned state an earlier controller left in {d} failed; to \
                     start afresh, remove it with `rm -r {d}` (this detaches that XDP program \
                     and drops its connection table)",
                    d = dir.display()
                )
            })?;
            let open_link =
                || PinnedLink::from_pin(dir.join("link")).context("opening the pinned XDP link");
            let program = FdLink::from(open_link()?)
                .info()
                .context("reading the pinned XDP link")?
                .program_id();
            check_adopted(program, iface, mode, &dir)?;
            let size = maps.conntrack_size()?;
            if size != opts.conntrack_size {
                log::warn!(
                    "the adopted connection table has {size} entries, not conntrack_size = {}: \
                     the new size takes effect on a start without pins (after a SIGTERM, \
                     which detaches and unpins)",
                    opts.conntrack_size
                );
            }
            let link = open_link()?;
            log::info!(
                "adopted pinned data plane in {} (hitless restart)",
                dir.display()
            );
            return Ok(Self {
                ebpf: None,
                maps,
                pin_dir: Some(dir),
                link: Some(link),
                adopted: true,
                adopted_program: Some(program),
            });
        }
        if dir.exists() {
            // Maps without a link: a half-finished earlier start. Start clean.
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        let mut ebpf = load_object(opts)?;
        let prog = load_program(&mut ebpf, lb_common::PROG_LB)?;
        let id = prog.attach(iface, mode.into()).map_err(|e| {
            anyhow::anyhow!(
                "attaching XDP to {iface} in {mode:?} mode failed: {e}{}",
                if mode == AttachMode::Drv {
                    " (the driver may not support native XDP: try --xdp-mode skb)"
                } else {
                    ""
                }
            )
        })?;
        // From here on a failure removes what this call pinned: a link pinned without
        // its maps would be adopted, and fail, by every later start.
        let pinned = (|| {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let prog = load_program(&mut ebpf, lb_common::PROG_LB)?;
            let link = pin_link(prog, id, &dir.join("link"))?;
            pin_maps(&ebpf, &dir)?;
            anyhow::Ok((link, Maps::take(&mut ebpf)?))
        })();
        let (link, maps) = match pinned {
            Ok(v) => v,
            Err(e) => {
                // Dropping `ebpf` (and the link) on return detaches the program.
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Self {
            ebpf: Some(ebpf),
            maps,
            pin_dir: Some(dir),
            link: Some(link),
            adopted: false,
            adopted_program: None,
        })
    }

    /// The loaded `xdp_lb` program, when this process loaded it.
    pub fn program(&self) -> Option<&Xdp> {
        self.ebpf
            .as_ref()?
            .program(lb_common::PROG_LB)?
            .try_into()
            .ok()
    }

    /// Kernel id of the attached (or only loaded) `xdp_lb`.
    pub fn program_id(&self) -> Option<u32> {
        self.adopted_program
            .or_else(|| self.program()?.info().ok().map(|i| i.id()))
    }

    /// Detaches and removes every pin (clean shutdown). With `keep`, leaves the data
    /// plane running and pinned for the next controller.
    pub fn shutdown(&mut self, keep: bool) -> anyhow::Result<()> {
        if keep {
            return Ok(());
        }
        if let Some(link) = self.link.take() {
            // Unpinning drops the last reference: the kernel detaches the program.
            let fd = link.unpin().context("unpinning the XDP link")?;
            drop(fd);
        }
        if let Some(dir) = self.pin_dir.take() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    /// Sum over CPUs of exit-reason counter `idx`.
    pub fn reason(&self, idx: u32) -> anyhow::Result<Counter> {
        Ok(sum(&self.maps.stats_reason.get(&idx, 0)?))
    }
}

/// The MAC address of `iface` in this process's network namespace (SIOCGIFHWADDR;
/// no sysfs needed, which under `nsenter --net` shows the wrong namespace).
pub fn iface_mac(iface: &str) -> anyhow::Result<[u8; 6]> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        bail!("bad interface name {iface:?}");
    }
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of the ifreq we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        bail!("interface {iface}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the union member the ioctl wrote.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// Refuses to adopt a pinned data plane that is not the one the config describes: the
/// pinned link's `program` must be the XDP program `iface` runs, in `mode`. Adopting
/// pins from a start with another `interface` would leave that interface balanced and
/// this one not, while status reported this one.
fn check_adopted(program: u32, iface: &str, mode: AttachMode, dir: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", iface])
        .output()
        .context("running ip link show")?;
    if !out.status.success() {
        bail!(
            "interface {iface}: {} (does it exist?)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let running = attached_xdp(&out.stdout)
        .with_context(|| format!("reading the XDP state of {iface} from ip link show"))?;
    let fix = format!(
        "it was started with another interface or xdp_mode; to start afresh, remove it \
         with `rm -r {}` (this detaches that XDP program and drops its connection table)",
        dir.display()
    );
    match running {
        Some((id, _)) if id != program => bail!(
            "the pinned data plane in {} runs XDP program {program}, but {iface} runs \
             program {id}; {fix}",
            dir.display()
        ),
        None => bail!(
            "the pinned data plane in {} is not attached to {iface}; {fix}",
            dir.display()
        ),
        Some((_, m)) if m != mode => bail!(
            "the pinned data plane in {} is attached to {iface} in xdp_mode {m}, the \
             config says {mode}; {fix}",
            dir.display()
        ),
        Some(_) => Ok(()),
    }
}

/// The XDP program id and mode `ip -j -d link show dev X` reports (None: no XDP).
pub(crate) fn attached_xdp(json: &[u8]) -> anyhow::Result<Option<(u32, AttachMode)>> {
    let v: serde_json::Value = serde_json::from_slice(json).context("not JSON")?;
    let Some(xdp) = v.get(0).context("no interface")?.get("xdp") else {
        return Ok(None);
    };
    // iproute2 prints the kernel's XDP_ATTACHED_* value: 1 driver, 2 generic.
    let mode = match xdp.get("mode").and_then(serde_json::Value::as_u64) {
        Some(1) => AttachMode::Drv,
        Some(2) => AttachMode::Skb,
        other => bail!("XDP attach mode {other:?} (offloaded or several programs)"),
    };
    let id = xdp
        .pointer("/prog/id")
        .and_then(serde_json::Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
        .context("no XDP program id")?;
    Ok(Some((id, mode)))
}

/// Mounts bpffs at [`BPFFS`] if nothing is mounted there.
pub fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(BPFFS) && l.contains(" bpf "))
    {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!(
            "bpffs is not mounted at {BPFFS} and mounting it failed: run `cargo xtask setup` as root"
        );
    }
    Ok(())
}

/// Where [`attach_helper`] pins the sink counter of the link pinned at `pin`
/// (bpffs refuses names with a dot, so a suffix rather than an extension).
pub fn sink_pin(pin: &Path) -> PathBuf {
    let name = pin
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    pin.with_file_name(format!("{name}_sink"))
}

/// Attaches one of the helper programs (`xdp_pass`, `xdp_decap`, `xdp_count`,
/// `xdp_sink`, `xdp_tx`) to `iface` and pins its link at `pin`, so it stays attached
/// after this process exits. Returns nothing to hold.
pub fn attach_helper(
    prog_name: &str,
    iface: &str,
    mode: AttachMode,
    pin: &Path,
) -> anyhow::Result<()> {
    ensure_bpffs()?;
    let mut ebpf = load_object(&LoadOptions {
        conntrack_size: 1024,
        max_services: 1,
    })?;
    let prog = load_program(&mut ebpf, prog_name)?;
    let id = prog
        .attach(iface, mode.into())
        .with_context(|| format!("attaching {prog_name} to {iface}"))?;
    if let Some(parent) = pin.parent() {
        fs::create_dir_all(parent)?;
    }
    pin_link(prog, id, pin)?;
    if prog_name == lb_common::PROG_SINK || prog_name == "xdp_count" {
        let sink = ebpf.map(MAP_SINK).context("no sink map")?;
        sink.pin(sink_pin(pin))
            .context("pinning the sink counter")?;
    }
    Ok(())
}

impl crate::reconcile::Store for Maps {
    fn service(&self, key: &ServiceKey) -> anyhow::Result<Option<Service>> {
        match self.services.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading the services map"),
        }
    }
    fn set_service(&mut self, key: &ServiceKey, svc: &Service) -> anyhow::Result<()> {
        self.services
            .insert(key, svc, 0)
            .context("writing the services map")
    }
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        match self.services.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context("removing from the services map"),
        }
    }
    fn service_keys(&self) -> anyhow::Result<Vec<ServiceKey>> {
        self.services
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .context("listing the services map")
    }
    fn backend(&self, id: u32) -> anyhow::Result<Backend> {
        self.backends
            .get(&id, 0)
            .context("reading the backends map")
    }
    fn set_backend(&mut self, id: u32, b: &Backend) -> anyhow::Result<()> {
        self.backends
            .set(id, b, 0)
            .context("writing the backends map")
    }
    fn ring_slot(&self, idx: u32) -> anyhow::Result<u32> {
        self.rings.get(&idx, 0).context("reading the rings map")
    }
    fn set_ring_slot(&mut self, idx: u32, backend: u32) -> anyhow::Result<()> {
        self.rings
            .set(idx, backend, 0)
            .context("writing the rings map")
    }
    fn config(&self) -> anyhow::Result<Config> {
        self.config.get(&0, 0).context("reading the config map")
    }
    fn set_config(&mut self, c: &Config) -> anyhow::Result<()> {
        self.config.set(0, c, 0).context("writing the config map")
    }
    fn set_tx_port(&mut self, port: u32, ifindex: u32) -> anyhow::Result<()> {
        self.tx_ports
            .set(port, ifindex, None, 0)
            .context("writing the tx-port devmap")
    }
}

impl Maps {
    /// Entries in the connection table (walks the map: for status and metrics, not
    /// for hot paths).
    /// The connection table's size as the kernel has it (an adopted table keeps the
    /// size it was created with).
    pub fn conntrack_size(&self) -> anyhow::Result<u32> {
        use aya::maps::IterableMap as _;
        Ok(self
            .conntrack
            .map()
            .info()
            .context("reading the connection table's size")?
            .max_entries())
    }

    pub fn conntrack_len(&self) -> usize {
        self.conntrack.keys().filter(Result::is_ok).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_xdp_program_and_mode_ip_reports() {
        let drv = br#"[{"ifindex":2,"ifname":"eth0","xdp":{"mode":1,"prog":{"id":42,"name":"xdp_lb","tag":"0011223344556677","jited":1}}}]"#;
        assert_eq!(attached_xdp(drv).unwrap(), Some((42, AttachMode::Drv)));
        let skb = br#"[{"ifname":"eth0","xdp":{"mode":2,"prog":{"id":7}}}]"#;
        assert_eq!(attached_xdp(skb).unwrap(), Some((7, AttachMode::Skb)));
        assert_eq!(attached_xdp(br#"[{"ifname":"eth0"}]"#).unwrap(), None);
        // Offloaded, several programs, or output this does not understand: an error,
        // never a guess.
        for bad in [
            &br#"[{"xdp":{"mode":3,"prog":{"id":7}}}]"#[..],
            br#"[{"xdp":{"mode":4,"attached":[]}}]"#,
            br#"[{"xdp":{"mode":1}}]"#,
            br#"[{"xdp":{"mode":1,"prog":{"id":4294967296}}}]"#,
            br#"[]"#,
            b"Device \"eth9\" does not exist.",
        ] {
            assert!(
                attached_xdp(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
