//! The demo's address plan: three segments, each a bridge in the `sw` namespace.
//!
//! ```text
//!  front 10.210.0.0/24  client .10, lb1 .2, lb2 .3, web1 .11, web2 .12, VIP .100
//!  back  10.210.1.0/24  web1 .11, web2 .12, app1 .21, app2 .22
//!  data  10.210.2.0/24  app1 .21, app2 .22, db .30
//! ```
//! L2 DSR needs the LBs and the web nodes on one segment (the LB only rewrites MACs);
//! web and app nodes have an interface on two segments (`eth0` towards the client
//! side, `eth1` towards the next tier). Nothing routes between segments, so the
//! database has no path from the client network at all. Every namespace is private
//! to one run, so concurrent runs (tests) reuse the same addresses without clashing.

use std::net::{Ipv4Addr, SocketAddr};

pub const PREFIX_LEN: u8 = 24;
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 100);
pub const HTTP_PORT: u16 = 80;
pub const APP_PORT: u16 = 8000;
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 10);
pub const LB_FRONT: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 210, 0, 2), Ipv4Addr::new(10, 210, 0, 3)];
pub const WEB_FRONT: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 210, 0, 11), Ipv4Addr::new(10, 210, 0, 12)];
pub const WEB_BACK: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 210, 1, 11), Ipv4Addr::new(10, 210, 1, 12)];
pub const APP_BACK: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 210, 1, 21), Ipv4Addr::new(10, 210, 1, 22)];
pub const APP_DATA: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 210, 2, 21), Ipv4Addr::new(10, 210, 2, 22)];
pub const DB: Ipv4Addr = Ipv4Addr::new(10, 210, 2, 30);
/// VRRP virtual router id shared by lb1 and lb2.
pub const VRID: u8 = 51;
/// VRRP priorities: lb1 is the preferred master.
pub const LB_PRIORITY: [u8; 2] = [150, 100];

pub const LB_NAMES: [&str; 2] = ["lb1", "lb2"];
pub const WEB_NAMES: [&str; 2] = ["web1", "web2"];
pub const APP_NAMES: [&str; 2] = ["app1", "app2"];

/// Where clients send HTTP.
pub fn vip_http() -> SocketAddr {
    SocketAddr::from((VIP, HTTP_PORT))
}

/// The topology as printed at start-up.
pub fn diagram() -> String {
    format!(
        r"
  client {CLIENT}
     |  HTTP to VIP {VIP}:80 (ARP finds the VRRP master)
     v
  +--------- front 10.210.0.0/24 (bridge) --------------------------------+
  | lb1 {lb1} prio 150 <--VRRP vrid {VRID}--> lb2 {lb2} prio 100  |
  |   xdp_lb on eth0: Maglev + conntrack, L2 DSR (MAC rewrite)            |
  | web1 {w1f}            web2 {w2f}     (VIP on lo; reply direct) |
  +-----------------------------------------------------------------------+
  +--------- back 10.210.1.0/24 ------------------------------------------+
  | web1 {w1b} web2 {w2b} -> app1 {a1b}:8000 app2 {a2b}:8000   |
  +-----------------------------------------------------------------------+
  +--------- data 10.210.2.0/24 ------------------------------------------+
  | app1 {a1d} app2 {a2d} -> db {DB}:3306 (MariaDB)              |
  +-----------------------------------------------------------------------+
  nftables: client->VIP only; web :80 for the VIP + LB checks; app <- web; db <- app",
        lb1 = LB_FRONT[0],
        lb2 = LB_FRONT[1],
        w1f = WEB_FRONT[0],
        w2f = WEB_FRONT[1],
        w1b = WEB_BACK[0],
        w2b = WEB_BACK[1],
        a1b = APP_BACK[0],
        a2b = APP_BACK[1],
        a1d = APP_DATA[0],
        a2d = APP_DATA[1],
    )
}
