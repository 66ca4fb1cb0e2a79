//! Property tests of the blob header and bitmap parsing (`format.rs`, read through `blob.rs`):
//! random and mutated headers never panic, a valid header round-trips exactly, the geometry
//! tiles the file, and damaged bitmap or header bytes on disk are refused or masked, never
//! trusted past the blob's block count.

use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use super::format::{
    encode_fixed_header, full_bitmap, parse_fixed_header, valid_bits, Layout, FIXED_HEADER_LEN,
    MAGIC, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};
use super::{BlobId, Durability, Store};

const HEADER: usize = FIXED_HEADER_LEN as usize;

fn id() -> BlobId {
    BlobId::parse(&"ab".repeat(32)).expect("valid id")
}

fn block_size() -> impl Strategy<Value = u64> {
    (MIN_BLOCK_SIZE.trailing_zeros()..=MAX_BLOCK_SIZE.trailing_zeros()).prop_map(|s| 1u64 << s)
}

fn layout() -> impl Strategy<Value = Layout> {
    layout_up_to(1 << 44)
}

/// Layouts of files up to `max` bytes (the bitmap of a 16 TiB file of 64 KiB blocks is 32 MiB).
fn layout_up_to(max: u64) -> impl Strategy<Value = Layout> {
    let size = prop_oneof![0u64..4 << 20, 0u64..max, Just(0), Just(1)];
    (size, block_size()).prop_filter_map("fits the format", |(size, bs)| Layout::new(size, bs).ok())
}

/// Fewer cases for the properties that write files.
fn file_cases() -> ProptestConfig {
    let cases = ProptestConfig::default().cases;
    ProptestConfig::with_cases((cases / 8).max(8))
}

proptest! {
    #[test]
    fn random_headers_never_panic(bytes in prop::collection::vec(any::<u8>(), HEADER)) {
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&bytes);
        let _ = parse_fixed_header(&h, &id());
        // With a valid magic and version the field checks are reached.
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        if let Ok((layout, flags)) = parse_fixed_header(&h, &id()) {
            prop_assert_eq!(encode_fixed_header(&layout, flags, &id()), h);
        }
    }

    #[test]
    fn valid_headers_round_trip(layout in layout(), flags in any::<u32>()) {
        let h = encode_fixed_header(&layout, flags, &id());
        let parsed = parse_fixed_header(&h, &id());
        prop_assert_eq!(parsed.ok(), Some((layout, flags)));
    }

    #[test]
    fn mutated_headers_are_refused_or_read_back_exactly(
        layout in layout(),
        flags in any::<u32>(),
        flips in prop::collection::vec((0..HEADER, 1u8..=255), 1..6),
    ) {
        let mut h = encode_fixed_header(&layout, flags, &id());
        for (at, xor) in flips {
            h[at] ^= xor;
        }
        // Every byte is covered by a check, so an accepted header is its own encoding.
        if let Ok((l, f)) = parse_fixed_header(&h, &id()) {
            prop_assert_eq!(encode_fixed_header(&l, f, &id()), h);
        }
    }

    #[test]
    fn blocks_and_pages_tile_the_content(layout in layout(), probe in any::<u64>()) {
        let size = layout.size();
        let n = layout.block_count();
        prop_assert_eq!(n, size.div_ceil(layout.block_size()));
        prop_assert!(layout.data_offset() >= layout.header_len());
        prop_assert_eq!(layout.data_offset() % 4096, 0);
        if n > 0 {
            let block = probe % n;
            let span = layout.block_span(block);
            prop_assert_eq!(span.start, block * layout.block_size());
            prop_assert_eq!(layout.block_len(block), span.end - span.start);
            prop_assert!(span.end <= size && span.start < span.end);
            prop_assert_eq!(layout.block_of(span.start), block);
            prop_assert_eq!(layout.block_of(span.end - 1), block);
            let pages = layout.block_pages(block);
            prop_assert_eq!(layout.page_span(pages.start).start, span.start);
            prop_assert_eq!(layout.page_span(pages.end - 1).end, span.end);
            prop_assert_eq!(layout.blocks_covering(span.clone()), block..block + 1);
        }
        prop_assert_eq!(layout.block_span(n), size..size);
        prop_assert_eq!(layout.blocks_covering(0..u64::MAX), 0..n);
    }

    #[test]
    fn the_bitmap_mask_keeps_exactly_the_real_blocks(layout in layout_up_to(1 << 32), junk in any::<u8>()) {
        let full = full_bitmap(&layout);
        prop_assert_eq!(full.len() as u64, layout.bitmap_len());
        let ones: u64 = full.iter().map(|b| u64::from(b.count_ones())).sum();
        prop_assert_eq!(ones, layout.block_count());
        for byte in 0..layout.bitmap_len() {
            prop_assert_eq!(junk & valid_bits(&layout, byte) & !full[byte as usize], 0);
        }
    }
}

proptest! {
    #![proptest_config(file_cases())]

    /// Damage written into a blob file's header and bitmap: the store refuses the file (it is
    /// removed and can be made again) or opens it with no more present blocks than it has.
    #[test]
    fn damaged_blob_files_are_refused_or_masked_on_open(
        size in 0u64..(MIN_BLOCK_SIZE * 20),
        damage in prop::collection::vec((0u64..256, any::<u8>()), 1..8),
        bitmap_only in prop::bool::ANY,
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let fail = |e: super::StoreError| TestCaseError::fail(e.to_string());
        let store = Store::open(dir.path(), Durability::Os).map_err(fail)?;
        let id = id();
        let blob = store.create_blob(&id, size, MIN_BLOCK_SIZE, true).map_err(fail)?;
        let layout = *blob.layout();
        drop(blob);
        let path = store.blob_path(0, &id).ok_or_else(|| TestCaseError::fail("no path"))?;
        let file = std::fs::OpenOptions::new().write(true).open(&path)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, byte) in damage {
            let offset = if bitmap_only && layout.bitmap_len() > 0 {
                layout.bitmap_offset() + at % layout.bitmap_len()
            } else {
                at % layout.header_len().max(1)
            };
            file.write_all_at(&[byte], offset).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        drop(file);
        let reopened = Store::open(dir.path(), Durability::Os).map_err(fail)?;
        match reopened.open_blob(&id).map_err(fail)? {
            Some(blob) => {
                prop_assert!(blob.present_count() <= blob.block_count());
                for block in blob.block_count()..blob.block_count() + 8 {
                    prop_assert!(!blob.is_present(block));
                }
            }
            None => {
                prop_assert!(!path.exists());
                prop_assert!(reopened.create_blob(&id, size, MIN_BLOCK_SIZE, true).is_ok());
            }
        }
    }
}
