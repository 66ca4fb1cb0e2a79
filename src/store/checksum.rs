//! Page checksums of a block, computed from its bytes as they arrive: [`BlockChecksummer`].

use super::error::{Result, StoreError};
use super::format::Layout;

/// Computes the page checksums of one block from its bytes, fed in order.
///
/// Page checksums are CRC32C (Castagnoli) of each page of the block: `page_size` bytes each,
/// the last page of the content shorter. Feed the block's bytes with
/// [`update`](Self::update) as they arrive (any chunking), then [`finish`](Self::finish)
/// returns the checksums for [`BlobFile::commit_block`].
#[derive(Debug, Clone)]
pub struct BlockChecksummer {
    block: u64,
    block_len: u64,
    page_size: u64,
    expected_pages: usize,
    fed: u64,
    cur: u32,
    cur_len: u64,
    crcs: Vec<u32>,
}

impl BlockChecksummer {
    /// A checksummer for `block` of a blob with geometry `layout` (see
    /// [`BlobFile::layout`], or [`BlobFile::checksummer`]).
    pub fn new(layout: &Layout, block: u64) -> Result<Self> {
        if block >= layout.block_count() {
            return Err(StoreError::NoSuchBlock {
                block,
                block_count: layout.block_count(),
            });
        }
        let pages = layout.block_pages(block);
        let expected_pages = (pages.end - pages.start) as usize;
        Ok(BlockChecksummer {
            block,
            block_len: layout.block_len(block),
            page_size: layout.page_size(),
            expected_pages,
            fed: 0,
            cur: 0,
            cur_len: 0,
            crcs: Vec::with_capacity(expected_pages),
        })
    }

    /// The block this checksummer is for.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// Feeds the next bytes of the block. Bytes beyond the block's length are counted (so
    /// [`finish`](Self::finish) fails) but not checksummed.
    pub fn update(&mut self, data: &[u8]) {
        let room = self.block_len.saturating_sub(self.fed);
        let take = (data.len() as u64).min(room) as usize;
        self.fed += data.len() as u64;
        let mut rest = &data[..take];
        while !rest.is_empty() {
            let n = ((self.page_size - self.cur_len) as usize).min(rest.len());
            self.cur = crc32c::crc32c_append(self.cur, &rest[..n]);
            self.cur_len += n as u64;
            rest = &rest[n..];
            if self.cur_len == self.page_size {
                self.crcs.push(self.cur);
                self.cur = 0;
                self.cur_len = 0;
            }
        }
    }

    /// The page checksums, or [`StoreError::BlockLength`] if the number of bytes fed is not
    /// the block's length.
    pub fn finish(mut self) -> Result<Vec<u32>> {
        if self.fed != self.block_len {
            return Err(StoreError::BlockLength {
                block: self.block,
                expected: self.block_len,
                got: self.fed,
            });
        }
        if self.cur_len > 0 {
            self.crcs.push(self.cur);
        }
        debug_assert_eq!(self.crcs.len(), self.expected_pages);
        Ok(self.crcs)
    }
}
