//! Deleting blobs for eviction: never while a handle has them open (in this `Store` or another
//! one, which behaves like another process), every replica, and what each copy occupies.

use std::sync::Arc;

use super::tests::{content, fill_block, sha256_id, store, BS};
use super::*;

fn filled(s: &Store, seed: u64, blocks: u64) -> (BlobId, Arc<BlobFile>, Vec<u8>) {
    let data = content(blocks * BS, seed);
    let id = sha256_id(&data);
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    for block in 0..blob.block_count() {
        fill_block(&blob, &data, block);
    }
    (id, blob, data)
}

#[test]
fn an_open_handle_keeps_its_blob_and_a_closed_one_is_removed_with_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let (id, blob, data) = filled(&s, 1, 4);
    let path = blob.path().to_path_buf();
    assert!(s.is_in_use(&id).unwrap());
    assert_eq!(s.remove_unused(&id).unwrap(), Removal::InUse { root: 0 });
    assert!(path.exists(), "a blob being read was deleted");
    // The reader still reads every byte.
    assert_eq!(&blob.read_verified(0, data.len()).unwrap()[..], &data[..]);
    drop(blob);
    let removal = s.remove_unused(&id).unwrap();
    assert!(!path.exists());
    assert!(removal.freed() >= data.len() as u64, "{removal:?}");
    assert_eq!(s.remove_unused(&id).unwrap(), Removal::Absent);
    assert!(s.open_blob(&id).unwrap().is_none());
}

#[test]
fn a_handle_of_another_store_on_the_same_directory_keeps_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (store(&dir), store(&dir));
    let (id, blob, _) = filled(&a, 2, 2);
    drop(blob);
    let held = b.open_blob(&id).unwrap().unwrap();
    assert_eq!(a.remove_unused(&id).unwrap(), Removal::InUse { root: 0 });
    drop(held);
    assert!(matches!(
        a.remove_unused(&id).unwrap(),
        Removal::Removed { .. }
    ));
    assert!(
        b.open_blob(&id).unwrap().is_none(),
        "the other store sees it gone"
    );
}

#[test]
fn a_blob_being_created_is_in_use_from_the_moment_it_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (store(&dir), store(&dir));
    let id = sha256_id(b"new blob");
    let created = a.create_blob(&id, 3 * BS, BS, true).unwrap();
    assert_eq!(b.remove_unused(&id).unwrap(), Removal::InUse { root: 0 });
    drop(created);
    assert!(b.remove_unused(&id).unwrap().freed() > 0);
}

#[test]
fn removal_deletes_every_replica_or_none() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let roots: Vec<_> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let s = Store::open_roots(&roots, 2, Durability::Os).unwrap();
    let (id, blob, _) = filled(&s, 3, 3);
    drop(blob);
    assert_eq!(s.replicate(&id).unwrap(), 1);
    assert_eq!(s.allocations(&id).len(), 2);
    // A second store holds the copy on one root only: nothing at all may go.
    let other = Store::open_roots(&roots, 2, Durability::Os).unwrap();
    let held = other.open_blob(&id).unwrap().unwrap();
    assert!(matches!(
        s.remove_unused(&id).unwrap(),
        Removal::InUse { .. }
    ));
    assert_eq!(s.allocations(&id).len(), 2, "a replica was deleted anyway");
    drop(held);
    let Removal::Removed { freed } = s.remove_unused(&id).unwrap() else {
        panic!("not removed");
    };
    assert_eq!(freed.len(), 2, "{freed:?}");
    assert!(s.allocations(&id).is_empty());
}

#[test]
fn a_partly_filled_blob_counts_only_the_blocks_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let data = content(64 * BS, 4);
    let id = sha256_id(&data);
    let blob = s.create_blob(&id, data.len() as u64, BS, true).unwrap();
    for block in [0, 10, 63] {
        fill_block(&blob, &data, block);
    }
    let estimate = blob.allocated_estimate();
    assert_eq!(estimate, blob.layout().data_offset() + 3 * BS);
    let on_disk = s.allocations(&id)[0].1;
    assert!(
        on_disk < 8 * BS,
        "a sparse file takes {on_disk} bytes on disk"
    );
    assert!(on_disk >= 3 * BS, "{on_disk}");
    let (listed, roots) = s.list_allocated().unwrap();
    assert_eq!(roots, [0]);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].size,
        data.len() as u64,
        "the logical size comes from the header"
    );
    assert_eq!(listed[0].allocated, on_disk);
}

#[test]
fn room_needed_counts_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(1, Durability::Os);
    options.reserve_min_bytes = 100;
    options.reserve_percent = 0;
    options.space_probe = Some(Arc::new(|_| {
        Ok(FsSpace {
            free: 1000,
            total: 10_000,
        })
    }));
    let s = Store::open_with(&[dir.path().to_path_buf()], options).unwrap();
    assert_eq!(s.room_needed(0, 500), Some(0));
    assert_eq!(s.room_needed(0, 950), Some(50));
    assert_eq!(s.room_needed(1, 1), None);
}
