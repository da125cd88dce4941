//! The controller's configuration file (TOML), parsed and validated as a whole: a bad
//! file is rejected with the file, the line and the field named, and nothing of it is
//! applied.
//!
//! ```toml
//! instance = "lb1"          # names the bpffs pin directory and the admin socket
//! interface = "eth0"        # the NIC xdp_lb attaches to
//! xdp_mode = "drv"          # or "skb"
//! hash_seed = 7             # identical on every LB node: same flow -> same backend
//! metrics = "127.0.0.1:9100"
//!
//! [[services]]
//! name = "web"
//! vip = "10.0.0.100"
//! proto = "tcp"
//! port = 80                 # 0 = every port of the VIP
//! mode = "l2"               # or "encap"
//! health = { kind = "http", path = "/healthz", interval_ms = 500 }
//! backends = [ { address = "10.0.1.11", mac = "02:00:00:00:01:11" } ]
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::{dataplane::AttachMode, maglev};

/// Longest service name.
const MAX_NAME_LEN: usize = 64;
/// Range of `udp_timeout_ms`: a second to a day. The data plane compares nanoseconds
/// in a u64, and 0 there means "never expires", which is not what a typo should get.
pub const UDP_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;
/// Largest `conntrack_size`: 2^24 flows. The connection table is an LRU hash the
/// kernel preallocates whole, about 104 bytes an entry (1.7 GiB at this size); the
/// kernel refuses more than 2^31 entries outright (E2BIG) and memory runs out well
/// before that.
pub const CONNTRACK_MAX: u32 = 1 << 24;
/// Smallest `conntrack_size`.
pub const CONNTRACK_MIN: u32 = 64;
/// Longest health-check interval (and so timeout): an hour.
pub const HEALTH_INTERVAL_MAX_MS: u64 = 3_600_000;
/// Backend addresses one config may name: the backends map holds
/// `lb_common::MAX_BACKENDS` entries and id 0 is reserved.
pub const MAX_BACKEND_ADDRS: usize = lb_common::MAX_BACKENDS as usize - 1;

/// A configuration error: where and what.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names the pin directory (`/sys/fs/bpf/lb-<instance>`) and the admin socket.
    #[serde(default = "default_instance")]
    pub instance: String,
    pub interface: String,
    #[serde(default = "default_mode")]
    pub xdp_mode: AttachMode,
    #[serde(default)]
    pub hash_seed: u32,
    #[serde(default = "default_conntrack")]
    pub conntrack_size: u32,
    #[serde(default = "default_udp_timeout")]
    pub udp_timeout_ms: u64,
    /// Unix socket of the admin API (default `/run/lb/<instance>.sock`).
    pub admin_socket: Option<PathBuf>,
    /// Prometheus endpoint; loopback by default.
    #[serde(default = "default_metrics")]
    pub metrics: SocketAddr,
    #[serde(default)]
    pub encap: Encap,
    #[serde(default)]
    pub services: Vec<Spanned<ServiceConfig>>,
    /// Active-passive VIP failover (VRRPv3).
    pub failover: Option<crate::vrrp::VrrpConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encap {
    /// Outer IPv4 source prefix (the low 16 bits come from the flow hash).
    #[serde(default = "default_src_v4")]
    pub src_v4: std::net::Ipv4Addr,
    /// Outer IPv6 source prefix (the last 32 bits come from the flow hash).
    #[serde(default = "default_src_v6")]
    pub src_v6: std::net::Ipv6Addr,
    /// Largest packet after encapsulation; larger ones get ICMP "too big".
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

impl Default for Encap {
    fn default() -> Self {
        Self {
            src_v4: default_src_v4(),
            src_v6: default_src_v6(),
            mtu: default_mtu(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => lb_common::PROTO_TCP,
            Proto::Udp => lb_common::PROTO_UDP,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rewrite MACs; backends on the LB's L2 segment.
    L2,
    /// IP-in-IP to backends on another L3 network (they run xdp_decap).
    Encap,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub vip: IpAddr,
    pub proto: Proto,
    pub port: u16,
    #[serde(default = "default_l2")]
    pub mode: Mode,
    /// Maglev ring size: a prime <= 65537.
    #[serde(default = "default_ring")]
    pub ring_size: u32,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// Next-hop MAC; resolved from the neighbour table when absent.
    pub mac: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Send through XDP_REDIRECT out of this interface instead of XDP_TX.
    pub interface: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connect succeeds.
    Tcp,
    /// An HTTP GET answers with `expect_status`.
    Http,
    /// No checks: always healthy.
    None,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_kind")]
    pub kind: HealthKind,
    /// Port to check (default: the service port).
    pub port: Option<u16>,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            port: None,
            path: default_path(),
            expect_status: default_status(),
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

fn default_instance() -> String {
    "lb".into()
}
fn default_mode() -> AttachMode {
    AttachMode::Drv
}
fn default_conntrack() -> u32 {
    lb_common::CONNTRACK_SIZE
}
fn default_udp_timeout() -> u64 {
    30_000
}
fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}
fn default_src_v4() -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(172, 16, 0, 0)
}
fn default_src_v6() -> std::net::Ipv6Addr {
    "fd00:1b::".parse().expect("constant")
}
fn default_mtu() -> u32 {
    1500
}
fn default_l2() -> Mode {
    Mode::L2
}
fn default_ring() -> u32 {
    lb_common::RING_MAX
}
fn default_weight() -> u32 {
    1
}
fn default_kind() -> HealthKind {
    HealthKind::Tcp
}
fn default_path() -> String {
    "/".into()
}
fn default_status() -> u16 {
    200
}
fn default_interval() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    500
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// Parses a MAC written as six pairs of hex digits separated by `:` or `-`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        // Exactly two hex digits: from_str_radix alone also takes a sign ("+f").
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Whether `name` can name a network interface, by the kernel's rules
/// (`dev_valid_name`): 1 to IFNAMSIZ - 1 bytes, not `.` or `..`, no `/`, `:`,
/// whitespace or NUL.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

/// Whether `a` can be a VIP or a backend: one host, reachable over the wire. Not
/// unspecified, multicast, loopback or the IPv4 limited broadcast.
pub fn is_host_addr(a: IpAddr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || a.is_loopback())
        && match a {
            IpAddr::V4(v4) => !v4.is_broadcast(),
            IpAddr::V6(_) => true,
        }
}

/// Whether `name` can name a service: it becomes a Prometheus label value, a log
/// word and a status key, so 1-64 of `[A-Za-z0-9_.-]` (keepalived's and Katran's
/// names fit).
pub fn valid_service_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            field: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text` (named `file` in errors).
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(s.start));
            // The key is on the offending line ("vip = \"nope\"" -> "vip"); toml's
            // message says what is wrong with it.
            let field = text
                .lines()
                .nth(line.saturating_sub(1))
                .map(|l| {
                    l.split_once('=')
                        .map_or(l, |(k, _)| k)
                        .trim()
                        .trim_start_matches('{')
                        .trim()
                })
                .filter(|k| !k.is_empty())
                .unwrap_or("(document)")
                .chars()
                .take(60)
                .collect();
            ConfigError {
                file: file.into(),
                line,
                field,
                message: e.message().trim().to_owned(),
            }
        })?;
        cfg.validate(file, &line_of)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str, line_of: &dyn Fn(usize) -> usize) -> Result<(), ConfigError> {
        let err = |line: usize, field: String, message: String| ConfigError {
            file: file.into(),
            line,
            field,
            message,
        };
        if self.instance.is_empty()
            || self.instance.len() > 32
            || !self
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                1,
                "instance".into(),
                "must be 1-32 letters, digits, '-' or '_'".into(),
            ));
        }
        if !valid_ifname(&self.interface) {
            return Err(err(
                1,
                "interface".into(),
                format!(
                    "{:?} cannot name a network interface (1-15 bytes, no '/', ':' or whitespace)",
                    self.interface
                ),
            ));
        }
        if !(CONNTRACK_MIN..=CONNTRACK_MAX).contains(&self.conntrack_size) {
            return Err(err(
                1,
                "conntrack_size".into(),
                format!(
                    "{} must be between {CONNTRACK_MIN} and {CONNTRACK_MAX} (2^24): the \
                     kernel preallocates the whole table, ~104 bytes per entry",
                    self.conntrack_size
                ),
            ));
        }
        if !UDP_TIMEOUT_MS.contains(&self.udp_timeout_ms) {
            return Err(err(
                1,
                "udp_timeout_ms".into(),
                format!(
                    "{} must be between {} (1 s) and {} (1 day)",
                    self.udp_timeout_ms,
                    UDP_TIMEOUT_MS.start(),
                    UDP_TIMEOUT_MS.end()
                ),
            ));
        }
        if self.encap.mtu < 1280 || self.encap.mtu > 65535 {
            return Err(err(
                1,
                "encap.mtu".into(),
                "must be between 1280 and 65535".into(),
            ));
        }
        if self.services.len() > lb_common::MAX_SERVICES as usize {
            return Err(err(
                1,
                "services".into(),
                format!("at most {} services", lb_common::MAX_SERVICES),
            ));
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut backend_macs: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
        let mut tx_ifaces = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let line = line_of(s.span().start);
            let svc = s.get_ref();
            let f = |name: &str| format!("services[{i}].{name}");
            if !valid_service_name(&svc.name) {
                return Err(err(
                    line,
                    f("name"),
                    format!(
                        "{:?} must be 1-{MAX_NAME_LEN} letters, digits, '_', '.' or '-'",
                        svc.name
                    ),
                ));
            }
            if !names.insert(svc.name.clone()) {
                return Err(err(
                    line,
                    f("name"),
                    format!("duplicate service name {:?}", svc.name),
                ));
            }
            if !keys.insert((svc.vip, svc.proto, svc.port)) {
                return Err(err(
                    line,
                    f("vip"),
                    format!(
                        "{} {:?} port {} is configured twice",
                        svc.vip, svc.proto, svc.port
                    ),
                ));
            }
            if !is_host_addr(svc.vip) {
                return Err(err(
                    line,
                    f("vip"),
                    format!(
                        "{} cannot be a VIP (unspecified, multicast, loopback or broadcast)",
                        svc.vip
                    ),
                ));
            }
            if !maglev::is_prime(svc.ring_size)
                || svc.ring_size > lb_common::RING_MAX
                || svc.ring_size < 2
            {
                return Err(err(
                    line,
                    f("ring_size"),
                    format!(
                        "{} must be a prime between 2 and {}",
                        svc.ring_size,
                        lb_common::RING_MAX
                    ),
                ));
            }
            let h = &svc.health;
            if !(10..=HEALTH_INTERVAL_MAX_MS).contains(&h.interval_ms)
                || h.timeout_ms == 0
                || h.timeout_ms > h.interval_ms
            {
                return Err(err(
                    line,
                    f("health"),
                    format!(
                        "interval_ms must be between 10 and {HEALTH_INTERVAL_MAX_MS} (1 hour) \
                         and timeout_ms between 1 and interval_ms"
                    ),
                ));
            }
            // A check goes to `health.port`, else to the service port; port 0 (every
            // port) names none, and a check of port 0 fails on every backend.
            if h.kind != HealthKind::None && h.port.unwrap_or(svc.port) == 0 {
                return Err(err(
                    line,
                    f("health.port"),
                    if h.port == Some(0) {
                        "must be 1-65535".into()
                    } else {
                        "the service listens on every port (port = 0): set the port to check".into()
                    },
                ));
            }
            if h.rise == 0 || h.fall == 0 {
                return Err(err(
                    line,
                    f("health"),
                    "rise and fall must be at least 1".into(),
                ));
            }
            if h.kind == HealthKind::Http && !h.path.starts_with('/') {
                return Err(err(line, f("health.path"), "must start with '/'".into()));
            }
            let mut seen = BTreeSet::new();
            for (j, b) in svc.backends.iter().enumerate() {
                let bf = |name: &str| format!("services[{i}].backends[{j}].{name}");
                if !seen.insert(b.address) {
                    return Err(err(
                        line,
                        bf("address"),
                        format!("{} listed twice", b.address),
                    ));
                }
                if !is_host_addr(b.address) || b.address == svc.vip {
                    return Err(err(
                        line,
                        bf("address"),
                        format!(
                            "{} cannot be a backend (the VIP, unspecified, multicast, loopback or broadcast)",
                            b.address
                        ),
                    ));
                }
                if svc.mode == Mode::L2 && b.address.is_ipv4() != svc.vip.is_ipv4() {
                    return Err(err(
                        line,
                        bf("address"),
                        "an l2 service's backends must be of the VIP's address family".into(),
                    ));
                }
                if svc.mode == Mode::Encap && svc.vip.is_ipv6() && b.address.is_ipv4() {
                    return Err(err(
                        line,
                        bf("address"),
                        "IPv6-in-IPv4 is not supported: use an IPv6 backend address".into(),
                    ));
                }
                if let Some(m) = &b.mac
                    && parse_mac(m).is_none()
                {
                    return Err(err(
                        line,
                        bf("mac"),
                        format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                    ));
                }
                if b.weight > 1_000_000 {
                    return Err(err(line, bf("weight"), "must be at most 1000000".into()));
                }
                if let Some(ifname) = &b.interface {
                    if !valid_ifname(ifname) {
                        return Err(err(
                            line,
                            bf("interface"),
                            format!(
                                "{ifname:?} cannot name a network interface (1-15 bytes, no '/', ':' or whitespace)"
                            ),
                        ));
                    }
                    tx_ifaces.insert(ifname.as_str());
                    if tx_ifaces.len() > lb_common::MAX_TX_PORTS as usize {
                        return Err(err(
                            line,
                            bf("interface"),
                            format!(
                                "at most {} distinct backend interfaces (the size of the tx-port devmap)",
                                lb_common::MAX_TX_PORTS
                            ),
                        ));
                    }
                }
                // The same backend may serve several services, but must be one host.
                if !backend_macs.contains_key(&b.address) && backend_macs.len() == MAX_BACKEND_ADDRS
                {
                    return Err(err(
                        line,
                        bf("address"),
                        format!(
                            "more than {MAX_BACKEND_ADDRS} distinct backend addresses (the backends map holds {} ids, id 0 reserved)",
                            lb_common::MAX_BACKENDS
                        ),
                    ));
                }
                let prev = backend_macs
                    .entry(b.address)
                    .or_insert_with(|| b.mac.clone());
                if let (Some(p), Some(m)) = (prev.as_ref(), b.mac.as_ref())
                    && parse_mac(p) != parse_mac(m)
                {
                    return Err(err(
                        line,
                        bf("mac"),
                        format!("{} has different MACs in different services", b.address),
                    ));
                }
            }
        }
        if let Some(f) = &self.failover {
            f.validate()
                .map_err(|e| err(1, "failover".into(), e.to_string()))?;
        }
        Ok(())
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.admin_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/lb/{}.sock", self.instance)))
    }

    /// The services without their spans.
    pub fn services(&self) -> impl Iterator<Item = &ServiceConfig> {
        self.services.iter().map(Spanned::get_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
instance = "t1"
interface = "eth0"
hash_seed = 7

[[services]]
name = "web"
vip = "10.0.0.100"
proto = "tcp"
port = 80
ring_size = 13
health = { kind = "http", path = "/healthz", interval_ms = 100, timeout_ms = 50 }
backends = [
  { address = "10.0.1.1", mac = "02:00:00:00:01:01" },
  { address = "10.0.1.2", mac = "02:00:00:00:01:02", weight = 2 },
]
"#;

    #[test]
    fn good_config_parses() {
        let c = Config::parse(GOOD, "good.toml").unwrap();
        assert_eq!(c.services().count(), 1);
        let s = c.services().next().unwrap();
        assert_eq!(s.backends[1].weight, 2);
        assert_eq!(s.health.kind, HealthKind::Http);
    }

    /// Each mistake must be rejected with a message naming the problem.
    #[test]
    fn bad_configs_are_rejected_with_a_named_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("unknown top-level key", "bogus = 1\n", "unknown field"),
            ("bad TOML syntax", "instance = \n", "bad.toml:2: instance"),
            (
                "wrong type for hash_seed",
                "hash_seed = \"x\"\n",
                "hash_seed",
            ),
            (
                "negative conntrack",
                "conntrack_size = -1\n",
                "conntrack_size",
            ),
            ("tiny conntrack", "conntrack_size = 8\n", "conntrack_size"),
            ("bad xdp mode", "xdp_mode = \"turbo\"\n", "turbo"),
            ("bad instance name", "instance = \"a/b\"\n", "instance"),
            ("bad metrics address", "metrics = \"nowhere\"\n", "metrics"),
            ("encap mtu too small", "[encap]\nmtu = 500\n", "encap.mtu"),
            // 18446744073710 ms * 1e6 wrapped to 0.45 ms in the data plane.
            (
                "udp timeout that overflows in ns",
                "udp_timeout_ms = 18446744073710\n",
                "udp_timeout_ms",
            ),
            ("udp timeout zero", "udp_timeout_ms = 0\n", "udp_timeout_ms"),
            // The kernel refuses this map size (E2BIG) at `lb run`.
            (
                "conntrack larger than the kernel takes",
                "conntrack_size = 4294967295\n",
                "conntrack_size",
            ),
        ];
        let base_tail = GOOD.split_once("hash_seed = 7\n").unwrap().1;
        for (what, extra, needle) in cases {
            let text = if extra.starts_with("[encap]") {
                format!("instance = \"t1\"\ninterface = \"eth0\"\n{extra}")
            } else {
                let head = format!("interface = \"eth0\"\n{extra}");
                let head = if extra.starts_with("instance") {
                    head
                } else {
                    format!("instance = \"t1\"\n{head}")
                };
                format!("{head}{base_tail}")
            };
            let e = Config::parse(&text, "bad.toml")
                .expect_err(what)
                .to_string();
            assert!(
                e.contains(needle),
                "{what}: {e:?} should mention {needle:?}"
            );
            assert!(
                e.starts_with("bad.toml:"),
                "{what}: {e:?} should name the file"
            );
        }
        let svc_cases: &[(&str, &str, &str, &str)] = &[
            (
                "ring not prime",
                "ring_size = 13",
                "ring_size = 12",
                "ring_size",
            ),
            (
                "ring too big",
                "ring_size = 13",
                "ring_size = 65539",
                "ring_size",
            ),
            ("bad proto", "proto = \"tcp\"", "proto = \"sctp\"", "sctp"),
            (
                "bad vip",
                "vip = \"10.0.0.100\"",
                "vip = \"10.0.0.300\"",
                "vip",
            ),
            (
                "multicast vip",
                "vip = \"10.0.0.100\"",
                "vip = \"224.0.0.1\"",
                "vip",
            ),
            ("bad mac", "02:00:00:00:01:01", "02:00:00:00:01", "mac"),
            ("duplicate backend", "10.0.1.2", "10.0.1.1", "address"),
            (
                "backend family",
                "address = \"10.0.1.2\"",
                "address = \"fd00::2\"",
                "address family",
            ),
            (
                "health timeout > interval",
                "timeout_ms = 50",
                "timeout_ms = 500",
                "health",
            ),
            (
                "health path",
                "path = \"/healthz\"",
                "path = \"healthz\"",
                "health.path",
            ),
            ("port out of range", "port = 80", "port = 70000", "port"),
            (
                "unknown service key",
                "port = 80",
                "port = 80\nmood = \"happy\"",
                "mood",
            ),
            ("weight too big", "weight = 2", "weight = 2000000", "weight"),
            (
                "unknown backend key",
                "weight = 2",
                "weight = 2, colour = 1",
                "colour",
            ),
            ("health kind", "kind = \"http\"", "kind = \"icmp\"", "icmp"),
            (
                "rise zero",
                "timeout_ms = 50",
                "timeout_ms = 50, rise = 0",
                "rise",
            ),
            // Names go into Prometheus labels and logs: a quote or a newline would
            // forge series.
            (
                "service name with a quote",
                "name = \"web\"",
                "name = \"we\\\"b\"",
                "services[0].name",
            ),
            (
                "service name with a newline",
                "name = \"web\"",
                "name = \"web\\nlb_backend_up 1\"",
                "services[0].name",
            ),
            (
                "empty service name",
                "name = \"web\"",
                "name = \"\"",
                "name",
            ),
            (
                "loopback vip",
                "vip = \"10.0.0.100\"",
                "vip = \"127.0.0.1\"",
                "vip",
            ),
            (
                "broadcast vip",
                "vip = \"10.0.0.100\"",
                "vip = \"255.255.255.255\"",
                "vip",
            ),
            (
                "unspecified vip",
                "vip = \"10.0.0.100\"",
                "vip = \"0.0.0.0\"",
                "vip",
            ),
            (
                "loopback backend",
                "address = \"10.0.1.2\"",
                "address = \"127.0.0.2\"",
                "backends[1].address",
            ),
            (
                "broadcast backend",
                "address = \"10.0.1.2\"",
                "address = \"255.255.255.255\"",
                "backends[1].address",
            ),
            (
                "multicast backend",
                "address = \"10.0.1.2\"",
                "address = \"239.1.1.1\"",
                "backends[1].address",
            ),
            (
                "mac octet with a sign",
                "02:00:00:00:01:01",
                "02:00:00:00:01:+1",
                "mac",
            ),
            (
                "health interval over an hour",
                "interval_ms = 100",
                "interval_ms = 3600001",
                "health",
            ),
            // Port 0 is every port: there is no port to check.
            (
                "all-ports service, no health.port",
                "port = 80",
                "port = 0",
                "health.port",
            ),
            (
                "health.port 0",
                "kind = \"http\"",
                "kind = \"http\", port = 0",
                "health.port",
            ),
            (
                "backend interface with a slash",
                "weight = 2",
                "weight = 2, interface = \"a/b\"",
                "backends[1].interface",
            ),
            (
                "backend interface too long",
                "weight = 2",
                "weight = 2, interface = \"sixteen-bytes-xx\"",
                "backends[1].interface",
            ),
        ];
        for (what, from, to, needle) in svc_cases {
            assert!(GOOD.contains(from), "{what}: fixture lacks {from:?}");
            let text = GOOD.replacen(from, to, 1);
            let e = Config::parse(&text, "bad.toml")
                .expect_err(what)
                .to_string();
            assert!(
                e.contains(needle),
                "{what}: {e:?} should mention {needle:?}"
            );
            assert!(!e.contains(":0:"), "{what}: {e:?} should name a line");
        }
        // Two services with the same VIP/proto/port, and duplicate names.
        let dup = format!(
            "{GOOD}{}",
            GOOD.split_once("hash_seed = 7\n")
                .unwrap()
                .1
                .replace("\"web\"", "\"web2\"")
        );
        let e = Config::parse(&dup, "bad.toml").unwrap_err().to_string();
        assert!(e.contains("configured twice"), "{e}");
        let dup = format!(
            "{GOOD}{}",
            GOOD.split_once("hash_seed = 7\n")
                .unwrap()
                .1
                .replace("port = 80", "port = 81")
        );
        let e = Config::parse(&dup, "bad.toml").unwrap_err().to_string();
        assert!(e.contains("duplicate service name"), "{e}");
        assert!(
            e.contains(":18:"),
            "the second [[services]] header is on line 18: {e}"
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:00:00:00:01:0a"), Some([2, 0, 0, 0, 1, 10]));
        assert_eq!(parse_mac("02-00-00-00-01-0A"), Some([2, 0, 0, 0, 1, 10]));
        assert_eq!(parse_mac("02:00:00:00:01"), None);
        assert_eq!(parse_mac("02:00:00:00:01:xyz"), None);
        // u8::from_str_radix takes a leading '+'; a MAC octet is two hex digits.
        assert_eq!(parse_mac("+2:00:00:00:01:0a"), None);
        assert_eq!(parse_mac("02:00:00:00:01:+a"), None);
        assert_eq!(parse_mac("02:00:00:00:01:-a"), None);
        assert_eq!(parse_mac("02:00:00:00:01: a"), None);
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for good in ["eth0", "veth-lb_1", "a", "fifteen-bytes-x", "en.p1s0"] {
            assert!(valid_ifname(good), "{good:?}");
        }
        for bad in [
            "",
            "sixteen-bytes-xx",
            "a/b",
            "eth0:1",
            "eth 0",
            "eth\t0",
            "eth\n0",
            "a\0b",
            ".",
            "..",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
        for bad in ["a/b", "eth0 ", "sixteen-bytes-xx", "eth0:1"] {
            let text = GOOD.replace("interface = \"eth0\"", &format!("interface = {bad:?}"));
            let e = Config::parse(&text, "bad.toml").unwrap_err().to_string();
            assert!(e.contains(": interface: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn all_ports_service_checks_the_health_port_or_nothing() {
        let with_port = GOOD
            .replace("port = 80", "port = 0")
            .replace("kind = \"http\"", "kind = \"http\", port = 8080");
        Config::parse(&with_port, "good.toml").unwrap();
        let unchecked = GOOD.replace("port = 80", "port = 0").replace(
            "kind = \"http\", path = \"/healthz\", ",
            "kind = \"none\", ",
        );
        Config::parse(&unchecked, "good.toml").unwrap();
    }

    #[test]
    fn bounds_hold_at_their_edges() {
        let top =
            |extra: &str| GOOD.replace("hash_seed = 7\n", &format!("hash_seed = 7\n{extra}\n"));
        for ok in [
            "udp_timeout_ms = 1000",
            "udp_timeout_ms = 86400000",
            "conntrack_size = 64",
            "conntrack_size = 16777216",
        ] {
            Config::parse(&top(ok), "good.toml").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "udp_timeout_ms = 999",
            "udp_timeout_ms = 86400001",
            "conntrack_size = 63",
            "conntrack_size = 16777217",
        ] {
            let e = Config::parse(&top(bad), "bad.toml")
                .unwrap_err()
                .to_string();
            let field = bad.split(' ').next().unwrap();
            assert!(e.contains(&format!(": {field}: ")), "{bad}: {e}");
        }
        let hour = GOOD.replace("interval_ms = 100", "interval_ms = 3600000");
        Config::parse(&hour, "good.toml").unwrap();
    }

    /// The backends map has 4096 entries and id 0 is reserved: `lb check` must refuse
    /// a 4096th distinct backend address instead of `lb run` failing on the map write.
    #[test]
    fn backend_addresses_fit_the_backends_map() {
        let with = |n: usize| {
            let backends: Vec<String> = (0..n)
                .map(|i| format!("{{ address = \"10.1.{}.{}\" }}", i / 250, i % 250 + 1))
                .collect();
            format!(
                "instance = \"t1\"\ninterface = \"eth0\"\n[[services]]\nname = \"a\"\nvip = \"10.0.0.1\"\n\
                 proto = \"tcp\"\nport = 80\nbackends = [ {} ]\n",
                backends.join(", ")
            )
        };
        Config::parse(&with(MAX_BACKEND_ADDRS), "good.toml").unwrap();
        let e = Config::parse(&with(MAX_BACKEND_ADDRS + 1), "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("services[0].backends[4095].address"), "{e}");
        assert!(e.contains("4095"), "{e}");
        // The same address in two services is one backend id.
        let two = format!(
            "{}[[services]]\nname = \"b\"\nvip = \"10.0.0.2\"\nproto = \"tcp\"\nport = 80\n\
             backends = [ {{ address = \"10.1.0.1\" }} ]\n",
            with(MAX_BACKEND_ADDRS)
        );
        Config::parse(&two, "good.toml").unwrap();
    }
}
