//! Page checksums of a block, computed from its bytes as they arrive: [`BlockChecksummer`].

use super::error::{Result, StoreError};
use super::format::Layout;

/// Computes the page checksums of one block from its bytes, fed in order.
///
/// Page checksums are CRC32C (Castagnoli) of each page of the block: `page_size` bytes each,
/// the last page of the content shorter. Feed the block's bytes with
/// [`update`](Self::update) as they arrive (any chunking), then [`finish`](Self::finish)
/// returns the checksums for [`BlobFile::commit_block`].
///
/// A block may also be fetched in parts (the part a reader asked for first, then the rest):
/// [`for_part`](Self::for_part) checksums one run of whole pages, and the block's checksums
/// are the parts' checksums in page order.
#[derive(Debug, Clone)]
pub struct BlockChecksummer {
    block: u64,
    /// Offset in the block just past the bytes this checksummer covers.
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

    /// A checksummer for bytes `from..to` of `block` only (offsets in the block): `from` must
    /// be on a page boundary and `to` on one or at the block's end, else
    /// [`StoreError::BadPart`]. [`fed`](Self::fed) counts from the block's start (it begins
    /// at `from`), and [`finish`](Self::finish) returns the checksums of the part's pages.
    pub fn for_part(layout: &Layout, block: u64, from: u64, to: u64) -> Result<Self> {
        let mut whole = Self::new(layout, block)?;
        let page = layout.page_size();
        let fits = from.is_multiple_of(page) && from <= to && to <= whole.block_len;
        if !fits || (!to.is_multiple_of(page) && to != whole.block_len) {
            return Err(StoreError::BadPart { block, from, to });
        }
        whole.expected_pages = (to.div_ceil(page) - from / page) as usize;
        whole.crcs = Vec::with_capacity(whole.expected_pages);
        whole.fed = from;
        whole.block_len = to;
        Ok(whole)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: u64) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_block_checksummed_in_parts_gives_the_checksums_of_the_whole_block() {
        let layout = Layout::new((8 << 20) + 5, 4 << 20).unwrap();
        let bytes = data(layout.size());
        let mut whole = BlockChecksummer::new(&layout, 1).unwrap();
        whole.update(&bytes[4 << 20..8 << 20]);
        let whole = whole.finish().unwrap();
        // The part a reader asked for first (from page 3), then the rest.
        let mut tail = BlockChecksummer::for_part(&layout, 1, 3 << 20, 4 << 20).unwrap();
        assert_eq!(tail.fed(), 3 << 20);
        tail.update(&bytes[7 << 20..8 << 20]);
        let mut head = BlockChecksummer::for_part(&layout, 1, 0, 3 << 20).unwrap();
        for piece in bytes[4 << 20..7 << 20].chunks(100_000) {
            head.update(piece);
        }
        let mut parts = head.finish().unwrap();
        parts.extend(tail.finish().unwrap());
        assert_eq!(parts, whole);
        // The short last block: a part may end at the block's end.
        let mut last = BlockChecksummer::for_part(&layout, 2, 0, 5).unwrap();
        last.update(&bytes[8 << 20..]);
        assert_eq!(
            last.finish().unwrap(),
            vec![crc32c::crc32c(&bytes[8 << 20..])]
        );
    }

    #[test]
    fn a_part_must_be_whole_pages_and_fed_completely() {
        let layout = Layout::new(8 << 20, 4 << 20).unwrap();
        for (from, to) in [
            (1, 1 << 20),
            (0, (1 << 20) + 1),
            (2 << 20, 1 << 20),
            (0, 5 << 20),
        ] {
            assert!(
                matches!(
                    BlockChecksummer::for_part(&layout, 0, from, to),
                    Err(StoreError::BadPart { .. })
                ),
                "{from}..{to}"
            );
        }
        let mut part = BlockChecksummer::for_part(&layout, 0, 1 << 20, 2 << 20).unwrap();
        part.update(&data(1000));
        assert!(matches!(part.finish(), Err(StoreError::BlockLength { .. })));
    }
}
