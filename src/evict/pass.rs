//! One eviction pass: what must be freed ([`goals`]) and freeing it ([`run_goal`]) in the
//! policy's order, in paced batches, deleting through a [`Remover`] that refuses blobs in use.
//! The running mirror and `hubcache cache gc` share this code; both run it on a blocking
//! thread. It never scans the disk: the index says what is cached.

use std::collections::HashSet;
use std::time::Duration;

use super::index::EvictionIndex;
use super::plan::{Blocked, PlanRequest, Target, Victim};
use super::RootId;
use crate::config::Share;
use crate::store::{BlobId, Removal, Store, StoreError};

/// Why blobs are evicted (the `reason` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The cache is over `max_size`.
    Budget,
    /// A root's filesystem is over `high_watermark`.
    Watermark,
    /// Nobody read it for `max_idle`.
    Idle,
    /// A write found the disk full.
    Enospc,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Budget,
        Reason::Watermark,
        Reason::Idle,
        Reason::Enospc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Budget => "budget",
            Reason::Watermark => "watermark",
            Reason::Idle => "idle",
            Reason::Enospc => "enospc",
        }
    }
}

/// The eviction limits of `plugins.eviction`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub max_size: Option<u64>,
    /// `(high, low)` watermarks, when configured.
    pub watermarks: Option<(Share, Share)>,
    pub max_idle: Option<Duration>,
    pub min_age: Duration,
}

impl Limits {
    /// The limits of a `plugins.eviction` section.
    pub fn of(config: &crate::config::EvictionConfig) -> Limits {
        Limits {
            max_size: config.max_size,
            watermarks: config.watermarks(),
            max_idle: config.max_idle,
            min_age: config.min_age,
        }
    }
}

/// One storage root's space, for the watermark goals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSpace {
    pub index: usize,
    pub path: String,
    /// Bytes in use on its filesystem (size minus what is available).
    pub used: u64,
    pub total: u64,
    /// Bytes fills in progress will still add to it.
    pub pending: u64,
}

impl RootSpace {
    /// The space of each of `store`'s roots (those whose filesystem answers), with what the
    /// fills in `pending` (`(root, bytes still to come)`) will add.
    pub fn of_store(store: &Store, pending: &[(usize, u64)]) -> Vec<RootSpace> {
        store
            .roots()
            .into_iter()
            .filter_map(|root| {
                let (free, total) = (root.free_bytes?, root.total_bytes?);
                Some(RootSpace {
                    index: root.index,
                    path: root.path.display().to_string(),
                    used: total.saturating_sub(free),
                    total,
                    pending: pending
                        .iter()
                        .filter(|(r, _)| *r == root.index)
                        .map(|(_, b)| b)
                        .sum(),
                })
            })
            .collect()
    }
}

/// One thing to free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub reason: Reason,
    /// What the alarm is about: "" for the budget, the root's path for a root.
    pub subject: String,
    pub request: PlanRequest,
}

/// What must be freed now: the budget (the index's bytes plus what fills in progress will
/// add, down to `max_size`), every root over its high watermark (down to the low one), and,
/// when `idle` is due, what nobody read for `max_idle`.
pub fn goals(
    limits: &Limits,
    allocated: u64,
    pending: u64,
    roots: &[RootSpace],
    idle: bool,
    now: u64,
) -> Vec<Goal> {
    let mut goals = Vec::new();
    let with_age = |r: PlanRequest| r.with_min_age(limits.min_age);
    if let Some(max) = limits.max_size {
        let wanted = allocated.saturating_add(pending);
        if wanted > max {
            goals.push(Goal {
                reason: Reason::Budget,
                subject: String::new(),
                request: with_age(PlanRequest::free(wanted - max, now)),
            });
        }
    }
    if let Some((high, low)) = limits.watermarks {
        for root in roots {
            let used = root.used.saturating_add(root.pending);
            if high.is_exceeded_by(used, root.total) {
                let bytes = used.saturating_sub(low.of(root.total));
                goals.push(Goal {
                    reason: Reason::Watermark,
                    subject: root.path.clone(),
                    request: with_age(PlanRequest::free_on(root.index as RootId, bytes, now)),
                });
            }
        }
    }
    if let (true, Some(max_idle)) = (idle, limits.max_idle) {
        goals.push(Goal {
            reason: Reason::Idle,
            subject: String::new(),
            request: with_age(PlanRequest::idle(max_idle, now)),
        });
    }
    goals
}

/// Deletes blobs for a pass.
pub trait Remover {
    /// In use here (cheap, in memory): such blobs are left out of the plan.
    fn in_use(&self, id: &BlobId) -> bool;
    /// Deletes the blob, every replica, unless someone has it open (`Removal::InUse`). A dry
    /// run answers what it would do.
    fn remove(&self, id: &BlobId) -> Result<Removal, StoreError>;
}

/// How a pass spaces its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Blobs deleted before each pause.
    pub batch: usize,
    pub pause: Duration,
}

impl Pace {
    /// The background pace (as nginx's cache manager: small batches, short sleeps).
    pub const BACKGROUND: Pace = Pace {
        batch: 64,
        pause: Duration::from_millis(50),
    };
    /// A write is waiting for room: no pauses.
    pub const URGENT: Pace = Pace {
        batch: 256,
        pause: Duration::ZERO,
    };
}

/// One deleted (or, dry run, deletable) blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub victim: Victim,
    /// Bytes the disk got back (every replica); the victim's index figure in a dry run.
    pub freed: u64,
}

/// What a goal's pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub goal: Goal,
    pub evicted: Vec<Evicted>,
    /// Bytes asked for (0 for idle expiry).
    pub wanted: u64,
    /// Bytes the victims freed on the goal's target, by the index's count.
    pub freed: u64,
    /// What was left out (the last plan's, plus blobs found open elsewhere when deleting).
    pub blocked: Blocked,
    /// Deletions that failed with an error.
    pub errors: usize,
}

impl Outcome {
    /// Whether the goal was met.
    pub fn reached(&self) -> bool {
        self.freed >= self.wanted
    }
}

/// Plans at most this many batches in one pass.
const MAX_BATCHES: usize = 100_000;

/// Frees what `goal` asks in the policy's order, in batches of `pace.batch` with
/// `pace.pause` between them, re-planning after each batch (blobs read meanwhile move).
/// Blobs found open when deleting are skipped and counted as blocked in use. A blob the index
/// knew but the disk no longer has is forgotten (and counts as freed for the budget, whose
/// usage it inflated). With `dry_run` nothing is deleted and the index is left alone.
pub fn run_goal(
    index: &EvictionIndex,
    remover: &dyn Remover,
    goal: &Goal,
    pace: Pace,
    dry_run: bool,
) -> Outcome {
    let (wanted, budget) = match goal.request.target {
        Target::Free { bytes, root } => (bytes, root.is_none()),
        Target::Idle { .. } => (0, false),
    };
    let mut outcome = Outcome {
        goal: goal.clone(),
        evicted: Vec::new(),
        wanted,
        freed: 0,
        blocked: Blocked::default(),
        errors: 0,
    };
    let mut skip: HashSet<BlobId> = HashSet::new();
    let mut open_elsewhere = (0u64, 0u64);
    for round in 0..MAX_BATCHES {
        if wanted > 0 && outcome.freed >= wanted {
            break;
        }
        let mut request = goal.request;
        if let Target::Free { root, .. } = request.target {
            request.target = Target::Free {
                bytes: wanted - outcome.freed,
                root,
            };
        }
        let plan = index.plan_skipping(&request, &|id| remover.in_use(id), &skip);
        outcome.blocked = plan.blocked;
        if plan.victims.is_empty() {
            break;
        }
        if round > 0 && !pace.pause.is_zero() && !dry_run {
            std::thread::sleep(pace.pause);
        }
        for victim in plan.victims.into_iter().take(pace.batch.max(1)) {
            match remover.remove(&victim.id) {
                Ok(Removal::Removed { freed }) => {
                    if dry_run {
                        skip.insert(victim.id.clone());
                    } else {
                        index.evicted(&victim.id);
                    }
                    outcome.freed += victim.frees;
                    let freed = freed.iter().map(|(_, b)| b).sum();
                    outcome.evicted.push(Evicted { victim, freed });
                }
                Ok(Removal::Absent) => {
                    if dry_run {
                        skip.insert(victim.id.clone());
                    } else {
                        index.remove(&victim.id);
                    }
                    if budget {
                        outcome.freed += victim.frees;
                    }
                }
                Ok(Removal::InUse { .. }) => {
                    open_elsewhere.0 += 1;
                    open_elsewhere.1 += victim.frees;
                    skip.insert(victim.id);
                }
                Err(e) => {
                    log::warn!("eviction: cannot delete {}: {e}", victim.id);
                    outcome.errors += 1;
                    skip.insert(victim.id);
                }
            }
            if wanted > 0 && outcome.freed >= wanted {
                break;
            }
        }
    }
    outcome.blocked.in_use.0 += open_elsewhere.0;
    outcome.blocked.in_use.1 += open_elsewhere.1;
    outcome
}
