//! The blob file format: constants, the geometry of a blob ([`Layout`]) and the fixed header.
//!
//! `docs/storage-format.md` describes the same thing byte by byte; keep the two in step.

use std::ops::Range;

use super::blob_id::BlobId;
use super::error::{Result, StoreError};

/// The first 8 bytes of every blob file.
pub const MAGIC: [u8; 8] = *b"HUBCBLK1";
/// The format version written by this code; any other version is rejected.
pub const FORMAT_VERSION: u32 = 1;
/// Header flag bit 0: the whole content has been verified against the blob id.
pub const FLAG_VERIFIED: u32 = 1 << 0;
/// Header flag bit 1: the blob id is *not* a hash of the content (a private id, e.g. for a
/// file whose upstream ETag is no content hash), so the content cannot be verified against it.
/// Clear (the default, and in every file written before the flag existed): the id is the
/// sha256 (64 digits) or git blob sha1 (40 digits) of the content.
pub const FLAG_NOT_CONTENT_ADDRESSED: u32 = 1 << 1;
/// Start of the byte range used for cross-process block claims
/// ([`BlobFile::try_claim_block`](super::BlobFile::try_claim_block)): block `i` is claimed
/// by an OFD write lock on the one byte at `CLAIM_LOCK_BASE + i`, far beyond any real file
/// offset, so claims never overlap the header locks (flags and bitmap bytes).
pub const CLAIM_LOCK_BASE: u64 = 1 << 60;
/// The byte whose OFD lock says "this blob file is open": every open blob handle holds a shared
/// (read) lock on it for as long as it is open, and eviction deletes a blob only after taking
/// it exclusively (so a blob being read or filled, by this process or another sharing the
/// cache, is never deleted). `CLAIM_LOCK_BASE - 1` is the claims' lock-support probe.
pub const IN_USE_LOCK: u64 = CLAIM_LOCK_BASE - 2;
/// Smallest accepted block size (64 KiB).
pub const MIN_BLOCK_SIZE: u64 = 64 << 10;
/// Largest accepted block size (1 GiB).
pub const MAX_BLOCK_SIZE: u64 = 1 << 30;
/// The block size the rest of hubcache uses unless configured otherwise (8 MiB).
pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;
/// Largest checksum page (1 MiB): `page_size = min(block_size, MAX_PAGE_SIZE)`.
pub const MAX_PAGE_SIZE: u64 = 1 << 20;
/// The data area starts at a multiple of this (4 KiB).
pub const DATA_ALIGNMENT: u64 = 4096;
/// Width of the id field in the header (hex, zero padded).
pub const ID_FIELD_LEN: usize = 64;
/// Length of the fixed part of the header; the block bitmap starts here.
pub const FIXED_HEADER_LEN: u64 = 120;

pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_FLAGS: usize = 12;
pub(crate) const OFF_BLOCK_SIZE: usize = 16;
pub(crate) const OFF_PAGE_SIZE: usize = 24;
pub(crate) const OFF_SIZE: usize = 32;
pub(crate) const OFF_BLOCK_COUNT: usize = 40;
pub(crate) const OFF_DATA_OFFSET: usize = 48;
pub(crate) const OFF_ID: usize = 56;

/// Largest file offset the format allows (file offsets are `off_t`).
const MAX_FILE_OFFSET: u64 = i64::MAX as u64;

/// Checks that `block_size` is a power of two in `MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE`.
pub fn validate_block_size(block_size: u64) -> Result<()> {
    if block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(StoreError::InvalidBlockSize {
            block_size,
            min: MIN_BLOCK_SIZE,
            max: MAX_BLOCK_SIZE,
        })
    }
}

/// The geometry of one blob: where every block, page, checksum and bitmap bit lives.
///
/// Content offsets are offsets into the cached file's bytes; file offsets are offsets into the
/// blob file (content offset + [`data_offset`](Layout::data_offset)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    size: u64,
    block_size: u64,
    page_size: u64,
    block_count: u64,
    page_count: u64,
    header_len: u64,
    data_offset: u64,
}

impl Layout {
    /// Computes the layout of `size` content bytes in blocks of `block_size` bytes.
    ///
    /// Errors: [`StoreError::InvalidBlockSize`], or [`StoreError::TooLarge`] when the header or
    /// the file would not fit in a signed 64-bit file offset.
    pub fn new(size: u64, block_size: u64) -> Result<Layout> {
        validate_block_size(block_size)?;
        let too_large = || StoreError::TooLarge { size, block_size };
        let page_size = block_size.min(MAX_PAGE_SIZE);
        let block_count = size.div_ceil(block_size);
        let page_count = size.div_ceil(page_size);
        // block_count <= 2^48, so neither of these can overflow.
        let crc_offset = FIXED_HEADER_LEN + block_count.div_ceil(8);
        let header_len = page_count
            .checked_mul(4)
            .and_then(|c| c.checked_add(crc_offset))
            .ok_or_else(too_large)?;
        let data_offset = header_len
            .checked_next_multiple_of(DATA_ALIGNMENT)
            .ok_or_else(too_large)?;
        if data_offset
            .checked_add(size)
            .is_none_or(|end| end > MAX_FILE_OFFSET)
        {
            return Err(too_large());
        }
        Ok(Layout {
            size,
            block_size,
            page_size,
            block_count,
            page_count,
            header_len,
            data_offset,
        })
    }

    /// Content size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Block size in bytes (a power of two).
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Checksum page size in bytes: `min(block_size, 1 MiB)`; it divides the block size.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Number of blocks: `ceil(size / block_size)`.
    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    /// Number of checksum pages: `ceil(size / page_size)`.
    pub fn page_count(&self) -> u64 {
        self.page_count
    }

    /// Pages in every block but (possibly) the last: `block_size / page_size`.
    pub fn pages_per_block(&self) -> u64 {
        self.block_size / self.page_size
    }

    /// File offset of the block bitmap.
    pub fn bitmap_offset(&self) -> u64 {
        FIXED_HEADER_LEN
    }

    /// Length of the block bitmap in bytes: `ceil(block_count / 8)`.
    pub fn bitmap_len(&self) -> u64 {
        self.block_count.div_ceil(8)
    }

    /// File offset of the page checksum array.
    pub fn crc_offset(&self) -> u64 {
        FIXED_HEADER_LEN + self.bitmap_len()
    }

    /// Length of the header proper (fixed part + bitmap + checksums), before padding.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// File offset of content byte 0: `header_len` rounded up to 4096.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The block holding content byte `offset` (`offset / block_size`; `block_count` or more
    /// for offsets at or past the end).
    pub fn block_of(&self, offset: u64) -> u64 {
        offset / self.block_size
    }

    /// The content bytes of `block`: `[block*block_size, min((block+1)*block_size, size))`.
    /// Blocks past the end give an empty range at `size`.
    pub fn block_span(&self, block: u64) -> Range<u64> {
        if block >= self.block_count {
            return self.size..self.size;
        }
        let start = block * self.block_size;
        start..(start + self.block_size).min(self.size)
    }

    /// Length of `block` in bytes (0 past the end).
    pub fn block_len(&self, block: u64) -> u64 {
        let span = self.block_span(block);
        span.end - span.start
    }

    /// The global page indexes of `block` (empty past the end).
    pub fn block_pages(&self, block: u64) -> Range<u64> {
        if block >= self.block_count {
            return self.page_count..self.page_count;
        }
        let first = block * self.pages_per_block();
        first..(first + self.pages_per_block()).min(self.page_count)
    }

    /// The content bytes of global page `page` (the last page may be shorter).
    pub fn page_span(&self, page: u64) -> Range<u64> {
        let start = (page * self.page_size).min(self.size);
        start..(start + self.page_size).min(self.size)
    }

    /// The blocks that hold any byte of the content range `range` (clamped to the content).
    pub fn blocks_covering(&self, range: Range<u64>) -> Range<u64> {
        let end = range.end.min(self.size);
        if range.start >= end {
            return 0..0;
        }
        self.block_of(range.start)..self.block_of(end - 1) + 1
    }
}

/// Mask of the bits of bitmap byte `byte` that correspond to real blocks.
pub(crate) fn valid_bits(layout: &Layout, byte: u64) -> u8 {
    let first_block = byte * 8;
    let n = layout.block_count().saturating_sub(first_block).min(8);
    if n >= 8 {
        0xff
    } else {
        ((1u16 << n) - 1) as u8
    }
}

/// The bitmap of a blob with every block present (bits past `block_count` zero).
pub(crate) fn full_bitmap(layout: &Layout) -> Vec<u8> {
    (0..layout.bitmap_len())
        .map(|byte| valid_bits(layout, byte))
        .collect()
}

/// Encodes the fixed part of the header (everything before the bitmap).
pub(crate) fn encode_fixed_header(
    layout: &Layout,
    flags: u32,
    id: &BlobId,
) -> [u8; FIXED_HEADER_LEN as usize] {
    let mut h = [0u8; FIXED_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    h[OFF_BLOCK_SIZE..OFF_BLOCK_SIZE + 8].copy_from_slice(&layout.block_size.to_le_bytes());
    h[OFF_PAGE_SIZE..OFF_PAGE_SIZE + 8].copy_from_slice(&layout.page_size.to_le_bytes());
    h[OFF_SIZE..OFF_SIZE + 8].copy_from_slice(&layout.size.to_le_bytes());
    h[OFF_BLOCK_COUNT..OFF_BLOCK_COUNT + 8].copy_from_slice(&layout.block_count.to_le_bytes());
    h[OFF_DATA_OFFSET..OFF_DATA_OFFSET + 8].copy_from_slice(&layout.data_offset.to_le_bytes());
    h[OFF_ID..OFF_ID + ID_FIELD_LEN].copy_from_slice(&id_field(id));
    h
}

/// The id as stored in the header: ASCII hex, zero padded to 64 bytes.
pub(crate) fn id_field(id: &BlobId) -> [u8; ID_FIELD_LEN] {
    let mut f = [0u8; ID_FIELD_LEN];
    let s = id.as_str().as_bytes();
    f[..s.len()].copy_from_slice(s);
    f
}

fn u32_at(h: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[off..off + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(h: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[off..off + 8]);
    u64::from_le_bytes(b)
}

/// Reads the flags word out of a fixed header buffer.
pub(crate) fn flags_of(h: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*h)
}

/// Parses and validates the fixed header of the blob `id`.
///
/// Every redundant field is cross-checked (page size, block count, data offset, id), so a
/// damaged header is rejected rather than misread. Returns the layout and the flags, or a
/// human-readable reason.
pub(crate) fn parse_fixed_header(
    h: &[u8; FIXED_HEADER_LEN as usize],
    id: &BlobId,
) -> std::result::Result<(Layout, u32), String> {
    if h[0..8] != MAGIC {
        return Err(format!("bad magic {:02x?}", &h[0..8]));
    }
    let version = u32_at(h, OFF_VERSION);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (this build reads {FORMAT_VERSION})"
        ));
    }
    let flags = u32_at(h, OFF_FLAGS);
    let block_size = u64_at(h, OFF_BLOCK_SIZE);
    let size = u64_at(h, OFF_SIZE);
    let layout = Layout::new(size, block_size).map_err(|e| e.to_string())?;
    let checks = [
        ("page size", u64_at(h, OFF_PAGE_SIZE), layout.page_size),
        (
            "block count",
            u64_at(h, OFF_BLOCK_COUNT),
            layout.block_count,
        ),
        (
            "data offset",
            u64_at(h, OFF_DATA_OFFSET),
            layout.data_offset,
        ),
    ];
    for (name, stored, expected) in checks {
        if stored != expected {
            return Err(format!(
                "{name} is {stored}, but size {size} and block size {block_size} imply {expected}"
            ));
        }
    }
    if h[OFF_ID..OFF_ID + ID_FIELD_LEN] != id_field(id) {
        return Err(format!(
            "id field {:?} does not match the file name {id}",
            String::from_utf8_lossy(&h[OFF_ID..OFF_ID + ID_FIELD_LEN]).trim_end_matches('\0')
        ));
    }
    Ok((layout, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> BlobId {
        BlobId::parse(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn block_size_validation_accepts_only_powers_of_two_in_range() {
        for ok in [64 << 10, 128 << 10, 1 << 20, 8 << 20, 1 << 30] {
            assert!(validate_block_size(ok).is_ok(), "{ok}");
        }
        for bad in [
            0,
            1,
            4096,
            32 << 10,
            (64 << 10) + 1,
            3 << 20,
            2 << 30,
            u64::MAX,
        ] {
            assert!(
                matches!(
                            validate_block_size(bad),
                            Err(StoreError::InvalidBlockSize {
                    block_size,
                    min: MIN_BLOCK_SIZE,
                    max: MAX_BLOCK_SIZE,
                }) if block_size == bad
                        ),
                "{bad}"
            );
            assert!(Layout::new(1000, bad).is_err());
        }
    }

    #[test]
    fn layout_of_an_unaligned_multi_block_file() {
        // 3 full 64 KiB blocks and 100 bytes.
        let l = Layout::new(3 * 65536 + 100, 65536).unwrap();
        assert_eq!(l.page_size(), 65536);
        assert_eq!(l.block_count(), 4);
        assert_eq!(l.page_count(), 4);
        assert_eq!(l.bitmap_len(), 1);
        assert_eq!(l.crc_offset(), 121);
        assert_eq!(l.header_len(), 121 + 16);
        assert_eq!(l.data_offset(), 4096);
        assert_eq!(l.block_span(3), 3 * 65536..3 * 65536 + 100);
        assert_eq!(l.block_len(3), 100);
        assert_eq!(l.block_span(4), l.size()..l.size());
        assert_eq!(l.block_of(65535), 0);
        assert_eq!(l.block_of(65536), 1);
        assert_eq!(l.blocks_covering(65535..65537), 0..2);
        assert_eq!(l.blocks_covering(5..5), 0..0);
        assert_eq!(l.blocks_covering(0..u64::MAX), 0..4);
    }

    #[test]
    fn layout_pages_tile_blocks_larger_than_a_mebibyte() {
        let l = Layout::new((8 << 20) + (1 << 20) + 1, 8 << 20).unwrap();
        assert_eq!(l.page_size(), 1 << 20);
        assert_eq!(l.pages_per_block(), 8);
        assert_eq!(l.block_count(), 2);
        assert_eq!(l.page_count(), 10);
        assert_eq!(l.block_pages(0), 0..8);
        assert_eq!(l.block_pages(1), 8..10);
        assert_eq!(l.page_span(9), (9 << 20)..(9 << 20) + 1);
    }

    #[test]
    fn page_checksums_are_standard_crc32c() {
        // The check value quoted in docs/storage-format.md.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(
            crc32c::crc32c_append(crc32c::crc32c(b"1234"), b"56789"),
            0xE306_9283
        );
        assert_ne!(crc32c::crc32c(&[0u8; 65536]), 0);
    }

    #[test]
    fn layout_of_an_empty_file_has_no_blocks() {
        let l = Layout::new(0, 65536).unwrap();
        assert_eq!(l.block_count(), 0);
        assert_eq!(l.page_count(), 0);
        assert_eq!(l.header_len(), FIXED_HEADER_LEN);
        assert_eq!(l.data_offset(), 4096);
    }

    #[test]
    fn layout_rejects_sizes_that_overflow_file_offsets() {
        assert!(matches!(
            Layout::new(u64::MAX, 65536),
            Err(StoreError::TooLarge { .. })
        ));
        assert!(matches!(
            Layout::new(i64::MAX as u64, 1 << 30),
            Err(StoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn fixed_header_round_trips_and_rejects_inconsistency() {
        let l = Layout::new(1_000_000, 65536).unwrap();
        let h = encode_fixed_header(&l, FLAG_VERIFIED, &id());
        assert_eq!(parse_fixed_header(&h, &id()).unwrap(), (l, FLAG_VERIFIED));

        let other = BlobId::parse(&"cd".repeat(20)).unwrap();
        assert!(parse_fixed_header(&h, &other)
            .unwrap_err()
            .contains("id field"));

        let mut bad = h;
        bad[0] = b'X';
        assert!(parse_fixed_header(&bad, &id())
            .unwrap_err()
            .contains("magic"));
        let mut bad = h;
        bad[OFF_VERSION] = 2;
        assert!(parse_fixed_header(&bad, &id())
            .unwrap_err()
            .contains("version"));
        let mut bad = h;
        bad[OFF_BLOCK_COUNT] ^= 1;
        assert!(parse_fixed_header(&bad, &id())
            .unwrap_err()
            .contains("block count"));
        let mut bad = h;
        bad[OFF_BLOCK_SIZE + 2] = 0x11;
        assert!(parse_fixed_header(&bad, &id()).is_err());
    }
}
