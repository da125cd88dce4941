//! The TOML configuration: listeners, virtual servers with their locations, upstream
//! groups and limits.
//!
//! Parsing is two steps. Serde (with `deny_unknown_fields`) turns the text into these
//! structs, so a misspelt key is named by the TOML error; then [`Config::validate`] checks
//! what serde cannot (a root that is not a directory, a location naming an unknown
//! upstream group, a certificate that does not parse) and names the offending field by
//! its path, for example `server[0].location[2].root`. Any error rejects the whole file:
//! there is no partially applied configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not match the schema (the message names the key).
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value parsed but does not make sense.
    #[error("invalid config: `{field}`: {reason}")]
    Invalid {
        /// Path of the offending field, e.g. `server[0].location[1].root`.
        field: String,
        /// What is wrong and, where possible, how to fix it.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sockets to listen on (`[[listen]]`). May be empty when the embedding program
    /// passes its own listener to [`crate::serve`].
    #[serde(default)]
    pub listen: Vec<Listen>,
    /// Virtual servers (`[[server]]`), chosen by the request's Host.
    #[serde(default, rename = "server")]
    pub servers: Vec<VirtualServer>,
    /// Upstream groups by name (`[upstream.NAME]`).
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, UpstreamGroup>,
    /// Client-facing limits and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// Where the access and error logs go.
    #[serde(default)]
    pub log: LogConfig,
    /// The in-memory cache of static files.
    #[serde(default)]
    pub file_cache: FileCacheConfig,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Address and port, e.g. `0.0.0.0:8080`.
    pub addr: SocketAddr,
    /// Serve TLS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate and key.
    pub tls: Option<TlsFiles>,
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A virtual server: the nginx `server {}` block.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    /// Host names: exact (`example.com`) or leading wildcard (`*.example.com`).
    #[serde(default)]
    pub names: Vec<String>,
    /// Used when no server's names match the Host. Without one, the first server is the
    /// default, as in nginx.
    #[serde(default)]
    pub default: bool,
    /// Locations, matched by longest prefix.
    #[serde(default, rename = "location")]
    pub locations: Vec<Location>,
    /// Custom error pages: status code (as a string key) to an HTML file.
    #[serde(default)]
    pub error_pages: BTreeMap<String, PathBuf>,
}

/// A location: a URI prefix and what to do with requests under it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// URI prefix, starting with `/`.
    pub prefix: String,
    /// Serve files from this directory (nginx `root`: the full URI path is appended).
    pub root: Option<PathBuf>,
    /// Forward to this upstream group.
    pub proxy: Option<String>,
    /// Index files tried for a directory, in order.
    #[serde(default = "default_index")]
    pub index: Vec<String>,
    /// List directories that have no index file.
    #[serde(default)]
    pub autoindex: bool,
    /// Serve `FILE.br` / `FILE.gz` siblings when the client accepts them.
    #[serde(default = "yes")]
    pub precompressed: bool,
    /// Gzip compressible types on the fly.
    #[serde(default = "yes")]
    pub compress: bool,
    /// Smallest file compressed on the fly; below this the saving is not worth the CPU.
    #[serde(default = "default_compress_min", deserialize_with = "de_size")]
    pub compress_min_size: u64,
    /// `Cache-Control` value for static responses from this location.
    pub cache_control: Option<String>,
}

fn default_index() -> Vec<String> {
    vec!["index.html".to_owned()]
}

fn yes() -> bool {
    true
}

fn default_compress_min() -> u64 {
    1024
}

/// How a group picks its next server.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Fewest in-flight requests relative to weight; ties broken by round robin.
    LeastConn,
}

/// An upstream group: nginx's `upstream {}` block.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamGroup {
    /// Balancing method.
    #[serde(default)]
    pub balance: Balance,
    /// The servers.
    #[serde(rename = "server")]
    pub servers: Vec<UpstreamServer>,
    /// Idle keep-alive connections kept per server.
    #[serde(default = "default_keepalive")]
    pub keepalive: usize,
    /// Time allowed to establish a connection.
    #[serde(default = "secs::<5>", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Time allowed between two reads from the upstream (to the headers, and between body
    /// chunks).
    #[serde(default = "secs::<60>", deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Failures within `fail_timeout` that mark a server down (0 = never).
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// The failure window, and how long a server stays down.
    #[serde(default = "secs::<10>", deserialize_with = "de_duration")]
    pub fail_timeout: Duration,
}

fn default_keepalive() -> usize {
    32
}

fn default_max_fails() -> u32 {
    1
}

fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// One server of an upstream group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServer {
    /// Address and port.
    pub addr: SocketAddr,
    /// Relative share of requests.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Client-facing limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body (413 above it).
    #[serde(deserialize_with = "de_size")]
    pub max_body_size: u64,
    /// Largest request head, request line and headers together (431 above it). hyper's
    /// read buffer cannot be smaller than 8 KiB, so smaller values are rejected.
    #[serde(deserialize_with = "de_size")]
    pub max_header_size: u64,
    /// Most header fields in a request (431 above it).
    pub max_headers: usize,
    /// Time allowed to receive a whole request head; also the keep-alive idle timeout
    /// (408 if part of a request arrived, silent close on an idle connection).
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    /// Time allowed between two reads of a request body (408 above it).
    #[serde(deserialize_with = "de_duration")]
    pub body_timeout: Duration,
    /// On SIGTERM, how long in-flight requests may take before connections are cut.
    #[serde(deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_size: 1 << 20,
            max_header_size: 16 << 10,
            max_headers: 100,
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The static file cache (`[file_cache]`): small files are kept in memory and served
/// from there while a `stat` shows they are unchanged. Shared by all static locations.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileCacheConfig {
    /// Upper bound on the memory it holds (file bytes and per-entry overhead); 0 turns
    /// the cache off.
    #[serde(deserialize_with = "de_size")]
    pub max_size: u64,
    /// Larger files are never cached (they are streamed from disk).
    #[serde(deserialize_with = "de_size")]
    pub max_file_size: u64,
}

impl Default for FileCacheConfig {
    fn default() -> Self {
        Self {
            max_size: 64 << 20,
            max_file_size: 1 << 20,
        }
    }
}

/// Log destinations: a path, `-` for stdout (access) / stderr (error), or `off`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Access log in nginx's `combined` format.
    pub access: String,
    /// Error log, one JSON object a line.
    pub error: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            access: "-".to_owned(),
            error: "-".to_owned(),
        }
    }
}

impl std::str::FromStr for Config {
    type Err = ConfigError;

    /// Parses and validates; relative paths are taken relative to the current directory.
    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Reads, parses and validates a file. Relative paths inside it (roots, certificates,
    /// error pages, logs) are resolved against the file's directory, as nginx resolves
    /// them against its prefix.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates text (see [`std::str::FromStr`]); named like this so callers
    /// need not import the trait.
    #[expect(
        clippy::should_implement_trait,
        reason = "FromStr is implemented too; this inherent alias is the documented API"
    )]
    pub fn from_str(text: &str) -> Result<Self, ConfigError> {
        text.parse()
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for l in &mut self.listen {
            if let Some(tls) = &mut l.tls {
                fix(&mut tls.cert);
                fix(&mut tls.key);
            }
        }
        for s in &mut self.servers {
            for p in s.error_pages.values_mut() {
                fix(p);
            }
            for loc in &mut s.locations {
                if let Some(root) = &mut loc.root {
                    fix(root);
                }
            }
        }
        for log in [&mut self.log.access, &mut self.log.error] {
            if log != "-" && log != "off" && Path::new(log.as_str()).is_relative() {
                *log = base.join(&*log).to_string_lossy().into_owned();
            }
        }
    }

    /// Checks everything serde cannot; the first problem found is returned, naming its
    /// field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, l) in self.listen.iter().enumerate() {
            if let Some(tls) = &l.tls {
                crate::server::load_tls(tls).map_err(|e| invalid(format!("listen[{i}].tls"), e))?;
            }
            if self.listen[..i].iter().any(|o| o.addr == l.addr) {
                return Err(invalid(format!("listen[{i}].addr"), "listed twice"));
            }
        }
        if self.servers.is_empty() {
            return Err(invalid("server", "at least one [[server]] is required"));
        }
        if self.servers.iter().filter(|s| s.default).count() > 1 {
            return Err(invalid(
                "server.default",
                "more than one server is the default",
            ));
        }
        for (si, s) in self.servers.iter().enumerate() {
            for (ni, name) in s.names.iter().enumerate() {
                let bare = name.strip_prefix("*.").unwrap_or(name);
                if bare.is_empty()
                    || !bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(invalid(
                        format!("server[{si}].names[{ni}]"),
                        format!("{name:?} is not a host name or `*.suffix` wildcard"),
                    ));
                }
            }
            for (code, page) in &s.error_pages {
                let field = format!("server[{si}].error_pages.{code}");
                match code.parse::<u16>() {
                    Ok(c) if (400..600).contains(&c) => {}
                    _ => return Err(invalid(field, "key must be a 4xx or 5xx status code")),
                }
                std::fs::metadata(page)
                    .map_err(|e| invalid(&field, format!("{}: {e}", page.display())))?;
            }
            if s.locations.is_empty() {
                return Err(invalid(
                    format!("server[{si}].location"),
                    "at least one [[server.location]] is required",
                ));
            }
            for (li, loc) in s.locations.iter().enumerate() {
                let at = format!("server[{si}].location[{li}]");
                if !loc.prefix.starts_with('/') {
                    return Err(invalid(format!("{at}.prefix"), "must start with `/`"));
                }
                if s.locations[..li].iter().any(|o| o.prefix == loc.prefix) {
                    return Err(invalid(
                        format!("{at}.prefix"),
                        "duplicate prefix in this server",
                    ));
                }
                match (&loc.root, &loc.proxy) {
                    (Some(root), None) => {
                        let meta = std::fs::metadata(root).map_err(|e| {
                            invalid(format!("{at}.root"), format!("{}: {e}", root.display()))
                        })?;
                        if !meta.is_dir() {
                            return Err(invalid(
                                format!("{at}.root"),
                                format!("{} is not a directory", root.display()),
                            ));
                        }
                        for (ii, idx) in loc.index.iter().enumerate() {
                            if idx.is_empty() || idx.contains('/') || idx == "." || idx == ".." {
                                return Err(invalid(
                                    format!("{at}.index[{ii}]"),
                                    "must be a plain file name",
                                ));
                            }
                        }
                    }
                    (None, Some(group)) => {
                        if !self.upstreams.contains_key(group) {
                            return Err(invalid(
                                format!("{at}.proxy"),
                                format!(
                                    "no upstream group named {group:?} (define [upstream.{group}])"
                                ),
                            ));
                        }
                    }
                    _ => {
                        return Err(invalid(at, "exactly one of `root` or `proxy` must be set"));
                    }
                }
                if let Some(cc) = &loc.cache_control {
                    http::HeaderValue::from_str(cc).map_err(|_| {
                        invalid(format!("{at}.cache_control"), "not a valid header value")
                    })?;
                }
            }
        }
        for (name, g) in &self.upstreams {
            let at = format!("upstream.{name}");
            if g.servers.is_empty() {
                return Err(invalid(
                    format!("{at}.server"),
                    "at least one server is required",
                ));
            }
            for (i, s) in g.servers.iter().enumerate() {
                if s.weight == 0 || s.weight > 1000 {
                    return Err(invalid(
                        format!("{at}.server[{i}].weight"),
                        "must be 1..=1000",
                    ));
                }
            }
            for (field, d) in [
                ("connect_timeout", g.connect_timeout),
                ("read_timeout", g.read_timeout),
            ] {
                if d.is_zero() {
                    return Err(invalid(format!("{at}.{field}"), "must be positive"));
                }
            }
        }
        let l = &self.limits;
        if l.max_header_size < 8192 {
            return Err(invalid(
                "limits.max_header_size",
                "must be at least 8k (hyper's minimum read buffer)",
            ));
        }
        if l.max_header_size > 1 << 20 {
            return Err(invalid("limits.max_header_size", "must be at most 1m"));
        }
        if l.max_headers == 0 {
            return Err(invalid("limits.max_headers", "must be positive"));
        }
        for (field, d) in [
            ("limits.header_timeout", l.header_timeout),
            ("limits.body_timeout", l.body_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be positive"));
            }
        }
        for (field, v) in [
            ("log.access", &self.log.access),
            ("log.error", &self.log.error),
        ] {
            if v.is_empty() {
                return Err(invalid(field, "use a path, `-` or `off`"));
            }
        }
        Ok(())
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(n * mult).ok()
}

/// Parses `512`, `8k`, `1m`, `1g` (binary multiples, as nginx does).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()?.to_ascii_lowercase() {
        b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

struct StrOrNum<F>(&'static str, F);

impl<'de, T, F: Fn(&str) -> Option<T>> Visitor<'de> for StrOrNum<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).ok_or_else(|| E::custom(format!("{v:?} is not {}", self.0)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if v < 0 {
            return Err(E::custom(format!("{v} is negative, expected {}", self.0)));
        }
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(StrOrNum(
        "a duration like \"250ms\", \"10s\" or \"2m\"",
        parse_duration,
    ))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(StrOrNum("a size like 4096, \"8k\" or \"1m\"", parse_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> String {
        std::env::temp_dir().display().to_string()
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("7x"), None);
        assert_eq!(parse_size("8k"), Some(8192));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("k"), None);
    }

    #[test]
    fn minimal_config_is_valid() {
        let text = format!(
            "[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = {:?}\n",
            root()
        );
        let c = Config::from_str(&text).unwrap();
        assert_eq!(c.servers[0].locations[0].index, ["index.html"]);
        assert_eq!(c.limits.max_body_size, 1 << 20);
        assert_eq!(c.file_cache.max_size, 64 << 20);
        assert_eq!(c.file_cache.max_file_size, 1 << 20);
        let c = Config::from_str(&format!(
            "{text}[file_cache]\nmax_size = 0\nmax_file_size = \"8k\"\n"
        ))
        .unwrap();
        assert_eq!(
            (c.file_cache.max_size, c.file_cache.max_file_size),
            (0, 8192)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \"/nonexistent-xyz\"\n",
                "server[0].location[0].root",
            ),
            (
                "[[server]]\n[[server.location]]\nprefix = \"/\"\nproxy = \"app\"\n",
                "server[0].location[0].proxy",
            ),
            (
                "[[server]]\n[[server.location]]\nprefix = \"x\"\nproxy = \"app\"\n",
                "server[0].location[0].prefix",
            ),
            (
                "[[server]]\n[[server.location]]\nprefix = \"/\"\n",
                "server[0].location[0]",
            ),
            (
                "[[server]]\n[[server.location]]\nprefix = \"/\"\nrooot = \"/\"\n",
                "rooot",
            ),
            (
                "[limits]\nmax_header_size = 100\n[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \"/\"\n",
                "limits.max_header_size",
            ),
            (
                "[limits]\nheader_timeout = \"soon\"\n[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \"/\"\n",
                "header_timeout",
            ),
            (
                "[upstream.app]\nserver = []\n[[server]]\n[[server.location]]\nprefix = \"/\"\nproxy = \"app\"\n",
                "upstream.app.server",
            ),
            (
                "[file_cache]\nmax_size = \"lots\"\n[[server]]\n[[server.location]]\nprefix = \"/\"\nroot = \"/\"\n",
                "max_size",
            ),
        ];
        for (text, field) in cases {
            let err = Config::from_str(text).unwrap_err().to_string();
            assert!(err.contains(field), "{field:?} not named in: {err}");
        }
    }
}
