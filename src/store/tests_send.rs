//! `BlobFile::send_window`: only verified pages under the file's current stamp are sendable.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::tests::{content, fill_all, sha256_id, store, BS};
use super::verified::SETTLED;

#[test]
fn a_range_is_sendable_only_after_its_pages_were_verified_and_until_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(3 * BS + 1000, 7);
    let size = data.len() as u64;
    let id = sha256_id(&data);
    let blob = s.create_blob(&id, size, BS, true).unwrap();
    fill_all(&blob, &data);
    assert_eq!(blob.send_window(0..size), None, "never verified");
    // Pages are remembered only for a file left unchanged for a moment.
    std::thread::sleep(SETTLED + Duration::from_millis(50));
    blob.read_verified(BS, 2 * BS as usize).unwrap();
    assert_eq!(blob.send_window(0..size), None, "block 0 was not read");
    let window = blob.send_window(BS + 10..3 * BS).expect("verified pages");
    assert_eq!(window.file_offset, blob.file_offset(BS + 10));
    let mut on_disk = vec![0u8; 100];
    let f = std::fs::File::open(blob.path()).unwrap();
    f.read_exact_at(&mut on_disk, window.file_offset).unwrap();
    assert_eq!(on_disk, data[(BS + 10) as usize..(BS + 110) as usize]);
    assert!(blob.unchanged(&window.stamp));
    assert_eq!(blob.send_window(BS..BS), None, "empty");
    assert_eq!(blob.send_window(BS..size + 1), None, "past the end");

    // Any write moves ctime: the window no longer holds, and nothing is sendable.
    std::thread::sleep(Duration::from_millis(20));
    let w = OpenOptions::new().write(true).open(blob.path()).unwrap();
    w.write_all_at(
        &[data[(BS + 20) as usize] ^ 0xff],
        blob.file_offset(BS + 20),
    )
    .unwrap();
    assert!(!blob.unchanged(&window.stamp));
    assert_eq!(blob.send_window(BS + 10..3 * BS), None);
}
