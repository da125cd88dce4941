//! The access log (nginx `combined` format, one line per finished response) and the
//! error log (one JSON object per line, so it can be parsed without regexes).
//!
//! Each line is formatted first and written with one `write` on an `O_APPEND` file, so
//! lines from concurrent requests never interleave and an external rotator can move the
//! file; SIGUSR1 reopens it by name (nginx's logrotate contract), and so does SIGHUP (a
//! reload builds new log handles).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

/// Where one log goes.
enum Sink {
    Off,
    Stdout,
    Stderr,
    /// The file and the path it was opened by, for [`Sink::reopen`].
    File(Mutex<File>, std::path::PathBuf),
}

impl Sink {
    fn open(spec: &str, dash_is_stderr: bool) -> std::io::Result<Self> {
        Ok(match spec {
            "off" => Sink::Off,
            "-" if dash_is_stderr => Sink::Stderr,
            "-" => Sink::Stdout,
            path => Sink::File(Mutex::new(Self::open_file(path.as_ref())?), path.into()),
        })
    }

    fn open_file(path: &std::path::Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Opens the path again and writes to the new file from now on (after a rotator
    /// moved the old one away). On error the old file stays in use.
    fn reopen(&self) -> std::io::Result<()> {
        if let Sink::File(f, path) = self {
            let new = Self::open_file(path)?;
            *crate::lock(f) = new;
        }
        Ok(())
    }

    fn write_line(&self, line: &str) {
        // A log write that fails (disk full) must not fail the request; there is nowhere
        // better to report it, so it is dropped.
        let _ = match self {
            Sink::Off => Ok(()),
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::File(f, _) => match f.lock() {
                Ok(mut f) => f.write_all(line.as_bytes()),
                Err(_) => Ok(()),
            },
        };
    }

    fn is_off(&self) -> bool {
        matches!(self, Sink::Off)
    }
}

/// The access log.
pub struct AccessLog(Sink);

/// What the access log needs to know about one request; filled at the start, completed
/// with the status and byte count when the response body is finished or dropped.
pub struct AccessEntry {
    /// Client address.
    pub remote: SocketAddr,
    /// When the request arrived.
    pub time: SystemTime,
    /// `METHOD target HTTP/x.y`.
    pub request_line: String,
    /// Response status.
    pub status: u16,
    /// `Referer`, if any, as the client sent it (logged byte by byte, escaped).
    pub referer: Option<http::HeaderValue>,
    /// `User-Agent`, if any, as the client sent it.
    pub user_agent: Option<http::HeaderValue>,
}

impl AccessLog {
    /// Opens `spec`: a path, `-` for stdout, or `off`.
    pub fn open(spec: &str) -> std::io::Result<Self> {
        Sink::open(spec, false).map(Self)
    }

    /// Whether lines are discarded (so callers can skip building them).
    pub fn is_off(&self) -> bool {
        self.0.is_off()
    }

    /// Reopens the file by its path (SIGUSR1, after a rotator moved it).
    pub fn reopen(&self) -> std::io::Result<()> {
        self.0.reopen()
    }

    /// Writes `$remote_addr - $remote_user [$time_local] "$request" $status
    /// $body_bytes_sent "$http_referer" "$http_user_agent"`.
    pub fn write(&self, e: &AccessEntry, body_bytes: u64) {
        if self.is_off() {
            return;
        }
        let mut line = String::with_capacity(160);
        let _ = writeln!(
            line,
            "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\"",
            e.remote.ip(),
            clf_time(e.time),
            escape(e.request_line.as_bytes()),
            e.status,
            body_bytes,
            escape(e.referer.as_ref().map_or(b"-", |v| v.as_bytes())),
            escape(e.user_agent.as_ref().map_or(b"-", |v| v.as_bytes())),
        );
        self.0.write_line(&line);
    }
}

/// nginx escapes `"`, `\` and non-printable bytes as `\xHH` so a request cannot forge
/// log fields. It works on bytes: a header byte beyond ASCII is logged as itself
/// escaped (`\xE9`), whatever the encoding.
fn escape(s: &[u8]) -> std::borrow::Cow<'_, str> {
    if s.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        // All printable ASCII, checked just above.
        return String::from_utf8_lossy(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out.into()
}

/// Severity of an error-log event.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Something failed and a client saw an error.
    Error,
    /// Something failed and was worked around (a retry), or a client misbehaved.
    Warn,
    /// Lifecycle: start, reload, drain.
    Info,
}

/// The structured error log.
pub struct ErrorLog(Sink);

impl ErrorLog {
    /// Opens `spec`: a path, `-` for stderr, or `off`.
    pub fn open(spec: &str) -> std::io::Result<Self> {
        Sink::open(spec, true).map(Self)
    }

    /// Reopens the file by its path (SIGUSR1, after a rotator moved it).
    pub fn reopen(&self) -> std::io::Result<()> {
        self.0.reopen()
    }

    /// Writes `{"time":..,"level":..,"msg":..,<fields>}`.
    pub fn log(&self, level: Level, msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        if self.0.is_off() {
            return;
        }
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), iso_time(SystemTime::now()).into());
        let level = match level {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
        };
        obj.insert("level".into(), level.into());
        obj.insert("msg".into(), msg.into());
        for (k, v) in fields {
            obj.insert((*k).into(), v.to_string().into());
        }
        let mut line = serde_json::Value::Object(obj).to_string();
        line.push('\n');
        self.0.write_line(&line);
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm); std has no
/// calendar and these two formats do not justify a date crate.
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `10/Oct/2000:13:55:36 +0000` (always UTC: the server does not read the time zone
/// database).
pub fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss) = civil(unix_secs(t));
    format!(
        "{d:02}/{}/{y}:{hh:02}:{mm:02}:{ss:02} +0000",
        MONTHS[(m - 1) as usize]
    )
}

/// `2000-10-10T13:55:36Z`.
pub fn iso_time(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix_secs(t));
    format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        assert_eq!(iso_time(t), "2000-10-10T13:55:36Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso_time(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn escapes_quotes_and_controls() {
        assert_eq!(escape(b"GET / HTTP/1.1"), "GET / HTTP/1.1");
        assert_eq!(escape(b"a\"b\\c\x01"), "a\\x22b\\x5Cc\\x01");
        assert_eq!(escape(b"a\xe9"), "a\\xE9");
    }
}
