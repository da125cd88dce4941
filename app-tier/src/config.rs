//! Configuration: a TOML file, then `APP_TIER_*` environment variables on top.
//!
//! The database password may sit in the URL or, better, in `APP_TIER_DATABASE_PASSWORD`
//! so the file can be world-readable. Either way it lives only in [`DbUrl`], whose
//! `Debug` and `Display` print `***` in its place, so neither a log line nor an error
//! message can carry it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sqlx::mysql::MySqlConnectOptions;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown, missing, or has a value of the
    /// wrong type or out of range.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file (or `<string>`).
        path: PathBuf,
        /// The key (`database.max_connections`) and what it should be, or the line of a
        /// syntax error; never the value found (see [`describe`]).
        message: String,
    },
    /// An environment variable has a value of the wrong shape.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What was expected.
        message: String,
    },
    /// A setting is out of range or inconsistent.
    #[error("config key {key}: {message}")]
    Invalid {
        /// The key, dotted (`database.max_connections`).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// A `mysql://user:password@host:port/database` URL whose password never prints.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DbUrl(String);

impl DbUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        DbUrl(url.into())
    }

    /// The URL with its password replaced by `***`: the only form that may be logged.
    ///
    /// The userinfo ends at the *last* `@`: a password may hold `/`, `?`, `#` or `@`
    /// (unencoded, the URL is invalid, and its error message prints this form), so the
    /// authority cannot be cut at the first `/` before looking for it. An `@` in the
    /// path or query then only hides more than needed. Without any `@`, a port that is
    /// not a number is masked too: `mysql://user:password/db` lacks its `@host`, and
    /// its "port" is the password.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://").map(|i| i + 3) else {
            return "<not a URL>".into();
        };
        let (scheme, rest) = s.split_at(scheme_end);
        if let Some(at) = rest.rfind('@') {
            let (userinfo, host) = rest.split_at(at); // host: "@host:port/db?..."
            return match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}{user}:***{host}"),
                None => s.clone(),
            };
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // The port follows the last `:` outside an IPv6 literal (`[::1]:3306`).
        let host_end = authority.rfind(']').unwrap_or(0);
        match authority[host_end..].rfind(':').map(|i| host_end + i) {
            Some(colon) if !authority[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
                format!("{scheme}{}:***{tail}", &authority[..colon])
            }
            _ => s.clone(),
        }
    }

    /// Parses into driver options. The error deliberately omits the URL itself.
    pub fn connect_options(&self, key: &'static str) -> Result<MySqlConnectOptions, ConfigError> {
        MySqlConnectOptions::from_str(&self.0).map_err(|_| ConfigError::Invalid {
            key,
            message: format!(
                "not a valid mysql:// URL ({}); expected mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                self.redacted()
            ),
        })
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A password kept apart from the URL (from `APP_TIER_DATABASE_PASSWORD` or `database.password`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }
    /// The secret itself, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The whole configuration of `app-tier serve`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on (`APP_TIER_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A request that has not answered after this long gets a 503 (`APP_TIER_REQUEST_TIMEOUT_MS`).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Bodies larger than this are refused with 413 (`APP_TIER_MAX_BODY_BYTES`).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// The database.
    pub database: DatabaseConfig,
}

/// The `[database]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The primary: all writes, and reads when no replica is up (`APP_TIER_DATABASE_URL`).
    pub url: DbUrl,
    /// Overrides the URL's password (`APP_TIER_DATABASE_PASSWORD`); applies to replicas too.
    #[serde(default)]
    pub password: Option<Password>,
    /// Read replicas, used round-robin (`APP_TIER_DATABASE_REPLICA_URLS`, comma-separated).
    #[serde(default)]
    pub replica_urls: Vec<DbUrl>,
    /// Connections per pool (primary and each replica) (`APP_TIER_DATABASE_MAX_CONNECTIONS`).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Connections kept open even when idle.
    #[serde(default)]
    pub min_connections: u32,
    /// How long a request waits for a connection before answering 503
    /// (`APP_TIER_DATABASE_ACQUIRE_TIMEOUT_MS`).
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// After a database is found unreachable, requests fail at once (503) for this long
    /// before the next attempt: fail fast instead of piling up on a dead server.
    #[serde(default = "default_retry_interval_ms")]
    pub retry_interval_ms: u64,
    /// Idle connections are closed after this long.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

/// The longest any `_ms` setting may be: a day.
const MAX_MS: u64 = 24 * 60 * 60 * 1000;
/// The largest `max_body_bytes`: a body is held in memory whole before it is parsed.
const MAX_BODY_BYTES: u64 = 1 << 30;
/// The most connections per pool: MariaDB's own ceiling for `max_connections`.
const MAX_CONNECTIONS: u64 = 100_000;

/// `value` of `key` is within `min..=max`.
fn in_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        message: format!("must be from {min} to {max}, not {value}"),
    })
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_shutdown_grace_ms() -> u64 {
    30_000
}
fn default_max_connections() -> u32 {
    10
}
fn default_acquire_timeout_ms() -> u64 {
    2_000
}
fn default_retry_interval_ms() -> u64 {
    250
}
fn default_idle_timeout_ms() -> u64 {
    600_000
}

impl DatabaseConfig {
    /// A config for `url` with every other setting at its default.
    pub fn new(url: DbUrl) -> Self {
        DatabaseConfig {
            url,
            password: None,
            replica_urls: Vec::new(),
            max_connections: default_max_connections(),
            min_connections: 0,
            acquire_timeout_ms: default_acquire_timeout_ms(),
            retry_interval_ms: default_retry_interval_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }

    /// `acquire_timeout_ms` as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

impl Config {
    /// A config for `database_url` with every other setting at its default.
    pub fn new(database_url: DbUrl) -> Self {
        Config {
            listen: default_listen(),
            request_timeout_ms: default_request_timeout_ms(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            database: DatabaseConfig::new(database_url),
        }
    }

    /// Reads `path` (if given), applies the process environment, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text, path)?
            }
            // No file: everything must come from the environment.
            None => Self::parse("[database]\nurl = \"\"\n", Path::new("<defaults>"))?,
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; `origin` only names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        // serde_path_to_error tracks the key serde was at when it failed, which toml's
        // own error does not name (it only has the value's byte span).
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            ConfigError::Parse {
                path: origin.to_owned(),
                message: describe(text, &e.path().to_string(), e.inner()),
            }
        })
    }

    /// Applies `APP_TIER_*` overrides read through `lookup` (the environment, or a map in tests).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn num<T: FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                name,
                message: format!("expected a number, got {v:?}"),
            })
        }
        if let Some(v) = lookup("APP_TIER_LISTEN") {
            self.listen = v.trim().parse().map_err(|_| ConfigError::Env {
                name: "APP_TIER_LISTEN",
                message: format!("expected HOST:PORT, got {v:?}"),
            })?;
        }
        if let Some(v) = lookup("APP_TIER_REQUEST_TIMEOUT_MS") {
            self.request_timeout_ms = num("APP_TIER_REQUEST_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = lookup("APP_TIER_MAX_BODY_BYTES") {
            self.max_body_bytes = num("APP_TIER_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = lookup("APP_TIER_DATABASE_URL") {
            self.database.url = DbUrl::new(v);
        }
        if let Some(v) = lookup("APP_TIER_DATABASE_PASSWORD") {
            self.database.password = Some(Password::new(v));
        }
        if let Some(v) = lookup("APP_TIER_DATABASE_REPLICA_URLS") {
            self.database.replica_urls = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(DbUrl::new)
                .collect();
        }
        if let Some(v) = lookup("APP_TIER_DATABASE_MAX_CONNECTIONS") {
            self.database.max_connections = num("APP_TIER_DATABASE_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = lookup("APP_TIER_DATABASE_ACQUIRE_TIMEOUT_MS") {
            self.database.acquire_timeout_ms = num("APP_TIER_DATABASE_ACQUIRE_TIMEOUT_MS", &v)?;
        }
        Ok(())
    }

    /// Checks ranges and that every URL parses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database.url.0.is_empty() {
            return Err(ConfigError::Invalid {
                key: "database.url",
                message: "missing: set it in the file or in APP_TIER_DATABASE_URL".into(),
            });
        }
        self.database.url.connect_options("database.url")?;
        for url in &self.database.replica_urls {
            url.connect_options("database.replica_urls")?;
        }
        let db = &self.database;
        // Durations: 0 makes no sense for any but the fail-fast window (0: none), and a
        // deadline days away is a typo (and could overflow the clock's arithmetic).
        for (key, value, min) in [
            ("request_timeout_ms", self.request_timeout_ms, 1),
            ("shutdown_grace_ms", self.shutdown_grace_ms, 1),
            ("database.acquire_timeout_ms", db.acquire_timeout_ms, 1),
            ("database.retry_interval_ms", db.retry_interval_ms, 0),
            ("database.idle_timeout_ms", db.idle_timeout_ms, 1),
        ] {
            in_range(key, value, min, MAX_MS)?;
        }
        in_range(
            "max_body_bytes",
            u64::try_from(self.max_body_bytes).unwrap_or(u64::MAX),
            1,
            MAX_BODY_BYTES,
        )?;
        in_range(
            "database.max_connections",
            u64::from(db.max_connections),
            1,
            MAX_CONNECTIONS,
        )?;
        if db.min_connections > db.max_connections {
            return Err(ConfigError::Invalid {
                key: "database.min_connections",
                message: "must not exceed database.max_connections".into(),
            });
        }
        Ok(())
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// What is wrong with a config file, from a parse error at `key` (serde_path_to_error's
/// path: `database.replica_urls[0]`, or `.` for none): the key and what it should be.
///
/// Never the value: serde's type and value errors quote what they met (`invalid type:
/// string "mysql://hbnb:pw@replica/hbnb", expected a sequence`), and that may be the
/// password. So only what was expected is kept from those; messages that name keys
/// only (unknown, missing, duplicate) and toml's syntax errors (which name the tokens
/// it expected, not the text) pass through; anything else (the message of a type's own
/// parser, which may quote its input) is replaced.
fn describe(text: &str, key: &str, err: &toml::de::Error) -> String {
    let message = err.message();
    let is_value_error = ["invalid type: ", "invalid value: ", "invalid length "]
        .iter()
        .any(|kind| message.starts_with(kind));
    if is_value_error && let Some((_, expected)) = message.rsplit_once(", expected ") {
        // The last ", expected ": a quoted value may contain the words too.
        return format!("{key}: expected {}", expected_in_words(expected));
    }
    if ["unknown field", "missing field", "duplicate"]
        .iter()
        .any(|kind| message.starts_with(kind))
    {
        return if key == "." {
            message.to_owned()
        } else {
            format!("{key}: {message}")
        };
    }
    if key == "." {
        // TOML syntax: nothing was deserialized yet, so no key; the line instead.
        let line = err
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        return match line {
            Some(line) => format!("line {line}: {}", one_line(message)),
            None => one_line(message),
        };
    }
    match message {
        // std's `SocketAddr` parser, for `listen`.
        "invalid socket address syntax" => {
            format!("{key}: expected {}", expected_in_words("socket address"))
        }
        _ => format!("{key}: invalid value"),
    }
}

/// toml's "invalid string\nexpected `"`" as one line.
fn one_line(message: &str) -> String {
    message.trim_end().replace('\n', ", ")
}

/// serde's name for an expected type (`u32`, `a sequence`) in the config's words.
fn expected_in_words(expected: &str) -> String {
    match expected {
        "u32" => format!("an integer from 0 to {}", u32::MAX),
        "u64" | "usize" => "a non-negative integer".into(),
        "a sequence" => "a list".into(),
        "socket address" => "an IP address and port, such as \"127.0.0.1:8000\"".into(),
        s if s.starts_with("struct ") => "a table".into(),
        s => s.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const EXAMPLE: &str = include_str!("../examples/app.toml");

    #[test]
    fn example_config_parses_and_validates() {
        let c = Config::parse(EXAMPLE, Path::new("examples/app.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.database.max_connections, 10);
    }

    #[test]
    fn password_never_prints() {
        let url = DbUrl::new("mysql://hbnb:s3cret-pw@db.internal:3306/hbnb?ssl-mode=disabled");
        assert_eq!(
            url.redacted(),
            "mysql://hbnb:***@db.internal:3306/hbnb?ssl-mode=disabled"
        );
        let mut c = Config::new(url);
        c.database.password = Some(Password::new("other-s3cret"));
        c.database.replica_urls = vec![DbUrl::new("mysql://r:s3cret-pw@replica/hbnb")];
        let printed = format!("{c:?} {}", c.database.url);
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn bad_url_error_hides_password() {
        let c = Config::new(DbUrl::new("mysql://u:s3cret@host:notaport/db"));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::parse(EXAMPLE, Path::new("x")).unwrap();
        let env: HashMap<&str, &str> = [
            ("APP_TIER_LISTEN", "0.0.0.0:9000"),
            ("APP_TIER_DATABASE_URL", "mysql://a@h/d"),
            (
                "APP_TIER_DATABASE_REPLICA_URLS",
                "mysql://a@r1/d, mysql://a@r2/d",
            ),
            ("APP_TIER_DATABASE_MAX_CONNECTIONS", "3"),
            ("APP_TIER_REQUEST_TIMEOUT_MS", "1500"),
        ]
        .into();
        c.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.database.url, DbUrl::new("mysql://a@h/d"));
        assert_eq!(c.database.replica_urls.len(), 2);
        assert_eq!(c.database.max_connections, 3);
        assert_eq!(c.request_timeout_ms, 1500);
    }

    #[test]
    fn env_with_wrong_shape_is_named() {
        let mut c = Config::new(DbUrl::new("mysql://a@h/d"));
        let err = c
            .apply_env(|k| (k == "APP_TIER_DATABASE_MAX_CONNECTIONS").then(|| "many".to_string()))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("APP_TIER_DATABASE_MAX_CONNECTIONS")
        );
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = Config::parse(
            "bogus = 1\n[database]\nurl='mysql://a@h/d'\n",
            Path::new("f"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    fn parse_err(text: &str) -> String {
        Config::parse(text, Path::new("app.toml"))
            .unwrap_err()
            .to_string()
    }

    const DB: &str = "[database]\nurl = 'mysql://a@h/d'\n";

    #[test]
    fn a_value_of_the_wrong_type_is_never_printed() {
        for (text, key, secret) in [
            (
                format!("{DB}replica_urls = \"mysql://hbnb:S3cretPW@replica/hbnb\"\n"),
                "database.replica_urls: expected a list",
                "S3cretPW",
            ),
            (
                format!("{DB}password = 31415926\n"),
                "database.password: expected a string",
                "31415926",
            ),
            (
                format!("{DB}password = 3.1415926\n"),
                "database.password: expected a string",
                "1415926",
            ),
            (
                format!("{DB}password = ['S3cretPW']\n"),
                "database.password: expected a string",
                "S3cretPW",
            ),
            (
                format!("{DB}password = {{ pw = 'S3cretPW' }}\n"),
                "database.password: expected a string",
                "S3cretPW",
            ),
            (
                format!("{DB}replica_urls = ['mysql://a@r/d', 27182818]\n"),
                "database.replica_urls[1]: expected a string",
                "27182818",
            ),
            (
                "[database]\nurl = ['mysql://u:S3cretPW@h/d']\n".into(),
                "database.url: expected a string",
                "S3cretPW",
            ),
            (
                format!("{DB}max_connections = 'S3cretPW'\n"),
                "database.max_connections: expected an integer",
                "S3cretPW",
            ),
            (
                format!("listen = 'S3cretPW'\n{DB}"),
                "listen: expected an IP address and port",
                "S3cretPW",
            ),
            (
                // A password left unquoted is a TOML syntax error: the line, not the text.
                format!("{DB}password = S3cretPW\n"),
                "line 3: invalid string, expected",
                "S3cretPW",
            ),
            (
                format!("{DB}password = \"S3cretPW\n"),
                "line 3: ",
                "S3cretPW",
            ),
        ] {
            let err = parse_err(&text);
            assert!(err.contains(key), "{text:?}: {err}");
            assert!(!err.contains(secret), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_or_range_names_its_key() {
        for (text, want) in [
            (
                format!("{DB}max_connections = \"ten\"\n"),
                "database.max_connections: expected an integer from 0 to 4294967295",
            ),
            (
                format!("{DB}max_connections = 5000000000\n"),
                "database.max_connections: expected an integer from 0 to 4294967295",
            ),
            (
                format!("listen = \"nothost\"\n{DB}"),
                "listen: expected an IP address and port, such as \"127.0.0.1:8000\"",
            ),
            (
                format!("listen = 8000\n{DB}"),
                "listen: expected an IP address and port",
            ),
            (
                format!("max_body_bytes = -5\n{DB}"),
                "max_body_bytes: expected a non-negative integer",
            ),
            (
                format!("request_timeout_ms = 1.5\n{DB}"),
                "request_timeout_ms: expected a non-negative integer",
            ),
            (
                format!("{DB}acquire_timeout_ms = true\n"),
                "database.acquire_timeout_ms: expected a non-negative integer",
            ),
            ("database = 5\n".into(), "database: expected a table"),
            ("[database]\n".into(), "database: missing field `url`"),
            (
                "listen = '127.0.0.1:1'\n".into(),
                "missing field `database`",
            ),
        ] {
            let err = parse_err(&text);
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("invalid config file app.toml: "), "{err}");
        }
    }

    #[test]
    fn zero_and_absurd_numbers_are_refused_naming_the_key() {
        type Edit = fn(&mut Config);
        let cases: [(&str, Edit); 11] = [
            ("database.acquire_timeout_ms", |c| {
                c.database.acquire_timeout_ms = 0
            }),
            ("database.acquire_timeout_ms", |c| {
                c.database.acquire_timeout_ms = u64::MAX
            }),
            ("request_timeout_ms", |c| c.request_timeout_ms = 0),
            ("request_timeout_ms", |c| c.request_timeout_ms = MAX_MS + 1),
            ("shutdown_grace_ms", |c| c.shutdown_grace_ms = 0),
            ("database.idle_timeout_ms", |c| {
                c.database.idle_timeout_ms = 0
            }),
            ("database.retry_interval_ms", |c| {
                c.database.retry_interval_ms = u64::MAX
            }),
            ("max_body_bytes", |c| c.max_body_bytes = 0),
            ("max_body_bytes", |c| c.max_body_bytes = usize::MAX),
            ("database.max_connections", |c| {
                c.database.max_connections = 0
            }),
            ("database.max_connections", |c| {
                c.database.max_connections = u32::MAX
            }),
        ];
        for (key, edit) in cases {
            let mut c = Config::new(DbUrl::new("mysql://a@h/d"));
            c.validate().unwrap();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { key: k, .. } if k == key),
                "{key}: {err}"
            );
        }
        // No fail-fast window is a choice, not a mistake.
        let mut c = Config::new(DbUrl::new("mysql://a@h/d"));
        c.database.retry_interval_ms = 0;
        c.validate().unwrap();
    }

    #[test]
    fn the_userinfo_ends_at_the_last_at_sign() {
        for (url, want) in [
            ("mysql://u:S3c/ret@localhost/x", "mysql://u:***@localhost/x"),
            ("mysql://u:S3c@ret@localhost/x", "mysql://u:***@localhost/x"),
            (
                "mysql://u:S?3c#ret@localhost:3306/x?socket=/tmp/s",
                "mysql://u:***@localhost:3306/x?socket=/tmp/s",
            ),
            ("mysql://u:S3cret/x", "mysql://u:***/x"),
            ("mysql://u:S3cret", "mysql://u:***"),
            (
                "mysql://u@h/db?socket=/run/x.sock",
                "mysql://u@h/db?socket=/run/x.sock",
            ),
            ("mysql://h:3306/db", "mysql://h:3306/db"),
            ("mysql://[::1]:3306/db", "mysql://[::1]:3306/db"),
            ("mysql://[::1]/db", "mysql://[::1]/db"),
        ] {
            assert_eq!(DbUrl::new(url).redacted(), want, "{url}");
        }
        let c = Config::new(DbUrl::new("mysql://u:S3c/ret@localhost/x"));
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("database.url") && !err.contains("S3c"),
            "{err}"
        );
    }
}
