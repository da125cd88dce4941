//! `sendfile(2)` for cached file bytes, underneath hyper.
//!
//! hyper writes bodies through `AsyncWrite`, as byte slices, so it cannot `sendfile`. For
//! a large cached file the copy into the socket buffer is then most of the cost of a
//! response (nginx, with `sendfile on`, only hands page references to the socket). This
//! module recovers that without changing what hyper sees:
//!
//! 1. A cached file of at least [`MIN_LEN`] bytes is kept in a *sealed memfd*:
//!    `memfd_create`, the bytes written once, then `F_SEAL_WRITE | F_SEAL_SHRINK |
//!    F_SEAL_GROW | F_SEAL_SEAL`, so nobody (us included) can ever change its contents.
//!    The response body is a read-only `mmap` of it, wrapped in [`Bytes`]; the address
//!    range is recorded in a registry together with the descriptor.
//! 2. When a plain TCP connection is asked to write slices ([`poll_write`]), a slice that
//!    lies inside a registered mapping is sent with `sendfile` from the memfd at the
//!    matching offset, after the slices before it (the response head) went out with
//!    `MSG_MORE` so they share a packet with the body.
//!
//! Why this is sound: the slice hyper passes is a view of the mapping, so the mapping
//! (and the memfd, whose descriptor the registry co-owns) is alive for the call, and
//! the bytes at offset `p - base` of a sealed memfd are by construction the bytes at
//! `p`. Sending one instead of the other is the same write. Unlike nginx's sendfile from
//! the original file, a file edited while a response is in flight cannot mix versions
//! in one body. The kernel keeps its own references to the pages it queued, so
//! unmapping afterwards is fine too. TLS connections copy (the slices are encrypted
//! first, so they never point into a mapping); HTTP/2 over plain TCP may pass DATA
//! payloads through unchanged, and then they go by `sendfile` too.
//!
//! Limits: the number of live mappings is capped ([`max_mappings`]); a `sendfile` to a
//! peer that has gone raises `SIGPIPE`, which Rust programs ignore from the start (an
//! embedder that restores the default disposition should keep it ignored).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Files from this size on are kept in a sealed memfd and sent with `sendfile`; below
/// it the copy costs less than the extra system call.
pub const MIN_LEN: usize = 16 << 10;

/// Start address of each live mapping -> its length and memfd.
static REGIONS: RwLock<BTreeMap<usize, (usize, Arc<OwnedFd>)>> = RwLock::new(BTreeMap::new());

/// How many sealed mappings may be live at once. Each holds a descriptor, and
/// descriptors are better spent on connections: an eighth of the soft `RLIMIT_NOFILE`
/// (128 under the common 1024), at most 4096. Beyond it files are cached on the heap and
/// copied as before.
fn max_mappings() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one struct we own.
        let cur = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
            0 => lim.rlim_cur,
            _ => 1024,
        };
        usize::try_from(cur / 8).unwrap_or(usize::MAX).min(4096)
    })
}

/// A read-only shared mapping of a sealed memfd; unregistered and unmapped on drop.
struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and its contents can never change (sealed), so it
// may be read from any thread; the pointer is only freed by Drop.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared immutable memory.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` is a live PROT_READ mapping of exactly `len` bytes until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Unregister first, so no new lookup can find an address about to be unmapped.
        REGIONS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.ptr as usize));
        // SAFETY: unmapping the region mmap gave us; nothing borrows it any more (the
        // last Bytes view owning this Mapping is being dropped).
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Copies `data` into a new sealed memfd and returns a view of its mapping that
/// [`poll_write`] can send with `sendfile`. Errors (no memfd support, out of memory) leave
/// the caller to keep its ordinary buffer.
pub fn seal(data: &[u8]) -> io::Result<Bytes> {
    if data.is_empty() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    if REGIONS.read().unwrap_or_else(|e| e.into_inner()).len() >= max_mappings() {
        return Err(io::Error::other("too many sealed files"));
    }
    // SAFETY: a NUL-terminated name and flags; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"web-tier-file-cache".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = File::from(fd);
    file.write_all(data)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new read-only shared mapping of `data.len()` bytes of our memfd; checked
    // below. Read-only shared mappings are allowed on a write-sealed memfd.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mapping = Mapping {
        ptr: ptr as *const u8,
        len: data.len(),
    };
    REGIONS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(ptr as usize, (data.len(), Arc::new(OwnedFd::from(file))));
    Ok(Bytes::from_owner(mapping))
}

/// The memfd and offset behind `slice`, if it lies inside a registered mapping.
fn lookup(slice: &[u8]) -> Option<(Arc<OwnedFd>, usize)> {
    if slice.len() < MIN_LEN / 4 {
        // A response head or a small tail: not worth a lookup (and rarely a mapping).
        return None;
    }
    let p = slice.as_ptr() as usize;
    let regions = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let (&start, (len, fd)) = regions.range(..=p).next_back()?;
    (p + slice.len() <= start + len).then(|| (fd.clone(), p - start))
}

/// Writes `bufs` to `tcp`, sending the first slice that lies in a sealed mapping with
/// `sendfile` (and the slices before it with `MSG_MORE`). `None` if no slice does: the
/// caller writes as usual. Like a vectored write it may write only a prefix.
pub fn poll_write(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Option<Poll<io::Result<usize>>> {
    let (i, (fd, offset)) = bufs
        .iter()
        .enumerate()
        .find_map(|(i, b)| lookup(b).map(|found| (i, found)))?;
    let head = &bufs[..i];
    let len = bufs[i].len();
    Some(loop {
        match tcp.poll_write_ready(cx) {
            Poll::Ready(Ok(())) => {}
            other => break other.map_ok(|()| 0),
        }
        match tcp.try_io(Interest::WRITABLE, || {
            send_head_then_file(tcp.as_raw_fd(), head, fd.as_raw_fd(), offset, len)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            res => break Poll::Ready(res),
        }
    })
}

/// One attempt: `head` with `MSG_MORE`, then `len` bytes of `file` from `offset`.
/// Returns the bytes written; `WouldBlock` only if nothing was.
fn send_head_then_file(
    sock: RawFd,
    head: &[IoSlice<'_>],
    file: RawFd,
    offset: usize,
    len: usize,
) -> io::Result<usize> {
    let mut written = 0;
    let head_len: usize = head.iter().map(|b| b.len()).sum();
    if head_len > 0 {
        // SAFETY: an all-zero msghdr is valid; we fill in the iovec array, which IoSlice
        // guarantees is ABI-compatible with `struct iovec` and outlives the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = head.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = head.len() as _;
            libc::sendmsg(sock, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        written = n as usize;
        if written < head_len {
            return Ok(written);
        }
    }
    let mut off = offset as libc::off_t;
    // SAFETY: sendfile between two descriptors that are open for the call (the socket is
    // borrowed from the stream, the memfd co-owned by the caller's Arc).
    let n = unsafe { libc::sendfile(sock, file, &mut off, len) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // Report what went out; the error comes back on the next call.
        return if written > 0 { Ok(written) } else { Err(e) };
    }
    Ok(written + n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_read_back_and_are_found_by_address() {
        let data: Vec<u8> = (0..MIN_LEN * 2).map(|i| (i % 251) as u8).collect();
        let b = seal(&data).unwrap();
        assert_eq!(&b[..], &data[..]);
        let (_, off) = lookup(&b[100..100 + MIN_LEN]).expect("inside the mapping");
        assert_eq!(off, 100);
        assert!(
            lookup(&data[..MIN_LEN]).is_none(),
            "heap bytes are not registered"
        );
        let (start, len) = (b.as_ptr() as usize, b.len());
        drop(b);
        // Another test may map a new region at the same address; ours had this length.
        let regions = REGIONS.read().unwrap();
        let gone = regions.get(&start).is_none_or(|(l, _)| *l != len);
        assert!(gone, "dropping the last view unregisters the mapping");
    }

    #[tokio::test]
    async fn a_mapped_slice_goes_out_by_sendfile_after_the_head() {
        use tokio::io::{AsyncReadExt, AsyncWrite};
        let data: Vec<u8> = (0..MIN_LEN * 3).map(|i| (i * 7 % 253) as u8).collect();
        let body = seal(&data).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head = b"HEAD\r\n".to_vec();
        let mut sent = 0;
        let mut by_sendfile = 0;
        while sent < head.len() + body.len() {
            let h = &head[sent.min(head.len())..];
            let b = &body[sent.saturating_sub(head.len())..];
            let bufs: Vec<IoSlice<'_>> = [IoSlice::new(h), IoSlice::new(b)]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            sent += std::future::poll_fn(|cx| match poll_write(&tcp, cx, &bufs) {
                Some(p) => {
                    by_sendfile += 1;
                    p
                }
                // A short tail is not looked up: an ordinary write.
                None => std::pin::Pin::new(&mut tcp).poll_write_vectored(cx, &bufs),
            })
            .await
            .unwrap();
        }
        assert!(by_sendfile > 0);
        drop(tcp);
        let got = reader.await.unwrap();
        assert_eq!(&got[..head.len()], &head[..]);
        assert_eq!(&got[head.len()..], &data[..]);
    }
}
