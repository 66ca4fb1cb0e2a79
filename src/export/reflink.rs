//! Copying a byte range of one file into a new file at the cheapest way the filesystem
//! offers: a reflink (`FICLONERANGE`: shared extents, no space used), else an in-kernel copy
//! (`copy_file_range`, which some filesystems also turn into a reflink or server-side copy),
//! else plain reads and writes. The caller is told which one happened.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use serde::Serialize;

/// How an exported blob got its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMethod {
    /// `FICLONERANGE`: the export shares the cache's extents (no space used).
    Reflink,
    /// `copy_file_range`: copied inside the kernel (a reflink where the filesystem makes
    /// one, a real copy elsewhere).
    CopyFileRange,
    /// Read and written through user space.
    ReadWrite,
}

impl CopyMethod {
    pub fn describe(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflinked",
            CopyMethod::CopyFileRange => "copied (copy_file_range)",
            CopyMethod::ReadWrite => "copied",
        }
    }
}

/// `struct file_clone_range` of `<linux/fs.h>`.
#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `_IOW(0x94, 13, struct file_clone_range)`.
const FICLONERANGE: libc::c_ulong = 0x4020_940d;

/// Read/write chunk of the last fallback.
const CHUNK: usize = 1 << 20;

/// Errors after which the next, plainer method is tried.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EOPNOTSUPP
                | libc::ENOTTY
                | libc::EXDEV
                | libc::EINVAL
                | libc::ENOSYS
                | libc::EBADF
                | libc::EPERM
                | libc::ETXTBSY
        )
    )
}

/// Copies `len` bytes at `offset` of `src` to offset 0 of the empty file `dst` (whose length
/// is `len` afterwards).
pub fn copy_range(src: &File, offset: u64, len: u64, dst: &File) -> io::Result<CopyMethod> {
    if len == 0 {
        return Ok(CopyMethod::ReadWrite);
    }
    match clone_range(src, offset, len, dst) {
        Ok(()) => return Ok(CopyMethod::Reflink),
        Err(e) if unsupported(&e) => {}
        Err(e) => return Err(e),
    }
    dst.set_len(0)?;
    match kernel_copy(src, offset, len, dst) {
        Ok(()) => return Ok(CopyMethod::CopyFileRange),
        Err(e) if unsupported(&e) => {}
        Err(e) => return Err(e),
    }
    dst.set_len(0)?;
    read_write(src, offset, len, dst)?;
    Ok(CopyMethod::ReadWrite)
}

fn clone_range(src: &File, offset: u64, len: u64, dst: &File) -> io::Result<()> {
    let args = FileCloneRange {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset: offset,
        src_length: len,
        dest_offset: 0,
    };
    // SAFETY: FICLONERANGE reads the struct passed; both descriptors are open for the call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONERANGE as _, &args) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // A clone of a range that ends at the source's end may leave the tail block rounded up.
    dst.set_len(len)
}

fn kernel_copy(src: &File, offset: u64, len: u64, dst: &File) -> io::Result<()> {
    let mut off_in = offset as libc::loff_t;
    let mut off_out: libc::loff_t = 0;
    let mut left = len;
    while left > 0 {
        let want = left.min(1 << 30) as usize;
        // SAFETY: both descriptors are open; the offsets point at live locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(short(len - left, len));
        }
        left -= n as u64;
    }
    Ok(())
}

fn read_write(src: &File, offset: u64, len: u64, dst: &File) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let got = src.read_at(&mut buf[..n], offset + done)?;
        if got == 0 {
            return Err(short(done, len));
        }
        dst.write_all_at(&buf[..got], done)?;
        done += got as u64;
    }
    Ok(())
}

fn short(done: u64, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the source ended after {done} of {len} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn copy_range_copies_exactly_the_range_and_says_how() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let data: Vec<u8> = (0..3 * 4096 + 77).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&src_path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&dst_path)
            .unwrap();
        let method = copy_range(&src, 4096, data.len() as u64 - 4096, &dst).unwrap();
        assert_eq!(std::fs::read(&dst_path).unwrap(), &data[4096..]);
        assert!(!method.describe().is_empty());
    }

    #[test]
    fn read_write_fallback_copies_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, b"0123456789").unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        read_write(&src, 3, 5, &dst).unwrap();
        assert_eq!(std::fs::read(&dst_path).unwrap(), b"34567");
    }

    #[test]
    fn a_source_shorter_than_the_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, b"0123").unwrap();
        let src = File::open(&src_path).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        assert!(copy_range(&src, 2, 10, &dst).is_err());
    }
}
