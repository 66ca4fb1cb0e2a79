//! Store tests across processes (a child process of the test binary) and block claims.

use std::fs;
use std::time::Duration;

use super::tests::{content, fill_block, sha256_id, store, BS};
use super::*;

// ---- Real multi-process tests -------------------------------------------------------------
//
// The test binary re-executes itself to run `child_process_helper` in a separate process,
// selected by the `HUBCACHE_STORE_TEST_CHILD` environment variable (`mode root`).

const CHILD_ENV: &str = "HUBCACHE_STORE_TEST_CHILD";
const XPROC_BLOCKS: u64 = 32;
const CRASH_IDS: u64 = 4;

fn xproc_id() -> BlobId {
    sha256_id(&content(XPROC_BLOCKS * BS, 20))
}

fn claim_id() -> BlobId {
    sha256_id(b"claimed by another process")
}

fn crash_id(i: u64) -> BlobId {
    sha256_id(format!("crash {i}").as_bytes())
}

fn spawn_child(mode: &str, root: &std::path::Path) -> std::process::Child {
    // libtest names tests by their path without the crate name.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::child_process_helper"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode} {}", root.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Not a test by itself: the body of the child process of the multi-process tests. Does
/// nothing unless `HUBCACHE_STORE_TEST_CHILD` is set.
#[test]
fn child_process_helper() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, root) = spec.split_once(' ').unwrap();
    let s = Store::open(root, Durability::Os).unwrap();
    match mode {
        // Commit the odd blocks of the shared blob, invalidating and recommitting each a few
        // times, while the parent does the even ones.
        "odd" => {
            let data = content(XPROC_BLOCKS * BS, 20);
            let blob = s.open_blob(&xproc_id()).unwrap().unwrap();
            for round in 0..20 {
                for block in (1..XPROC_BLOCKS).step_by(2) {
                    if round > 0 {
                        blob.invalidate_block(block).unwrap();
                    }
                    fill_block(&blob, &data, block);
                }
            }
        }
        // Fill fresh blobs forever, until the parent kills us with SIGKILL.
        "crash" => {
            let data = content(8 * BS, 21);
            for i in 0.. {
                let id = crash_id(i % CRASH_IDS);
                s.remove_blob(&id).unwrap();
                let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
                for block in 0..blob.block_count() {
                    fill_block(&blob, &data, block);
                }
            }
        }
        // Claim block 3 of the shared blob, say so, and hold the claim until killed.
        "claim" => {
            let blob = s.open_blob(&claim_id()).unwrap().unwrap();
            let claim = blob.try_claim_block(3).unwrap().expect("block 3 is free");
            fs::write(std::path::Path::new(root).join("claimed"), b"1").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(claim);
        }
        // Open the shared blob (as a reader would), say so, and keep it open until killed.
        "hold" => {
            let blob = s.open_blob(&claim_id()).unwrap().unwrap();
            fs::write(std::path::Path::new(root).join("held"), b"1").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(blob);
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn two_processes_committing_interleaved_blocks_both_end_up_present() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(XPROC_BLOCKS * BS, 20);
    let s = store(&dir);
    let blob = s
        .create_blob(&xproc_id(), data.len() as u64, BS, true)
        .unwrap();
    let mut child = spawn_child("odd", dir.path());
    for round in 0..20 {
        for block in (0..XPROC_BLOCKS).step_by(2) {
            if round > 0 {
                blob.invalidate_block(block).unwrap();
            }
            fill_block(&blob, &data, block);
        }
    }
    assert!(child.wait().unwrap().success(), "child process failed");
    let fresh = store(&dir).open_blob(&xproc_id()).unwrap().unwrap();
    assert!(fresh.is_complete(), "present: {}", fresh.present_count());
    assert_eq!(fresh.verify_content().unwrap(), ContentCheck::Match);
    blob.reload_bitmap().unwrap();
    assert!(blob.is_complete());
}

#[test]
fn kill_9_during_fills_never_leaves_a_bad_block_present() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(8 * BS, 21);
    let mut checked_blocks = 0;
    for attempt in 0..3u64 {
        let mut child = spawn_child("crash", dir.path());
        std::thread::sleep(Duration::from_millis(100 + 70 * attempt));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let s = store(&dir);
        for i in 0..CRASH_IDS {
            let Some(blob) = s.open_blob(&crash_id(i)).unwrap() else {
                continue;
            };
            for block in 0..blob.block_count() {
                if blob.is_present(block) {
                    let span = blob.block_span(block);
                    let got = blob
                        .read_verified(span.start, (span.end - span.start) as usize)
                        .unwrap();
                    assert_eq!(&got[..], &data[span.start as usize..span.end as usize]);
                    checked_blocks += 1;
                }
            }
        }
    }
    // The child really ran (and its blocks were checked).
    assert!(checked_blocks > 0);
}

// ---- Block claims ----------------------------------------------------------------------------

#[test]
fn block_claims_exclude_other_stores_and_are_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(4 * BS, 30);
    let id = sha256_id(&data);
    // Two Stores on one directory behave like two processes.
    let (a, b) = (store(&dir), store(&dir));
    let ha = a.create_blob(&id, data.len() as u64, BS, true).unwrap();
    let hb = b.open_blob(&id).unwrap().unwrap();

    let claim = ha.try_claim_block(1).unwrap().expect("free block");
    assert_eq!(claim.block(), 1);
    assert!(hb.try_claim_block(1).unwrap().is_none(), "other store");
    // Every claim has its own descriptor: the same handle cannot claim a block twice either.
    assert!(ha.try_claim_block(1).unwrap().is_none(), "same handle");
    // Other blocks are independent.
    let other = hb.try_claim_block(2).unwrap().expect("block 2 is free");
    assert!(ha.try_claim_block(2).unwrap().is_none());
    // Claims never get in the way of bitmap updates (they lock other byte ranges).
    fill_block(&hb, &data, 1);
    fill_block(&ha, &data, 2);
    assert!(ha.is_present(2));

    drop(claim);
    let again = hb.try_claim_block(1).unwrap().expect("released on drop");
    drop(again);
    drop(other);
    assert!(ha.try_claim_block(2).unwrap().is_some());
    assert!(matches!(
        ha.try_claim_block(4),
        Err(StoreError::BlockOutOfRange { block: 4, .. })
    ));
    // The claim lock bytes lie far beyond any header byte.
    assert!(CLAIM_LOCK_BASE > ha.layout().data_offset() + ha.size());
}

#[test]
fn a_block_claim_of_another_process_is_refused_until_that_process_dies() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let blob = s.create_blob(&claim_id(), 8 * BS, BS, true).unwrap();
    let mut child = spawn_child("claim", dir.path());
    let marker = dir.path().join("claimed");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "child never claimed");
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        blob.try_claim_block(3).unwrap().is_none(),
        "held by the child"
    );
    assert!(blob.try_claim_block(4).unwrap().is_some());
    child.kill().unwrap(); // SIGKILL: the kernel releases the dead process's locks
    child.wait().unwrap();
    assert!(blob.try_claim_block(3).unwrap().is_some());
}

/// Descriptors of this process open on the inode of `blob`.
fn descriptors_on(blob: &BlobFile) -> usize {
    use std::os::unix::fs::MetadataExt;
    let target = fs::metadata(blob.path()).unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| fs::metadata(e.path()).ok())
        .filter(|m| m.dev() == target.dev() && m.ino() == target.ino())
        .count()
}

#[test]
fn claiming_hundreds_of_blocks_takes_one_extra_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let blob = s.create_blob(&claim_id(), 600 * BS, BS, true).unwrap();
    let before = descriptors_on(&blob);
    let claims: Vec<BlockClaim> = (0..512)
        .map(|b| blob.try_claim_block(b).unwrap().expect("free"))
        .collect();
    assert_eq!(descriptors_on(&blob), before + 1);
    // Every one of them still excludes a second claim, here and from another store.
    let other = store(&dir).open_blob(&claim_id()).unwrap().unwrap();
    assert!(blob.try_claim_block(100).unwrap().is_none());
    assert!(other.try_claim_block(100).unwrap().is_none());
    drop(claims);
    assert!(other.try_claim_block(100).unwrap().is_some());
    assert!(blob.try_claim_block(101).unwrap().is_some());
}

// ---- Eviction across processes ----------------------------------------------------------------

#[test]
fn a_blob_another_process_has_open_is_not_removed_until_that_process_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(4 * BS, 33);
    let blob = s
        .create_blob(&claim_id(), data.len() as u64, BS, true)
        .unwrap();
    for block in 0..blob.block_count() {
        fill_block(&blob, &data, block);
    }
    drop(blob);
    let mut child = spawn_child("hold", dir.path());
    let marker = dir.path().join("held");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "child never opened the blob"
        );
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(s.is_in_use(&claim_id()).unwrap());
    assert_eq!(
        s.remove_unused(&claim_id()).unwrap(),
        Removal::InUse { root: 0 },
        "a blob another process reads must stay"
    );
    assert!(s.open_blob(&claim_id()).unwrap().is_some());
    child.kill().unwrap(); // its locks go with it
    child.wait().unwrap();
    assert!(!s.is_in_use(&claim_id()).unwrap());
    let removal = s.remove_unused(&claim_id()).unwrap();
    assert!(removal.freed() >= data.len() as u64, "{removal:?}");
    assert!(s.open_blob(&claim_id()).unwrap().is_none());
}
