//! Behaviour tests of several storage roots: placement, replicas, failing and full roots,
//! the content-addressed flag, and write failures for lack of space.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::fsutil::faults;
use super::tests::{content, disk_bitmap_byte, fill_all, fill_block, sha256_id, BS};
use super::*;

/// `n` root directories `r0..` inside a temp dir (not created: the store creates them).
fn root_dirs(n: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let roots = (0..n).map(|i| dir.path().join(format!("r{i}"))).collect();
    (dir, roots)
}

/// Options for tests: no reserve, and unhealthy roots are re-probed only on request.
fn opts(replicas: usize) -> StoreOptions {
    StoreOptions {
        reserve_min_bytes: 0,
        reserve_percent: 0,
        reprobe_after: Duration::from_secs(3600),
        ..StoreOptions::new(replicas, Durability::Os)
    }
}

fn open(roots: &[PathBuf], options: StoreOptions) -> Store {
    Store::open_with(roots, options).unwrap()
}

/// A free-space probe reporting 0 bytes free on the roots in the returned set, 1 TiB on
/// the others.
fn fake_space() -> (SpaceProbe, Arc<Mutex<HashSet<PathBuf>>>) {
    let full = Arc::new(Mutex::new(HashSet::<PathBuf>::new()));
    let f = full.clone();
    let probe: SpaceProbe = Arc::new(move |p: &Path| {
        let total = 1u64 << 40;
        let free = if f.lock().contains(p) { 0 } else { total };
        Ok(FsSpace { free, total })
    });
    (probe, full)
}

/// Content (and its sha256 id) whose placement satisfies `pred`.
fn placed(s: &Store, len: u64, pred: impl Fn(&[usize]) -> bool) -> (Vec<u8>, BlobId) {
    for seed in 1000.. {
        let data = content(len, seed);
        let id = sha256_id(&data);
        if pred(&s.placement(&id)) {
            return (data, id);
        }
    }
    unreachable!()
}

/// A complete blob of `len` bytes, created (on the first usable placement root) and filled.
fn complete_blob(s: &Store, data: &[u8], id: &BlobId) -> Arc<BlobFile> {
    let blob = s.create_blob(id, data.len() as u64, BS, true).unwrap();
    fill_all(&blob, data);
    assert!(blob.is_complete());
    blob
}

/// Opens `root` alone and checks that its copy of `id` holds exactly `data`.
fn assert_copy_on(root: &Path, id: &BlobId, data: &[u8]) {
    let s = Store::open(root, Durability::Os).unwrap();
    let blob = s
        .open_blob(id)
        .unwrap()
        .unwrap_or_else(|| panic!("no copy of {id} on {root:?}"));
    assert!(blob.is_complete(), "copy on {root:?} is partial");
    assert_eq!(&blob.read_verified(0, data.len()).unwrap()[..], data);
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);
}

fn tmp_entries(root: &Path) -> usize {
    fs::read_dir(root.join("tmp")).unwrap().count()
}

/// Replaces the directory `root` with a plain file (what `chmod 000` would do for a
/// non-root user: the root becomes unusable; tests may run as root, where chmod does not
/// deny access).
fn break_root(root: &Path) {
    fs::remove_dir_all(root).unwrap();
    fs::write(root, b"not a directory").unwrap();
}

fn repair_root(root: &Path) {
    fs::remove_file(root).unwrap();
    fs::create_dir(root).unwrap();
}

fn flip_byte(blob: &BlobFile, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(blob.path())
        .unwrap();
    let at = blob.layout().data_offset() + offset;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

// ---- Placement -------------------------------------------------------------------------------

#[test]
fn rendezvous_placement_is_stable_and_spreads_blobs_across_roots() {
    let (_dir, roots) = root_dirs(5);
    let four = &roots[..4];
    let a = open(four, opts(2));
    let b = open(four, opts(2)); // another process / a restart
    let ids: Vec<BlobId> = (0..2000u32).map(|i| sha256_id(&i.to_le_bytes())).collect();
    let mut first = [0usize; 4];
    for id in &ids {
        let p = a.placement(id);
        assert_eq!(p, b.placement(id), "placement differs between stores");
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3], "not a permutation: {p:?}");
        first[p[0]] += 1;
    }
    // 500 expected per root; the standard deviation is about 19.
    assert!(first.iter().all(|&n| (400..600).contains(&n)), "{first:?}");

    // Adding a root moves only the blobs it now wins (~1/5), and keeps the others' order.
    let c = open(&roots, opts(2));
    let mut moved = 0;
    for id in &ids {
        let old = a.placement(id);
        let new = c.placement(id);
        let without_new: Vec<usize> = new.iter().copied().filter(|&r| r != 4).collect();
        assert_eq!(without_new, old, "relative order of the old roots changed");
        if new[0] != old[0] {
            assert_eq!(new[0], 4);
            moved += 1;
        }
    }
    assert!((280..520).contains(&moved), "moved {moved} of 2000");

    // Placement follows the root paths, not their order in the configuration.
    let reversed: Vec<PathBuf> = four.iter().rev().cloned().collect();
    let d = open(&reversed, opts(2));
    for id in ids.iter().take(100) {
        let by_path = |s: &Store| -> Vec<PathBuf> {
            let paths = s.root_paths();
            s.placement(id).iter().map(|&i| paths[i].clone()).collect()
        };
        assert_eq!(by_path(&a), by_path(&d));
    }
}

// ---- Replication -----------------------------------------------------------------------------

#[test]
fn a_complete_blob_is_replicated_to_every_home_root() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(3 * BS + 123, 1);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let blob = complete_blob(&s, &data, &id);
    assert_eq!(blob.root_index(), p[0], "created on the first home");
    let mut expected = vec![ReplicaState::Missing; 2];
    expected[p[0]] = ReplicaState::Complete { verified: false };
    assert_eq!(s.replica_status(&id), expected);

    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_eq!(
        s.replica_status(&id),
        vec![ReplicaState::Complete { verified: false }; 2]
    );
    assert_eq!(s.replicate(&id).unwrap(), 0, "nothing left to do");
    for root in &roots {
        assert_copy_on(root, &id, &data);
        assert_eq!(tmp_entries(root), 0);
    }
    // A partial blob is not replicated.
    let part = content(2 * BS, 2);
    let part_id = sha256_id(&part);
    let pb = s
        .create_blob(&part_id, part.len() as u64, BS, true)
        .unwrap();
    fill_block(&pb, &part, 0);
    assert_eq!(s.replicate(&part_id).unwrap(), 0);
    assert_eq!(
        s.replica_status(&part_id)[pb.root_index()],
        ReplicaState::Partial {
            present: 1,
            blocks: 2
        }
    );
}

#[test]
fn replicate_copies_the_verified_and_content_addressed_flags() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(2 * BS + 5, 3);
    let verified_id = sha256_id(&data);
    let blob = complete_blob(&s, &data, &verified_id);
    blob.mark_verified().unwrap();
    let private_id = sha256_id(b"a private id, not the hash of anything stored");
    let private = s
        .create_blob(&private_id, data.len() as u64, BS, false)
        .unwrap();
    fill_all(&private, &data);
    assert_eq!(s.replicate(&verified_id).unwrap(), 1);
    assert_eq!(s.replicate(&private_id).unwrap(), 1);
    for root in &roots {
        let one = Store::open(root, Durability::Os).unwrap();
        let v = one.open_blob(&verified_id).unwrap().unwrap();
        assert!(v.is_verified() && v.is_content_addressed(), "{root:?}");
        let p = one.open_blob(&private_id).unwrap().unwrap();
        assert!(!p.is_verified() && !p.is_content_addressed(), "{root:?}");
        assert_eq!(p.verify_content().unwrap(), ContentCheck::NotApplicable);
        assert_eq!(&p.read_verified(0, data.len()).unwrap()[..], &data[..]);
    }
    assert_eq!(
        s.replica_status(&verified_id),
        vec![ReplicaState::Complete { verified: true }; 2]
    );
}

#[test]
fn open_blob_uses_the_other_copy_when_a_root_directory_is_deleted_and_replicate_remakes_it() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(4 * BS + 1, 4);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let first = complete_blob(&s, &data, &id);
    assert_eq!(s.replicate(&id).unwrap(), 1);
    drop(first);

    // The first home disappears.
    fs::remove_dir_all(&roots[p[0]]).unwrap();
    let blob = s.open_blob(&id).unwrap().expect("the other copy");
    assert_eq!(blob.root_index(), p[1]);
    assert_eq!(&blob.read_verified(0, data.len()).unwrap()[..], &data[..]);
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);
    let status = s.roots();
    assert!(!status[p[0]].healthy && status[p[1]].healthy);
    assert!(matches!(
        s.replica_status(&id)[p[0]],
        ReplicaState::Unreadable { .. }
    ));
    // Nothing can be copied there while it is gone, and it is never re-created by the store.
    assert_eq!(s.replicate(&id).unwrap(), 0);
    s.probe_roots();
    assert!(!roots[p[0]].exists());

    // The disk is back (empty): after a probe the copy is re-made there.
    fs::create_dir(&roots[p[0]]).unwrap();
    s.probe_roots();
    assert!(s.roots()[p[0]].healthy);
    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_copy_on(&roots[p[0]], &id, &data);
    assert_eq!(s.open_blob(&id).unwrap().unwrap().root_index(), p[0]);
}

#[test]
fn open_blob_skips_a_root_replaced_by_a_file() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(2 * BS, 5);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    complete_blob(&s, &data, &id);
    s.replicate(&id).unwrap();

    break_root(&roots[p[0]]);
    let blob = s.open_blob(&id).unwrap().unwrap();
    assert_eq!(blob.root_index(), p[1]);
    assert_eq!(&blob.read_verified(0, data.len()).unwrap()[..], &data[..]);
    assert!(!s.roots()[p[0]].healthy);
    assert!(s.roots()[p[0]].problem.is_some());

    // A restart with the broken root: the store opens on the other one.
    let s2 = open(&roots, opts(2));
    assert!(!s2.roots()[p[0]].healthy);
    let blob = s2.open_blob(&id).unwrap().unwrap();
    assert_eq!(blob.root_index(), p[1]);
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);
    // New blobs go to the healthy root.
    let other = content(BS, 6);
    let other_id = sha256_id(&other);
    let created = complete_blob(&s2, &other, &other_id);
    assert_eq!(created.root_index(), p[1]);
    assert_eq!(s2.list_blobs().unwrap().len(), 2);

    repair_root(&roots[p[0]]);
    s2.probe_roots();
    assert!(s2.roots()[p[0]].healthy);
    assert_eq!(s2.replicate(&id).unwrap(), 1);
    assert_copy_on(&roots[p[0]], &id, &data);
}

fn eio(blob: &BlobFile) -> StoreError {
    StoreError::io("read block data", blob.path())(std::io::Error::from_raw_os_error(libc::EIO))
}

#[test]
fn failover_returns_another_copy_and_marks_the_root_unhealthy_after_repeated_errors() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(3 * BS, 7);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    complete_blob(&s, &data, &id);
    s.replicate(&id).unwrap();
    let first = s.open_blob(&id).unwrap().unwrap();
    assert_eq!(first.root_index(), p[0]);

    let other = s
        .failover(&id, &first, &eio(&first))
        .unwrap()
        .expect("second copy");
    assert_eq!(other.root_index(), p[1]);
    assert!(other.is_complete());
    assert_eq!(&other.read_verified(0, data.len()).unwrap()[..], &data[..]);
    // One bad file does not take the disk out of service...
    assert!(s.roots()[p[0]].healthy);
    for _ in 1..ROOT_ERRORS_BEFORE_UNHEALTHY {
        let again = s.open_blob(&id).unwrap().unwrap();
        let on_first = if again.root_index() == p[0] {
            again
        } else {
            Arc::clone(&first)
        };
        s.failover(&id, &on_first, &eio(&on_first)).unwrap();
    }
    // ...repeated errors do.
    let st = &s.roots()[p[0]];
    assert!(!st.healthy);
    assert!(st.problem.as_deref().unwrap().contains("I/O error"));
    // While unhealthy, the root is not used.
    assert_eq!(s.open_blob(&id).unwrap().unwrap().root_index(), p[1]);
    // The root itself is fine: a probe brings it back.
    s.probe_roots();
    assert_eq!(s.open_blob(&id).unwrap().unwrap().root_index(), p[0]);

    // With a single copy, the same file is opened afresh (no other copy to fail over to).
    let one = Store::open(&roots[p[0]], Durability::Os).unwrap();
    let only = one.open_blob(&id).unwrap().unwrap();
    let same = one
        .failover(&id, &only, &eio(&only))
        .unwrap()
        .expect("reopened");
    assert!(!Arc::ptr_eq(&same, &only));
    assert_eq!(same.root_index(), 0);
    // A root-wide error takes the root out at once.
    let gone = StoreError::RootUnavailable {
        path: roots[p[0]].clone(),
        reason: "blobs/ directory missing".into(),
    };
    assert!(one.failover(&id, &same, &gone).unwrap().is_none());
    assert!(!one.roots()[0].healthy);
}

#[test]
fn failover_never_returns_a_copy_of_another_size() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(1));
    let data = content(3 * BS, 8);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let first = complete_blob(&s, &data, &id);
    assert_eq!(first.root_index(), p[0]);
    // A stale copy of another size sits on the other root (written when the file differed).
    let stale = Store::open(&roots[p[1]], Durability::Os).unwrap();
    stale.create_blob(&id, 5 * BS, BS, true).unwrap();

    let other = s.failover(&id, &first, &eio(&first)).unwrap();
    let other = other.expect("the file itself, reopened");
    assert_eq!(other.size(), data.len() as u64);
    assert_eq!(other.root_index(), p[0]);
    assert!(
        !blob_exists(&roots[p[1]], &id),
        "the copy of another size is removed"
    );
}

fn blob_exists(root: &Path, id: &BlobId) -> bool {
    let hex = id.as_str();
    root.join("blobs")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(hex)
        .exists()
}

#[test]
fn an_unhealthy_root_is_reprobed_after_the_interval() {
    let (_dir, roots) = root_dirs(2);
    let options = StoreOptions {
        reprobe_after: Duration::from_secs(1),
        ..opts(1)
    };
    let s = open(&roots, options);
    break_root(&roots[0]);
    assert!(s.list_blobs().is_ok());
    let id = sha256_id(b"probe");
    // Any use finds root 0 broken.
    s.open_blob(&id).unwrap();
    assert!(!s.roots()[0].healthy);
    repair_root(&roots[0]);
    // Not yet: it is not re-probed before the interval...
    assert!(!s.roots()[0].healthy);
    std::thread::sleep(Duration::from_millis(1100));
    // ...but afterwards it is, and it is usable again.
    assert!(s.roots()[0].healthy);
    assert!(roots[0].join("blobs").is_dir() && roots[0].join("tmp").is_dir());
}

#[test]
fn a_root_that_comes_back_on_another_device_stays_unhealthy() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(1));
    // As if the disk had been unmounted, revealing the mount point's directory.
    s.roots[0].set_recorded_dev(0xdead_beef);
    s.roots[0].mark_unhealthy("test".into());
    s.probe_roots();
    let st = &s.roots()[0];
    assert!(!st.healthy);
    assert!(st.problem.as_deref().unwrap().contains("device"), "{st:?}");
    // A new store (an explicit restart) accepts it.
    assert!(open(&roots, opts(1)).roots()[0].healthy);
}

// ---- Free space ------------------------------------------------------------------------------

#[test]
fn a_root_without_space_is_skipped_for_new_blobs() {
    let (_dir, roots) = root_dirs(2);
    let (probe, full) = fake_space();
    let s = open(
        &roots,
        StoreOptions {
            space_probe: Some(probe),
            ..StoreOptions::new(1, Durability::Os)
        },
    );
    let (data, id) = placed(&s, 2 * BS, |p| p[0] == 0);
    full.lock().insert(roots[0].clone());
    let st = s.roots();
    assert!(!st[0].accepts_new_blobs && st[0].healthy);
    assert!(st[1].accepts_new_blobs);
    let blob = complete_blob(&s, &data, &id);
    assert_eq!(blob.root_index(), 1, "the full first home was skipped");
    assert!(!s.blob_path(0, &id).unwrap().exists());

    // Space comes back: the existing copy (on a non-home root) is reused, not duplicated.
    full.lock().clear();
    drop(blob);
    let again = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    assert_eq!(again.root_index(), 1);
    assert!(again.is_complete());
    assert!(!s.blob_path(0, &id).unwrap().exists());

    // Every root full: a clean NoSpace error and no file anywhere.
    full.lock().extend(roots.iter().cloned());
    let other = sha256_id(b"no room");
    let err = s.create_blob(&other, 10, BS, true).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(matches!(err, StoreError::NoSpace { needed: 10, .. }));
    for (r, root) in roots.iter().enumerate() {
        assert!(!s.blob_path(r, &other).unwrap().exists());
        assert_eq!(tmp_entries(root), 0);
    }
}

#[test]
fn the_reserve_is_the_larger_of_a_floor_and_a_percentage() {
    let (_dir, roots) = root_dirs(1);
    let (probe, _) = fake_space(); // 1 TiB free of 1 TiB
    let s = open(
        &roots,
        StoreOptions {
            space_probe: Some(probe),
            reserve_percent: 1,
            reserve_min_bytes: 256 << 20,
            ..StoreOptions::new(1, Durability::Os)
        },
    );
    assert_eq!(s.roots()[0].reserve_bytes, Some((1u64 << 40) / 100));
    assert_eq!(s.reserve(1 << 30), 256 << 20);
    // A blob that would eat into the reserve is refused.
    let err = s
        .create_blob(&sha256_id(b"huge"), (1 << 40) - (1 << 30), 1 << 30, true)
        .unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(s
        .create_blob(&sha256_id(b"fits"), 1 << 30, 1 << 30, true)
        .is_ok());
}

#[test]
fn roots_reports_health_and_free_space_of_real_file_systems() {
    let (_dir, roots) = root_dirs(1);
    let s = Store::open_roots(&roots, 1, Durability::Os).unwrap();
    let blob = s.create_blob(&sha256_id(b"x"), 10, BS, true).unwrap();
    let st = &s.roots()[0];
    assert_eq!(st.path, roots[0]);
    assert!(st.healthy && st.problem.is_none());
    let (free, total) = (st.free_bytes.unwrap(), st.total_bytes.unwrap());
    assert!(free > 0 && total >= free);
    assert!(st.reserve_bytes.unwrap() >= DEFAULT_RESERVE_MIN_BYTES);
    assert_eq!(st.open_blobs, 1);
    drop(blob);
    assert_eq!(s.roots()[0].open_blobs, 0);
}

#[test]
fn replicate_uses_the_next_root_when_a_home_root_is_full() {
    let (_dir, roots) = root_dirs(3);
    let (probe, full) = fake_space();
    let s = open(
        &roots,
        StoreOptions {
            space_probe: Some(probe),
            ..StoreOptions::new(2, Durability::Os)
        },
    );
    let data = content(2 * BS + 9, 8);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    complete_blob(&s, &data, &id);
    full.lock().insert(roots[p[1]].clone());
    assert_eq!(s.replicate(&id).unwrap(), 1);
    let st = s.replica_status(&id);
    assert_eq!(st[p[1]], ReplicaState::Missing);
    assert_eq!(st[p[2]], ReplicaState::Complete { verified: false });
    assert_copy_on(&roots[p[2]], &id, &data);
    // Once the home has room again, it gets its copy back (the spare copy stays).
    full.lock().clear();
    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_copy_on(&roots[p[1]], &id, &data);
    assert_eq!(s.replicate(&id).unwrap(), 0);
}

// ---- Choosing and repairing copies -----------------------------------------------------------

#[test]
fn open_blob_prefers_a_complete_copy_over_a_partial_one() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(4 * BS, 9);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    // A partial copy on the first home, a complete one on the second (made by a
    // single-root store on that directory).
    let partial = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    assert_eq!(partial.root_index(), p[0]);
    fill_block(&partial, &data, 0);
    let one = Store::open(&roots[p[1]], Durability::Os).unwrap();
    complete_blob(&one, &data, &id);
    let best = s.open_blob(&id).unwrap().unwrap();
    assert_eq!(best.root_index(), p[1]);
    assert!(best.is_complete());
    // create_blob reuses it too.
    let reused = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    assert!(Arc::ptr_eq(&best, &reused));
}

#[test]
fn replicate_completes_a_partial_copy_in_place() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(5 * BS + 77, 10);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let partial = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    fill_block(&partial, &data, 2);
    let one = Store::open(&roots[p[1]], Durability::Os).unwrap();
    complete_blob(&one, &data, &id);
    let inode = fs::metadata(partial.path()).unwrap();

    assert_eq!(s.replicate(&id).unwrap(), 1);
    // Same file, now complete: the partial copy's handle sees it too.
    let after = fs::metadata(partial.path()).unwrap();
    assert_eq!(FileIdentity::of(&inode), FileIdentity::of(&after));
    partial.reload_bitmap().unwrap();
    assert!(partial.is_complete());
    assert_eq!(partial.verify_content().unwrap(), ContentCheck::Match);
    assert_eq!(disk_bitmap_byte(&partial, 0), 0b11_1111);
}

#[test]
fn replicate_replaces_a_copy_of_the_wrong_size() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(2 * BS + 1, 22);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    complete_blob(&s, &data, &id);
    // A stray partial copy of another size on the second home.
    let one = Store::open(&roots[p[1]], Durability::Os).unwrap();
    let wrong = one.create_blob(&id, 5 * BS, BS, true).unwrap();
    wrong.put_block(0, &content(BS, 23)).unwrap();
    drop(wrong);
    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_copy_on(&roots[p[1]], &id, &data);
}

#[test]
fn replicate_never_copies_a_corrupt_block() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(3 * BS, 11);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let blob = complete_blob(&s, &data, &id);
    flip_byte(&blob, BS + 7);
    let err = s.replicate(&id).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    // No copy was published, nothing is left in tmp/, and the bad block is to be refetched.
    assert!(!s.blob_path(p[1], &id).unwrap().exists());
    assert_eq!(tmp_entries(&roots[p[1]]), 0);
    assert!(!blob.is_present(1));
    assert_eq!(s.replicate(&id).unwrap(), 0, "no complete copy left");
}

#[test]
fn replicate_into_a_partial_copy_never_copies_a_corrupt_block() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(4 * BS, 20);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let partial = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    assert_eq!(partial.root_index(), p[0]);
    fill_block(&partial, &data, 0);
    let one = Store::open(&roots[p[1]], Durability::Os).unwrap();
    let source = complete_blob(&one, &data, &id);
    flip_byte(&source, 2 * BS + 100);
    let err = s.replicate(&id).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    // Block 1 (good in the source) may have been copied; block 2 never.
    assert!(!partial.is_present(2) && !partial.is_complete());
    let fresh = Store::open(&roots[p[0]], Durability::Os).unwrap();
    let copy = fresh.open_blob(&id).unwrap().unwrap();
    assert!(!copy.is_present(2));
    for block in (0..4).filter(|&b| copy.is_present(b)) {
        let span = copy.block_span(block);
        let got = copy.read_verified(span.start, BS as usize).unwrap();
        assert_eq!(&got[..], &data[span.start as usize..span.end as usize]);
    }
}

#[test]
fn replicate_falls_back_to_another_source_when_one_is_corrupt() {
    let (_dir, roots) = root_dirs(3);
    let s = open(&roots, opts(3));
    let data = content(3 * BS + 50, 12);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let bad = complete_blob(&s, &data, &id);
    assert_eq!(bad.root_index(), p[0]);
    let one = Store::open(&roots[p[1]], Durability::Os).unwrap();
    complete_blob(&one, &data, &id);
    flip_byte(&bad, 2 * BS);
    // Root p[2] gets its copy from p[1] after p[0] fails its checksums.
    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_copy_on(&roots[p[2]], &id, &data);
    assert!(!bad.is_present(2));
    // The damaged copy is now partial, and the next replicate repairs it in place.
    assert!(matches!(
        s.replica_status(&id)[p[0]],
        ReplicaState::Partial { .. }
    ));
    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_copy_on(&roots[p[0]], &id, &data);
}

#[test]
fn replicate_never_resurrects_a_blob_removed_while_it_was_copied() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(2 * BS, 21);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    let src = complete_blob(&s, &data, &id);
    // Evicted after the copy started: the source handle still reads the unlinked file.
    s.remove_blob(&id).unwrap();
    let outcome = s.copy_new(&s.roots[p[1]], &src);
    assert!(matches!(
        outcome,
        Err(super::replica::CopyError::SourceGone)
    ));
    assert!(!s.blob_path(p[1], &id).unwrap().exists());
    assert_eq!(tmp_entries(&roots[p[1]]), 0);
    assert!(s.open_blob(&id).unwrap().is_none());
}

#[test]
fn concurrent_replicate_from_two_stores_publishes_one_copy() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(8 * BS, 13);
    let id = sha256_id(&data);
    complete_blob(&s, &data, &id);
    let made: usize = (0..2)
        .map(|_| {
            let roots = roots.clone();
            let id = id.clone();
            std::thread::spawn(move || open(&roots, opts(2)).replicate(&id).unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(made, 1);
    for root in &roots {
        assert_copy_on(root, &id, &data);
        assert_eq!(tmp_entries(root), 0);
    }
}

#[test]
fn remove_blob_removes_every_copy_and_list_blobs_unions_the_roots() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let a = content(BS, 14);
    let a_id = sha256_id(&a);
    complete_blob(&s, &a, &a_id);
    s.replicate(&a_id).unwrap();
    let b = content(BS, 15);
    let b_id = sha256_id(&b);
    let b_blob = complete_blob(&s, &b, &b_id);
    let mut both = vec![a_id.clone(), b_id.clone()];
    both.sort();
    assert_eq!(s.list_blobs().unwrap(), both);
    let home = b_blob.root_index();
    assert_eq!(s.list_blobs_on(home).unwrap(), both);
    assert_eq!(s.list_blobs_on(1 - home).unwrap(), vec![a_id.clone()]);
    assert!(s.list_blobs_on(2).is_err());

    s.remove_blob(&a_id).unwrap();
    assert!(s.open_blob(&a_id).unwrap().is_none());
    for r in 0..2 {
        assert!(!s.blob_path(r, &a_id).unwrap().exists());
    }
    assert_eq!(s.list_blobs().unwrap(), vec![b_id]);
    // A broken root does not stop removal elsewhere.
    break_root(&roots[home]);
    s.open_blob(&a_id).unwrap();
    assert!(s.remove_blob(&sha256_id(b"absent")).is_ok());
}

// ---- Configuration ---------------------------------------------------------------------------

#[test]
fn open_roots_rejects_bad_configurations() {
    let (dir, roots) = root_dirs(2);
    let invalid = |r: std::result::Result<Store, StoreError>| {
        matches!(r, Err(StoreError::InvalidConfig { .. }))
    };
    assert!(invalid(Store::open_roots(&roots, 0, Durability::Os)));
    assert!(invalid(Store::open_roots(&roots, 3, Durability::Os)));
    assert!(invalid(Store::open_roots(&[], 1, Durability::Os)));
    let dup = vec![roots[0].clone(), roots[0].join(".")];
    assert!(invalid(Store::open_roots(&dup, 1, Durability::Os)));
    // The same directory under two names.
    fs::create_dir(&roots[0]).unwrap();
    std::os::unix::fs::symlink(&roots[0], dir.path().join("alias")).unwrap();
    let alias = vec![roots[0].clone(), dir.path().join("alias")];
    assert!(invalid(Store::open_roots(&alias, 1, Durability::Os)));
    assert!(Store::open_roots(&roots, 2, Durability::Os).is_ok());
}

#[test]
fn open_roots_starts_without_a_broken_root_but_not_without_all() {
    let (_dir, roots) = root_dirs(2);
    fs::write(&roots[0], b"a file where a root should be").unwrap();
    let s = Store::open_roots(&roots, 1, Durability::Os).unwrap();
    let st = s.roots();
    assert!(!st[0].healthy && st[1].healthy);
    let blob = s.create_blob(&sha256_id(b"y"), 5, BS, true).unwrap();
    assert_eq!(blob.root_index(), 1);
    fs::remove_dir_all(&roots[1]).unwrap();
    fs::write(&roots[1], b"another file").unwrap();
    // No root can be listed: an error, not an empty cache.
    assert!(s.list_blobs().is_err());
    assert!(Store::open_roots(&roots, 1, Durability::Os).is_err());
    // One root: its error, as before.
    assert!(Store::open(&roots[0], Durability::Os).is_err());
}

// ---- Content-addressed flag ------------------------------------------------------------------

#[test]
fn a_blob_that_is_not_content_addressed_sets_flag_bit_1_and_is_never_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Durability::Os).unwrap();
    let data = content(2 * BS, 16);
    let private_id = sha256_id(b"hubcache-unverified\0some/repo\0sha\0file.bin");
    let blob = s
        .create_blob(&private_id, data.len() as u64, BS, false)
        .unwrap();
    assert!(!blob.is_content_addressed());
    fill_all(&blob, &data);
    // The content does not hash to the id, yet this is no mismatch: there is nothing to check.
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::NotApplicable);
    let flags = |p: &Path| {
        let mut b = [0u8; 4];
        fs::File::open(p)
            .unwrap()
            .read_exact_at(&mut b, 12)
            .unwrap();
        u32::from_le_bytes(b)
    };
    assert_eq!(flags(blob.path()), FLAG_NOT_CONTENT_ADDRESSED);
    // Persisted.
    let again = Store::open(dir.path(), Durability::Os)
        .unwrap()
        .open_blob(&private_id)
        .unwrap()
        .unwrap();
    assert!(!again.is_content_addressed());
    assert_eq!(again.verify_content().unwrap(), ContentCheck::NotApplicable);

    // A content-addressed blob keeps bit 1 clear and is hashed.
    let id = sha256_id(&data);
    let ca = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    fill_all(&ca, &data);
    assert!(ca.is_content_addressed());
    assert_eq!(flags(ca.path()), 0);
    assert_eq!(ca.verify_content().unwrap(), ContentCheck::Match);
}

#[test]
fn create_blob_updates_a_stale_content_addressed_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Durability::Fsync).unwrap();
    let data = content(BS, 17);
    let id = sha256_id(&data);
    let blob = complete_blob(&s, &data, &id);
    blob.mark_verified().unwrap();
    // A file written before the flag existed (bit 1 clear) for a private id.
    let b2 = s.create_blob(&id, data.len() as u64, BS, false).unwrap();
    assert!(Arc::ptr_eq(&blob, &b2));
    assert!(!b2.is_content_addressed() && !b2.is_verified());
    let reopened = Store::open(dir.path(), Durability::Os)
        .unwrap()
        .open_blob(&id)
        .unwrap()
        .unwrap();
    assert!(!reopened.is_content_addressed());
    // And back.
    s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    assert!(blob.is_content_addressed());
    assert_eq!(blob.verify_content().unwrap(), ContentCheck::Match);
}

// ---- Disk full -------------------------------------------------------------------------------

#[test]
fn is_no_space_recognises_enospc_edquot_and_no_space() {
    let io =
        |errno| StoreError::io("write block data", "/x")(std::io::Error::from_raw_os_error(errno));
    assert!(io(libc::ENOSPC).is_no_space());
    assert!(io(libc::EDQUOT).is_no_space());
    assert!(!io(libc::EIO).is_no_space());
    assert!(io(libc::EIO).is_io_error());
    assert!(!io(libc::ENOSPC).is_io_error());
    assert!(StoreError::NoSpace {
        needed: 1,
        detail: String::new()
    }
    .is_no_space());
    assert!(!StoreError::NotPresent {
        path: "/x".into(),
        block: 0
    }
    .is_no_space());
}

#[test]
fn a_write_that_fails_for_lack_of_space_never_leaves_a_block_present() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * BS, 18);
    let id = sha256_id(&data);
    let block = |b: u64| &data[(b * BS) as usize..((b + 1) * BS) as usize];
    for durability in [Durability::Os, Durability::Fsync] {
        let s = Store::open(dir.path(), durability).unwrap();
        let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
        for (op, errno) in [
            ("write block data", libc::ENOSPC),
            ("write page checksums", libc::EDQUOT),
            ("write bitmap byte", libc::ENOSPC),
        ] {
            faults::fail_next_write(Some(op), errno);
            let err = blob.put_block(1, block(1)).unwrap_err();
            faults::clear();
            assert!(err.is_no_space(), "{op}: {err}");
            assert!(!blob.is_present(1), "{op}");
            assert_eq!(disk_bitmap_byte(&blob, 0) & 0b10, 0, "{op}");
            let other = Store::open(dir.path(), Durability::Os).unwrap();
            assert!(
                !other.open_blob(&id).unwrap().unwrap().is_present(1),
                "{op}"
            );
        }
        // Space freed: the same block commits and reads back.
        blob.put_block(1, block(1)).unwrap();
        assert_eq!(&blob.read_verified(BS, BS as usize).unwrap()[..], block(1));
        s.remove_blob(&id).unwrap();
    }
}

#[test]
fn create_blob_moves_to_the_next_root_when_a_write_fails_for_lack_of_space() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(1));
    let (_, id) = placed(&s, BS, |p| p[0] == 0);
    faults::fail_next_write(Some("write blob header"), libc::ENOSPC);
    let blob = s.create_blob(&id, BS, BS, true).unwrap();
    faults::clear();
    assert_eq!(blob.root_index(), 1);
    assert!(!s.blob_path(0, &id).unwrap().exists());
    assert_eq!(tmp_entries(&roots[0]), 0);
    assert!(s.roots()[0].healthy, "full is not broken");

    // With one root, a clean NoSpace error and nothing left behind.
    let one = Store::open(&roots[0], Durability::Os).unwrap();
    let other = sha256_id(b"other");
    faults::fail_next_write(Some("write blob header"), libc::ENOSPC);
    let err = one.create_blob(&other, BS, BS, true).unwrap_err();
    faults::clear();
    assert!(err.is_no_space(), "{err}");
    assert!(!one.blob_path(0, &other).unwrap().exists());
    assert_eq!(tmp_entries(&roots[0]), 0);
}

#[test]
fn replicate_skips_a_root_whose_write_fails_for_lack_of_space() {
    let (_dir, roots) = root_dirs(2);
    let s = open(&roots, opts(2));
    let data = content(3 * BS, 19);
    let id = sha256_id(&data);
    let p = s.placement(&id);
    complete_blob(&s, &data, &id);
    faults::fail_next_write(Some("write block data"), libc::ENOSPC);
    assert_eq!(s.replicate(&id).unwrap(), 0);
    faults::clear();
    assert!(!s.blob_path(p[1], &id).unwrap().exists());
    assert_eq!(tmp_entries(&roots[p[1]]), 0);
    assert!(s.roots()[p[1]].healthy);
    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_copy_on(&roots[p[1]], &id, &data);
}
