//! keepalived as a VRRPv3 peer of `lb-vrrp`: the one configuration and command line
//! that the failover tests and the `failover` benchmark run it with.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::Ns;

/// One keepalived node: a single `vrrp_instance` in state BACKUP (the priorities
/// decide who becomes master) owning one IPv4 VIP on `eth0`.
#[derive(Clone, Debug)]
pub struct Keepalived<'a> {
    /// The node's name: keepalived's `router_id`, and the prefix of the files written.
    pub name: &'a str,
    pub vrid: u8,
    pub priority: u8,
    pub advert_ms: u32,
    /// The IPv4 VIP, without a prefix length (it is configured as a /32).
    pub vip: &'a str,
    /// More lines for the `vrrp_instance` block (`nopreempt`, ...); empty for none.
    pub extra: &'a str,
}

impl Keepalived<'_> {
    /// The `keepalived.conf` text.
    pub fn config(&self) -> String {
        let Self {
            name,
            vrid,
            priority,
            advert_ms,
            vip,
            extra,
        } = self;
        // advert_int is in seconds; fractions are allowed with VRRPv3.
        let advert_s = f64::from(*advert_ms) / 1000.0;
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("  {extra}\n")
        };
        format!(
            "global_defs {{\n  vrrp_version 3\n  router_id {name}\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  \
             virtual_router_id {vrid}\n  priority {priority}\n  advert_int {advert_s}\n\
             {extra}  virtual_ipaddress {{\n    {vip}/32\n  }}\n}}\n"
        )
    }

    /// Writes `<name>-keepalived.conf` into `dir` and returns keepalived in `ns`,
    /// in the foreground with that file, logging to stdout / stderr (the caller
    /// directs them) and its pid files in `dir` too. The caller spawns it.
    pub fn command(&self, ns: &Ns, dir: &Path) -> anyhow::Result<Command> {
        let conf = dir.join(format!("{}-keepalived.conf", self.name));
        std::fs::write(&conf, self.config())
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut cmd = ns.cmd("keepalived");
        // -n: foreground, -l: log to the console, -D: detailed log, -P: VRRP only.
        cmd.args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join(format!("{}-ka.pid", self.name)))
            .arg("-r")
            .arg(dir.join(format!("{}-ka-vrrp.pid", self.name)));
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(extra: &str) -> Keepalived<'_> {
        Keepalived {
            name: "lb1",
            vrid: 51,
            priority: 200,
            advert_ms: 100,
            vip: "10.201.0.100",
            extra,
        }
    }

    #[test]
    fn config_text() {
        assert_eq!(
            node("").config(),
            "global_defs {\n  vrrp_version 3\n  router_id lb1\n}\n\
             vrrp_instance VI_1 {\n  state BACKUP\n  interface eth0\n  \
             virtual_router_id 51\n  priority 200\n  advert_int 0.1\n  \
             virtual_ipaddress {\n    10.201.0.100/32\n  }\n}\n"
        );
        assert!(
            node("nopreempt")
                .config()
                .contains("advert_int 0.1\n  nopreempt\n  virtual_ipaddress {\n")
        );
    }
}
