//! Store work that can block (locks held by another process, disk I/O) stays off the async
//! workers.

use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fetch::testkit::{
    blob_path, content, engine, id_of, run_bounded, settings, source, wait_until, FakeHub, HubFile,
};
use crate::store::FIXED_HEADER_LEN;

/// Take an OFD write lock on one byte of `file` (as another process updating the bitmap
/// would), held until the returned descriptor is closed.
fn lock_byte(path: &std::path::Path, offset: u64) -> std::fs::File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: a zeroed flock is valid; fcntl gets a valid descriptor and struct.
    unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = offset as libc::off_t;
        fl.l_len = 1;
        assert_eq!(libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl), 0);
    }
    file
}

#[test]
fn recovering_from_a_truncated_file_does_not_block_the_runtime() {
    let hub = FakeHub::start();
    let data = content(20 * (64 << 10), 5);
    hub.add("truncated.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    let root = dir.path().to_path_buf();
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("truncated.bin", size, None))
            .await
            .unwrap();
        let mut offset = 0;
        while offset < size {
            offset += fill.read(offset, 1 << 20).await.unwrap().len() as u64;
        }
        assert!(fill.is_complete());
        let path = blob_path(&root, &id);
        // Cut the file in the middle of block 12, and hold the lock on its bitmap byte.
        let block = 12u64;
        let cut = 4096 + block * (64 << 10) + 100;
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let lock = lock_byte(&path, FIXED_HEADER_LEN + block / 8);
        // A heartbeat on this (single-threaded) runtime: its longest gap shows a blocked worker.
        let beat = Arc::new(AtomicU64::new(0));
        let beats = Arc::clone(&beat);
        let started = Instant::now();
        let heart = tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let gap = last.elapsed().as_millis() as u64;
                beats.fetch_max(gap, Ordering::SeqCst);
                last = Instant::now();
            }
        });
        let unlock = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(800));
            drop(lock);
        });
        let reader = Arc::clone(&fill);
        let read = tokio::spawn(async move { reader.read(block * (64 << 10), 1000).await });
        wait_until("the lock to be released", Duration::from_secs(10), || {
            started.elapsed() > Duration::from_millis(1000)
        })
        .await;
        let bytes = read.await.unwrap().expect("the block is fetched again");
        let at = (block * (64 << 10)) as usize;
        assert_eq!(&bytes[..], &data[at..at + bytes.len()]);
        unlock.join().unwrap();
        heart.abort();
        let gap = beat.load(Ordering::SeqCst);
        assert!(gap < 400, "the runtime was blocked for {gap} ms");
    });
}
