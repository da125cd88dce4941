//! The static file cache: the bytes and precomputed validators of small files, so a hit
//! is answered on the async worker without a trip to the blocking pool and without
//! reading the file again. It plays the part of nginx's `open_file_cache` plus the page
//! cache that nginx's `sendfile` reads from (hyper cannot `sendfile`).
//!
//! # Freshness
//! Every hit is revalidated: the static handler stats the path again (`fstatat` relative
//! to the root's descriptor) and serves the entry only if the file is still the same one:
//! device, inode, size, modification and change time ([`Stamp`]). An edit in place
//! changes the change time (which no user can set back), an atomic replace changes the
//! inode, so edits show up on the next request exactly as without the cache.
//!
//! File times come from a coarse clock (one tick is a few milliseconds), so two writes
//! within one tick can leave the same stamp. A file is therefore only admitted once its
//! change time is [`SETTLE`] older than the moment before we first looked at it: any
//! later write then gets a later change time. A file that was written too recently is
//! served from the bytes just read but not kept.
//!
//! The revalidating `fstatat` follows symlinks without `RESOLVE_BENEATH`; that is sound
//! because an entry only ever holds bytes read through a confined open of the same path,
//! and a stamp that still matches names that very inode.
//!
//! # Memory bound
//! The cache holds at most `max_size` bytes (file bytes, their on-the-fly gzip, and
//! [`ENTRY_OVERHEAD`] per entry for the key and bookkeeping); files above
//! `max_file_size` are never cached. When an insert would go over, entries are evicted
//! by CLOCK (second chance), an approximation of least recently used that costs O(1)
//! per eviction: a hit only sets a flag, and the cache's lock, which the async worker
//! takes on every hit, is never held for a scan or a sort. A reload starts with an
//! empty cache.

use std::collections::{HashMap, VecDeque};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;

/// How long a file's change time must lie in the past before its bytes are kept.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Bytes charged per entry besides its contents: key, header values, map slot.
pub const ENTRY_OVERHEAD: u64 = 256;

/// Identifies one version of one file: if any of these differ, the cached bytes are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of an open file's metadata.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp from a raw `stat(2)` result.
    pub fn of_stat(st: &libc::stat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// The modification time as a `SystemTime`.
    pub fn modified(&self) -> SystemTime {
        at(self.mtime)
    }

    /// Whether the last change lies at least [`SETTLE`] before `now` (see the module docs).
    pub fn settled(&self, now: SystemTime) -> bool {
        at(self.ctime) + SETTLE <= now
    }
}

fn at((secs, nsec): (i64, i64)) -> SystemTime {
    let nsec = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + nsec
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nsec
    }
}

/// One cached file: its bytes and the response header values that depend only on it.
pub struct CachedFile {
    /// The version these bytes belong to.
    pub stamp: Stamp,
    /// The whole file.
    pub data: Bytes,
    /// Strong `ETag` of the file as itself (identity coding).
    pub etag: HeaderValue,
    /// `Last-Modified`.
    pub last_modified: HeaderValue,
    /// MIME type for the path it is cached under (by extension).
    pub mime: &'static str,
    /// `Content-Length` of the whole file.
    pub content_length: HeaderValue,
    /// The on-the-fly gzip of `data`, once a request has needed it.
    gzip: OnceLock<Bytes>,
    /// Hit since the CLOCK hand last passed: spared once.
    referenced: AtomicBool,
}

impl CachedFile {
    /// Wraps bytes read from a file whose stamp was `stamp` before and after the read.
    pub fn new(stamp: Stamp, data: Bytes, etag: HeaderValue, mime: &'static str) -> Self {
        let last_modified = HeaderValue::from_str(&httpdate::fmt_http_date(stamp.modified()))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self {
            content_length: HeaderValue::from(data.len()),
            stamp,
            data,
            etag,
            last_modified,
            mime,
            gzip: OnceLock::new(),
            referenced: AtomicBool::new(false),
        }
    }

    /// The gzip of the contents, if it has been computed.
    pub fn gzip(&self) -> Option<&Bytes> {
        self.gzip.get()
    }

    fn cost(&self) -> u64 {
        self.data.len() as u64 + self.gzip.get().map_or(0, |g| g.len() as u64) + ENTRY_OVERHEAD
    }
}

/// Cache key: the static root's id and the path relative to it.
pub type Key = (u64, PathBuf);

/// The cache shared by every static location of one configuration.
pub struct FileCache {
    max_size: u64,
    max_file_size: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Arc<CachedFile>>,
    /// Sum of the entries' costs.
    used: u64,
    /// The CLOCK: entries in insertion order, the hand at the front. Slots whose entry
    /// was replaced or removed are skipped (and compacted away when they pile up).
    ring: VecDeque<(Key, Weak<CachedFile>)>,
}

impl Inner {
    /// Whether `key` still maps to `entry` (not to a newer entry, nor to nothing).
    fn holds(&self, key: &Key, entry: &Arc<CachedFile>) -> bool {
        self.map.get(key).is_some_and(|e| Arc::ptr_eq(e, entry))
    }
}

impl FileCache {
    /// A cache of at most `max_size` bytes holding files of at most `max_file_size`
    /// bytes; `max_size` 0 disables it.
    pub fn new(max_size: u64, max_file_size: u64) -> Self {
        Self {
            max_size,
            max_file_size,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }

    /// Whether a file of `len` bytes may be cached.
    pub fn admits(&self, len: u64) -> bool {
        len <= self.max_file_size && len.saturating_add(ENTRY_OVERHEAD) <= self.max_size
    }

    /// The entry for `key`, marked as used. The caller revalidates it.
    pub fn get(&self, key: &Key) -> Option<Arc<CachedFile>> {
        let inner = self.lock();
        let e = inner.map.get(key)?;
        e.referenced.store(true, Ordering::Relaxed);
        Some(e.clone())
    }

    /// Stores `file` under `key` (replacing any older entry), evicting others if needed,
    /// and returns it. A file the cache does not admit is returned without being stored.
    pub fn insert(&self, key: Key, file: CachedFile) -> Arc<CachedFile> {
        let file = Arc::new(file);
        if !self.admits(file.data.len() as u64) {
            return file;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.map.remove(&key) {
            inner.used -= old.cost();
        }
        self.make_room(&mut inner, file.cost());
        inner.used += file.cost();
        inner.ring.push_back((key.clone(), Arc::downgrade(&file)));
        inner.map.insert(key, file.clone());
        compact(&mut inner);
        file
    }

    /// Drops `key` if it still maps to `stale` (a newer entry may have replaced it).
    pub fn remove(&self, key: &Key, stale: &Arc<CachedFile>) {
        let mut inner = self.lock();
        if inner.holds(key, stale) {
            let cost = stale.cost();
            inner.map.remove(key);
            inner.used -= cost;
        }
    }

    /// Records the on-the-fly gzip of a cached entry, if the entry is still cached and
    /// the bound allows; either way the caller keeps `gz` for its own response.
    pub fn attach_gzip(&self, key: &Key, entry: &Arc<CachedFile>, gz: &Bytes) {
        let mut inner = self.lock();
        if entry.gzip.get().is_some() || !inner.holds(key, entry) {
            return;
        }
        let extra = gz.len() as u64;
        if entry.cost() + extra > self.max_size {
            return;
        }
        // Spare the entry itself while room is made (a full turn of the hand could still
        // take it, after everything else; then there is nothing to attach to).
        entry.referenced.store(true, Ordering::Relaxed);
        self.make_room(&mut inner, extra);
        if inner.holds(key, entry) {
            let _ = entry.gzip.set(gz.clone());
            inner.used += extra;
        }
    }

    /// Evicts entries by CLOCK until `need` more bytes fit: the hand takes the oldest
    /// slot; an entry hit since the hand last passed is spared once and goes to the back.
    /// Ends because every pass clears the flags it passes over.
    fn make_room(&self, inner: &mut Inner, need: u64) {
        while inner.used + need > self.max_size {
            let Some((key, slot)) = inner.ring.pop_front() else {
                return;
            };
            let Some(entry) = inner.map.get(&key) else {
                continue;
            };
            if !std::ptr::eq(Arc::as_ptr(entry), slot.as_ptr()) {
                // A slot of an older entry under the same key.
                continue;
            }
            if entry.referenced.swap(false, Ordering::Relaxed) {
                inner.ring.push_back((key, slot));
                continue;
            }
            let cost = entry.cost();
            inner.map.remove(&key);
            inner.used -= cost;
        }
    }

    /// Bytes currently charged against the bound.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Number of cached files.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops ring slots of replaced or removed entries once they outnumber the live ones,
/// so a cache that never fills (no eviction to pop them) does not grow its ring.
fn compact(inner: &mut Inner) {
    if inner.ring.len() > 2 * inner.map.len() + 16 {
        let map = &inner.map;
        inner.ring.retain(|(k, slot)| {
            map.get(k)
                .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), slot.as_ptr()))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ino: u64, size: u64) -> Stamp {
        Stamp {
            dev: 1,
            ino,
            size,
            mtime: (1_700_000_000, 5),
            ctime: (1_700_000_000, 5),
        }
    }

    fn file(ino: u64, size: usize) -> CachedFile {
        CachedFile::new(
            stamp(ino, size as u64),
            Bytes::from(vec![b'x'; size]),
            HeaderValue::from_static("\"tag\""),
            "application/octet-stream",
        )
    }

    fn key(p: &str) -> Key {
        (7, PathBuf::from(p))
    }

    #[test]
    fn memory_bound_is_respected_and_lru_evicted_first() {
        let max = 10 * (1000 + ENTRY_OVERHEAD);
        let cache = FileCache::new(max, 4096);
        for i in 0..10 {
            cache.insert(key(&format!("f{i}")), file(i, 1000));
        }
        assert_eq!(cache.len(), 10);
        assert_eq!(cache.used(), max);
        // Hit f0: the hand spares it once, so f1 goes first.
        assert!(cache.get(&key("f0")).is_some());
        cache.insert(key("new"), file(99, 1000));
        assert!(cache.used() <= max, "used {} > bound {max}", cache.used());
        assert!(cache.get(&key("new")).is_some());
        assert!(cache.get(&key("f0")).is_some(), "recently used entry kept");
        assert!(
            cache.get(&key("f1")).is_none(),
            "least recently used entry evicted"
        );
        // Many more inserts never exceed the bound.
        for i in 100..300 {
            cache.insert(key(&format!("g{i}")), file(i, 700 + (i as usize % 300)));
            assert!(cache.used() <= max);
        }
    }

    #[test]
    fn oversized_files_are_not_stored() {
        let cache = FileCache::new(1 << 20, 1000);
        let e = cache.insert(key("big"), file(1, 1001));
        assert_eq!(e.data.len(), 1001, "the caller still gets the bytes");
        assert!(cache.is_empty());
        assert_eq!(cache.used(), 0);
        let off = FileCache::new(0, 1000);
        off.insert(key("small"), file(1, 10));
        assert!(off.is_empty(), "max_size 0 disables the cache");
    }

    #[test]
    fn replace_remove_and_gzip_keep_the_account_exact() {
        let cache = FileCache::new(1 << 20, 1 << 16);
        let a = cache.insert(key("a"), file(1, 100));
        cache.insert(key("a"), file(2, 300));
        assert_eq!(cache.used(), 300 + ENTRY_OVERHEAD);
        // Removing a stale handle does not drop the newer entry.
        cache.remove(&key("a"), &a);
        assert_eq!(cache.len(), 1);
        let b = cache.get(&key("a")).unwrap();
        cache.attach_gzip(&key("a"), &b, &Bytes::from_static(b"gzipped"));
        assert_eq!(b.gzip().map(|g| &g[..]), Some(&b"gzipped"[..]));
        assert_eq!(cache.used(), 300 + 7 + ENTRY_OVERHEAD);
        cache.remove(&key("a"), &b);
        assert_eq!(cache.used(), 0);
        assert!(cache.is_empty());
        // A file replaced over and over (edited) does not grow the ring without end.
        for i in 0..1000 {
            cache.insert(key("edited"), file(i, 10));
        }
        let live = cache.len();
        let ring = cache.lock().ring.len();
        assert!(ring <= 2 * live + 17, "ring {ring} for {live} entries");
        assert_eq!(cache.used(), 10 + ENTRY_OVERHEAD);
    }

    #[test]
    fn gzip_attached_within_the_bound() {
        let max = 3 * (1000 + ENTRY_OVERHEAD);
        let cache = FileCache::new(max, 4096);
        let a = cache.insert(key("a"), file(1, 1000));
        cache.insert(key("b"), file(2, 1000));
        cache.insert(key("c"), file(3, 1000));
        // Room for the gzip is made by evicting another entry, never the one it belongs to.
        cache.attach_gzip(&key("a"), &a, &Bytes::from(vec![0u8; 500]));
        assert!(a.gzip().is_some());
        assert!(cache.get(&key("a")).is_some());
        assert!(cache.used() <= max);
        assert_eq!(cache.len(), 2);
        for i in 10..40 {
            cache.insert(key(&format!("n{i}")), file(i, 900));
            assert!(cache.used() <= max);
        }
    }

    #[test]
    fn settled_needs_an_old_enough_change_time() {
        let s = stamp(1, 1);
        let changed = at(s.ctime);
        assert!(!s.settled(changed));
        assert!(!s.settled(changed + SETTLE / 2));
        assert!(s.settled(changed + SETTLE));
        assert_eq!(
            s.modified(),
            SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5)
        );
    }
}
