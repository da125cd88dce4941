//! Access control per layer, as nftables rulesets: one `inet` table per node with an
//! input chain whose policy is drop, plus a forward chain that drops everything (no
//! node routes between segments). ARP is not seen by the `inet` family, so neighbour
//! resolution is unaffected; established/related and loopback are always accepted.
//!
//! | node | accepts (new connections) |
//! | --- | --- |
//! | client | nothing (it only opens connections) |
//! | lb1, lb2 | VRRP from the other LB; anything to the VIP (what `xdp_lb` passes up) |
//! | web1, web2 | TCP 80 to the VIP; TCP 80 to their own front address from the LBs (health checks) |
//! | app1, app2 | TCP 8000 from the web nodes' back addresses |
//! | db | TCP 3306 from the app nodes' data addresses |

use std::{fmt::Write as _, net::Ipv4Addr};

use crate::plan;

/// The table every ruleset lives in (`nft list table inet lbdemo`).
pub const TABLE: &str = "lbdemo";

fn set(addrs: &[Ipv4Addr]) -> String {
    let v: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", v.join(", "))
}

fn table(accepts: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "table inet {TABLE} {{");
    let _ = writeln!(t, "  chain input {{");
    let _ = writeln!(t, "    type filter hook input priority 0; policy drop;");
    let _ = writeln!(t, "    ct state established,related accept");
    let _ = writeln!(t, "    iif lo accept");
    // IPv6 neighbour discovery keeps the links quiet and sane; no IPv6 service exists.
    let _ = writeln!(t, "    meta l4proto ipv6-icmp accept");
    t.push_str(accepts);
    let _ = writeln!(t, "  }}");
    let _ = writeln!(t, "  chain forward {{");
    let _ = writeln!(t, "    type filter hook forward priority 0; policy drop;");
    let _ = writeln!(t, "  }}");
    let _ = writeln!(t, "}}");
    t
}

/// The client only opens connections.
pub fn client() -> String {
    table("")
}

pub fn lb() -> String {
    table(&format!(
        "    ip protocol vrrp ip saddr {} accept\n    ip daddr {} accept\n",
        set(&plan::LB_FRONT),
        plan::VIP
    ))
}

pub fn web(front: Ipv4Addr) -> String {
    table(&format!(
        "    iifname \"eth0\" ip daddr {vip} tcp dport 80 accept\n    \
         iifname \"eth0\" ip saddr {lbs} ip daddr {front} tcp dport 80 accept\n",
        vip = plan::VIP,
        lbs = set(&plan::LB_FRONT),
    ))
}

pub fn app() -> String {
    table(&format!(
        "    iifname \"eth0\" ip saddr {} tcp dport {} accept\n",
        set(&plan::WEB_BACK),
        plan::APP_PORT
    ))
}

pub fn db() -> String {
    table(&format!(
        "    iifname \"eth0\" ip saddr {} tcp dport {} accept\n",
        set(&plan::APP_DATA),
        crate::db::PORT
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_accepts_only_the_app_nodes() {
        let t = db();
        assert!(t.contains("policy drop"), "{t}");
        assert!(
            t.contains("ip saddr { 10.210.2.21, 10.210.2.22 } tcp dport 3306 accept"),
            "{t}"
        );
        assert_eq!(t.matches("accept").count(), 4, "{t}");
    }

    #[test]
    fn web_nodes_take_port_80_only_for_the_vip_and_the_lbs_checks() {
        let t = web(plan::WEB_FRONT[0]);
        assert!(
            t.contains("ip daddr 10.210.0.100 tcp dport 80 accept"),
            "{t}"
        );
        assert!(
            t.contains("ip saddr { 10.210.0.2, 10.210.0.3 } ip daddr 10.210.0.11 tcp dport 80"),
            "{t}"
        );
    }
}
