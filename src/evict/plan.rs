//! Choosing victims: which blobs free the space asked for, in the policy's order, leaving out
//! what must stay.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use hubcache_plugin_api::{BlobStats, Priority};

use super::index::EvictionIndex;
use super::RootId;
use crate::store::BlobId;

/// What to free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Free at least `bytes` (allocated, all copies) from the whole cache (`root: None`: the
    /// budget), or from one root (its copies only count).
    Free { bytes: u64, root: Option<RootId> },
    /// Every blob not read for `max_idle` (nothing else), in policy order.
    Idle { max_idle: Duration },
}

/// One planning question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest {
    pub target: Target,
    /// The clock, in ms since the epoch.
    pub now: u64,
    /// Blobs first filled less than this before `now` stay.
    pub min_age: Duration,
}

impl PlanRequest {
    /// Free `bytes` from the whole cache.
    pub fn free(bytes: u64, now: u64) -> PlanRequest {
        PlanRequest {
            target: Target::Free { bytes, root: None },
            now,
            min_age: Duration::ZERO,
        }
    }

    /// Free `bytes` from one root.
    pub fn free_on(root: RootId, bytes: u64, now: u64) -> PlanRequest {
        PlanRequest {
            target: Target::Free {
                bytes,
                root: Some(root),
            },
            now,
            min_age: Duration::ZERO,
        }
    }

    /// Everything idle for `max_idle`.
    pub fn idle(max_idle: Duration, now: u64) -> PlanRequest {
        PlanRequest {
            target: Target::Idle { max_idle },
            now,
            min_age: Duration::ZERO,
        }
    }

    pub fn with_min_age(mut self, min_age: Duration) -> PlanRequest {
        self.min_age = min_age;
        self
    }
}

/// Which group a candidate is evicted in: every demoted blob before any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Demoted,
    Policy,
}

/// Why a candidate was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    InUse,
    Pinned,
    TooYoung,
}

/// Candidates left out, by reason: (blobs, bytes on the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Blocked {
    pub in_use: (u64, u64),
    pub pinned: (u64, u64),
    pub too_young: (u64, u64),
}

impl Blocked {
    fn add(&mut self, why: Excluded, bytes: u64) {
        let slot = match why {
            Excluded::InUse => &mut self.in_use,
            Excluded::Pinned => &mut self.pinned,
            Excluded::TooYoung => &mut self.too_young,
        };
        slot.0 += 1;
        slot.1 += bytes;
    }

    /// Any candidate was left out.
    pub fn any(&self) -> bool {
        self.in_use.0 + self.pinned.0 + self.too_young.0 > 0
    }
}

/// One blob to evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub id: BlobId,
    pub stats: BlobStats,
    /// Bytes evicting it frees on the target (all its copies for the budget, its copy on the
    /// root for a root).
    pub frees: u64,
}

/// The answer: victims in eviction order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub victims: Vec<Victim>,
    /// Bytes the victims free on the target.
    pub freed: u64,
    /// Bytes asked for (0 for an idle plan).
    pub wanted: u64,
    /// What was left out, whether or not it would have been chosen.
    pub blocked: Blocked,
}

impl Plan {
    /// The victims do not free what was asked.
    pub fn is_short(&self) -> bool {
        self.freed < self.wanted
    }
}

impl EvictionIndex {
    /// The blobs to evict for `request`, demoted ones first ([`set_demoted`](Self::set_demoted)),
    /// then in the policy's order (ties by blob id), leaving out
    /// blobs for which `in_use` is true (being read or filled, here or by another process),
    /// pinned ones and those younger than `min_age`. Deletes nothing.
    pub fn plan(&self, request: &PlanRequest, in_use: &dyn Fn(&BlobId) -> bool) -> Plan {
        self.plan_skipping(request, in_use, &HashSet::new())
    }

    /// Like [`plan`](Self::plan), ignoring the blobs in `skip` altogether (already chosen, or
    /// found in use by another process when deleting them): they are neither victims nor
    /// counted as blocked.
    pub fn plan_skipping(
        &self,
        request: &PlanRequest,
        in_use: &dyn Fn(&BlobId) -> bool,
        skip: &HashSet<BlobId>,
    ) -> Plan {
        let inner = self.inner.lock();
        let (wanted, root) = match request.target {
            Target::Free { bytes, root } => (bytes, root),
            Target::Idle { .. } => (0, None),
        };
        let min_age = request.min_age.as_millis() as u64;
        let mut plan = Plan {
            wanted,
            ..Plan::default()
        };
        if matches!(request.target, Target::Free { bytes: 0, .. }) {
            return plan;
        }
        let demoted = self.demoted.lock().clone();
        let tier = |id: &BlobId| match &demoted {
            Some(demoted) if demoted(id) => Tier::Demoted,
            _ => Tier::Policy,
        };
        let mut heap: Vec<Reverse<(Tier, Priority, &BlobId, u64)>> = Vec::new();
        for (id, entry) in &inner.entries {
            if skip.contains(id) {
                continue;
            }
            let frees = match root {
                Some(root) => entry.allocated_on(root),
                None => entry.allocated(),
            };
            if frees == 0 {
                continue;
            }
            let stats = entry.stats();
            if let Target::Idle { max_idle } = request.target {
                let idle_since = stats.last_read;
                if request.now.saturating_sub(idle_since) < max_idle.as_millis() as u64 {
                    continue;
                }
            }
            let excluded = if in_use(id) {
                Some(Excluded::InUse)
            } else if inner.is_pinned(entry) {
                Some(Excluded::Pinned)
            } else if request.now.saturating_sub(entry.first_fill) < min_age {
                Some(Excluded::TooYoung)
            } else {
                None
            };
            match excluded {
                Some(why) => plan.blocked.add(why, frees),
                None => heap.push(Reverse((tier(id), self.policy.priority(&stats), id, frees))),
            }
        }
        let mut heap = BinaryHeap::from(heap);
        while let Some(Reverse((_, _, id, frees))) = heap.pop() {
            if wanted > 0 && plan.freed >= wanted {
                break;
            }
            let Some(entry) = inner.entries.get(id) else {
                continue;
            };
            plan.freed += frees;
            plan.victims.push(Victim {
                id: id.clone(),
                stats: entry.stats(),
                frees,
            });
        }
        plan
    }
}
