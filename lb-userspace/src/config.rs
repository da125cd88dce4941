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

/// Parses a MAC written as six hex pairs separated by `:` or `-`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
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
        if self.interface.is_empty() || self.interface.len() > 15 {
            return Err(err(
                1,
                "interface".into(),
                "must name a network interface (1-15 bytes)".into(),
            ));
        }
        if self.conntrack_size < 64 {
            return Err(err(
                1,
                "conntrack_size".into(),
                "must be at least 64".into(),
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
        for (i, s) in self.services.iter().enumerate() {
            let line = line_of(s.span().start);
            let svc = s.get_ref();
            let f = |name: &str| format!("services[{i}].{name}");
            if svc.name.is_empty() || !names.insert(svc.name.clone()) {
                return Err(err(
                    line,
                    f("name"),
                    format!("missing or duplicate service name {:?}", svc.name),
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
            if svc.vip.is_unspecified() || svc.vip.is_multicast() {
                return Err(err(line, f("vip"), format!("{} cannot be a VIP", svc.vip)));
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
            if h.interval_ms < 10 || h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
                return Err(err(
                    line,
                    f("health"),
                    "interval_ms must be >= 10 and timeout_ms between 1 and interval_ms".into(),
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
                if b.address.is_unspecified() || b.address.is_multicast() || b.address == svc.vip {
                    return Err(err(
                        line,
                        bf("address"),
                        format!("{} cannot be a backend", b.address),
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
                if let Some(ifname) = &b.interface
                    && (ifname.is_empty() || ifname.len() > 15)
                {
                    return Err(err(
                        line,
                        bf("interface"),
                        "must name a network interface".into(),
                    ));
                }
                // The same backend may serve several services, but must be one host.
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
    }
}
