//! Reading a [`BlobFile`]: verified reads (every page checked against its CRC32C), raw reads
//! of blocks still being filled, block scans and whole-content verification.

use bytes::Bytes;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::blob::BlobFile;
use super::error::{Result, StoreError};
use super::fsutil::{read_exact_at, read_new_at};
use super::verified::{Stamp, VerifiedPages};
use super::ContentCheck;

/// Bytes read at a time by [`BlobFile::verify_content`].
const VERIFY_CHUNK: u64 = 1 << 20;

impl BlobFile {
    /// Checks every page of a present block against its CRC32C without changing anything
    /// (for `cache verify`): `Ok(None)` when good, `Ok(Some(page))` for the first bad page.
    /// Reads one page at a time.
    pub fn scan_block(&self, block: u64) -> Result<Option<u64>> {
        self.check_block(block)?;
        if !self.is_present(block) {
            return Err(StoreError::NotPresent {
                path: self.path.clone(),
                block,
            });
        }
        let mut buf = vec![0u8; self.layout.page_size() as usize];
        for page in self.layout.block_pages(block) {
            let span = self.layout.page_span(page);
            let data = &mut buf[..(span.end - span.start) as usize];
            read_exact_at(
                &self.file,
                data,
                self.layout.data_offset() + span.start,
                &self.path,
                "read block data",
            )?;
            let mut stored = [0u8; 4];
            read_exact_at(
                &self.file,
                &mut stored,
                self.layout.crc_offset() + page * 4,
                &self.path,
                "read page checksums",
            )?;
            if crc32c::crc32c(data) != u32::from_le_bytes(stored) {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    /// Whether every page touched by `offset..offset + len` was checked since the file last
    /// changed, so [`read_verified`](Self::read_verified) reads just those bytes (a hint: the
    /// read itself checks again).
    pub fn is_known_good(&self, offset: u64, len: usize) -> bool {
        if len == 0
            || self
                .check_range("known-good check", offset, len as u64)
                .is_err()
        {
            return false;
        }
        let page_size = self.layout.page_size();
        let pages = offset / page_size..(offset + len as u64 - 1) / page_size + 1;
        Stamp::now(&self.file).is_some_and(|now| VerifiedPages::global().all_verified(&now, pages))
    }

    /// Reads `len` content bytes at `offset`, checking every page they touch against its
    /// CRC32C (unless every page was checked since the file last changed: see
    /// [`VerifiedPages`]).
    ///
    /// Every block covering the range must be present, else [`StoreError::NotPresent`] (naming
    /// the first missing block). Whole pages covering the range are read (so memory use is
    /// `len` plus at most two pages; callers read at most about 1 MiB at a time). On a
    /// checksum mismatch the block is invalidated and [`StoreError::Corrupt`] returned: the
    /// caller refetches it. A file truncated underneath is [`StoreError::ShortRead`].
    pub fn read_verified(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.check_range("verified read", offset, len as u64)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset + len as u64;
        if let Some(block) = self
            .layout
            .blocks_covering(offset..end)
            .find(|&b| !self.is_present(b))
        {
            return Err(StoreError::NotPresent {
                path: self.path.clone(),
                block,
            });
        }
        let page_size = self.layout.page_size();
        let first_page = offset / page_size;
        let last_page = (end - 1) / page_size;
        let read_start = first_page * page_size;
        let read_end = ((last_page + 1) * page_size).min(self.layout.size());
        let pages = first_page..last_page + 1;
        let verified = VerifiedPages::global();
        let before = Stamp::now(&self.file);
        if let Some(data) = self.read_known_good(offset, len, before.as_ref(), pages.clone())? {
            return Ok(data);
        }
        let buf = read_new_at(
            &self.file,
            (read_end - read_start) as usize,
            self.layout.data_offset() + read_start,
            &self.path,
            "read block data",
        )?;
        let after = Stamp::now(&self.file);
        let data = |buf: Vec<u8>| {
            let wanted = (offset - read_start) as usize..(end - read_start) as usize;
            if wanted.len() * 2 < buf.len() {
                // A small part of the pages read: copy it out rather than keep them all alive.
                Bytes::copy_from_slice(&buf[wanted])
            } else {
                Bytes::from(buf).slice(wanted)
            }
        };
        // Pages checked since the file last changed need no second check (see `verified`).
        if let (Some(before), Some(after)) = (&before, &after) {
            if before == after && verified.all_verified(after, pages.clone()) {
                return Ok(data(buf));
            }
        }
        let mut crcs = vec![0u8; ((last_page - first_page + 1) * 4) as usize];
        read_exact_at(
            &self.file,
            &mut crcs,
            self.layout.crc_offset() + first_page * 4,
            &self.path,
            "read page checksums",
        )?;
        for (i, (page, stored)) in buf
            .chunks(page_size as usize)
            .zip(crcs.chunks_exact(4))
            .enumerate()
        {
            let expected = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
            let actual = crc32c::crc32c(page);
            if actual != expected {
                let page = first_page + i as u64;
                let block = page * page_size / self.layout.block_size();
                log::warn!(
                    "store: {:?}: page {page} of block {block} fails its checksum \
                     (crc32c {actual:#010x}, header {expected:#010x}); invalidating the block",
                    self.path
                );
                if let Err(e) = self.invalidate_block(block) {
                    log::error!(
                        "store: {:?}: could not invalidate corrupt block {block}: {e}",
                        self.path
                    );
                }
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    block,
                    page,
                    expected,
                    actual,
                });
            }
        }
        if let (Some(before), Some(after)) = (&before, &after) {
            verified.record(before, after, pages);
        }
        Ok(data(buf))
    }

    /// The bytes of `offset..offset + len` read alone (not whole pages), when every page they
    /// touch was checked since the file last changed and the file's stamp did not move during
    /// the read; `None` when the pages must be read whole and checked.
    fn read_known_good(
        &self,
        offset: u64,
        len: usize,
        before: Option<&Stamp>,
        pages: std::ops::Range<u64>,
    ) -> Result<Option<Bytes>> {
        let verified = VerifiedPages::global();
        let Some(before) = before.filter(|b| verified.all_verified(b, pages)) else {
            return Ok(None);
        };
        let buf = self.read_content(offset, len, "read block data")?;
        let unchanged = Stamp::now(&self.file).is_some_and(|after| after == *before);
        Ok(unchanged.then(|| Bytes::from(buf)))
    }

    /// Reads `len` content bytes at `offset` without any presence or checksum check: for
    /// bytes of a block still being filled, which the caller knows it wrote. A file that ends
    /// early is [`StoreError::ShortRead`].
    pub fn read_raw(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.check_range("raw read", offset, len as u64)?;
        Ok(Bytes::from(self.read_content(
            offset,
            len,
            "read raw data",
        )?))
    }

    /// `len` content bytes at content offset `offset`, as they are on disk (no checks).
    pub(super) fn read_content(
        &self,
        offset: u64,
        len: usize,
        op: &'static str,
    ) -> Result<Vec<u8>> {
        read_new_at(
            &self.file,
            len,
            self.layout.data_offset() + offset,
            &self.path,
            op,
        )
    }

    /// Hashes the whole content and compares it with the id: sha256 for a 64-digit id, git's
    /// blob sha1 (`sha1("blob {size}\0" + content)`) for a 40-digit one.
    ///
    /// Streams the content through [`read_verified`](Self::read_verified) in 1 MiB reads, so
    /// memory is bounded and every page is checksummed on the way (but for bytes this handle
    /// wrote itself: [`read_own`](Self::read_own)); all blocks must be present
    /// ([`StoreError::NotPresent`] otherwise), and a damaged page gives
    /// [`StoreError::Corrupt`] (and invalidates its block). Does not set the verified flag:
    /// call [`mark_verified`](Self::mark_verified) on [`ContentCheck::Match`].
    ///
    /// A blob whose id is not a content hash ([`is_content_addressed`](Self::is_content_addressed)
    /// false) gives [`ContentCheck::NotApplicable`] without reading anything.
    pub fn verify_content(&self) -> Result<ContentCheck> {
        if !self.is_content_addressed() {
            return Ok(ContentCheck::NotApplicable);
        }
        enum Hasher {
            Sha256(Sha256),
            Sha1(Sha1),
        }
        let size = self.layout.size();
        let mut hasher = if self.id.is_sha256() {
            Hasher::Sha256(Sha256::new())
        } else {
            let mut h = Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            Hasher::Sha1(h)
        };
        let mut offset = 0;
        while offset < size {
            let n = VERIFY_CHUNK.min(size - offset);
            // Bytes this handle wrote itself need no page check on the way (`custody.rs`):
            // the hash checks them all.
            let chunk = match self.read_own(offset, n as usize)? {
                Some(own) => own,
                None => self.read_verified(offset, n as usize)?,
            };
            match &mut hasher {
                Hasher::Sha256(h) => h.update(&chunk),
                Hasher::Sha1(h) => h.update(&chunk),
            }
            offset += n;
        }
        let actual = match hasher {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
        };
        Ok(if actual == self.id.as_str() {
            ContentCheck::Match
        } else {
            ContentCheck::Mismatch { actual }
        })
    }
}
