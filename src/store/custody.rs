//! Custody: the bytes of a blob file this handle wrote itself, read back without checksums.
//!
//! A handle that created its file (an empty, sparse blob) and made every change to it since
//! knows every byte in it: the blocks it committed hold the bytes it wrote, whose page
//! checksums it computed from memory a moment ago. Reading such a block back through the
//! checked path (whole 1 MiB pages, CRC32C of each) costs CPU and, with many clients of one
//! cold file, a page buffer per client; the fill already trusts the bytes of its blocks in
//! flight the same way.
//!
//! The handle keeps its *custody stamp*: the file's stamp (device, inode, `ctime`) right
//! after its last write, as long as the stamp right before each write was the one it
//! kept (nobody else had changed the file). Any other change to the file (another process
//! writing it, a test or an operator corrupting it, a `chmod`, a truncation) gives it a new
//! `ctime` and ends the custody for good: from then on every read is checked, as before.
//! [`read_own`](BlobFile::read_own) reads committed blocks in custody and checks afterwards
//! that the custody held through the read and the blocks are still present (a block
//! invalidated and refetched meanwhile is read the checked way).
//!
//! The size is left out of the comparison: this handle's writes of blocks past the end extend
//! the file, and a write within the same timestamp tick as the last one changes nothing else
//! (readers would otherwise fall back to checked reads for most of an active fill). Anyone
//! else's truncation or extension changes `ctime` like any other change. As with the page
//! memory (`verified.rs`), a foreign write within the same tick as one of this handle's is
//! not seen; the fill's blocks in flight, read raw, have the same exposure, and the finished
//! file is still hashed against its id.
//!
//! A handle that opened an existing file never has custody: those bytes came from disk.

use bytes::Bytes;

use super::blob::BlobFile;
use super::error::Result;
use super::fsutil::{write_all_at, write_all_vectored_at};
use super::verified::Stamp;

impl BlobFile {
    /// Start custody: called by the code that just created (and published) this file.
    pub(super) fn take_custody(&self) {
        *self.custody.lock() = Stamp::now(&self.file);
    }

    /// Whether this handle created its file and kept custody as of its last own write (cheap:
    /// no system call). `false` means [`in_custody`](Self::in_custody) is false too; `true`
    /// means it may be.
    pub fn has_custody(&self) -> bool {
        self.custody.lock().is_some()
    }

    /// Whether this handle still has custody of its file (nobody else changed it).
    pub fn in_custody(&self) -> bool {
        if self.custody_matches() {
            return true;
        }
        // One of this handle's own writes may be under way: it moves `ctime` before the
        // custody stamp follows. Wait for it (readers of a busy fill would otherwise all fall
        // back to whole checked pages at once) and look again.
        let _settled = self.write_lock.lock();
        self.custody_matches()
    }

    fn custody_matches(&self) -> bool {
        let custody = *self.custody.lock();
        custody
            .zip(Stamp::now(&self.file))
            .is_some_and(|(kept, now)| kept.same_change(&now))
    }

    /// Writes `buf` at file offset `offset` (data or header), keeping custody when nobody else
    /// changed the file since this handle's last write. Writes of one handle are serialised
    /// (which also spares the kernel's inode lock the spinning of concurrent writers: they
    /// sleep here instead).
    pub(super) fn write_in_custody(&self, buf: &[u8], offset: u64, op: &'static str) -> Result<()> {
        self.write_in_custody_with(|| write_all_at(&self.file, buf, offset, &self.path, op))
    }

    /// [`write_in_custody`](Self::write_in_custody) of `bufs` one after the other.
    pub(super) fn write_vectored_in_custody(
        &self,
        bufs: &[&[u8]],
        offset: u64,
        op: &'static str,
    ) -> Result<()> {
        self.write_in_custody_with(|| {
            write_all_vectored_at(&self.file, bufs, offset, &self.path, op)
        })
    }

    fn write_in_custody_with(&self, write: impl FnOnce() -> Result<()>) -> Result<()> {
        let _serialised = self.write_lock.lock();
        let kept = self.custody_matches();
        let written = write();
        // A write of this handle that failed (the disk full, an I/O error) is still its own
        // change: custody follows it. Bytes it may have written in part belong to a block
        // that is not committed, and readers of blocks in flight only read bytes written
        // successfully before.
        *self.custody.lock() = if kept { Stamp::now(&self.file) } else { None };
        written
    }

    /// The `len` content bytes at `offset`, read without checksums because this handle wrote
    /// them (see the module docs); `None` when they must be read the checked way: the handle
    /// has no custody (any more), or a block they touch is not present.
    pub fn read_own(&self, offset: u64, len: usize) -> Result<Option<Bytes>> {
        self.check_range("read own data", offset, len as u64)?;
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        let blocks = self.layout.blocks_covering(offset..offset + len as u64);
        let all_present =
            |blocks: std::ops::Range<u64>| blocks.into_iter().all(|b| self.is_present(b));
        if !all_present(blocks.clone()) || !self.in_custody() {
            return Ok(None);
        }
        let buf = self.read_content(offset, len, "read own block data")?;
        // Every change during the read was this handle's own (a write of another block) and
        // the blocks were not invalidated meanwhile: the bytes are the ones it committed.
        let held = self.in_custody() && all_present(blocks);
        Ok(held.then(|| Bytes::from(buf)))
    }
}
