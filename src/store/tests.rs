//! Behaviour tests of the store (blob files through the `Store` API).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::*;

pub(super) const KIB: u64 = 1024;
pub(super) const BS: u64 = 64 * KIB;

/// Deterministic pseudo-random content.
pub(super) fn content(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(super) fn sha256_id(data: &[u8]) -> BlobId {
    BlobId::parse(&hex::encode(Sha256::digest(data))).unwrap()
}

fn git_id(data: &[u8]) -> BlobId {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    BlobId::parse(&hex::encode(h.finalize())).unwrap()
}

pub(super) fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), Durability::Os).unwrap()
}

/// Writes `block` in a few unevenly sized pieces (last piece first), as a fill would.
pub(super) fn fill_block(blob: &BlobFile, data: &[u8], block: u64) {
    let span = blob.block_span(block);
    let bytes = &data[span.start as usize..span.end as usize];
    let cut = bytes.len() / 3;
    blob.write_data(span.start + cut as u64, &bytes[cut..])
        .unwrap();
    blob.write_data(span.start, &bytes[..cut]).unwrap();
    let mut sum = blob.checksummer(block).unwrap();
    for piece in bytes.chunks(7919) {
        sum.update(piece);
    }
    blob.commit_block(block, &sum.finish().unwrap()).unwrap();
}

pub(super) fn fill_all(blob: &BlobFile, data: &[u8]) {
    // Out of order on purpose.
    for block in (0..blob.block_count()).rev() {
        fill_block(blob, data, block);
    }
}

/// The bitmap byte `byte` as stored on disk.
pub(super) fn disk_bitmap_byte(blob: &BlobFile, byte: u64) -> u8 {
    let f = fs::File::open(blob.path()).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, FIXED_HEADER_LEN + byte).unwrap();
    b[0]
}

#[test]
fn round_trip_of_a_multi_block_blob_with_an_unaligned_last_block() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * BS + 1000, 1);
    let id = sha256_id(&data);
    {
        let s = store(&dir);
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        assert_eq!(blob.block_count(), 4);
        assert_eq!(blob.block_span(3), 3 * BS..3 * BS + 1000);
        assert!(!blob.is_complete());
        assert_eq!(blob.missing_blocks(0..data.len() as u64), vec![0, 1, 2, 3]);
        fill_all(&blob, &data);
        assert!(blob.is_complete());
        assert_eq!(blob.present_count(), 4);
        assert_eq!(blob.missing_blocks(0..u64::MAX), Vec::<u64>::new());
        assert_eq!(&blob.read_verified(0, data.len()).unwrap()[..], &data[..]);
    }
    // A new Store (a restarted process) sees the same thing.
    let s = store(&dir);
    let blob = s.open_blob(&id).unwrap().unwrap();
    assert!(blob.is_complete());
    assert_eq!(&blob.read_verified(0, data.len()).unwrap()[..], &data[..]);
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);
    assert_eq!(s.list_blobs().unwrap(), vec![id.clone()]);
    assert_eq!(
        blob.path(),
        dir.path()
            .join("blobs")
            .join(&id.as_str()[0..2])
            .join(&id.as_str()[2..4])
            .join(id.as_str())
    );
}

#[test]
fn read_verified_across_block_and_page_boundaries_returns_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    // 2 MiB blocks have two 1 MiB pages each; the content ends inside a short last page.
    let mib = 1u64 << 20;
    let data = content(2 * 2 * mib + 300 * KIB + 7, 2);
    let id = sha256_id(&data);
    let blob = s
        .create_blob(&id, data.len() as u64, 2 * mib, true)
        .unwrap();
    assert_eq!(blob.page_size(), mib);
    fill_all(&blob, &data);
    let size = data.len() as u64;
    let cases = [
        (0, 1),
        (0, 0),
        (mib - 5, 10),             // page boundary inside block 0
        (2 * mib - 3, 6),          // block boundary
        (2 * mib - 1, mib + 2),    // three pages over two blocks
        (123_457, 3 * mib),        // unaligned, four blocks' worth of pages
        (4 * mib - 1, 2),          // into the short last block
        (size - 1, 1),             // last byte
        (size - 300 * KIB - 7, 5), // start of the last block
        (size, 0),                 // empty read at the end
    ];
    for (offset, len) in cases {
        let got = blob.read_verified(offset, len as usize).unwrap();
        assert_eq!(
            &got[..],
            &data[offset as usize..(offset + len) as usize],
            "{offset}+{len}"
        );
    }
    // Same with small blocks, where pages are the blocks.
    let data2 = content(5 * BS + 17, 3);
    let id2 = sha256_id(&data2);
    let blob2 = s.create_blob(&id2, data2.len() as u64, BS, true).unwrap();
    fill_all(&blob2, &data2);
    for (offset, len) in [
        (BS - 1, 2),
        (BS, BS),
        (2 * BS - 9, 3 * BS + 26),
        (0, 5 * BS + 17),
    ] {
        let got = blob2.read_verified(offset, len as usize).unwrap();
        assert_eq!(&got[..], &data2[offset as usize..(offset + len) as usize]);
    }
    // Out of range is an error, not a short answer.
    assert!(matches!(
        blob.read_verified(size - 1, 2),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        blob.read_raw(u64::MAX, 2),
        Err(StoreError::OutOfRange { .. })
    ));
}

#[test]
fn reads_of_checked_pages_return_exact_bytes_and_a_later_change_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mib = 1u64 << 20;
    let data = content(2 * 2 * mib + 300 * KIB + 7, 6);
    let id = sha256_id(&data);
    let blob = s
        .create_blob(&id, data.len() as u64, 2 * mib, true)
        .unwrap();
    fill_all(&blob, &data);
    // Pages are remembered as checked once the file has been quiet for a moment.
    std::thread::sleep(std::time::Duration::from_millis(250));
    let size = data.len();
    assert_eq!(&blob.read_verified(0, size).unwrap()[..], &data[..]);
    // Sub-page reads of checked pages read just their bytes.
    for (offset, len) in [
        (mib - 5, 10),
        (123_457, 700),
        (size as u64 - 1, 1),
        (3, 2 * mib as usize),
    ] {
        let got = blob.read_verified(offset, len).unwrap();
        assert_eq!(
            &got[..],
            &data[offset as usize..offset as usize + len],
            "{offset}+{len}"
        );
    }
    // A byte changed behind the store's back moves the file's ctime: checked again, caught.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let at = blob.layout().data_offset() + mib + 10;
    let f = OpenOptions::new().write(true).open(blob.path()).unwrap();
    f.write_all_at(&[data[(mib + 10) as usize] ^ 0x01], at)
        .unwrap();
    let err = blob.read_verified(mib + 8, 4).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
}

#[test]
fn read_verified_refuses_blocks_that_are_not_present() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(3 * BS, 4);
    let blob = s
        .create_blob(&sha256_id(&data), data.len() as u64, BS, true)
        .unwrap();
    fill_block(&blob, &data, 0);
    fill_block(&blob, &data, 2);
    assert_eq!(&blob.read_verified(10, 20).unwrap()[..], &data[10..30]);
    let err = blob.read_verified(BS - 1, 2).unwrap_err();
    assert!(
        matches!(err, StoreError::NotPresent { block: 1, .. }),
        "{err}"
    );
    assert!(err.is_not_present());
    assert!(matches!(
        blob.verify_content(),
        Err(StoreError::NotPresent { block: 1, .. })
    ));
    assert_eq!(blob.missing_blocks(0..3 * BS), vec![1]);
    assert_eq!(blob.missing_blocks(2 * BS..3 * BS), Vec::<u64>::new());
}

#[test]
fn a_flipped_byte_in_a_committed_block_is_corrupt_and_invalidates_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * BS + 500, 5);
    let id = sha256_id(&data);
    let s = store(&dir);
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    fill_all(&blob, &data);
    // Flip one byte of block 1 behind the store's back.
    let at = blob.layout().data_offset() + BS + 4321;
    let f = OpenOptions::new().write(true).open(blob.path()).unwrap();
    f.write_all_at(&[data[(BS + 4321) as usize] ^ 0x40], at)
        .unwrap();

    // Block 0 still reads fine.
    assert_eq!(&blob.read_verified(0, 100).unwrap()[..], &data[..100]);
    // Any read touching block 1 fails, and the block is no longer present.
    let err = blob.read_verified(BS - 10, 20).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                block: 1,
                page: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_corrupt());
    assert!(!blob.is_present(1));
    assert!(blob.is_present(0) && blob.is_present(2) && blob.is_present(3));
    assert_eq!(disk_bitmap_byte(&blob, 0), 0b1101);
    assert!(matches!(
        blob.read_verified(BS, 1),
        Err(StoreError::NotPresent { block: 1, .. })
    ));
    drop(blob);
    drop(s);

    // Also after reopening.
    let s = store(&dir);
    let blob = s.open_blob(&id).unwrap().unwrap();
    assert!(!blob.is_present(1));
    assert_eq!(blob.present_count(), 3);
    // Refilling the block repairs it.
    fill_block(&blob, &data, 1);
    assert_eq!(&blob.read_verified(0, data.len()).unwrap()[..], &data[..]);
}

#[test]
fn a_block_written_but_not_committed_is_not_present_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(2 * BS, 6);
    let id = sha256_id(&data);
    {
        let s = store(&dir);
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        fill_block(&blob, &data, 0);
        // Block 1: all bytes written, then the "process dies" before commit_block.
        blob.write_data(BS, &data[BS as usize..]).unwrap();
        assert!(!blob.is_present(1));
        // Its bytes are readable raw (for the filler), but not verified.
        assert_eq!(
            &blob.read_raw(BS, 10).unwrap()[..],
            &data[BS as usize..BS as usize + 10]
        );
        assert!(blob.read_verified(BS, 10).is_err());
    }
    let s = store(&dir);
    let blob = s.open_blob(&id).unwrap().unwrap();
    assert!(blob.is_present(0));
    assert!(!blob.is_present(1));
    assert!(!blob.is_complete());
    assert_eq!(blob.missing_blocks(0..2 * BS), vec![1]);
}

#[test]
fn a_truncated_file_clears_the_blocks_beyond_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(4 * BS + 10, 7);
    let id = sha256_id(&data);
    let s = store(&dir);
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    fill_all(&blob, &data);
    let data_offset = blob.layout().data_offset();
    // Cut the file in the middle of block 2.
    let f = OpenOptions::new().write(true).open(blob.path()).unwrap();
    f.set_len(data_offset + 2 * BS + 100).unwrap();

    // The stale handle still believes block 3 is present: reads fail loudly, never short.
    assert!(blob.is_present(3));
    let err = blob.read_verified(3 * BS, 10).unwrap_err();
    assert!(matches!(err, StoreError::ShortRead { .. }), "{err}");
    assert!(matches!(
        blob.read_raw(3 * BS, 10),
        Err(StoreError::ShortRead { .. })
    ));

    // A fresh open (another process) drops blocks 2..=4, on disk too.
    let s2 = store(&dir);
    let blob2 = s2.open_blob(&id).unwrap().unwrap();
    assert_eq!(
        (0..5).map(|b| blob2.is_present(b)).collect::<Vec<_>>(),
        vec![true, true, false, false, false]
    );
    assert_eq!(disk_bitmap_byte(&blob2, 0), 0b00011);
    // reload_bitmap brings the stale handle up to date.
    blob.reload_bitmap().unwrap();
    assert_eq!(blob.present_count(), 2);
    assert_eq!(
        &blob.read_verified(0, 2 * BS as usize).unwrap()[..],
        &data[..2 * BS as usize]
    );
}

#[test]
fn two_handles_committing_blocks_that_share_a_bitmap_byte_both_end_up_present() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(16 * BS, 8);
    let id = sha256_id(&data);
    // Two Stores on one directory = two processes: separate handles, separate descriptors.
    let a = store(&dir);
    let b = store(&dir);
    let ha = a.create_blob(&id, data.len() as u64, BS, true).unwrap();
    let hb = b.open_blob(&id).unwrap().unwrap();
    assert!(!Arc::ptr_eq(&ha, &hb));

    // Sequential case: hb's in-memory bitmap is stale when it commits block 1.
    fill_block(&ha, &data, 0);
    fill_block(&hb, &data, 1);
    assert_eq!(disk_bitmap_byte(&ha, 0) & 0b11, 0b11);

    // Concurrent case: many threads per handle hammer the same two bitmap bytes.
    let data = Arc::new(data);
    let threads: Vec<_> = (2..16u64)
        .map(|block| {
            let h = if block % 2 == 0 {
                ha.clone()
            } else {
                hb.clone()
            };
            let data = data.clone();
            std::thread::spawn(move || {
                fill_block(&h, &data, block);
                // Invalidate and recommit, to exercise clearing under contention too.
                h.invalidate_block(block).unwrap();
                fill_block(&h, &data, block);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(disk_bitmap_byte(&ha, 0), 0xff);
    assert_eq!(disk_bitmap_byte(&ha, 1), 0xff);
    let c = store(&dir);
    let hc = c.open_blob(&id).unwrap().unwrap();
    assert!(hc.is_complete());
    ha.reload_bitmap().unwrap();
    hb.reload_bitmap().unwrap();
    assert!(ha.is_complete() && hb.is_complete());
    assert_eq!(hc.verify_content().unwrap(), ContentCheck::Match);
}

#[test]
fn concurrent_bitmap_updates_through_two_descriptors_are_never_lost() {
    // Eight threads, four per handle (= per process), one block each, all in bitmap byte 0.
    // They set and clear their bits in lock-step rounds; without the byte-range lock the two
    // handles' read-modify-writes of the shared byte would overwrite each other.
    let dir = tempfile::tempdir().unwrap();
    let id = sha256_id(b"bitmap race");
    let (a, b) = (store(&dir), store(&dir));
    let ha = a.create_blob(&id, 8 * BS, BS, true).unwrap();
    let hb = b.open_blob(&id).unwrap().unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8u64)
        .map(|block| {
            let h = if block < 4 { ha.clone() } else { hb.clone() };
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for round in 0..300 {
                    barrier.wait();
                    h.commit_block(block, &[round]).unwrap();
                    barrier.wait();
                    assert_eq!(
                        disk_bitmap_byte(&h, 0),
                        0xff,
                        "round {round}: a set was lost"
                    );
                    barrier.wait();
                    h.invalidate_block(block).unwrap();
                    barrier.wait();
                    assert_eq!(
                        disk_bitmap_byte(&h, 0),
                        0,
                        "round {round}: a clear was lost"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn reload_bitmap_sees_blocks_committed_through_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * BS, 9);
    let id = sha256_id(&data);
    let (a, b) = (store(&dir), store(&dir));
    let ha = a.create_blob(&id, data.len() as u64, BS, true).unwrap();
    let hb = b.open_blob(&id).unwrap().unwrap();
    fill_block(&ha, &data, 2);
    assert!(!hb.is_present(2));
    hb.reload_bitmap().unwrap();
    assert!(hb.is_present(2));
    assert_eq!(
        &hb.read_verified(2 * BS, 5).unwrap()[..],
        &data[2 * BS as usize..][..5]
    );
    // Invalidation by one handle is seen by the other after reload too.
    hb.invalidate_block(2).unwrap();
    ha.reload_bitmap().unwrap();
    assert!(!ha.is_present(2));
}

#[test]
fn create_blob_reuses_an_existing_file_of_the_same_size_and_keeps_its_bits() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * BS + 1, 10);
    let id = sha256_id(&data);
    {
        let s = store(&dir);
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        fill_block(&blob, &data, 0);
        fill_block(&blob, &data, 3);
        // Same Store: the very same handle.
        let again = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        assert!(Arc::ptr_eq(&blob, &again));
        let opened = s.open_blob(&id).unwrap().unwrap();
        assert!(Arc::ptr_eq(&blob, &opened));
    }
    // A new Store configured with another block size: the file's own header wins.
    let s = store(&dir);
    let blob = s
        .create_blob(&id, data.len() as u64, 1 << 20, true)
        .unwrap();
    assert_eq!(blob.block_size(), BS);
    assert_eq!(blob.block_count(), 4);
    assert!(blob.is_present(0) && blob.is_present(3));
    assert_eq!(blob.present_count(), 2);
    assert_eq!(blob.missing_blocks(0..u64::MAX), vec![1, 2]);
}

#[test]
fn create_blob_with_a_different_size_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(2 * BS, 11);
    let id = sha256_id(&data);
    let s = store(&dir);
    let wrong = s.create_blob(&id, 5 * BS, BS, true).unwrap();
    wrong.put_block(0, &content(BS, 99)).unwrap();
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    assert!(!Arc::ptr_eq(&wrong, &blob));
    assert_eq!(blob.size(), 2 * BS);
    assert_eq!(blob.present_count(), 0);
    let reopened = store(&dir).open_blob(&id).unwrap().unwrap();
    assert_eq!(reopened.size(), 2 * BS);
    assert_eq!(reopened.present_count(), 0);
}

#[test]
fn concurrent_create_blob_from_many_stores_publishes_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let id = sha256_id(b"race");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let root = dir.path().to_path_buf();
            let id = id.clone();
            std::thread::spawn(move || {
                let s = Store::open(root, Durability::Os).unwrap();
                let blob = s.create_blob(&id, 10 * BS, BS, true).unwrap();
                // Commit through this handle; the bit must land in the published file.
                blob.put_block(0, &content(BS, 3)).unwrap();
                fs::metadata(blob.path()).unwrap();
                blob.identity()
            })
        })
        .collect();
    let ids: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "all handles share one inode"
    );
    let s = store(&dir);
    assert!(s.open_blob(&id).unwrap().unwrap().is_present(0));
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn a_zero_byte_blob_is_complete_from_creation() {
    let dir = tempfile::tempdir().unwrap();
    let id = sha256_id(b"");
    let s = store(&dir);
    let blob = s.create_blob(&id, 0, BS, true).unwrap();
    assert_eq!(blob.block_count(), 0);
    assert!(blob.is_complete());
    assert_eq!(blob.missing_blocks(0..100), Vec::<u64>::new());
    assert_eq!(blob.read_verified(0, 0).unwrap().len(), 0);
    assert!(blob.read_verified(0, 1).is_err());
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);
    assert!(matches!(
        blob.commit_block(0, &[]),
        Err(StoreError::BlockOutOfRange { .. })
    ));
    drop(blob);
    let reopened = store(&dir).open_blob(&id).unwrap().unwrap();
    assert!(reopened.is_complete());
    // Git's empty blob id.
    let git_empty = BlobId::parse("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391").unwrap();
    let g = s.create_blob(&git_empty, 0, BS, true).unwrap();
    assert_eq!(g.verify_content().unwrap(), ContentCheck::Match);
}

#[test]
fn block_checksummer_errors_on_wrong_length_and_matches_page_crcs() {
    let layout = Layout::new(2 * (2 << 20) + 5, 2 << 20).unwrap();
    let data = content(layout.size(), 12);
    // Short by one byte.
    let mut sum = BlockChecksummer::new(&layout, 0).unwrap();
    sum.update(&data[..(2 << 20) - 1]);
    assert!(matches!(
        sum.finish(),
        Err(StoreError::BlockLength { block: 0, got, .. }) if got == (2 << 20) - 1
    ));
    // Long by one byte.
    let mut sum = BlockChecksummer::new(&layout, 0).unwrap();
    sum.update(&data[..(2 << 20) + 1]);
    assert!(sum.finish().is_err());
    // Last (5-byte) block: exact length works, anything else fails.
    let mut sum = BlockChecksummer::new(&layout, 2).unwrap();
    sum.update(&data[4 << 20..]);
    assert_eq!(
        sum.finish().unwrap(),
        vec![crc32c::crc32c(&data[4 << 20..])]
    );
    let mut sum = BlockChecksummer::new(&layout, 2).unwrap();
    sum.update(&data[..4]);
    assert!(sum.finish().is_err());
    assert!(matches!(
        BlockChecksummer::new(&layout, 3),
        Err(StoreError::NoSuchBlock { .. })
    ));
    // Chunking does not matter; pages are 1 MiB.
    let block1 = &data[2 << 20..4 << 20];
    let mut sum = BlockChecksummer::new(&layout, 1).unwrap();
    for piece in block1.chunks(333_333) {
        sum.update(piece);
    }
    assert_eq!(
        sum.finish().unwrap(),
        vec![
            crc32c::crc32c(&block1[..1 << 20]),
            crc32c::crc32c(&block1[1 << 20..])
        ]
    );
}

#[test]
fn commit_block_rejects_the_wrong_number_of_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let blob = s
        .create_blob(&sha256_id(b"x"), 3 << 20, 2 << 20, true)
        .unwrap();
    assert!(matches!(
        blob.commit_block(0, &[1]),
        Err(StoreError::ChecksumCount {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        blob.commit_block(1, &[1, 2]),
        Err(StoreError::ChecksumCount {
            expected: 1,
            got: 2,
            ..
        })
    ));
    assert!(matches!(
        blob.commit_block(2, &[1]),
        Err(StoreError::BlockOutOfRange { block: 2, .. })
    ));
    assert!(matches!(
        blob.put_block(1, &[0; 10]),
        Err(StoreError::BlockLength { .. })
    ));
    assert_eq!(blob.present_count(), 0);
}

#[test]
fn verify_content_matches_sha256_and_git_sha1_ids_and_reports_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(2 * BS + 77, 13);
    for id in [sha256_id(&data), git_id(&data)] {
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        fill_all(&blob, &data);
        assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match, "{id}");
    }
    // Known git blob id: `printf 'hello\n' | git hash-object --stdin`.
    let hello = BlobId::parse("ce013625030ba8dba906f756967f9e9ca394464a").unwrap();
    let blob = s.create_blob(&hello, 6, BS, true).unwrap();
    blob.put_block(0, b"hello\n").unwrap();
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);

    // Content that does not hash to its id.
    let other = content(2 * BS + 77, 14);
    for (id, actual) in [
        (sha256_id(&other), sha256_id(&data)),
        (git_id(&other), git_id(&data)),
    ] {
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        fill_all(&blob, &data);
        assert_eq!(
            blob.verify_content().unwrap(),
            ContentCheck::Mismatch {
                actual: actual.to_string()
            }
        );
    }
}

#[test]
fn mark_verified_persists_and_a_changed_block_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(2 * BS, 15);
    let id = sha256_id(&data);
    {
        let s = Store::open(dir.path(), Durability::Fsync).unwrap();
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        fill_all(&blob, &data);
        assert!(!blob.is_verified());
        blob.mark_verified().unwrap();
        assert!(blob.is_verified());
        // Recommitting identical content keeps the flag.
        fill_block(&blob, &data, 1);
        assert!(blob.is_verified());
    }
    let s = store(&dir);
    let blob = s.open_blob(&id).unwrap().unwrap();
    assert!(blob.is_verified());
    // Different bytes committed into a verified blob clear the flag, on disk too.
    blob.put_block(1, &content(BS, 16)).unwrap();
    assert!(!blob.is_verified());
    let other = store(&dir).open_blob(&id).unwrap().unwrap();
    assert!(!other.is_verified());
}

#[test]
fn block_size_validation_rejects_bad_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let id = sha256_id(b"bs");
    for bad in [0, 4096, 32 * KIB, BS + 1, 3 * BS, 2 << 30] {
        assert!(matches!(
            s.create_blob(&id, 1000, bad, true),
            Err(StoreError::InvalidBlockSize { block_size, .. }) if block_size == bad
        ));
    }
    assert!(s.list_blobs().unwrap().is_empty());
    assert!(s.create_blob(&id, 1000, 1 << 30, true).is_ok());
}

#[test]
fn a_corrupt_header_makes_open_blob_return_none_and_removes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(BS, 17);
    let id = sha256_id(&data);
    let s = store(&dir);
    let path = s.blob_path(0, &id).unwrap();
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    fill_all(&blob, &data);
    drop(blob);
    // Bad magic.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"XUBC", 0).unwrap();
    let s2 = store(&dir);
    assert!(s2.open_blob(&id).unwrap().is_none());
    assert!(!path.exists());
    // It can be created afresh.
    let blob = s2.create_blob(&id, data.len() as u64, BS, true).unwrap();
    assert_eq!(blob.present_count(), 0);
    drop(blob);

    // A truncated header and a header of another blob are treated the same way.
    for damage in 0..2 {
        let s3 = store(&dir);
        s3.create_blob(&id, data.len() as u64, BS, true).unwrap();
        if damage == 0 {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(60)
                .unwrap();
        } else {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(b"00", 56).unwrap();
        }
        let s4 = store(&dir);
        assert!(s4.open_blob(&id).unwrap().is_none(), "damage {damage}");
        assert!(!path.exists());
    }
}

#[test]
fn remove_blob_and_list_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let ids = [sha256_id(b"a"), git_id(b"b"), sha256_id(b"c")];
    for id in &ids {
        s.create_blob(id, 10, BS, true).unwrap();
    }
    // Junk in the tree is ignored.
    fs::write(dir.path().join("blobs/README"), b"x").unwrap();
    fs::create_dir_all(dir.path().join("blobs/zz/zz")).unwrap();
    let misplaced = sha256_id(b"d");
    fs::write(
        dir.path().join("blobs/zz/zz").join(misplaced.as_str()),
        b"x",
    )
    .unwrap();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(s.list_blobs().unwrap(), expected);

    let kept = s.open_blob(&ids[0]).unwrap().unwrap();
    s.remove_blob(&ids[0]).unwrap();
    s.remove_blob(&ids[0]).unwrap(); // idempotent
    assert!(s.open_blob(&ids[0]).unwrap().is_none());
    assert_eq!(s.list_blobs().unwrap().len(), 2);
    // The old handle still works on the unlinked file; a new create starts afresh.
    kept.put_block(0, &[7; 10]).unwrap();
    let fresh = s.create_blob(&ids[0], 10, BS, true).unwrap();
    assert!(!Arc::ptr_eq(&kept, &fresh));
    assert_eq!(fresh.present_count(), 0);
}

#[test]
fn open_blob_notices_a_file_replaced_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let id = sha256_id(b"replaced");
    let (a, b) = (store(&dir), store(&dir));
    let ha = a.create_blob(&id, 3 * BS, BS, true).unwrap();
    // Process b evicts and recreates it, and commits a block.
    b.remove_blob(&id).unwrap();
    let hb = b.create_blob(&id, 3 * BS, BS, true).unwrap();
    hb.put_block(1, &content(BS, 1)).unwrap();
    // Process a's next open returns a handle on the new file, not its stale one.
    let ha2 = a.open_blob(&id).unwrap().unwrap();
    assert!(!Arc::ptr_eq(&ha, &ha2));
    assert!(ha2.is_present(1));
}

#[test]
fn store_open_removes_only_stale_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    drop(store(&dir));
    let tmp = dir.path().join("tmp");
    let stale = tmp.join("stale.1.1.tmp");
    let fresh = tmp.join("fresh.2.2.tmp");
    fs::write(&stale, b"x").unwrap();
    fs::write(&fresh, b"x").unwrap();
    let f = OpenOptions::new().write(true).open(&stale).unwrap();
    f.set_modified(SystemTime::now() - TEMP_FILE_MAX_AGE - Duration::from_secs(60))
        .unwrap();
    drop(f);
    drop(store(&dir));
    assert!(!stale.exists());
    assert!(fresh.exists());
}

#[test]
fn fsync_durability_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("nested/cache"), Durability::Fsync).unwrap();
    assert_eq!(s.durability(), Durability::Fsync);
    let data = content(2 * BS + 3, 18);
    let blob = s
        .create_blob(&git_id(&data), data.len() as u64, BS, true)
        .unwrap();
    fill_all(&blob, &data);
    blob.sync().unwrap();
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);
}

#[test]
fn write_data_rejects_out_of_range_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let blob = s.create_blob(&sha256_id(b"w"), 100, BS, true).unwrap();
    blob.write_data(90, &[0; 10]).unwrap();
    blob.write_data(100, &[]).unwrap();
    assert!(matches!(
        blob.write_data(91, &[0; 10]),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(blob.invalidate_block(1).is_err());
}

#[test]
fn durability_parses_its_config_spellings() {
    assert_eq!("fsync".parse::<Durability>().unwrap(), Durability::Fsync);
    assert_eq!("OS".parse::<Durability>().unwrap(), Durability::Os);
    assert!("sometimes".parse::<Durability>().is_err());
    assert_eq!(Durability::default(), Durability::Fsync);
    assert_eq!(Durability::Os.to_string(), "os");
}

#[test]
fn header_bytes_match_the_documented_example() {
    // docs/storage-format.md §2.5: 200,000 bytes (byte k = k mod 251), 64 KiB blocks,
    // blocks 0 and 2 committed.
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|k| (k % 251) as u8).collect();
    let id = sha256_id(&data);
    assert!(id.as_str().starts_with("e24bc623") && id.as_str().ends_with("e730eb"));
    let s = store(&dir);
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    for block in [0u64, 2] {
        let span = blob.block_span(block);
        blob.put_block(block, &data[span.start as usize..span.end as usize])
            .unwrap();
    }
    let expected = concat!(
        "48554243424c4b31", // magic
        "01000000",         // version
        "00000000",         // flags
        "0000010000000000", // block_size 65536
        "0000010000000000", // page_size 65536
        "400d030000000000", // size 200000
        "0400000000000000", // block_count 4
        "0010000000000000", // data_offset 4096
        "6532346263363233383166313232346662626237343638383636336638663937",
        "3433623936383062313933656464363636383335653937623036653733306562", // id
        "05", // bitmap: blocks 0 and 2
        "defcaa0d",
        "00000000",
        "7070291c",
        "00000000", // page CRCs
    );
    let file = fs::read(blob.path()).unwrap();
    assert_eq!(hex::encode(&file[..137]), expected);
    assert!(file[137..4096].iter().all(|&b| b == 0));
    assert_eq!(file.len(), 4096 + 3 * 65536);
    assert_eq!(&file[4096..4096 + 65536], &data[..65536]);
}
