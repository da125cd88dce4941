//! Static content: map a request path to a file under a location's root and answer with
//! the right status, validators, ranges and content coding.
//!
//! # Why not tower-http's `ServeDir`
//! `ServeDir` was the intended base, but it sends no `ETag` at all (so `If-Match`,
//! `If-None-Match` and entity-tag `If-Range` cannot work), ignores `If-Range`, refuses
//! multi-range requests, and resolves paths with plain `open` under the root, which
//! follows symlinks out of it. Closing those gaps means replacing its validator, range
//! and open logic, which is most of it; what is left (MIME by extension, precompressed
//! siblings) is a few lines. So this is an own implementation on hyper, with the HTTP
//! rules in [`crate::conditional`] where they are unit-tested.
//!
//! # Confinement
//! Paths are decoded segment by segment; NUL, an encoded `/`, an encoded dot-segment or a
//! `..` that would climb above the root is a 400. Files are opened with `openat2(2)` and
//! `RESOLVE_BENEATH` relative to a descriptor of the root, so the kernel refuses any
//! symlink (or `..` inside one) that leaves the root (403); absolute symlinks are refused
//! even when they point inside. Where `openat2` is unavailable (kernel < 5.6 or a seccomp
//! filter) the fallback canonicalises the path and checks the prefix, which is racy
//! against a concurrent rename but still refuses plain symlink escapes.
//!
//! # I/O
//! All file system work for a request (open, stat, sibling probe, small reads) happens in
//! one `spawn_blocking` call. Bodies up to [`INLINE_MAX`] are read there; larger ones are
//! streamed by a blocking reader through a bounded channel.

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use tokio::sync::mpsc;

use crate::body::{self, Body, ChannelBody};
use crate::conditional::{self, Precondition, Ranges, Validators};
use crate::config::Location;

/// Bodies up to this size are read in the same blocking call that opened the file: one
/// thread hop per request instead of two.
const INLINE_MAX: u64 = 64 << 10;
/// Chunk size for streamed bodies.
const CHUNK: usize = 128 << 10;
/// Files up to this size are compressed on the fly in one go (so the response has a
/// Content-Length); larger ones are compressed while streaming.
const GZIP_INLINE_MAX: u64 = 256 << 10;

/// A location's document root, opened once per configuration load.
pub struct StaticRoot {
    dir: File,
    canonical: PathBuf,
    index: Vec<String>,
    autoindex: bool,
    precompressed: bool,
    compress: bool,
    compress_min_size: u64,
    cache_control: Option<HeaderValue>,
}

impl StaticRoot {
    /// Opens the root directory of a validated static location.
    pub fn open(root: &Path, loc: &Location) -> io::Result<Self> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)?;
        Ok(Self {
            dir,
            canonical: std::fs::canonicalize(root)?,
            index: loc.index.clone(),
            autoindex: loc.autoindex,
            precompressed: loc.precompressed,
            compress: loc.compress,
            compress_min_size: loc.compress_min_size,
            cache_control: loc
                .cache_control
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok()),
        })
    }
}

/// What the request needs from us, moved into the blocking task.
struct Ask {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

/// A response head plus how to produce its body.
struct Prepared {
    status: StatusCode,
    headers: HeaderMap,
    plan: Plan,
}

enum Plan {
    Empty,
    Bytes(Bytes),
    Stream {
        file: File,
        segments: Vec<Segment>,
        len: u64,
    },
    Gzip {
        file: File,
    },
}

enum Segment {
    Data(Bytes),
    File(Range<u64>),
}

/// Serves a GET or HEAD from `root`. `Err(status)` means "answer with this error status"
/// (so the virtual server's error page can be used).
pub async fn serve(
    root: Arc<StaticRoot>,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<Response<Body>, StatusCode> {
    if method != Method::GET && method != Method::HEAD {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    let ask = Ask {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers.clone(),
    };
    let prepared = tokio::task::spawn_blocking(move || prepare(&root, &ask))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)??;
    let body = match prepared.plan {
        Plan::Empty => body::empty(),
        Plan::Bytes(b) => body::full(b),
        Plan::Stream {
            file,
            segments,
            len,
        } => {
            let (tx, rx) = mpsc::channel(4);
            tokio::task::spawn_blocking(move || stream_segments(&file, segments, &tx));
            Body::new(ChannelBody::new(rx, Some(len)))
        }
        Plan::Gzip { file } => {
            let (tx, rx) = mpsc::channel(4);
            tokio::task::spawn_blocking(move || stream_gzip(file, &tx));
            Body::new(ChannelBody::new(rx, None))
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = prepared.status;
    *resp.headers_mut() = prepared.headers;
    Ok(resp)
}

/// Decodes and confines a request path. Returns the path relative to the root (empty
/// for the root itself).
pub fn sanitize_path(raw: &str) -> Result<PathBuf, StatusCode> {
    let bad = Err(StatusCode::BAD_REQUEST);
    let Some(rest) = raw.strip_prefix('/') else {
        return bad;
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    for seg in rest.split('/') {
        let decoded = percent_decode_strict(seg).ok_or(StatusCode::BAD_REQUEST)?;
        if decoded.contains(&0) || decoded.contains(&b'/') {
            return bad;
        }
        let encoded = decoded.as_slice() != seg.as_bytes();
        match decoded.as_slice() {
            b"" => {}
            // An encoded dot-segment has no legitimate use; it only exists to slip past
            // normalisers, so refuse it rather than guess what it meant.
            b"." | b".." if encoded => return bad,
            b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return bad;
                }
            }
            _ => out.push(decoded),
        }
    }
    let mut p = PathBuf::new();
    for seg in out {
        p.push(OsStr::from_bytes(&seg));
    }
    Ok(p)
}

/// Percent-decoding that rejects a `%` not followed by two hex digits (the lenient
/// decoders pass it through, which hides malformed input).
fn percent_decode_strict(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `struct open_how` from `<linux/openat2.h>`; libc's is `non_exhaustive`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `rel` under the root without leaving it.
fn open_beneath(root: &StaticRoot, rel: &Path) -> io::Result<File> {
    // O_NONBLOCK so that a FIFO planted in the root cannot hang the thread in open();
    // regular files ignore it.
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    let rel_os = if rel.as_os_str().is_empty() {
        OsStr::new(".")
    } else {
        rel.as_os_str()
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let c = CString::new(rel_os.as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let how = OpenHow {
            flags: flags as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 reads a NUL-terminated path and an open_how of the size we pass;
        // both outlive the call. The returned descriptor is owned by nobody else.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor from the kernel, owned by the File from here on.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err);
        }
        NO_OPENAT2.store(true, Ordering::Relaxed);
    }
    let canon = std::fs::canonicalize(root.canonical.join(rel))?;
    if !canon.starts_with(&root.canonical) {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(canon)
}

fn io_status(e: &io::Error) -> StatusCode {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => {
            StatusCode::NOT_FOUND
        }
        // EXDEV/ELOOP: the path (through a symlink) leaves the root.
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EXDEV) | Some(libc::ELOOP)
        | Some(libc::ENXIO) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Strong entity-tag from inode metadata: modification time to the nanosecond and size,
/// plus the coding so an encoded sibling never shares a tag with the identity file.
fn etag(meta: &Metadata, coding: &str) -> String {
    format!(
        "\"{:x}.{:x}-{:x}{}\"",
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len(),
        coding
    )
}

fn compressible(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/manifest+json"
                | "application/wasm"
                | "image/svg+xml"
        )
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The representation chosen for this request.
struct Rep {
    file: File,
    meta: Metadata,
    etag: String,
    /// `Content-Encoding` of a precompressed sibling.
    encoding: Option<&'static str>,
    /// Compress on the fly.
    gzip_on_the_fly: bool,
}

fn prepare(root: &StaticRoot, ask: &Ask) -> Result<Prepared, StatusCode> {
    let rel = sanitize_path(&ask.path)?;
    let file = open_beneath(root, &rel).map_err(|e| io_status(&e))?;
    let meta = file.metadata().map_err(|e| io_status(&e))?;
    let (file, meta, rel) = if meta.is_dir() {
        if !ask.path.ends_with('/') {
            // As nginx does: a directory without the slash is redirected so relative
            // links inside its index resolve against the directory.
            let mut loc = format!("{}/", ask.path);
            if let Some(q) = &ask.query {
                loc.push('?');
                loc.push_str(q);
            }
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, hv(&loc));
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(Prepared {
                status: StatusCode::MOVED_PERMANENTLY,
                headers,
                plan: Plan::Bytes(Bytes::from_static(b"moved permanently\n")),
            });
        }
        let mut found = None;
        for idx in &root.index {
            let p = rel.join(idx);
            match open_beneath(root, &p) {
                Ok(f) => {
                    let m = f.metadata().map_err(|e| io_status(&e))?;
                    if m.is_file() {
                        found = Some((f, m, p));
                        break;
                    }
                }
                Err(e) if io_status(&e) == StatusCode::NOT_FOUND => {}
                Err(e) => return Err(io_status(&e)),
            }
        }
        match found {
            Some(f) => f,
            None if root.autoindex => return listing(&file, &ask.path, &ask.method),
            // nginx answers 403 for a directory it may not list.
            None => return Err(StatusCode::FORBIDDEN),
        }
    } else if meta.is_file() {
        (file, meta, rel)
    } else {
        return Err(StatusCode::FORBIDDEN);
    };

    let mime = mime_guess::from_path(&rel)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let is_get = ask.method == Method::GET;
    let range_header = if is_get {
        ask.headers.get(header::RANGE).and_then(|v| v.to_str().ok())
    } else {
        None
    };
    let text = compressible(mime);
    let may_vary =
        text && (root.precompressed || (root.compress && meta.len() >= root.compress_min_size));

    // Representation selection. Range requests are answered from the identity bytes:
    // ranges of a gzip stream are rarely what a client can use, and multipart ranges of
    // an encoded representation cannot be labelled correctly.
    let mut rep = Rep {
        etag: etag(&meta, ""),
        file,
        meta,
        encoding: None,
        gzip_on_the_fly: false,
    };
    if range_header.is_none() && may_vary {
        if root.precompressed {
            for (coding, ext) in [("br", "br"), ("gzip", "gz")] {
                if !conditional::accepts_encoding(&ask.headers, coding) {
                    continue;
                }
                let mut sib = rel.clone().into_os_string();
                sib.push(".");
                sib.push(ext);
                if let Ok(f) = open_beneath(root, Path::new(&sib))
                    && let Ok(m) = f.metadata()
                    && m.is_file()
                {
                    rep = Rep {
                        etag: etag(&m, &format!("-{ext}")),
                        file: f,
                        meta: m,
                        encoding: Some(coding),
                        gzip_on_the_fly: false,
                    };
                    break;
                }
            }
        }
        if rep.encoding.is_none()
            && root.compress
            && rep.meta.len() >= root.compress_min_size
            && conditional::accepts_encoding(&ask.headers, "gzip")
        {
            // Weak: another zlib build or level may produce different bytes.
            rep.etag = format!("W/{}", etag(&rep.meta, "-gzip"));
            rep.gzip_on_the_fly = true;
        }
    }

    let modified = rep.meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, hv(&rep.etag));
    headers.insert(
        header::LAST_MODIFIED,
        hv(&httpdate::fmt_http_date(modified)),
    );
    if let Some(cc) = &root.cache_control {
        headers.insert(header::CACHE_CONTROL, cc.clone());
    }
    if may_vary {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let validators = Validators {
        etag: &rep.etag,
        last_modified: modified,
    };
    match conditional::evaluate(&ask.method, &ask.headers, &validators) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            return Ok(Prepared {
                status: StatusCode::NOT_MODIFIED,
                headers,
                plan: Plan::Empty,
            });
        }
        Precondition::Failed => {
            headers.remove(header::VARY);
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(Prepared {
                status: StatusCode::PRECONDITION_FAILED,
                headers,
                plan: Plan::Bytes(Bytes::from_static(b"precondition failed\n")),
            });
        }
    }

    let len = rep.meta.len();
    headers.insert(header::CONTENT_TYPE, hv(mime));
    if let Some(enc) = rep.encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
    }
    if rep.gzip_on_the_fly {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        if len <= GZIP_INLINE_MAX {
            let mut data = Vec::with_capacity(len as usize);
            (&rep.file)
                .read_to_end(&mut data)
                .map_err(|e| io_status(&e))?;
            let gz = gzip(&data).map_err(|e| io_status(&e))?;
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(gz.len()));
            let plan = if is_get {
                Plan::Bytes(gz.into())
            } else {
                Plan::Empty
            };
            return Ok(Prepared {
                status: StatusCode::OK,
                headers,
                plan,
            });
        }
        let plan = if is_get {
            Plan::Gzip { file: rep.file }
        } else {
            Plan::Empty
        };
        return Ok(Prepared {
            status: StatusCode::OK,
            headers,
            plan,
        });
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    let ranges = match range_header {
        Some(r) if conditional::if_range_allows(&ask.headers, &validators) => {
            conditional::parse_range(r, len)
        }
        _ => Ranges::Ignore,
    };
    let (status, segments) = match ranges {
        Ranges::Ignore => (StatusCode::OK, vec![Segment::File(0..len)]),
        Ranges::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, hv(&format!("bytes */{len}")));
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(Prepared {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                plan: Plan::Bytes(Bytes::from_static(b"range not satisfiable\n")),
            });
        }
        Ranges::Satisfiable(rs) if rs.len() == 1 => {
            let r = rs[0].clone();
            headers.insert(
                header::CONTENT_RANGE,
                hv(&format!("bytes {}-{}/{len}", r.start, r.end - 1)),
            );
            (StatusCode::PARTIAL_CONTENT, vec![Segment::File(r)])
        }
        Ranges::Satisfiable(rs) => {
            let boundary = new_boundary();
            let mut segs = Vec::with_capacity(rs.len() * 2 + 1);
            for (i, r) in rs.into_iter().enumerate() {
                let head = format!(
                    "{}--{boundary}\r\nContent-Type: {mime}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                    if i == 0 { "" } else { "\r\n" },
                    r.start,
                    r.end - 1
                );
                segs.push(Segment::Data(Bytes::from(head)));
                segs.push(Segment::File(r));
            }
            segs.push(Segment::Data(Bytes::from(format!(
                "\r\n--{boundary}--\r\n"
            ))));
            headers.insert(
                header::CONTENT_TYPE,
                hv(&format!("multipart/byteranges; boundary={boundary}")),
            );
            (StatusCode::PARTIAL_CONTENT, segs)
        }
    };
    let total: u64 = segments
        .iter()
        .map(|s| match s {
            Segment::Data(b) => b.len() as u64,
            Segment::File(r) => r.end - r.start,
        })
        .sum();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    let plan = if !is_get {
        Plan::Empty
    } else if total <= INLINE_MAX {
        let mut buf = BytesMut::with_capacity(total as usize);
        for s in &segments {
            match s {
                Segment::Data(b) => buf.extend_from_slice(b),
                Segment::File(r) => {
                    let start = buf.len();
                    buf.resize(start + (r.end - r.start) as usize, 0);
                    rep.file
                        .read_exact_at(&mut buf[start..], r.start)
                        .map_err(|e| io_status(&e))?;
                }
            }
        }
        Plan::Bytes(buf.freeze())
    } else {
        Plan::Stream {
            file: rep.file,
            segments,
            len: total,
        }
    };
    Ok(Prepared {
        status,
        headers,
        plan,
    })
}

fn new_boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{t:08x}{n:012x}")
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        flate2::Compression::new(5),
    );
    enc.write_all(data)?;
    enc.finish()
}

type Tx = mpsc::Sender<Result<Bytes, io::Error>>;

/// Runs on a blocking thread; stops as soon as the client goes away (send fails).
fn stream_segments(file: &File, segments: Vec<Segment>, tx: &Tx) {
    for seg in segments {
        match seg {
            Segment::Data(b) => {
                if tx.blocking_send(Ok(b)).is_err() {
                    return;
                }
            }
            Segment::File(r) => {
                let mut off = r.start;
                while off < r.end {
                    let n = ((r.end - off) as usize).min(CHUNK);
                    let mut buf = vec![0; n];
                    let res = match file.read_at(&mut buf, off) {
                        // The file shrank under us: fail the body rather than send fewer
                        // bytes than Content-Length promised.
                        Ok(0) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                        Ok(k) => {
                            buf.truncate(k);
                            off += k as u64;
                            Ok(Bytes::from(buf))
                        }
                        Err(e) => Err(e),
                    };
                    let failed = res.is_err();
                    if tx.blocking_send(res).is_err() || failed {
                        return;
                    }
                }
            }
        }
    }
}

fn stream_gzip(mut file: File, tx: &Tx) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5));
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = enc.write_all(&buf[..n]) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let out = std::mem::take(enc.get_mut());
        if !out.is_empty() && tx.blocking_send(Ok(Bytes::from(out))).is_err() {
            return;
        }
    }
    match enc.finish() {
        Ok(rest) => {
            let _ = tx.blocking_send(Ok(Bytes::from(rest)));
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A plain listing like nginx's `autoindex`.
fn listing(dir: &File, uri_path: &str, method: &Method) -> Result<Prepared, StatusCode> {
    // Read through the descriptor we opened beneath the root, not by path, so a rename
    // between the check and the listing cannot point us elsewhere.
    let fd_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names: Vec<(String, bool)> = std::fs::read_dir(fd_path)
        .map_err(|e| io_status(&e))?
        .filter_map(|e| e.ok())
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    names.sort();
    let title = html_escape(uri_path);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><title>Index of {title}</title></head><body>\n<h1>Index of {title}</h1><hr><pre>\n<a href=\"../\">../</a>\n"
    );
    for (name, is_dir) in names {
        let slash = if is_dir { "/" } else { "" };
        const HREF: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'.')
            .remove(b'-')
            .remove(b'_')
            .remove(b'~');
        let href = percent_encoding::utf8_percent_encode(&name, HREF);
        html.push_str(&format!(
            "<a href=\"{href}{slash}\">{}{slash}</a>\n",
            html_escape(&name)
        ));
    }
    html.push_str("</pre><hr></body></html>\n");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(html.len()));
    let plan = if method == Method::HEAD {
        Plan::Empty
    } else {
        Plan::Bytes(Bytes::from(html))
    };
    Ok(Prepared {
        status: StatusCode::OK,
        headers,
        plan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize() {
        let ok = |raw: &str, want: &str| {
            assert_eq!(sanitize_path(raw), Ok(PathBuf::from(want)), "{raw}")
        };
        let bad = |raw: &str| assert_eq!(sanitize_path(raw), Err(StatusCode::BAD_REQUEST), "{raw}");
        ok("/", "");
        ok("/a/b.txt", "a/b.txt");
        ok("/a//b/./c", "a/b/c");
        ok("/a/../b", "b");
        ok("/caf%C3%A9.txt", "café.txt");
        ok("/a%20b", "a b");
        bad("/../etc/passwd");
        bad("/a/../../etc/passwd");
        bad("/%2e%2e/etc/passwd");
        bad("/a/%2E%2e/b");
        bad("/a/%2e/b");
        bad("/a%2fb");
        bad("/a%00b");
        bad("/a%zz");
        bad("/a%4");
        bad("relative");
    }
}
