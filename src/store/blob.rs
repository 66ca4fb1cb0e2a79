//! One cached file on disk: [`BlobFile`], and the page checksum helper [`BlockChecksummer`].

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use parking_lot::Mutex;

use super::blob_id::BlobId;
use super::checksum::BlockChecksummer;
use super::claims::{BlockClaim, Claims};
use super::error::{Result, StoreError};
use super::format::{
    self, valid_bits, Layout, FIXED_HEADER_LEN, FLAG_NOT_CONTENT_ADDRESSED, FLAG_VERIFIED,
    OFF_FLAGS,
};
use super::fsutil::{read_exact_at, reopen, sync_data, FileIdentity};
use super::locks::RangeLock;
use super::verified::Stamp;
use super::Durability;

/// An open blob file: a header (geometry, block bitmap, page checksums) followed by the
/// content in fixed-size blocks. See `docs/storage-format.md`.
///
/// All methods take `&self` and use positioned I/O, so one `BlobFile` (usually behind the
/// `Arc` the [`Store`](super::Store) hands out) can be shared by any number of threads; it is
/// `Send + Sync`. Calls block on disk I/O: from async code, use `spawn_blocking`.
///
/// **Presence.** A block is *present* when its bit is set in the header bitmap. A bit is set
/// only by [`commit_block`](Self::commit_block), after the block's data and page checksums
/// are written (and, with [`Durability::Fsync`], made durable). An in-memory copy of the
/// bitmap answers [`is_present`](Self::is_present) without I/O; bits set or cleared by
/// another process sharing the file become visible after [`reload_bitmap`](Self::reload_bitmap)
/// (or whenever this handle itself updates the same bitmap byte).
///
/// **Reads.** [`read_verified`](Self::read_verified) never returns a byte whose page failed
/// its CRC32C check; [`read_raw`](Self::read_raw) is unchecked, for bytes of a block still
/// being filled.
pub struct BlobFile {
    pub(super) id: BlobId,
    /// Index of the storage root this copy lives on (in its `Store`).
    pub(super) root: usize,
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) identity: FileIdentity,
    pub(super) layout: Layout,
    pub(super) durability: Durability,
    /// In-memory copy of the bitmap; bits past `block_count` are always zero.
    pub(super) bitmap: Box<[AtomicU8]>,
    /// Number of set bits in `bitmap`.
    pub(super) present: AtomicU64,
    /// How many times a present block stopped being present (see
    /// [`invalidations`](Self::invalidations)).
    pub(super) invalidations: AtomicU64,
    /// In-memory copy of the header flags.
    pub(super) flags: AtomicU32,
    /// Serialises this handle's read-modify-writes of the header (bitmap bytes, flags) and all
    /// updates of the in-memory bitmap. Held together with a byte-range lock on disk.
    pub(super) header_lock: Mutex<()>,
    /// Serialises this handle's writes (see [`write_in_custody`](Self::write_in_custody)).
    pub(super) write_lock: Mutex<()>,
    /// The file's stamp after this handle's last write, while it made every change since it
    /// created the file (see `custody.rs`); `None` otherwise.
    pub(super) custody: Mutex<Option<Stamp>>,
    /// Cross-process block claims, through one extra descriptor.
    pub(super) claims: Claims,
}

impl fmt::Debug for BlobFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobFile")
            .field("id", &self.id)
            .field("root", &self.root)
            .field("path", &self.path)
            .field("size", &self.layout.size())
            .field("block_size", &self.layout.block_size())
            .field("present", &self.present_count())
            .field("blocks", &self.layout.block_count())
            .field("verified", &self.is_verified())
            .field("content_addressed", &self.is_content_addressed())
            .finish()
    }
}

impl BlobFile {
    /// Wraps a freshly created file whose header was just written with `flags` (bitmap all
    /// zero).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_created(
        file: File,
        root: usize,
        path: PathBuf,
        identity: FileIdentity,
        id: BlobId,
        layout: Layout,
        flags: u32,
        durability: Durability,
    ) -> Result<BlobFile> {
        let bitmap_len =
            usize::try_from(layout.bitmap_len()).map_err(|_| StoreError::TooLarge {
                size: layout.size(),
                block_size: layout.block_size(),
            })?;
        Ok(BlobFile {
            id,
            root,
            path,
            file,
            identity,
            layout,
            durability,
            bitmap: (0..bitmap_len).map(|_| AtomicU8::new(0)).collect(),
            present: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            flags: AtomicU32::new(flags),
            header_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
            custody: Mutex::new(None),
            claims: Claims::default(),
        })
    }

    /// Opens an existing blob file: validates the header against `id`, loads the bitmap, and
    /// clears the bits of blocks that lie (partly) beyond the end of the file.
    ///
    /// A damaged, inconsistent or truncated header is [`StoreError::BadHeader`].
    pub(crate) fn open_existing(
        file: File,
        root: usize,
        path: PathBuf,
        identity: FileIdentity,
        id: BlobId,
        durability: Durability,
        file_len: u64,
    ) -> Result<BlobFile> {
        let bad = |reason: String| StoreError::BadHeader {
            path: path.clone(),
            reason,
        };
        if file_len < FIXED_HEADER_LEN {
            return Err(bad(format!(
                "truncated header: the file is {file_len} bytes, the fixed header alone is \
                 {FIXED_HEADER_LEN}"
            )));
        }
        let mut fixed = [0u8; FIXED_HEADER_LEN as usize];
        read_exact_at(&file, &mut fixed, 0, &path, "read blob header")?;
        let (layout, flags) = format::parse_fixed_header(&fixed, &id).map_err(bad)?;
        if file_len < layout.header_len() {
            return Err(bad(format!(
                "truncated header: the file is {file_len} bytes, the header needs {}",
                layout.header_len()
            )));
        }
        let blob =
            BlobFile::new_created(file, root, path, identity, id, layout, flags, durability)?;
        blob.load_bitmap()?;
        blob.clear_truncated_blocks()?;
        Ok(blob)
    }

    /// The content id.
    pub fn id(&self) -> &BlobId {
        &self.id
    }

    /// The path this blob was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The index (in the `Store`'s root list) of the storage root this copy lives on.
    pub fn root_index(&self) -> usize {
        self.root
    }

    /// The blob's geometry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The durability this handle commits with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Content size in bytes.
    pub fn size(&self) -> u64 {
        self.layout.size()
    }

    /// Block size in bytes (the file's own, whatever the configured block size is).
    pub fn block_size(&self) -> u64 {
        self.layout.block_size()
    }

    /// Checksum page size in bytes: `min(block_size, 1 MiB)`.
    pub fn page_size(&self) -> u64 {
        self.layout.page_size()
    }

    /// Number of blocks.
    pub fn block_count(&self) -> u64 {
        self.layout.block_count()
    }

    /// The block holding content byte `offset` (`block_count()` or more past the end).
    pub fn block_of(&self, offset: u64) -> u64 {
        self.layout.block_of(offset)
    }

    /// The content bytes of `block` (empty at `size()` past the end).
    pub fn block_span(&self, block: u64) -> Range<u64> {
        self.layout.block_span(block)
    }

    /// Whether `block` is present (in-memory view; false past the end).
    pub fn is_present(&self, block: u64) -> bool {
        if block >= self.layout.block_count() {
            return false;
        }
        let byte = self.bitmap[(block / 8) as usize].load(Ordering::Acquire);
        byte & (1 << (block % 8)) != 0
    }

    /// Number of present blocks (in-memory view).
    pub fn present_count(&self) -> u64 {
        self.present.load(Ordering::Acquire)
    }

    /// True when every block is present (always true for empty content).
    pub fn is_complete(&self) -> bool {
        self.present_count() == self.layout.block_count()
    }

    /// The blocks overlapping the content byte range `range` (clamped to the content) that are
    /// not present, in increasing order.
    pub fn missing_blocks(&self, range: Range<u64>) -> Vec<u64> {
        self.layout
            .blocks_covering(range)
            .filter(|&b| !self.is_present(b))
            .collect()
    }

    /// A checksummer for the page CRCs of `block`.
    pub fn checksummer(&self, block: u64) -> Result<BlockChecksummer> {
        self.check_block(block)?;
        BlockChecksummer::new(&self.layout, block)
    }

    pub(super) fn check_block(&self, block: u64) -> Result<()> {
        if block < self.layout.block_count() {
            Ok(())
        } else {
            Err(StoreError::BlockOutOfRange {
                path: self.path.clone(),
                block,
                block_count: self.layout.block_count(),
            })
        }
    }

    pub(super) fn check_range(&self, op: &'static str, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.layout.size() => Ok(()),
            _ => Err(StoreError::OutOfRange {
                path: self.path.clone(),
                op,
                offset,
                len,
                size: self.layout.size(),
            }),
        }
    }

    /// Replaces the in-memory bitmap with the on-disk one. Caller must not hold `header_lock`.
    fn load_bitmap(&self) -> Result<()> {
        let mut disk = vec![0u8; self.bitmap.len()];
        // Read under the lock, so a concurrent commit through this handle cannot be
        // overwritten in memory by a bitmap read just before it.
        let _g = self.header_lock.lock();
        read_exact_at(
            &self.file,
            &mut disk,
            self.layout.bitmap_offset(),
            &self.path,
            "read block bitmap",
        )?;
        for (i, (mem, &d)) in self.bitmap.iter().zip(&disk).enumerate() {
            self.store_byte_locked(i as u64, mem, d);
        }
        Ok(())
    }

    /// Sets in-memory bitmap byte `byte` (through `mem`) to `value`, masked, keeping the
    /// present counter in step. Must be called with `header_lock` held.
    fn store_byte_locked(&self, byte: u64, mem: &AtomicU8, value: u8) {
        let value = value & valid_bits(&self.layout, byte);
        let old = mem.swap(value, Ordering::AcqRel);
        if old & !value != 0 {
            self.invalidations.fetch_add(1, Ordering::AcqRel);
        }
        let (old_n, new_n) = (u64::from(old.count_ones()), u64::from(value.count_ones()));
        if new_n >= old_n {
            self.present.fetch_add(new_n - old_n, Ordering::AcqRel);
        } else {
            self.present.fetch_sub(old_n - new_n, Ordering::AcqRel);
        }
    }

    /// Read-modify-write of one on-disk bitmap byte under the in-process mutex and an OFD
    /// lock on that byte. The byte is re-read from disk under the lock (so bits set by other
    /// processes are kept), `f` computes the new value, and the in-memory byte is set to the
    /// result (which also picks up the other processes' bits).
    fn update_bitmap_byte(&self, byte: u64, f: impl FnOnce(u8) -> u8) -> Result<()> {
        let offset = self.layout.bitmap_offset() + byte;
        let _g = self.header_lock.lock();
        let _l = RangeLock::acquire(&self.file, offset, 1, &self.path)?;
        let mut b = [0u8; 1];
        read_exact_at(&self.file, &mut b, offset, &self.path, "read bitmap byte")?;
        let new = f(b[0]);
        if new != b[0] {
            self.write_in_custody(&[new], offset, "write bitmap byte")?;
        }
        self.store_byte_locked(byte, &self.bitmap[byte as usize], new);
        Ok(())
    }

    /// Read-modify-write of the header flags word (same locking as the bitmap).
    fn update_flags(&self, f: impl FnOnce(u32) -> u32) -> Result<()> {
        let offset = OFF_FLAGS as u64;
        let _g = self.header_lock.lock();
        let _l = RangeLock::acquire(&self.file, offset, 4, &self.path)?;
        let mut b = [0u8; 4];
        read_exact_at(&self.file, &mut b, offset, &self.path, "read header flags")?;
        let old = format::flags_of(&b);
        let new = f(old);
        if new != old {
            self.write_in_custody(&new.to_le_bytes(), offset, "write header flags")?;
        }
        self.flags.store(new, Ordering::Release);
        Ok(())
    }

    /// Clears the bits of present blocks that extend past the current end of the file (the
    /// file was truncated underneath us). Returns how many blocks were cleared.
    fn clear_truncated_blocks(&self) -> Result<u64> {
        // Stat *after* the bitmap was read: files only grow before a bit is set, so a bit seen
        // set implies its block was within the file length we now observe, unless truncated.
        let file_len = self
            .file
            .metadata()
            .map_err(StoreError::io("stat", &self.path))?
            .len();
        let data_end = self.layout.data_offset() + self.layout.size();
        if file_len >= data_end {
            return Ok(0);
        }
        let first_bad =
            file_len.saturating_sub(self.layout.data_offset()) / self.layout.block_size();
        let count = self.layout.block_count();
        let mut cleared = 0;
        let mut byte = first_bad / 8;
        while byte * 8 < count {
            let lo = (byte * 8).max(first_bad);
            let hi = (byte * 8 + 8).min(count);
            let mut mask = 0u8;
            for b in lo..hi {
                mask |= 1 << (b % 8);
            }
            let mem = self.bitmap[byte as usize].load(Ordering::Acquire);
            if mem & mask != 0 {
                cleared += u64::from((mem & mask).count_ones());
                self.update_bitmap_byte(byte, |d| d & !mask)?;
            }
            byte += 1;
        }
        if cleared > 0 {
            log::warn!(
                "store: {:?} is {file_len} bytes, shorter than its content ({data_end} bytes): \
                 {cleared} present block(s) from block {first_bad} on were cleared",
                self.path
            );
        }
        Ok(cleared)
    }

    /// Re-reads the bitmap and the flags from disk (to see blocks committed or invalidated by
    /// another process) and clears blocks beyond the end of a truncated file.
    pub fn reload_bitmap(&self) -> Result<()> {
        let mut b = [0u8; 4];
        read_exact_at(
            &self.file,
            &mut b,
            OFF_FLAGS as u64,
            &self.path,
            "read header flags",
        )?;
        self.flags.store(format::flags_of(&b), Ordering::Release);
        self.load_bitmap()?;
        self.clear_truncated_blocks()?;
        Ok(())
    }

    /// Claims `block` for filling, across processes: takes a non-blocking Linux OFD write lock
    /// (`F_OFD_SETLK`) on the claim byte of the block, `CLAIM_LOCK_BASE + block` (far beyond
    /// the end of the file, so it never overlaps the header locks), through this handle's
    /// claims descriptor (the file opened once more, on the first claim). `Ok(None)` if
    /// someone else holds the claim: another process, another `Store` in this process, or an
    /// earlier claim through this very handle that is still held.
    ///
    /// However many blocks are claimed, the handle holds one extra descriptor. The claim is
    /// released when the [`BlockClaim`] is dropped, and by the kernel when its holder dies, so
    /// a waiter should poll: the block became present (see
    /// [`reload_bitmap`](Self::reload_bitmap)), or the claim became free (fill it yourself).
    /// A claim is advisory: it does not stop anyone from writing or committing the block.
    /// Where OFD locks are unsupported, claims only exclude each other within this handle (a
    /// warning is logged once).
    pub fn try_claim_block(&self, block: u64) -> Result<Option<BlockClaim>> {
        self.check_block(block)?;
        self.claims.try_claim(block, &self.path, || {
            reopen(&self.file, &self.path, self.identity)
        })
    }

    /// Writes content bytes at content offset `offset`. May be called any number of times, in
    /// any order, while blocks are being filled; the bytes become readable through
    /// [`read_verified`](Self::read_verified) only once their block is committed.
    ///
    /// Rewriting a present block with different bytes makes it fail its checksum (and be
    /// invalidated) on the next verified read; content is determined by the id, so callers
    /// never need to.
    pub fn write_data(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range("write", offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        self.write_in_custody(data, self.layout.data_offset() + offset, "write block data")
    }

    /// [`write_data`](Self::write_data) of `parts`, one after the other from `offset` (the
    /// chunks a connection received, written without joining them first).
    pub fn write_data_vectored(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.check_range("write", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.write_vectored_in_custody(
            parts,
            self.layout.data_offset() + offset,
            "write block data",
        )
    }

    /// Marks `block` present. `page_crcs` are its page checksums (from a
    /// [`BlockChecksummer`] fed the block's bytes) and must number
    /// `layout().block_pages(block).len()`.
    ///
    /// Order of operations (the crash-safety argument, see `docs/storage-format.md`):
    /// 1. write the page checksums into the header;
    /// 2. with [`Durability::Fsync`]: `fdatasync` (data and checksums are now durable);
    /// 3. set the block's bit: read-modify-write of one bitmap byte under the in-process mutex
    ///    and an OFD lock on that byte;
    /// 4. with `Fsync`: `fdatasync` again.
    ///
    /// If the blob is marked verified and the new checksums differ from the stored ones, the
    /// verified flag is cleared first (the content may no longer be what was verified); the
    /// caller should re-verify once the blob is complete.
    pub fn commit_block(&self, block: u64, page_crcs: &[u32]) -> Result<()> {
        self.check_block(block)?;
        let pages = self.layout.block_pages(block);
        let expected = pages.end - pages.start;
        if page_crcs.len() as u64 != expected {
            return Err(StoreError::ChecksumCount {
                path: self.path.clone(),
                block,
                expected,
                got: page_crcs.len() as u64,
            });
        }
        let crc_offset = self.layout.crc_offset() + pages.start * 4;
        let encoded: Vec<u8> = page_crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
        if self.is_verified() {
            let mut stored = vec![0u8; encoded.len()];
            read_exact_at(
                &self.file,
                &mut stored,
                crc_offset,
                &self.path,
                "read page checksums",
            )?;
            if stored != encoded {
                log::warn!(
                    "store: {:?}: block {block} recommitted with different checksums; \
                     clearing the verified flag",
                    self.path
                );
                self.update_flags(|f| f & !FLAG_VERIFIED)?;
            }
        }
        self.write_in_custody(&encoded, crc_offset, "write page checksums")?;
        if self.durability == Durability::Fsync {
            sync_data(&self.file, &self.path, "fdatasync block data")?;
        }
        let bit = 1u8 << (block % 8);
        self.update_bitmap_byte(block / 8, |b| b | bit)?;
        if self.durability == Durability::Fsync {
            sync_data(&self.file, &self.path, "fdatasync block bitmap")?;
        }
        Ok(())
    }

    /// Writes a whole block and commits it: `data` must be exactly the block's bytes.
    /// Convenience for callers that hold a block in memory.
    pub fn put_block(&self, block: u64, data: &[u8]) -> Result<()> {
        let mut sum = self.checksummer(block)?;
        sum.update(data);
        let crcs = sum.finish()?;
        self.write_data(self.layout.block_span(block).start, data)?;
        self.commit_block(block, &crcs)
    }

    /// Clears `block`'s bit on disk (same locking as [`commit_block`](Self::commit_block))
    /// and in memory, so the block will be fetched again.
    pub fn invalidate_block(&self, block: u64) -> Result<()> {
        self.check_block(block)?;
        let bit = 1u8 << (block % 8);
        super::verified::VerifiedPages::global().forget(&self.file);
        self.update_bitmap_byte(block / 8, |b| b & !bit)
    }

    /// How many times one of this handle's present blocks stopped being present (invalidated
    /// here, by another process, or cut off by a truncation). A committed block's bytes are
    /// only written again after that, so bytes read (or sent) from present blocks are the
    /// ones still there when this count has not moved since.
    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::Acquire)
    }

    /// Sets header flag bit 0 ("content verified against its id"), persisted (and
    /// `fdatasync`ed with [`Durability::Fsync`]).
    pub fn mark_verified(&self) -> Result<()> {
        self.update_flags(|f| f | FLAG_VERIFIED)?;
        if self.durability == Durability::Fsync {
            sync_data(&self.file, &self.path, "fdatasync header flags")?;
        }
        Ok(())
    }

    /// Whether the verified flag is set (in-memory view; see
    /// [`reload_bitmap`](Self::reload_bitmap)).
    pub fn is_verified(&self) -> bool {
        self.flags.load(Ordering::Acquire) & FLAG_VERIFIED != 0
    }

    /// Whether the blob id is a hash of the content (header flag bit 1 clear), so that
    /// [`verify_content`](Self::verify_content) can check it. Set at creation from
    /// `Store::create_blob`'s `content_addressed` argument.
    pub fn is_content_addressed(&self) -> bool {
        self.flags.load(Ordering::Acquire) & FLAG_NOT_CONTENT_ADDRESSED == 0
    }

    /// The header flags (in-memory view).
    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    /// Sets or clears header flag bit 1 so that it says `content_addressed`, persisted (and
    /// `fdatasync`ed with [`Durability::Fsync`]). Clearing the content-addressed property also
    /// clears the verified flag.
    pub(crate) fn set_content_addressed(&self, content_addressed: bool) -> Result<()> {
        if self.is_content_addressed() == content_addressed {
            return Ok(());
        }
        self.update_flags(|f| {
            if content_addressed {
                f & !FLAG_NOT_CONTENT_ADDRESSED
            } else {
                (f | FLAG_NOT_CONTENT_ADDRESSED) & !FLAG_VERIFIED
            }
        })?;
        if self.durability == Durability::Fsync {
            sync_data(&self.file, &self.path, "fdatasync header flags")?;
        }
        Ok(())
    }

    /// `fdatasync`s the file (useful with [`Durability::Os`] before a clean shutdown).
    pub fn sync(&self) -> Result<()> {
        sync_data(&self.file, &self.path, "fdatasync blob")
    }
}

// Compile-time check: async callers share handles across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BlobFile>();
    assert_send_sync::<BlockClaim>();
};
