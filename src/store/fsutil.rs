//! Small file-system helpers: exact positioned I/O, durable directory creation, no-clobber
//! publishing and [`atomic_write`]. Byte-range locks are in `locks`.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Result, StoreError};
use super::Durability;

/// Identity of an inode, used to make sure we delete or reuse the file we think we do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    pub(crate) fn of(meta: &fs::Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Reads exactly `buf.len()` bytes at `offset`; a file that ends early is
/// [`StoreError::ShortRead`], never a silently shorter buffer.
pub(crate) fn read_exact_at(
    file: &File,
    buf: &mut [u8],
    offset: u64,
    path: &Path,
    op: &'static str,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(StoreError::ShortRead {
                    path: path.to_path_buf(),
                    op,
                    offset,
                    wanted: buf.len(),
                    got: done,
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::io(op, path)(e)),
        }
    }
    Ok(())
}

/// Reads exactly `len` bytes at `offset` into a new vector, without zeroing it first (reads
/// are the hot path of serving cached files).
pub(crate) fn read_new_at(
    file: &File,
    len: usize,
    offset: u64,
    path: &Path,
    op: &'static str,
) -> Result<Vec<u8>> {
    use std::os::unix::io::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0usize;
    while done < len {
        let at =
            libc::off_t::try_from(offset + done as u64).map_err(|_| StoreError::ShortRead {
                path: path.to_path_buf(),
                op,
                offset,
                wanted: len,
                got: done,
            })?;
        // SAFETY: pread writes at most `len - done` bytes into the spare capacity starting at
        // `done`, which the vector owns (capacity `len`).
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(done).cast(),
                len - done,
                at,
            )
        };
        match n {
            0 => {
                return Err(StoreError::ShortRead {
                    path: path.to_path_buf(),
                    op,
                    offset,
                    wanted: len,
                    got: done,
                })
            }
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(StoreError::io(op, path)(e));
                }
            }
        }
    }
    // SAFETY: every one of the first `len` bytes was written by pread above.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

/// Writes all of `buf` at `offset`.
pub(crate) fn write_all_at(
    file: &File,
    buf: &[u8],
    offset: u64,
    path: &Path,
    op: &'static str,
) -> Result<()> {
    write_all_vectored_at(file, &[buf], offset, path, op)
}

/// Most slices one `pwritev` is given (the kernel's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// [`write_all_at`] of `bufs` one after the other (one `pwritev` for many received chunks,
/// instead of copying them into one buffer first).
pub(crate) fn write_all_vectored_at(
    file: &File,
    bufs: &[&[u8]],
    offset: u64,
    path: &Path,
    op: &'static str,
) -> Result<()> {
    #[cfg(test)]
    if let Some(e) = faults::take(op, path) {
        // Like a real ENOSPC in the middle of a write: part of the bytes land, then it fails.
        let half: usize = bufs.iter().map(|b| b.len()).sum::<usize>() / 2;
        let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let _ = file.write_all_at(&joined[..half], offset);
        return Err(StoreError::io(op, path)(e));
    }
    pwritev_all(file, bufs, offset).map_err(StoreError::io(op, path))
}

fn pwritev_all(file: &File, bufs: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut bufs: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    let mut first = 0;
    while first < bufs.len() {
        let batch = &bufs[first..bufs.len().min(first + MAX_SLICES)];
        let iov: Vec<libc::iovec> = batch
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let at = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: every iovec points into a live slice of `bufs` (borrowed for this call), and
        // pwritev only reads from them.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as i32, at) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
        }
        // Skip what was written: whole slices, then the front of a partly written one.
        let mut left = n as usize;
        offset += left as u64;
        while left > 0 {
            let len = bufs[first].len();
            if left >= len {
                left -= len;
                first += 1;
            } else {
                bufs[first] = &bufs[first][left..];
                left = 0;
            }
        }
    }
    Ok(())
}

/// Test-only fault injection for [`write_all_at`]: the next write (of the given `op`, or of
/// any op) on the calling thread writes half its bytes and then fails with `errno`.
#[cfg(test)]
pub(crate) mod faults {
    use std::cell::RefCell;
    use std::io;

    thread_local! {
        static PENDING: RefCell<Vec<(Option<&'static str>, i32)>> = const { RefCell::new(Vec::new()) };
    }

    /// Arms one failure of the next write whose op is `op` (any op when `None`).
    pub(crate) fn fail_next_write(op: Option<&'static str>, errno: i32) {
        PENDING.with(|p| p.borrow_mut().push((op, errno)));
    }

    /// Disarms every pending failure of this thread.
    pub(crate) fn clear() {
        PENDING.with(|p| p.borrow_mut().clear());
    }

    /// Failures armed for writes under a directory, from any thread (for writes made on a
    /// runtime's blocking pool): (directory, op, errno).
    static UNDER: parking_lot::Mutex<Vec<(std::path::PathBuf, &'static str, i32)>> =
        parking_lot::Mutex::new(Vec::new());

    /// Arms one failure of the next write of `op` to a file under `dir`, on any thread.
    pub(crate) fn fail_next_write_under(dir: &std::path::Path, op: &'static str, errno: i32) {
        UNDER.lock().push((dir.to_path_buf(), op, errno));
    }

    pub(super) fn take(op: &str, path: &std::path::Path) -> Option<io::Error> {
        let local = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let i = p.iter().position(|(o, _)| o.is_none_or(|o| o == op))?;
            Some(io::Error::from_raw_os_error(p.remove(i).1))
        });
        local.or_else(|| {
            let mut under = UNDER.lock();
            let i = under
                .iter()
                .position(|(dir, o, _)| *o == op && path.starts_with(dir))?;
            Some(io::Error::from_raw_os_error(under.remove(i).2))
        })
    }
}

/// `fdatasync` with context.
pub(crate) fn sync_data(file: &File, path: &Path, op: &'static str) -> Result<()> {
    file.sync_data().map_err(StoreError::io(op, path))
}

/// Opens `file` again: a new open file description of the same inode (so OFD locks taken
/// through it conflict with locks taken through `file`), read-write. Uses
/// `/proc/self/fd/{fd}`, which reaches the very inode even if `path` was unlinked or replaced;
/// without `/proc`, opens `path` and checks that it still names the inode `identity`.
pub(crate) fn reopen(file: &File, path: &Path, identity: FileIdentity) -> Result<File> {
    use std::os::unix::io::AsRawFd;

    let open = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
    if let Ok(f) = open(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd()))) {
        return Ok(f);
    }
    let f = open(path).map_err(StoreError::io("reopen blob", path))?;
    let meta = f.metadata().map_err(StoreError::io("stat", path))?;
    if FileIdentity::of(&meta) != identity {
        return Err(StoreError::io("reopen blob", path)(io::Error::new(
            io::ErrorKind::NotFound,
            "the blob file was removed or replaced since it was opened",
        )));
    }
    Ok(f)
}

/// Free and total bytes of a file system, for unprivileged users (`statvfs`: `f_bavail`
/// and `f_blocks` times `f_frsize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes available to unprivileged users.
    pub free: u64,
    /// Size of the file system in bytes.
    pub total: u64,
}

/// `statvfs(path)`.
pub(crate) fn fs_space(path: &Path) -> io::Result<FsSpace> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `statvfs` is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `st` a valid, writable `statvfs`.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let unit = if st.f_frsize > 0 {
        st.f_frsize as u64
    } else {
        st.f_bsize as u64
    };
    #[allow(clippy::unnecessary_cast)]
    Ok(FsSpace {
        free: (st.f_bavail as u64).saturating_mul(unit),
        total: (st.f_blocks as u64).saturating_mul(unit),
    })
}

/// Creates the directory `dir` (one level: its parent must exist), `fsync`ing the parent with
/// [`Durability::Fsync`]. An existing directory is fine.
pub(crate) fn create_dir_durable(dir: &Path, durability: Durability) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => {
            if durability == Durability::Fsync {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsync_dir(parent)?;
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(StoreError::io("create directory", dir)(e)),
    }
}

/// A process-unique suffix for temporary file names: `{pid}.{counter}`.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `fsync`s a directory, making the entries created or renamed in it durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

/// `mkdir -p`; with [`Durability::Fsync`] the parent of every directory it created is
/// `fsync`ed so the new entries survive a power loss.
pub(crate) fn create_dir_all_durable(dir: &Path, durability: Durability) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut created = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        created.push(d);
        cur = d.parent();
    }
    fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
    if durability == Durability::Fsync {
        for d in created.iter().rev() {
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
    }
    Ok(())
}

/// Outcome of [`publish_no_clobber`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Publish {
    /// `final_path` now names the temp file's inode; the temp name may still exist.
    Published,
    /// Something already exists at `final_path`; nothing was changed.
    AlreadyExists,
}

/// Makes `tmp` visible at `final_path` atomically, unless `final_path` already exists.
///
/// Uses `link(2)` (which fails with `EEXIST` instead of replacing). On file systems without
/// hard links it falls back to `renameat2(RENAME_NOREPLACE)`. The caller removes `tmp`
/// afterwards (ignoring `NotFound`).
pub(crate) fn publish_no_clobber(tmp: &Path, final_path: &Path) -> io::Result<Publish> {
    match fs::hard_link(tmp, final_path) {
        Ok(()) => Ok(Publish::Published),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Publish::AlreadyExists),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK)
            ) =>
        {
            rename_no_replace(tmp, final_path)
        }
        Err(e) => Err(e),
    }
}

#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<Publish> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(Publish::Published);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::AlreadyExists {
        Ok(Publish::AlreadyExists)
    } else {
        Err(e)
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(_from: &Path, _to: &Path) -> io::Result<Publish> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Removes `path` only if it still names the inode `expected`. Returns whether it removed
/// anything. (A tiny window remains between the check and the unlink; losing that race only
/// costs a cached file, never correctness.)
pub(crate) fn remove_if_same(path: &Path, expected: FileIdentity) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if FileIdentity::of(&m) == expected => match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove", path)(e)),
        },
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("stat", path)(e)),
    }
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The temporary name [`atomic_write`] uses for `path`: `.{name}.{pid}.{counter}.tmp` in the
/// same directory (the name part is cut to 100 characters to stay under `NAME_MAX`).
fn atomic_temp_path(dir: &Path, name: &OsStr) -> PathBuf {
    let name: String = name.to_string_lossy().chars().take(100).collect();
    dir.join(format!(".{name}.{}.tmp", unique_suffix()))
}

/// Replaces the file at `path` with `bytes` atomically: readers see either the old or the new
/// content, never a mix, and a crash never leaves a partial file at `path`.
///
/// Writes a temporary file `.{name}.{pid}.{counter}.tmp` in the same directory (creating the
/// directory if needed), `fsync`s it when `durability` is [`Durability::Fsync`], renames it
/// over `path`, then `fsync`s the directory (again only with `Fsync`). On error the temporary
/// file is removed. A crash can leave such a temporary file behind; its name starts with `.`
/// and ends with `.tmp`, so a cleaner can recognise it.
pub fn atomic_write(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), StoreError> {
    let name = path.file_name().ok_or_else(|| StoreError::InvalidPath {
        path: path.to_path_buf(),
        reason: "no file name",
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dir_all_durable(dir, durability)?;
    let tmp = atomic_temp_path(dir, name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(StoreError::io("create temporary file", &tmp))?;
        f.write_all(bytes)
            .map_err(StoreError::io("write temporary file", &tmp))?;
        if durability == Durability::Fsync {
            f.sync_all()
                .map_err(StoreError::io("fsync temporary file", &tmp))?;
        }
        drop(f);
        fs::rename(&tmp, path).map_err(StoreError::io("rename temporary file to", path))?;
        Ok(())
    })();
    if result.is_err() {
        if let Err(e) = remove_file_if_exists(&tmp) {
            log::warn!("store: could not remove temporary file {tmp:?}: {e}");
        }
        return result;
    }
    if durability == Durability::Fsync {
        fsync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/meta.json");
        for durability in [Durability::Fsync, Durability::Os] {
            atomic_write(&path, b"{\"a\":1}", durability).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}");
            atomic_write(&path, b"{}", durability).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"{}");
            assert_eq!(entries(&dir.path().join("sub")), vec!["meta.json"]);
        }
    }

    #[test]
    fn atomic_write_error_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let path = dir.path().join("occupied");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("x"), b"x").unwrap();
        assert!(atomic_write(&path, b"data", Durability::Os).is_err());
        assert_eq!(entries(dir.path()), vec!["occupied"]);
        assert!(atomic_write(Path::new("/"), b"x", Durability::Os).is_err());
    }

    #[test]
    fn read_new_at_reads_exact_bytes_and_reports_short_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(read_new_at(&f, 4, 6, &path, "test").unwrap(), b"6789");
        assert!(matches!(
            read_new_at(&f, 4, 8, &path, "test").unwrap_err(),
            StoreError::ShortRead {
                wanted: 4,
                got: 2,
                ..
            }
        ));
    }

    #[test]
    fn read_exact_at_reports_short_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = [0u8; 4];
        read_exact_at(&f, &mut buf, 6, &path, "test").unwrap();
        assert_eq!(&buf, b"6789");
        let err = read_exact_at(&f, &mut buf, 8, &path, "test").unwrap_err();
        assert!(matches!(
            err,
            StoreError::ShortRead {
                wanted: 4,
                got: 2,
                ..
            }
        ));
    }

    #[test]
    fn publish_no_clobber_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, target) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("t"),
        );
        fs::write(&a, b"first").unwrap();
        fs::write(&b, b"second").unwrap();
        assert_eq!(publish_no_clobber(&a, &target).unwrap(), Publish::Published);
        assert_eq!(
            publish_no_clobber(&b, &target).unwrap(),
            Publish::AlreadyExists
        );
        assert_eq!(fs::read(&target).unwrap(), b"first");
        // The renameat2 fallback behaves the same.
        let c = dir.path().join("c");
        fs::write(&c, b"third").unwrap();
        assert_eq!(
            rename_no_replace(&c, &target).unwrap(),
            Publish::AlreadyExists
        );
        let t2 = dir.path().join("t2");
        assert_eq!(rename_no_replace(&c, &t2).unwrap(), Publish::Published);
        assert_eq!(fs::read(&t2).unwrap(), b"third");
        assert!(!c.exists());
    }

    #[test]
    fn remove_if_same_only_removes_the_expected_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"1").unwrap();
        let old = FileIdentity::of(&fs::metadata(&path).unwrap());
        fs::remove_file(&path).unwrap();
        let keep = dir.path().join("keep");
        fs::write(&keep, b"2").unwrap();
        fs::rename(&keep, &path).unwrap();
        // Inode numbers can be reused; only assert when they differ.
        let new = FileIdentity::of(&fs::metadata(&path).unwrap());
        if new != old {
            assert!(!remove_if_same(&path, old).unwrap());
            assert!(path.exists());
        }
        assert!(remove_if_same(&path, new).unwrap());
        assert!(!path.exists());
        assert!(!remove_if_same(&path, new).unwrap());
    }

    #[test]
    fn a_vectored_write_of_more_slices_than_one_call_takes_lands_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // 2500 slices of 1 to 7 bytes (three calls' worth), with empty ones among them.
        let owned: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| vec![(i % 251) as u8; (i % 8) as usize])
            .collect();
        let slices: Vec<&[u8]> = owned.iter().map(|v| &v[..]).collect();
        write_all_vectored_at(&file, &slices, 10, &path, "test write").unwrap();
        let expected: Vec<u8> = owned.concat();
        let mut got = vec![0u8; expected.len()];
        file.read_exact_at(&mut got, 10).unwrap();
        assert_eq!(got, expected);
        assert_eq!(file.metadata().unwrap().len(), 10 + expected.len() as u64);
    }
}
