//! The index as the running service uses it (totals kept up to date, a snapshot loaded into a
//! live index, copies replaced after replication) and eviction passes against a fake remover.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hubcache_plugin_api::EvictionPolicy;
use parking_lot::Mutex;

use super::pass::{goals, run_goal, Goal, Limits, Pace, Reason, Remover, RootSpace};
use super::*;
use crate::config::{RepoGlob, Share};
use crate::store::{Removal, StoreError};

const MIN: u64 = 60_000;

fn id(n: u8) -> BlobId {
    BlobId::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn lru() -> Arc<dyn EvictionPolicy> {
    Arc::new(hubcache_plugin_lru::Lru)
}

/// The totals the index keeps, against a count over every blob.
fn assert_totals(index: &EvictionIndex) {
    let mut total = 0;
    let mut per_root = std::collections::BTreeMap::new();
    for info in index.list() {
        for copy in info.copies {
            total += copy.allocated;
            *per_root.entry(copy.root).or_insert(0u64) += copy.allocated;
        }
    }
    assert_eq!(index.allocated(), total);
    for (root, bytes) in per_root {
        assert_eq!(index.allocated_on(root), bytes, "root {root}");
    }
}

#[test]
fn totals_follow_every_change_without_a_scan() {
    let index = EvictionIndex::new(lru(), &[]);
    index.record_fill(&id(1), 100, 0, 10, MIN);
    index.record_fill(&id(1), 100, 0, 60, MIN); // more blocks stored
    index.record_fill(&id(1), 100, 1, 100, MIN); // a replica
    index.record_fill(&id(2), 50, 1, 50, MIN);
    assert_eq!(index.allocated(), 210);
    assert_totals(&index);
    index.set_copies(&id(1), 100, &[(0, 100)], 2 * MIN);
    assert_eq!(index.allocated(), 150);
    assert_totals(&index);
    index.record_copy_removed(&id(2), 1);
    index.remove(&id(1));
    assert_eq!(index.allocated(), 0);
    assert_totals(&index);
    let before = index.version();
    index.record_fill(&id(3), 1, 0, 1, MIN);
    assert!(index.version() > before, "a change must bump the version");
}

#[test]
fn a_snapshot_loaded_into_a_live_index_merges_with_what_was_recorded_since_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evict/index.snap");
    let saved = EvictionIndex::new(lru(), &[]);
    saved.record_fill(&id(1), 100, 0, 100, MIN);
    saved.record_read(&id(1), DownloadId(1), 5 * MIN);
    saved.add_repo(&id(1), "models/acme/x");
    saved.record_fill(&id(2), 100, 0, 100, 2 * MIN);
    saved.save_all(std::slice::from_ref(&path)).unwrap();

    // The new process: a download started before the snapshot was loaded.
    let live = EvictionIndex::new(lru(), &[]);
    live.record_fill(&id(1), 100, 0, 40, 30 * MIN);
    live.record_read(&id(1), DownloadId(9), 31 * MIN);
    let report = live.load(&[dir.path().join("missing.snap"), path]);
    assert_eq!(report.snapshot, SnapshotState::Loaded);
    let one = live.get(&id(1)).unwrap();
    assert_eq!(
        one.stats.first_fill, MIN,
        "the first fill is the earlier one"
    );
    assert_eq!(one.stats.last_read, 31 * MIN);
    assert_eq!(one.stats.hits, 2);
    assert_eq!(
        one.copies[0].allocated, 40,
        "what was recorded since start wins"
    );
    assert_eq!(one.repos, ["models/acme/x"]);
    assert!(live.contains(&id(2)));
    assert_totals(&live);
    // Reconciling keeps a blob stored since the listing started, even if not listed.
    let report = live.reconcile(Vec::new(), 20 * MIN);
    assert_eq!(report.removed, 1, "id(2) is gone from the disk");
    assert!(live.contains(&id(1)));
    assert_totals(&live);
}

/// A remover over a set of blobs "open elsewhere", recording what it deleted.
#[derive(Default)]
struct Fake {
    open_here: HashSet<BlobId>,
    open_elsewhere: HashSet<BlobId>,
    deleted: Mutex<Vec<BlobId>>,
}

impl Remover for Fake {
    fn in_use(&self, id: &BlobId) -> bool {
        self.open_here.contains(id)
    }

    fn remove(&self, id: &BlobId) -> Result<Removal, StoreError> {
        if self.open_elsewhere.contains(id) {
            return Ok(Removal::InUse { root: 0 });
        }
        self.deleted.lock().push(id.clone());
        Ok(Removal::Removed {
            freed: vec![(0, 100)],
        })
    }
}

/// Ten blobs of 100 bytes, filled and read in order 1..=10 (1 least recently read).
fn ten() -> EvictionIndex {
    let index = EvictionIndex::new(lru(), &[]);
    for n in 1..=10u8 {
        index.record_fill(&id(n), 100, 0, 100, u64::from(n) * MIN);
    }
    index
}

fn budget(bytes: u64) -> Goal {
    Goal {
        reason: Reason::Budget,
        subject: String::new(),
        request: PlanRequest::free(bytes, 60 * MIN),
    }
}

#[test]
fn a_pass_frees_just_enough_in_small_batches_and_skips_blobs_open_elsewhere() {
    let index = ten();
    let fake = Fake {
        open_here: [id(2)].into(),
        open_elsewhere: [id(1)].into(),
        ..Fake::default()
    };
    let pace = Pace {
        batch: 2,
        pause: Duration::ZERO,
    };
    let outcome = run_goal(&index, &fake, &budget(350), pace, false);
    assert_eq!(*fake.deleted.lock(), [id(3), id(4), id(5), id(6)]);
    assert!(outcome.reached());
    assert_eq!(outcome.freed, 400);
    assert_eq!(outcome.blocked.in_use.0, 2, "one open here, one elsewhere");
    assert!(index.contains(&id(1)) && index.contains(&id(2)));
    assert!(!index.contains(&id(3)));
    assert_eq!(index.allocated(), 600);
}

#[test]
fn a_dry_run_deletes_nothing_and_lists_the_same_victims() {
    let index = ten();
    let fake = Fake::default();
    let outcome = run_goal(&index, &fake, &budget(250), Pace::URGENT, true);
    let ids: Vec<BlobId> = outcome
        .evicted
        .iter()
        .map(|e| e.victim.id.clone())
        .collect();
    assert_eq!(ids, [id(1), id(2), id(3)]);
    assert_eq!(index.allocated(), 1000, "a dry run changed the index");
}

#[test]
fn a_pass_short_of_its_goal_says_what_blocked_it() {
    let index = EvictionIndex::new(lru(), &[RepoGlob::parse("acme/*").unwrap()]);
    for n in 1..=3u8 {
        index.record_fill(&id(n), 100, 0, 100, MIN);
        index.add_repo(&id(n), "models/acme/x");
    }
    let outcome = run_goal(&index, &Fake::default(), &budget(100), Pace::URGENT, false);
    assert!(!outcome.reached());
    assert!(outcome.evicted.is_empty());
    assert_eq!(outcome.blocked.pinned, (3, 300));
}

#[test]
fn goals_cover_the_budget_with_pending_fills_the_watermarks_and_idle_files() {
    let limits = Limits {
        max_size: Some(1000),
        watermarks: Some((Share(90), Share(80))),
        max_idle: Some(Duration::from_secs(60)),
        min_age: Duration::from_secs(5),
    };
    let roots = [
        RootSpace {
            index: 0,
            path: "/d0".into(),
            used: 850,
            total: 1000,
            pending: 100,
        },
        RootSpace {
            index: 1,
            path: "/d1".into(),
            used: 100,
            total: 1000,
            pending: 0,
        },
    ];
    let all = goals(&limits, 900, 300, &roots, true, 0);
    let summary: Vec<(Reason, &str, Target)> = all
        .iter()
        .map(|g| (g.reason, g.subject.as_str(), g.request.target))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Reason::Budget,
                "",
                Target::Free {
                    bytes: 200,
                    root: None
                }
            ),
            (
                Reason::Watermark,
                "/d0",
                Target::Free {
                    bytes: 150,
                    root: Some(0)
                }
            ),
            (
                Reason::Idle,
                "",
                Target::Idle {
                    max_idle: Duration::from_secs(60)
                }
            ),
        ]
    );
    assert!(all.iter().all(|g| g.request.min_age == limits.min_age));
    assert!(goals(&limits, 700, 0, &roots[1..], false, 0).is_empty());
    assert!(goals(&Limits::default(), u64::MAX, 0, &roots, true, 0).is_empty());
}
