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
    /// The file is not valid TOML or has unknown / mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file (or `<string>`).
        path: PathBuf,
        /// The TOML parser's message (it never echoes values of other keys).
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
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://").map(|i| i + 3) else {
            return "<not a URL>".into();
        };
        let rest = &s[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                let masked = if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    user.to_string()
                };
                format!(
                    "{}{}{}",
                    &s[..scheme_end],
                    masked,
                    &rest[at..] // "@host:port/db?..."
                )
            }
            None => s.clone(),
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
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            // `message()` names the key and the expected type, without quoting the
            // document, so a password elsewhere in the file cannot leak through it.
            message: e.message().to_string(),
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
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "database.max_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.database.min_connections > self.database.max_connections {
            return Err(ConfigError::Invalid {
                key: "database.min_connections",
                message: "must not exceed database.max_connections".into(),
            });
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "request_timeout_ms",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
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
}
