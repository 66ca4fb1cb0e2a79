//! Linux open-file-description (OFD) byte-range locks: blocking ones for header updates
//! ([`RangeLock`]), non-blocking ones for block claims, and the in-use lock every open blob
//! handle holds (shared) and eviction takes (exclusive) before it deletes a blob.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{Result, StoreError};
use super::format::IN_USE_LOCK;

/// A held Linux open-file-description write lock on a byte range; released on drop.
///
/// OFD locks belong to the open file description, not to the process, so two descriptors
/// opened separately (in two processes, or twice in one process) exclude each other, while
/// threads sharing one descriptor do not: callers pair this lock with an in-process mutex.
pub(crate) struct RangeLock<'a> {
    file: Option<&'a File>,
    start: u64,
    len: u64,
}

static LOCK_UNSUPPORTED_WARNED: AtomicBool = AtomicBool::new(false);

impl<'a> RangeLock<'a> {
    /// Blocks until the write lock on `[start, start+len)` is held.
    ///
    /// If the file system does not support OFD locks (`EINVAL`, `ENOLCK`, `EOPNOTSUPP`,
    /// `ENOSYS`), a warning is logged once and the lock degrades to a no-op: a single process
    /// remains correct thanks to the in-process mutex; only concurrent processes lose the
    /// protection.
    pub(crate) fn acquire(file: &'a File, start: u64, len: u64, path: &Path) -> Result<Self> {
        match ofd_lock(file, start, len, true) {
            Ok(()) => Ok(RangeLock {
                file: Some(file),
                start,
                len,
            }),
            Err(e) if lock_unsupported(&e) => {
                if !LOCK_UNSUPPORTED_WARNED.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "store: byte-range (OFD) locks unsupported on {path:?} ({e}); \
                         processes sharing this cache directory may lose bitmap updates"
                    );
                }
                Ok(RangeLock {
                    file: None,
                    start,
                    len,
                })
            }
            Err(e) => Err(StoreError::io("lock header range of", path)(e)),
        }
    }
}

impl Drop for RangeLock<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.file {
            if let Err(e) = ofd_lock(file, self.start, self.len, false) {
                // Closing the descriptor would release it; it stays open, so this matters,
                // but there is nothing better to do than to report it.
                log::error!(
                    "store: failed to release byte-range lock {}+{}: {e}",
                    self.start,
                    self.len
                );
            }
        }
    }
}

/// Whether `e` says the file system has no OFD locks.
pub(crate) fn lock_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

/// Non-blocking OFD write lock: `Ok(false)` if a conflicting lock is held elsewhere.
pub(crate) fn ofd_try_lock(file: &File, start: u64, len: u64) -> io::Result<bool> {
    match ofd_fcntl(file, start, len, Kind::Write, false) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn ofd_lock(file: &File, start: u64, len: u64, lock: bool) -> io::Result<()> {
    let kind = if lock { Kind::Write } else { Kind::Unlock };
    ofd_fcntl(file, start, len, kind, true)
}

/// Releases an OFD lock on `[start, start+len)`.
pub(crate) fn ofd_unlock(file: &File, start: u64, len: u64) -> io::Result<()> {
    ofd_fcntl(file, start, len, Kind::Unlock, false)
}

/// Marks the blob file open as "in use" for as long as `file` (this open file description)
/// stays open: a shared OFD read lock on the one byte [`IN_USE_LOCK`], waited for while an
/// evictor holds it exclusively (which lasts only as long as it takes to unlink the copies).
/// Where OFD locks are unsupported, a warning is logged once and nothing is held (eviction
/// then protects only what this process has open).
pub(crate) fn hold_in_use(file: &File, path: &Path) -> Result<()> {
    match ofd_fcntl(file, IN_USE_LOCK, 1, Kind::Read, true) {
        Ok(()) => Ok(()),
        Err(e) if lock_unsupported(&e) => {
            warn_locks_unsupported(
                path,
                &e,
                "eviction by one process cannot see files another process has open",
            );
            Ok(())
        }
        Err(e) => Err(StoreError::io("lock (in use)", path)(e)),
    }
}

/// Tries to take the in-use byte exclusively through `file`: `Ok(false)` when any other open
/// file description (a reader or filler, in this process or another) holds it. Released when
/// `file` is closed. `Ok(true)` where OFD locks are unsupported.
pub(crate) fn try_take_unused(file: &File) -> io::Result<bool> {
    match ofd_fcntl(file, IN_USE_LOCK, 1, Kind::Write, false) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) if lock_unsupported(&e) => Ok(true),
        Err(e) => Err(e),
    }
}

/// The lock operations.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Unlock,
}

/// Logs once per process that OFD locks do not work on `path` (`e` says why), and what that
/// costs (`consequence`).
pub(crate) fn warn_locks_unsupported(path: &Path, e: &io::Error, consequence: &str) {
    if !LOCK_UNSUPPORTED_WARNED.swap(true, Ordering::Relaxed) {
        log::warn!("store: byte-range (OFD) locks unsupported on {path:?} ({e}); {consequence}");
    }
}

/// `fcntl` with an OFD lock command: lock (`wait`: blocking) or unlock `[start, start+len)`.
#[cfg(target_os = "linux")]
fn ofd_fcntl(file: &File, start: u64, len: u64, kind: Kind, wait: bool) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;

    let to_off =
        |v: u64| libc::off_t::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        Kind::Read => libc::F_RDLCK,
        Kind::Write => libc::F_WRLCK,
        Kind::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    let lock = !matches!(kind, Kind::Unlock);
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = to_off(start)?;
    fl.l_len = to_off(len)?;
    fl.l_pid = 0; // required for OFD locks
    let cmd = if lock && wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: the descriptor is open for the lifetime of `file` and `fl` is a valid,
        // initialised `flock` that outlives the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn ofd_fcntl(_file: &File, _start: u64, _len: u64, _kind: Kind, _wait: bool) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};

    use super::*;

    #[test]
    fn range_locks_exclude_other_open_file_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, [0u8; 16]).unwrap();
        let f1 = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let f2 = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let held = RangeLock::acquire(&f1, 3, 1, &path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _l = RangeLock::acquire(&f2, 3, 1, Path::new("f2")).unwrap();
            tx.send(()).unwrap();
        });
        // While f1 holds the byte, f2 must wait.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }
}
