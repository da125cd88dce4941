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
//! A request is first tried on the async worker against the [`FileCache`]: when every
//! file it needs is cached (and still the same file on disk, one `fstatat` each), the
//! response is built from memory without touching the blocking pool. Otherwise the same
//! logic runs again in one `spawn_blocking` call that opens, stats and probes siblings;
//! files the cache admits are read whole there (and kept), other bodies up to
//! [`INLINE_MAX`] are read in the same call, larger ones are streamed by a blocking reader
//! through a bounded channel.

use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use tokio::sync::mpsc;

use crate::body::{self, Body, ChannelBody};
use crate::conditional::{self, Precondition, Ranges, Validators};
use crate::config::Location;
use crate::file_cache::{CachedFile, FileCache, Key, Stamp};
use crate::sendfile;

/// Bodies up to this size are read in the same blocking call that opened the file: one
/// thread hop per request instead of two.
const INLINE_MAX: u64 = 64 << 10;
/// Chunk size for streamed bodies.
const CHUNK: usize = 128 << 10;
/// Files up to this size are compressed on the fly in one go (so the response has a
/// Content-Length); larger ones are compressed while streaming. Cached files are always
/// compressed in one go, and the result is cached with them.
const GZIP_INLINE_MAX: u64 = 256 << 10;

/// A location's document root, opened once per configuration load.
pub struct StaticRoot {
    dir: File,
    canonical: PathBuf,
    /// Tells this root's entries apart in the cache shared by all locations.
    id: u64,
    cache: Arc<FileCache>,
    index: Vec<String>,
    autoindex: bool,
    precompressed: bool,
    compress: bool,
    compress_min_size: u64,
    cache_control: Option<HeaderValue>,
}

impl StaticRoot {
    /// Opens the root directory of a validated static location; its files are cached in
    /// `cache`.
    pub fn open(root: &Path, loc: &Location, cache: Arc<FileCache>) -> io::Result<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)?;
        Ok(Self {
            dir,
            canonical: std::fs::canonicalize(root)?,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cache,
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

/// Where [`prepare`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// On the async worker: cache hits and `fstatat` only; anything else is
    /// [`Fail::WouldBlock`].
    Inline,
    /// On the blocking pool: open, read, compress.
    Blocking,
}

enum Fail {
    /// Answer with this error status.
    Status(StatusCode),
    /// Needs file system work that may block: try again on the blocking pool.
    WouldBlock,
}

impl From<StatusCode> for Fail {
    fn from(s: StatusCode) -> Self {
        Fail::Status(s)
    }
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
pub async fn serve(root: Arc<StaticRoot>, req: Parts) -> Result<Response<Body>, StatusCode> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    let prepared = match prepare(&root, &req, Mode::Inline) {
        Ok(p) => p,
        Err(Fail::Status(s)) => return Err(s),
        Err(Fail::WouldBlock) => {
            tokio::task::spawn_blocking(move || prepare(&root, &req, Mode::Blocking))
                .await
                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
                .map_err(|f| match f {
                    Fail::Status(s) => s,
                    Fail::WouldBlock => StatusCode::INTERNAL_SERVER_ERROR,
                })?
        }
    };
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

/// The path locations are matched against, as nginx matches them: percent-decoded,
/// repeated slashes merged, dot-segments resolved (a trailing one leaves the slash, as
/// `/a/b/..` is `/a/`). Borrowed when there is nothing to do, the usual case. A `%`
/// without two hex digits, a NUL byte or a `..` above the root is a 400.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, [u8]>, StatusCode> {
    let bad = Err(StatusCode::BAD_REQUEST);
    if !raw.starts_with('/') {
        return bad;
    }
    // One pass: no escape, no `//`, no segment starting with a dot.
    let mut prev = 0;
    let plain = raw.bytes().all(|c| {
        let ok = c != b'%' && !(prev == b'/' && matches!(c, b'/' | b'.'));
        prev = c;
        ok
    });
    if plain {
        return Ok(Cow::Borrowed(raw.as_bytes()));
    }
    let decoded = percent_decode_strict(raw).ok_or(StatusCode::BAD_REQUEST)?;
    if decoded.contains(&0) {
        return bad;
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut dir = false;
    for seg in decoded[1..].split(|&b| b == b'/') {
        dir = true;
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.pop().is_none() {
                    return bad;
                }
            }
            _ => {
                segs.push(seg);
                dir = false;
            }
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for seg in &segs {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if dir || segs.is_empty() {
        out.push(b'/');
    }
    Ok(Cow::Owned(out))
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
fn etag(stamp: &Stamp, coding: &str) -> String {
    format!(
        "\"{:x}.{:x}-{:x}{}\"",
        stamp.mtime.0, stamp.mtime.1, stamp.size, coding
    )
}

/// The MIME type by extension. A binary search with case folding, so cached files keep
/// theirs.
fn mime_of(path: &Path) -> &'static str {
    mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream")
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

/// Stats `rel` under the root without opening it, following symlinks unless `nofollow`
/// (see the [`crate::file_cache`] docs for why following is sound for revalidation).
fn restat(root: &StaticRoot, rel: &Path, nofollow: bool) -> io::Result<Stamp> {
    let bytes = rel.as_os_str().as_bytes();
    // Paths are short: build the C string on the stack rather than allocate per request.
    let mut buf = [0u8; 256];
    let owned;
    let c: &CStr = if bytes.len() < buf.len() && !bytes.contains(&0) {
        buf[..bytes.len()].copy_from_slice(bytes);
        CStr::from_bytes_until_nul(&buf).map_err(|_| io::ErrorKind::InvalidInput)?
    } else {
        owned = CString::new(bytes).map_err(|_| io::ErrorKind::InvalidInput)?;
        &owned
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstatat reads a NUL-terminated path and writes one `struct stat`, both
    // valid for the call; the root descriptor stays open while `root` lives.
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    let rc = unsafe { libc::fstatat(root.dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    Ok(Stamp::of_stat(&st))
}

/// Whether no file of that name exists, so opening it would fail with "not found" too.
/// A symlink counts as present (wherever it points): the blocking path judges it.
fn absent(root: &StaticRoot, rel: &Path) -> bool {
    matches!(
        restat(root, rel, true).map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENOENT | libc::ENOTDIR))
    )
}

/// A regular file to serve: where it is, which version, and where its bytes come from.
struct Opened {
    key: Key,
    stamp: Stamp,
    src: Source,
}

enum Source {
    /// Whole in memory: a cache entry, or bytes read for this request only.
    Memory(Arc<CachedFile>),
    /// Read from the file as the body is sent.
    File(File),
}

/// The cache entry for `key` if the path still names the same file; a stale entry is
/// dropped. On a miss the key is handed back.
fn cached(root: &StaticRoot, key: Key) -> Result<Opened, Key> {
    let Some(entry) = root.cache.get(&key) else {
        return Err(key);
    };
    match restat(root, &key.1, false) {
        Ok(stamp) if stamp == entry.stamp => Ok(Opened {
            key,
            stamp,
            src: Source::Memory(entry),
        }),
        _ => {
            root.cache.remove(&key, &entry);
            Err(key)
        }
    }
}

/// Takes an opened regular file into memory if the cache admits its size, and keeps it
/// there if it is stable (see [`crate::file_cache`]). `before` is a time taken before
/// `meta` was read. Files too large, or changing while read, are left to be streamed.
fn load(
    root: &StaticRoot,
    key: Key,
    file: File,
    meta: &std::fs::Metadata,
    before: SystemTime,
) -> Opened {
    let stamp = Stamp::of(meta);
    if root.cache.admits(stamp.size) {
        let mut data = vec![0; stamp.size as usize];
        if file.read_exact_at(&mut data, 0).is_ok()
            && file.metadata().is_ok_and(|m| Stamp::of(&m) == stamp)
        {
            let tag = hv(&etag(&stamp, ""));
            let mime = mime_of(&key.1);
            let entry = if stamp.settled(before) {
                // Large files go into a sealed memfd so they can be sent with sendfile;
                // should that fail, the heap copy serves just the same.
                let bytes = if data.len() >= sendfile::MIN_LEN {
                    sendfile::seal(&data).unwrap_or_else(|_| Bytes::from(data))
                } else {
                    Bytes::from(data)
                };
                let entry = CachedFile::new(stamp, bytes, tag, mime);
                root.cache.insert(key.clone(), entry)
            } else {
                Arc::new(CachedFile::new(stamp, Bytes::from(data), tag, mime))
            };
            return Opened {
                key,
                stamp,
                src: Source::Memory(entry),
            };
        }
    }
    Opened {
        key,
        stamp,
        src: Source::File(file),
    }
}

/// Opens a regular file for `key` on the blocking pool: `Ok(None)` if it is something
/// else (a directory, a FIFO), with the descriptor for a directory.
fn open_blocking(root: &StaticRoot, key: Key) -> Result<Result<Opened, Option<File>>, io::Error> {
    let before = SystemTime::now();
    let file = open_beneath(root, &key.1)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok(Ok(load(root, key, file, &meta, before)))
    } else if meta.is_dir() {
        Ok(Err(Some(file)))
    } else {
        Ok(Err(None))
    }
}

/// What the request path names.
enum Resolved {
    File(Opened),
    /// Answered without a file: a redirect or a listing.
    Done(Prepared),
}

/// Bytes a path segment carries percent-encoded in a `Location`: those not allowed in a
/// segment (RFC 3986 §3.3), and `%` itself.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn resolve(root: &StaticRoot, req: &Parts, key: Key, mode: Mode) -> Result<Resolved, Fail> {
    let path = req.uri.path();
    // A trailing slash names a directory: a file there is a 404, as nginx's ENOTDIR.
    let dir_wanted = path.ends_with('/');
    let key = match cached(root, key) {
        Ok(_) if dir_wanted => return Err(StatusCode::NOT_FOUND.into()),
        Ok(f) => return Ok(Resolved::File(f)),
        Err(key) => key,
    };
    if mode == Mode::Inline {
        // Only a directory's cached index file can still be answered here. A missing
        // index name is skipped as the blocking path would; anything else needs it.
        if !dir_wanted {
            return Err(Fail::WouldBlock);
        }
        for idx in &root.index {
            match cached(root, (root.id, key.1.join(idx))) {
                Ok(f) => return Ok(Resolved::File(f)),
                Err(k) if absent(root, &k.1) => {}
                Err(_) => return Err(Fail::WouldBlock),
            }
        }
        return Err(Fail::WouldBlock);
    }
    let rel = key.1.clone();
    let dir = match open_blocking(root, key).map_err(|e| io_status(&e))? {
        Ok(_) if dir_wanted => return Err(StatusCode::NOT_FOUND.into()),
        Ok(f) => return Ok(Resolved::File(f)),
        Err(Some(dir)) => dir,
        Err(None) => return Err(StatusCode::FORBIDDEN.into()),
    };
    if !dir_wanted {
        // As nginx does: a directory without the slash is redirected so relative
        // links inside its index resolve against the directory. The target is built
        // from the confined path, never the raw one: `//host/..` would otherwise be a
        // redirect to another site.
        let mut loc = String::with_capacity(path.len() + 1);
        for seg in rel.iter() {
            loc.push('/');
            loc.extend(percent_encoding::percent_encode(
                seg.as_bytes(),
                PATH_SEGMENT,
            ));
        }
        loc.push('/');
        if let Some(q) = req.uri.query() {
            loc.push('?');
            loc.push_str(q);
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, hv(&loc));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(Resolved::Done(Prepared {
            status: StatusCode::MOVED_PERMANENTLY,
            headers,
            plan: Plan::Bytes(Bytes::from_static(b"moved permanently\n")),
        }));
    }
    for idx in &root.index {
        let key = match cached(root, (root.id, rel.join(idx))) {
            Ok(f) => return Ok(Resolved::File(f)),
            Err(key) => key,
        };
        match open_blocking(root, key) {
            Ok(Ok(f)) => return Ok(Resolved::File(f)),
            Ok(Err(_)) => {}
            Err(e) if io_status(&e) == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(io_status(&e).into()),
        }
    }
    if root.autoindex {
        return Ok(Resolved::Done(listing(&dir, path, &req.method)?));
    }
    // nginx answers 403 for a directory it may not list.
    Err(StatusCode::FORBIDDEN.into())
}

/// The precompressed sibling `key` if it exists as a regular file. Any failure to open
/// it just means it is not used.
fn sibling(root: &StaticRoot, key: Key, mode: Mode) -> Result<Option<Opened>, Fail> {
    let key = match cached(root, key) {
        Ok(f) => return Ok(Some(f)),
        Err(key) => key,
    };
    match mode {
        Mode::Inline if absent(root, &key.1) => Ok(None),
        Mode::Inline => Err(Fail::WouldBlock),
        Mode::Blocking => Ok(open_blocking(root, key).ok().and_then(Result::ok)),
    }
}

/// The representation chosen for this request.
struct Rep {
    opened: Opened,
    etag: HeaderValue,
    /// `Content-Encoding` of a precompressed sibling.
    encoding: Option<&'static str>,
    /// Compress on the fly.
    gzip_on_the_fly: bool,
}

fn prepare(root: &StaticRoot, req: &Parts, mode: Mode) -> Result<Prepared, Fail> {
    let rel = sanitize_path(req.uri.path())?;
    let opened = match resolve(root, req, (root.id, rel), mode)? {
        Resolved::File(f) => f,
        Resolved::Done(p) => return Ok(p),
    };

    let mime = match &opened.src {
        Source::Memory(m) => m.mime,
        Source::File(_) => mime_of(&opened.key.1),
    };
    let is_get = req.method == Method::GET;
    let range_header = if is_get {
        req.headers.get(header::RANGE).and_then(|v| v.to_str().ok())
    } else {
        None
    };
    let text = compressible(mime);
    let may_vary = text
        && (root.precompressed || (root.compress && opened.stamp.size >= root.compress_min_size));

    // Representation selection. Range requests are answered from the identity bytes:
    // ranges of a gzip stream are rarely what a client can use, and multipart ranges of
    // an encoded representation cannot be labelled correctly.
    let etag_identity = match &opened.src {
        Source::Memory(m) => m.etag.clone(),
        Source::File(_) => hv(&etag(&opened.stamp, "")),
    };
    let mut rep = Rep {
        opened,
        etag: etag_identity,
        encoding: None,
        gzip_on_the_fly: false,
    };
    if range_header.is_none() && may_vary {
        if root.precompressed {
            for (coding, ext) in [("br", "br"), ("gzip", "gz")] {
                if !conditional::accepts_encoding(&req.headers, coding) {
                    continue;
                }
                let mut sib = rep.opened.key.1.clone().into_os_string();
                sib.push(".");
                sib.push(ext);
                if let Some(s) = sibling(root, (root.id, sib.into()), mode)? {
                    rep = Rep {
                        etag: hv(&etag(&s.stamp, &format!("-{ext}"))),
                        opened: s,
                        encoding: Some(coding),
                        gzip_on_the_fly: false,
                    };
                    break;
                }
            }
        }
        if rep.encoding.is_none()
            && root.compress
            && rep.opened.stamp.size >= root.compress_min_size
            && conditional::accepts_encoding(&req.headers, "gzip")
        {
            // Weak: another zlib build or level may produce different bytes.
            rep.etag = hv(&format!("W/{}", etag(&rep.opened.stamp, "-gzip")));
            rep.gzip_on_the_fly = true;
        }
    }

    let modified = rep.opened.stamp.modified();
    let mut headers = HeaderMap::with_capacity(12);
    headers.insert(header::ETAG, rep.etag.clone());
    headers.insert(
        header::LAST_MODIFIED,
        match &rep.opened.src {
            Source::Memory(m) => m.last_modified.clone(),
            Source::File(_) => hv(&httpdate::fmt_http_date(modified)),
        },
    );
    if let Some(cc) = &root.cache_control {
        headers.insert(header::CACHE_CONTROL, cc.clone());
    }
    if may_vary {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let validators = Validators {
        etag: rep.etag.to_str().unwrap_or_default(),
        last_modified: modified,
    };
    match conditional::evaluate(&req.method, &req.headers, &validators) {
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

    let len = rep.opened.stamp.size;
    // mime_guess's table holds valid header values only.
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Some(enc) = rep.encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
    }
    if rep.gzip_on_the_fly {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let gz = match rep.opened.src {
            Source::Memory(m) => match m.gzip() {
                Some(gz) => gz.clone(),
                None if mode == Mode::Inline => return Err(Fail::WouldBlock),
                None => {
                    let gz = Bytes::from(gzip(&m.data).map_err(|e| io_status(&e))?);
                    root.cache.attach_gzip(&rep.opened.key, &m, &gz);
                    gz
                }
            },
            Source::File(file) if len > GZIP_INLINE_MAX => {
                let plan = if is_get {
                    Plan::Gzip { file }
                } else {
                    Plan::Empty
                };
                return Ok(Prepared {
                    status: StatusCode::OK,
                    headers,
                    plan,
                });
            }
            Source::File(mut file) => {
                let mut data = Vec::with_capacity(len as usize);
                file.read_to_end(&mut data).map_err(|e| io_status(&e))?;
                Bytes::from(gzip(&data).map_err(|e| io_status(&e))?)
            }
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(gz.len()));
        let plan = if is_get { Plan::Bytes(gz) } else { Plan::Empty };
        return Ok(Prepared {
            status: StatusCode::OK,
            headers,
            plan,
        });
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    let ranges = match range_header {
        Some(r) if conditional::if_range_allows(&req.headers, &validators) => {
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
    headers.insert(
        header::CONTENT_LENGTH,
        match &rep.opened.src {
            Source::Memory(m) if total == len => m.content_length.clone(),
            _ => HeaderValue::from(total),
        },
    );
    let plan = match rep.opened.src {
        _ if !is_get => Plan::Empty,
        Source::Memory(m) => Plan::Bytes(from_memory(&m.data, &segments, total)),
        Source::File(file) if total <= INLINE_MAX => {
            let mut buf = BytesMut::with_capacity(total as usize);
            for s in &segments {
                match s {
                    Segment::Data(b) => buf.extend_from_slice(b),
                    Segment::File(r) => {
                        let start = buf.len();
                        buf.resize(start + (r.end - r.start) as usize, 0);
                        file.read_exact_at(&mut buf[start..], r.start)
                            .map_err(|e| io_status(&e))?;
                    }
                }
            }
            Plan::Bytes(buf.freeze())
        }
        Source::File(file) => Plan::Stream {
            file,
            segments,
            len: total,
        },
    };
    Ok(Prepared {
        status,
        headers,
        plan,
    })
}

/// The body for `segments` of an in-memory file: a slice of the same buffer for a whole
/// file or a single range, one new buffer for multipart.
fn from_memory(data: &Bytes, segments: &[Segment], total: u64) -> Bytes {
    if let [Segment::File(r)] = segments {
        return data.slice(r.start as usize..r.end as usize);
    }
    let mut buf = BytesMut::with_capacity(total as usize);
    for s in segments {
        match s {
            Segment::Data(b) => buf.extend_from_slice(b),
            Segment::File(r) => buf.extend_from_slice(&data[r.start as usize..r.end as usize]),
        }
    }
    buf.freeze()
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

    #[test]
    fn normalize() {
        let ok = |raw: &str, want: &str| {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want.as_bytes()), "{raw}")
        };
        let bad =
            |raw: &str| assert_eq!(normalize_path(raw), Err(StatusCode::BAD_REQUEST), "{raw}");
        ok("/", "/");
        ok("/a/b.txt", "/a/b.txt");
        ok("/api/../index.html", "/index.html");
        ok("//api/x", "/api/x");
        ok("/%61pi/x", "/api/x");
        ok("/api/%2e%2e/admin", "/admin");
        ok("/a%2fb", "/a/b");
        ok("/a/./b/", "/a/b/");
        ok("/a/b/..", "/a/");
        ok("/a/.", "/a/");
        ok("/a/..", "/");
        ok("/.well-known/x", "/.well-known/x");
        bad("/..");
        bad("/a/../../b");
        bad("/%2e%2e/x");
        bad("/a%00b");
        bad("/a%zz");
        bad("relative");
        // Nothing to do: the path itself, not a copy.
        assert!(matches!(normalize_path("/a/b.txt"), Ok(Cow::Borrowed(_))));
    }
}

/// The two-step flow against a real directory: what the async worker can answer from the
/// cache, and what has to go to the blocking pool.
#[cfg(test)]
mod cache_tests {
    use std::time::Duration;

    use super::*;
    use crate::file_cache::{ENTRY_OVERHEAD, SETTLE};

    struct Site {
        dir: tempfile::TempDir,
        root: StaticRoot,
    }

    fn site(files: &[(&str, &[u8])], max_size: u64, max_file_size: u64) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let loc = Location {
            prefix: "/".into(),
            root: Some(dir.path().to_owned()),
            proxy: None,
            index: vec!["index.htm".into(), "index.html".into()],
            autoindex: false,
            precompressed: true,
            compress: true,
            compress_min_size: 1024,
            cache_control: None,
        };
        let cache = Arc::new(FileCache::new(max_size, max_file_size));
        let root = StaticRoot::open(dir.path(), &loc, cache).unwrap();
        settle();
        Site { dir, root }
    }

    /// Waits until files written so far may be cached.
    fn settle() {
        std::thread::sleep(SETTLE + Duration::from_millis(20));
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// Status, ETag, Content-Encoding and body of a prepared response.
    type Answer = (StatusCode, String, Option<String>, Bytes);

    fn answer(p: Prepared) -> Answer {
        let h = |n| {
            p.headers
                .get(n)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let body = match p.plan {
            Plan::Bytes(b) => b,
            Plan::Empty => Bytes::new(),
            _ => panic!("expected an in-memory body"),
        };
        (
            p.status,
            h(header::ETAG).unwrap_or_default(),
            h(header::CONTENT_ENCODING),
            body,
        )
    }

    /// On the async worker: `None` if it needs the blocking pool.
    fn inline(s: &Site, path: &str, headers: &[(&str, &str)]) -> Option<Answer> {
        match prepare(&s.root, &req(path, headers), Mode::Inline) {
            Ok(p) => Some(answer(p)),
            Err(Fail::WouldBlock) => None,
            Err(Fail::Status(st)) => panic!("inline {path}: {st}"),
        }
    }

    fn blocking(s: &Site, path: &str, headers: &[(&str, &str)]) -> Result<Answer, StatusCode> {
        match prepare(&s.root, &req(path, headers), Mode::Blocking) {
            Ok(p) => Ok(answer(p)),
            Err(Fail::Status(st)) => Err(st),
            Err(Fail::WouldBlock) => panic!("the blocking path never defers"),
        }
    }

    #[test]
    fn cached_file_edited_on_disk_is_served_fresh() {
        let s = site(&[("page.txt", b"version one\n")], 1 << 20, 1 << 16);
        let path = s.dir.path().join("page.txt");
        assert!(inline(&s, "/page.txt", &[]).is_none(), "nothing cached yet");
        let first = blocking(&s, "/page.txt", &[]).unwrap();
        assert_eq!(first.3, &b"version one\n"[..]);
        let hit = inline(&s, "/page.txt", &[]).expect("served from the cache");
        assert_eq!(hit, first);

        // Same size, new bytes, in place: the change time moves, the entry is dropped.
        std::fs::write(&path, b"version two\n").unwrap();
        assert!(
            inline(&s, "/page.txt", &[]).is_none(),
            "stale entry not served"
        );
        let second = blocking(&s, "/page.txt", &[]).unwrap();
        assert_eq!(second.3, &b"version two\n"[..]);
        assert_ne!(second.1, first.1, "new etag");
        // Just written: served, but not kept until it has settled.
        assert!(inline(&s, "/page.txt", &[]).is_none());
        settle();
        blocking(&s, "/page.txt", &[]).unwrap();
        assert_eq!(
            inline(&s, "/page.txt", &[]).unwrap().3,
            &b"version two\n"[..]
        );

        // Replaced by rename (a new inode), then removed.
        let tmp = s.dir.path().join("page.tmp");
        std::fs::write(&tmp, b"version three, longer\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(inline(&s, "/page.txt", &[]).is_none());
        assert_eq!(
            blocking(&s, "/page.txt", &[]).unwrap().3,
            &b"version three, longer\n"[..]
        );
        std::fs::remove_file(&path).unwrap();
        assert!(inline(&s, "/page.txt", &[]).is_none());
        assert_eq!(blocking(&s, "/page.txt", &[]), Err(StatusCode::NOT_FOUND));
        assert!(s.root.cache.is_empty(), "the stale entry was dropped");
    }

    #[test]
    fn memory_bound_holds_and_large_files_are_not_cached() {
        let names: Vec<String> = (0..20).map(|i| format!("f{i:02}.bin")).collect();
        let data: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
        let mut files: Vec<(&str, &[u8])> = names
            .iter()
            .map(String::as_str)
            .zip(data.iter().map(Vec::as_slice))
            .collect();
        let big = vec![7u8; 5000];
        files.push(("big.bin", &big));
        let max = 4 * (1000 + ENTRY_OVERHEAD);
        let s = site(&files, max, 4096);
        for _ in 0..2 {
            for (name, want) in names.iter().zip(&data) {
                let got = blocking(&s, &format!("/{name}"), &[]).unwrap();
                assert_eq!(&got.3[..], &want[..]);
                assert!(
                    s.root.cache.used() <= max,
                    "{} > {max}",
                    s.root.cache.used()
                );
            }
        }
        assert!(s.root.cache.len() <= 4);
        // The most recent file is a hit; the first ones were evicted.
        assert!(inline(&s, "/f19.bin", &[]).is_some());
        assert!(inline(&s, "/f00.bin", &[]).is_none());
        // Above max_file_size: read for the request, never kept.
        assert_eq!(blocking(&s, "/big.bin", &[]).unwrap().3.len(), 5000);
        assert!(inline(&s, "/big.bin", &[]).is_none());
    }

    #[test]
    fn index_siblings_ranges_and_gzip_come_from_memory() {
        let css: Vec<u8> = (0..300)
            .flat_map(|i| format!(".c{i} {{ margin: {i}px }}\n").into_bytes())
            .collect();
        let s = site(
            &[
                ("index.html", b"<h1>home</h1>\n"),
                ("app.js", b"function f() { return 1; }\n"),
                ("app.js.gz", b"pretend-gzip"),
                ("big.css", &css),
            ],
            1 << 20,
            1 << 16,
        );
        // Index: the first name is missing (skipped on the worker too), the second cached.
        blocking(&s, "/", &[]).unwrap();
        assert_eq!(inline(&s, "/", &[]).unwrap().3, &b"<h1>home</h1>\n"[..]);

        // A precompressed sibling, and the identity file when gzip is not accepted.
        let gz = [("Accept-Encoding", "gzip")];
        blocking(&s, "/app.js", &gz).unwrap();
        let hit = inline(&s, "/app.js", &gz).unwrap();
        assert_eq!(
            (hit.2.as_deref(), &hit.3[..]),
            (Some("gzip"), &b"pretend-gzip"[..])
        );
        blocking(&s, "/app.js", &[]).unwrap();
        assert_eq!(inline(&s, "/app.js", &[]).unwrap().2, None);

        // On-the-fly gzip is computed once on the blocking pool, then cached.
        assert!(inline(&s, "/big.css", &gz).is_none());
        let first = blocking(&s, "/big.css", &gz).unwrap();
        let hit = inline(&s, "/big.css", &gz).unwrap();
        assert_eq!(hit, first);
        assert!(hit.1.starts_with("W/"));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&hit.3[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, css);

        // Conditional and range requests on a hit.
        let etag = inline(&s, "/big.css", &[]).unwrap().1;
        let nm = inline(&s, "/big.css", &[("If-None-Match", &etag)]).unwrap();
        assert_eq!(nm.0, StatusCode::NOT_MODIFIED);
        let r = inline(&s, "/big.css", &[("Range", "bytes=2-9")]).unwrap();
        assert_eq!((r.0, &r.3[..]), (StatusCode::PARTIAL_CONTENT, &css[2..10]));
        let multi = inline(&s, "/big.css", &[("Range", "bytes=0-1,-2")]).unwrap();
        assert_eq!(multi.0, StatusCode::PARTIAL_CONTENT);
        let text = String::from_utf8_lossy(&multi.3).into_owned();
        assert!(text.contains("Content-Range: bytes 0-1/"), "{text}");
        // HEAD: the same head, no body.
        let mut head = req("/big.css", &[]);
        head.method = Method::HEAD;
        let Ok(p) = prepare(&s.root, &head, Mode::Inline) else {
            panic!("HEAD of a cached file is answered on the worker");
        };
        assert_eq!(
            p.headers[header::CONTENT_LENGTH],
            css.len().to_string().as_str()
        );
        assert!(matches!(p.plan, Plan::Empty));
    }
}
