//! The failover lab's network: a client and two VRRP nodes on one bridge, and the
//! `lb-vrrp` command line for a node. Shared by the failover tests and the failover
//! benchmark, which add their own services and checks on top.
//!
//! ```text
//!   client ──┐
//!   lb1 ─────┤ br0 (namespace "sw")
//!   lb2 ─────┘
//! ```

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

use crate::{Ns, Topology};

/// One VRRP node's place on the LAN.
pub struct LanNode {
    pub ns: Ns,
    pub name: &'static str,
    /// The bridge-side port of its link.
    pub port: &'static str,
    /// Its IPv4 address (`<subnet>.1` or `.2`).
    pub addr: String,
}

/// The bridge, the client (`<subnet>.10`) and lb1, lb2 (`<subnet>.1`, `.2`).
pub struct Lan {
    pub sw: Ns,
    pub client: Ns,
    pub nodes: Vec<LanNode>,
}

impl Lan {
    /// Builds the LAN in `topo`. With `v6` (a /64 prefix such as `"fd00:201::"`), every
    /// host also gets `<v6>10`, `<v6>1`, `<v6>2`, the nodes without duplicate address
    /// detection, so their adverts can start at once.
    pub fn new(topo: &mut Topology, subnet: &str, v6: Option<&str>) -> anyhow::Result<Lan> {
        let sw = topo.ns("sw")?;
        topo.bridge(&sw, "br0")?;
        let client = topo.ns("client")?;
        topo.plug(&client, "eth0", &sw, "br0", "pc")?;
        client.addr("eth0", &format!("{subnet}.10/24"))?;
        if let Some(p) = v6 {
            client.addr("eth0", &format!("{p}10/64"))?;
        }
        let mut nodes = Vec::new();
        for (i, (name, port)) in [("lb1", "p1"), ("lb2", "p2")].into_iter().enumerate() {
            let ns = topo.ns(name)?;
            topo.plug(&ns, "eth0", &sw, "br0", port)?;
            let addr = format!("{subnet}.{}", i + 1);
            ns.addr("eth0", &format!("{addr}/24"))?;
            if let Some(p) = v6 {
                ns.sysctl("net.ipv6.conf.eth0.accept_dad", "0")?;
                ns.addr("eth0", &format!("{p}{}/64", i + 1))?;
            }
            nodes.push(LanNode {
                ns,
                name,
                port,
                addr,
            });
        }
        Ok(Lan { sw, client, nodes })
    }
}

/// What goes into one `lb-vrrp` configuration.
pub struct VrrpNodeConfig<'a> {
    pub vrid: u8,
    pub priority: u8,
    pub advert_ms: u32,
    /// A TOML array, e.g. `["10.0.0.100"]`.
    pub vips: &'a str,
    /// Further TOML lines.
    pub extra: &'a str,
}

/// Writes `cfg` for a node on `eth0` and returns the command that runs `bin` (`lb-vrrp`)
/// on it inside `ns`, reporting to `status`.
pub fn lb_vrrp_command(
    ns: &Ns,
    bin: &Path,
    cfg: &Path,
    status: &Path,
    c: &VrrpNodeConfig<'_>,
) -> anyhow::Result<Command> {
    std::fs::write(
        cfg,
        format!(
            "interface = \"eth0\"\nvrid = {}\npriority = {}\nadvert_interval_ms = {}\nvips = {}\n{}\n",
            c.vrid, c.priority, c.advert_ms, c.vips, c.extra
        ),
    )
    .with_context(|| format!("writing {}", cfg.display()))?;
    let mut cmd = ns.cmd(bin.to_str().context("lb-vrrp path")?);
    cmd.arg("--config")
        .arg(cfg)
        .arg("--status-file")
        .arg(status)
        .env("RUST_LOG", "info");
    Ok(cmd)
}
