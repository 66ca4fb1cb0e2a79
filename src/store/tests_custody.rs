//! Custody: a new blob file's own bytes read back without checks, until anyone else changes
//! the file (see `custody.rs`).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::tests::{content, fill_all, fill_block, sha256_id, store, BS};

/// Longer than the kernel's timestamp tick, so a later write gets a later `ctime`.
const TICK: Duration = Duration::from_millis(20);

#[test]
fn a_new_blob_files_own_bytes_are_read_back_unchecked_until_someone_else_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(3 * BS + 500, 11);
    let blob = s
        .create_blob(&sha256_id(&data), data.len() as u64, BS, true)
        .unwrap();
    assert!(blob.in_custody());
    fill_all(&blob, &data);
    blob.mark_verified().unwrap();
    // Data, checksums, bitmap and flags were all written through this handle.
    assert!(blob.in_custody());
    for (offset, len) in [(0u64, data.len()), (BS - 3, 10), (3 * BS + 499, 1)] {
        let got = blob.read_own(offset, len).unwrap().expect("in custody");
        assert_eq!(&got[..], &data[offset as usize..offset as usize + len]);
    }
    // A byte flipped behind the store's back ends the custody: the read is checked, and fails.
    std::thread::sleep(TICK);
    let f = OpenOptions::new().write(true).open(blob.path()).unwrap();
    let at = BS + 7;
    f.write_all_at(
        &[data[at as usize] ^ 0x20],
        blob.layout().data_offset() + at,
    )
    .unwrap();
    assert!(!blob.in_custody());
    assert!(blob.read_own(BS, 100).unwrap().is_none());
    assert!(blob.read_verified(BS, 100).unwrap_err().is_corrupt());
    // Its own writes do not give the custody back.
    fill_block(&blob, &data, 1);
    assert!(!blob.in_custody());
    assert!(blob.read_own(0, 10).unwrap().is_none());
}

#[test]
fn a_chmod_ends_the_custody() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(BS, 12);
    let blob = s
        .create_blob(&sha256_id(&data), data.len() as u64, BS, true)
        .unwrap();
    fill_all(&blob, &data);
    std::thread::sleep(TICK);
    std::fs::set_permissions(blob.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(blob.read_own(0, 10).unwrap().is_none());
    assert_eq!(&blob.read_verified(0, 10).unwrap()[..], &data[..10]);
}

#[test]
fn a_blob_file_opened_from_disk_has_no_custody() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(2 * BS, 13);
    let id = sha256_id(&data);
    {
        let s = store(&dir);
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        fill_all(&blob, &data);
    }
    let s = store(&dir);
    let blob = s.open_blob(&id).unwrap().unwrap();
    assert!(!blob.in_custody());
    assert!(blob.read_own(0, 10).unwrap().is_none());
    fill_block(&blob, &data, 0);
    assert!(blob.read_own(0, 10).unwrap().is_none());
    assert_eq!(&blob.read_verified(0, 10).unwrap()[..], &data[..10]);
}

#[test]
fn blocks_not_present_or_invalidated_are_never_read_in_custody() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(3 * BS, 14);
    let blob = s
        .create_blob(&sha256_id(&data), data.len() as u64, BS, true)
        .unwrap();
    fill_block(&blob, &data, 0);
    // Block 1's bytes are written but not committed: not readable this way.
    blob.write_data(BS, &data[BS as usize..2 * BS as usize])
        .unwrap();
    assert!(blob.in_custody());
    assert_eq!(
        &blob.read_own(0, 10).unwrap().expect("present")[..],
        &data[..10]
    );
    assert!(blob.read_own(BS - 5, 10).unwrap().is_none());
    blob.invalidate_block(0).unwrap();
    assert!(blob.in_custody());
    assert!(blob.read_own(0, 10).unwrap().is_none());
}

#[test]
fn readers_keep_custody_while_the_handle_keeps_writing_other_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(8 * BS, 15);
    let blob = std::sync::Arc::new(
        s.create_blob(&sha256_id(&data), data.len() as u64, BS, true)
            .unwrap(),
    );
    fill_block(&blob, &data, 0);
    // The handle's own writes go on (across many timestamp ticks) while block 0 is read: a
    // read never has to fall back to the checked way.
    let writer = {
        let (blob, data) = (std::sync::Arc::clone(&blob), data.clone());
        std::thread::spawn(move || {
            let until = std::time::Instant::now() + Duration::from_millis(300);
            let mut block = 1;
            while std::time::Instant::now() < until {
                let span = blob.block_span(block);
                blob.write_data(span.start, &data[span.start as usize..span.end as usize])
                    .unwrap();
                block = 1 + block % 7;
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let got = blob.read_own(0, 4096).unwrap();
        assert_eq!(got.as_deref(), Some(&data[..4096]), "read {reads}");
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads > 100, "{reads}");
}

#[test]
fn invalidations_count_present_blocks_that_went_away_here_or_in_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(3 * BS, 13);
    let id = sha256_id(&data);
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    fill_block(&blob, &data, 0);
    fill_block(&blob, &data, 1);
    assert_eq!(blob.invalidations(), 0);
    // A block that is not present going "away" changes nothing.
    blob.invalidate_block(2).unwrap();
    assert_eq!(blob.invalidations(), 0);
    blob.invalidate_block(0).unwrap();
    assert_eq!(blob.invalidations(), 1);
    // Another handle (as another process would) invalidates block 1: seen on reload.
    let other = store(&dir).open_blob(&id).unwrap().expect("the blob file");
    other.invalidate_block(1).unwrap();
    blob.reload_bitmap().unwrap();
    assert_eq!(blob.invalidations(), 2);
    assert!(!blob.is_present(1));
}
