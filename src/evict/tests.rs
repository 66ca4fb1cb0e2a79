use std::sync::Arc;
use std::time::Duration;

use hubcache_plugin_api::EvictionPolicy;

use super::*;
use crate::config::RepoGlob;

const MIN: u64 = 60_000;

fn id(n: u8) -> BlobId {
    BlobId::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn lru() -> Arc<dyn EvictionPolicy> {
    Arc::new(hubcache_plugin_lru::Lru)
}

fn pins(globs: &[&str]) -> Vec<RepoGlob> {
    globs.iter().map(|g| RepoGlob::parse(g).unwrap()).collect()
}

fn download(n: u64) -> DownloadId {
    DownloadId(n)
}

fn victims(plan: &Plan) -> Vec<BlobId> {
    plan.victims.iter().map(|v| v.id.clone()).collect()
}

fn nothing_in_use(_: &BlobId) -> bool {
    false
}

/// Four blobs of 100 bytes on root 0, filled a minute apart, read in the order 3, 1, 4, 2.
fn four_blobs(policy: Arc<dyn EvictionPolicy>) -> EvictionIndex {
    let index = EvictionIndex::new(policy, &[]);
    for n in 1..=4u8 {
        index.record_fill(&id(n), 100, 0, 100, u64::from(n) * MIN);
    }
    for (i, n) in [3u8, 1, 4, 2].into_iter().enumerate() {
        index.record_read(&id(n), download(u64::from(n)), 10 * MIN + i as u64 * MIN);
    }
    index
}

#[test]
fn lru_frees_just_enough_bytes_least_recently_read_first() {
    let index = four_blobs(lru());
    let plan = index.plan(&PlanRequest::free(150, 20 * MIN), &nothing_in_use);
    assert_eq!(victims(&plan), [id(3), id(1)]);
    assert_eq!(plan.freed, 200);
    assert!(!plan.is_short());
    assert!(!plan.blocked.any());
    // The index deleted nothing.
    assert_eq!(index.usage().blobs, 4);
}

#[test]
fn each_policy_picks_its_own_victim() {
    let cases: [(Arc<dyn EvictionPolicy>, u8); 3] = [
        (Arc::new(hubcache_plugin_lru::Lru), 3),
        (Arc::new(hubcache_plugin_fifo::Fifo), 1),
        (Arc::new(hubcache_plugin_large_first::LargeFirst), 2),
    ];
    for (policy, expected) in cases {
        let kind = policy.kind();
        let index = four_blobs(policy);
        // Blob 2 takes the most disk.
        index.record_fill(&id(2), 500, 0, 500, 2 * MIN);
        let plan = index.plan(&PlanRequest::free(1, 20 * MIN), &nothing_in_use);
        assert_eq!(victims(&plan), [id(expected)], "{kind}");
    }
}

#[test]
fn lfuda_keeps_the_most_downloaded_and_ages_with_evictions() {
    let index = EvictionIndex::new(Arc::new(hubcache_plugin_lfuda::Lfuda::new()), &[]);
    for n in 1..=3u8 {
        index.record_fill(&id(n), 100, 0, 100, MIN);
    }
    for (n, downloads) in [(1u8, 5u64), (2, 1), (3, 3)] {
        for d in 0..downloads {
            index.record_read(&id(n), download(d), 2 * MIN);
        }
    }
    let plan = index.plan(&PlanRequest::free(1, 3 * MIN), &nothing_in_use);
    assert_eq!(victims(&plan), [id(2)]);
    let evicted = index.evicted(&id(2)).unwrap();
    assert_eq!(evicted.hits, 1);
    // L is now 1: a new blob read once ranks as 1 + 1 = 2, below blob 3 (3 hits, key 3).
    index.record_fill(&id(4), 100, 0, 100, 4 * MIN);
    index.record_read(&id(4), download(9), 4 * MIN);
    assert_eq!(index.get(&id(4)).unwrap().stats.policy_key, 2);
    let plan = index.plan(&PlanRequest::free(250, 5 * MIN), &nothing_in_use);
    assert_eq!(victims(&plan), [id(4), id(3), id(1)]);
}

#[test]
fn in_use_pinned_and_young_blobs_stay_and_are_counted() {
    let index = four_blobs(lru());
    index.add_repo(&id(1), "meta-llama/Llama-3-8B");
    index.add_repo(&id(1), "acme/copy");
    index.set_pins(&pins(&["meta-llama/*"]));
    index.record_fill(&id(5), 100, 0, 100, 19 * MIN);
    let in_use = |b: &BlobId| *b == id(3);
    let request = PlanRequest::free(10_000, 20 * MIN).with_min_age(Duration::from_secs(120));
    let plan = index.plan(&request, &in_use);
    assert_eq!(victims(&plan), [id(4), id(2)]);
    assert!(plan.is_short());
    assert_eq!(plan.blocked.in_use, (1, 100));
    assert_eq!(plan.blocked.pinned, (1, 100));
    assert_eq!(plan.blocked.too_young, (1, 100));
    assert!(index.get(&id(1)).unwrap().pinned);
    // Unpinning (a config reload) makes it a candidate again.
    index.set_pins(&[]);
    let plan = index.plan(&request, &in_use);
    assert!(victims(&plan).contains(&id(1)));
}

#[test]
fn extra_pins_protect_beside_the_configured_ones_and_survive_their_reload() {
    let index = four_blobs(lru());
    index.add_repo(&id(1), "models/acme/pinned");
    index.set_extra_pins(&pins(&["acme/pinned"]));
    assert!(index.get(&id(1)).unwrap().pinned);
    // A reload of plugins.eviction.pin keeps the manifest pins.
    index.set_pins(&pins(&["other/*"]));
    assert!(index.get(&id(1)).unwrap().pinned);
    index.record_fill(&id(6), 10, 0, 10, 0);
    index.add_repo(&id(6), "models/acme/pinned");
    assert!(index.get(&id(6)).unwrap().pinned, "a repo added later");
    index.set_extra_pins(&[]);
    assert!(!index.get(&id(1)).unwrap().pinned);
}

#[test]
fn pins_given_at_creation_apply_to_repos_added_later() {
    let index = EvictionIndex::new(lru(), &pins(&["datasets/acme/*"]));
    index.record_fill(&id(1), 10, 0, 10, 0);
    index.add_repo(&id(1), "datasets/acme/eval");
    let plan = index.plan(&PlanRequest::free(10, MIN), &nothing_in_use);
    assert!(plan.victims.is_empty());
    assert_eq!(plan.blocked.pinned, (1, 10));
}

#[test]
fn a_root_target_counts_only_copies_on_that_root() {
    let index = EvictionIndex::new(lru(), &[]);
    index.record_fill(&id(1), 100, 0, 100, MIN);
    index.record_fill(&id(1), 100, 1, 100, MIN);
    index.record_fill(&id(2), 100, 1, 100, 2 * MIN);
    index.record_fill(&id(3), 100, 0, 60, 3 * MIN);
    let plan = index.plan(&PlanRequest::free_on(0, 120, 10 * MIN), &nothing_in_use);
    assert_eq!(victims(&plan), [id(1), id(3)]);
    assert_eq!(plan.freed, 160);
    assert_eq!(plan.victims[0].frees, 100, "its copy on root 0 only");
    let usage = index.usage();
    assert_eq!(usage.allocated, 360);
    assert_eq!(usage.per_root[&0], 160);
    assert_eq!(usage.per_root[&1], 200);
}

#[test]
fn a_partly_filled_blob_counts_what_it_holds() {
    let index = EvictionIndex::new(lru(), &[]);
    index.record_fill(&id(1), 40 << 30, 0, 8 << 20, MIN);
    assert_eq!(index.usage().allocated, 8 << 20);
    index.record_fill(&id(1), 40 << 30, 0, 24 << 20, 2 * MIN);
    let info = index.get(&id(1)).unwrap();
    assert_eq!(info.stats.allocated, 24 << 20);
    assert_eq!(info.stats.size, 40 << 30);
    assert_eq!(
        info.stats.first_fill, MIN,
        "a later fill keeps the first-fill time"
    );
}

#[test]
fn idle_plan_takes_only_blobs_unread_for_max_idle() {
    let index = four_blobs(lru());
    // Reads at 10..13 min; at 20 min, max_idle 8m30s leaves out blobs read at 12 and 13 min.
    let plan = index.plan(
        &PlanRequest::idle(Duration::from_secs(8 * 60 + 30), 20 * MIN),
        &nothing_in_use,
    );
    assert_eq!(victims(&plan), [id(3), id(1)]);
    assert!(!plan.is_short());
}

#[test]
fn one_download_counts_once_however_many_range_reads() {
    let index = EvictionIndex::new(lru(), &[]);
    index.record_fill(&id(1), 100, 0, 100, 0);
    let client = DownloadId::of(&["10.0.0.7", "hf_transfer/0.1"]);
    assert!(index.record_read(&id(1), client, MIN));
    for i in 1..50 {
        assert!(!index.record_read(&id(1), client, MIN + i * 1000));
    }
    let other = DownloadId::of(&["10.0.0.8", "hf_transfer/0.1"]);
    assert!(index.record_read(&id(1), other, 2 * MIN));
    let stats = index.get(&id(1)).unwrap().stats;
    assert_eq!(stats.hits, 2);
    assert_eq!(stats.last_read, 2 * MIN);
    // The window slides with the download's reads; a read after a quiet window is new.
    assert!(!index.record_read(&id(1), client, 10 * MIN));
    assert!(index.record_read(&id(1), client, 21 * MIN));
    assert_eq!(index.get(&id(1)).unwrap().stats.hits, 3);
    // Reads of an unknown blob record nothing.
    assert!(!index.record_read(&id(9), client, MIN));
}

#[test]
fn download_ids_differ_by_part_boundaries() {
    assert_ne!(DownloadId::of(&["ab", "c"]), DownloadId::of(&["a", "bc"]));
    assert_eq!(DownloadId::of(&["a", "b"]), DownloadId::of(&["a", "b"]));
}

#[test]
fn snapshot_round_trip_keeps_stats_repos_and_policy_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eviction.idx");
    let policy = Arc::new(hubcache_plugin_lfuda::Lfuda::new());
    let index = EvictionIndex::new(policy, &[]);
    for n in 1..=3u8 {
        index.record_fill(&id(n), 1000 + u64::from(n), 0, 500, u64::from(n) * MIN);
        index.record_fill(&id(n), 1000 + u64::from(n), 2, 400, u64::from(n) * MIN);
        index.record_read(&id(n), download(1), 5 * MIN);
    }
    index.add_repo(&id(2), "datasets/acme/eval");
    index.evicted(&id(3));
    index.save(&path).unwrap();
    let before = index.list();

    let lfuda = Arc::new(hubcache_plugin_lfuda::Lfuda::new());
    let (loaded, report) = EvictionIndex::open(&path, lfuda.clone(), &pins(&["datasets/acme/*"]));
    assert_eq!(report.snapshot, SnapshotState::Loaded);
    assert_eq!(report.blobs, 2);
    assert!(!report.policy_changed);
    assert_eq!(lfuda.age(), 1, "the cache age L came back");
    let after = loaded.list();
    assert_eq!(after.len(), 2);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (a.id.clone(), a.stats, a.copies.clone()),
            (b.id.clone(), b.stats, b.copies.clone())
        );
    }
    let two = loaded.get(&id(2)).unwrap();
    assert_eq!(two.repos, ["datasets/acme/eval"]);
    assert!(two.pinned, "pins come from the current config");
}

#[test]
fn a_snapshot_of_another_policy_gets_fresh_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eviction.idx");
    let index = EvictionIndex::new(lru(), &[]);
    index.record_fill(&id(1), 10, 0, 10, MIN);
    for d in 0..4 {
        index.record_read(&id(1), download(d), 2 * MIN);
    }
    index.save(&path).unwrap();
    let (loaded, report) =
        EvictionIndex::open(&path, Arc::new(hubcache_plugin_lfuda::Lfuda::new()), &[]);
    assert!(report.policy_changed);
    assert_eq!(loaded.get(&id(1)).unwrap().stats.policy_key, 4, "hits + L");
}

#[test]
fn missing_or_corrupt_snapshots_start_empty_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eviction.idx");
    let (index, report) = EvictionIndex::open(&path, lru(), &[]);
    assert_eq!(report.snapshot, SnapshotState::Missing);
    assert_eq!(index.usage().blobs, 0);

    let full = EvictionIndex::new(lru(), &[]);
    full.record_fill(&id(1), 10, 0, 10, MIN);
    full.add_repo(&id(1), "a/b");
    full.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    flipped[20] ^= 0x40;
    let truncated = good[..good.len() - 9].to_vec();
    for (name, bytes) in [
        ("flipped", flipped),
        ("truncated", truncated),
        ("empty", Vec::new()),
        ("garbage", b"not a snapshot at all".to_vec()),
    ] {
        std::fs::write(&path, bytes).unwrap();
        let (index, report) = EvictionIndex::open(&path, lru(), &[]);
        assert!(
            matches!(report.snapshot, SnapshotState::Unusable(_)),
            "{name}: {report:?}"
        );
        assert_eq!(index.usage().blobs, 0, "{name}");
    }
}

#[test]
fn reconcile_takes_sizes_from_disk_and_keeps_usage_records() {
    let index = four_blobs(lru());
    let hits_of_1 = index.get(&id(1)).unwrap().stats.hits;
    let listed_at = 30 * MIN;
    // Filled while the listing ran: not in it, but must stay.
    index.record_fill(&id(7), 10, 0, 10, listed_at + 1);
    let disk = vec![
        DiskBlob {
            id: id(1),
            size: 100,
            copies: vec![Copy {
                root: 0,
                allocated: 100,
            }],
            modified: 0,
        },
        DiskBlob {
            id: id(2),
            size: 100,
            copies: vec![Copy {
                root: 1,
                allocated: 80,
            }],
            modified: 0,
        },
        DiskBlob {
            id: id(9),
            size: 300,
            copies: vec![Copy {
                root: 0,
                allocated: 300,
            }],
            modified: 7 * MIN,
        },
        DiskBlob {
            id: id(8),
            size: 5,
            copies: vec![],
            modified: 0,
        },
    ];
    let report = index.reconcile(disk, listed_at);
    assert_eq!(
        report,
        ReconcileReport {
            added: 1,
            removed: 2,
            updated: 1
        }
    );
    assert_eq!(index.get(&id(1)).unwrap().stats.hits, hits_of_1);
    assert_eq!(
        index.get(&id(2)).unwrap().copies,
        [Copy {
            root: 1,
            allocated: 80
        }]
    );
    let new = index.get(&id(9)).unwrap().stats;
    assert_eq!(
        (new.first_fill, new.last_read, new.hits),
        (7 * MIN, 7 * MIN, 0)
    );
    assert!(index.get(&id(3)).is_none() && index.get(&id(4)).is_none());
    assert!(index.get(&id(7)).is_some());
    assert!(index.get(&id(8)).is_none());
}

#[test]
fn removing_the_last_copy_forgets_the_blob() {
    let index = EvictionIndex::new(lru(), &[]);
    index.record_fill(&id(1), 10, 0, 10, 0);
    index.record_fill(&id(1), 10, 1, 10, 0);
    index.record_copy_removed(&id(1), 0);
    assert_eq!(index.get(&id(1)).unwrap().copies.len(), 1);
    index.record_copy_removed(&id(1), 1);
    assert!(index.get(&id(1)).is_none());
    assert_eq!(index.remove(&id(1)), None);
}

#[test]
fn list_is_largest_first() {
    let index = EvictionIndex::new(lru(), &[]);
    index.record_fill(&id(1), 10, 0, 10, 0);
    index.record_fill(&id(2), 30, 0, 30, 0);
    index.record_fill(&id(3), 20, 0, 20, 0);
    let order: Vec<BlobId> = index.list().into_iter().map(|b| b.id).collect();
    assert_eq!(order, [id(2), id(3), id(1)]);
    assert_eq!(index.policy_kind(), "lru");
}

#[test]
fn demoted_blobs_are_evicted_before_the_policy_order_and_still_respect_in_use() {
    let index = four_blobs(lru());
    // Blobs 4 and 2 are read last (LRU keeps them longest), but another node owns them.
    index.set_demoted(Arc::new(|blob: &BlobId| *blob == id(4) || *blob == id(2)));
    let plan = index.plan(&PlanRequest::free(150, 20 * MIN), &nothing_in_use);
    assert_eq!(victims(&plan), [id(4), id(2)]);
    let plan = index.plan(&PlanRequest::free(350, 20 * MIN), &nothing_in_use);
    assert_eq!(victims(&plan), [id(4), id(2), id(3), id(1)]);
    // A demoted blob in use is still left out.
    let plan = index.plan(&PlanRequest::free(150, 20 * MIN), &|blob: &BlobId| {
        *blob == id(4)
    });
    assert_eq!(victims(&plan), [id(2), id(3)]);
    assert_eq!(plan.blocked.in_use, (1, 100));
}
