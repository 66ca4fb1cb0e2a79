//! Eviction's metrics: space per root (the cache's bytes, the filesystem's size and free
//! space), the budget, what was evicted by policy and reason, and evictions that could not
//! reach their goal, by what blocked them. Register [`EvictCollector`] with the metrics
//! registry; everything is read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::pass::{Outcome, Reason};
use super::EvictionIndex;
use crate::store::Store;

/// Why a pass fell short (the `reason` label of `hubcache_evictions_blocked_total`).
pub const BLOCKED_REASONS: [&str; 4] = ["in_use", "pinned", "too_young", "nothing_left"];

/// Eviction counters.
#[derive(Debug, Default)]
pub struct EvictStats {
    bytes: [AtomicU64; 4],
    blobs: [AtomicU64; 4],
    blocked: [AtomicU64; 4],
    passes: AtomicU64,
}

fn slot(reason: Reason) -> usize {
    Reason::ALL.iter().position(|&r| r == reason).unwrap_or(0)
}

impl EvictStats {
    /// Counts what a pass did.
    pub fn record(&self, outcome: &Outcome) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let i = slot(outcome.goal.reason);
        let bytes: u64 = outcome.evicted.iter().map(|e| e.freed).sum();
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        self.blobs[i].fetch_add(outcome.evicted.len() as u64, Ordering::Relaxed);
        if outcome.reached() {
            return;
        }
        let b = &outcome.blocked;
        let mut any = false;
        for (i, count) in [b.in_use.0, b.pinned.0, b.too_young.0]
            .into_iter()
            .enumerate()
        {
            if count > 0 {
                self.blocked[i].fetch_add(1, Ordering::Relaxed);
                any = true;
            }
        }
        if !any {
            self.blocked[3].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Blobs and bytes evicted so far, all reasons.
    pub fn evicted(&self) -> (u64, u64) {
        let sum = |a: &[AtomicU64; 4]| a.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        (sum(&self.blobs), sum(&self.bytes))
    }

    /// Passes run so far.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }
}

/// Exposes [`EvictStats`], the index's usage and the roots' space.
pub struct EvictCollector {
    index: Arc<EvictionIndex>,
    store: Arc<Store>,
    stats: Arc<EvictStats>,
    budget: Option<u64>,
    descs: Vec<Desc>,
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

fn counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

/// The metric families, empty.
struct Families {
    used: IntGaugeVec,
    capacity: IntGaugeVec,
    free: IntGaugeVec,
    allocated: IntGauge,
    budget: IntGauge,
    blobs: IntGauge,
    evicted_bytes: IntCounterVec,
    evicted_blobs: IntCounterVec,
    blocked: IntCounterVec,
}

impl Families {
    fn new() -> Result<Families, prometheus::Error> {
        Ok(Families {
            used: gauge_vec(
                "hubcache_cache_used_bytes",
                "Bytes the cache's blobs occupy on each storage root (allocated, replicas included)",
                &["root"],
            )?,
            capacity: gauge_vec(
                "hubcache_cache_capacity_bytes",
                "Size of each storage root's filesystem",
                &["root"],
            )?,
            free: gauge_vec(
                "hubcache_cache_free_bytes",
                "Bytes available on each storage root's filesystem",
                &["root"],
            )?,
            allocated: IntGauge::new(
                "hubcache_cache_allocated_bytes",
                "Bytes all cached blobs occupy (what plugins.eviction.max_size limits)",
            )?,
            budget: IntGauge::new(
                "hubcache_cache_budget_bytes",
                "plugins.eviction.max_size (0: no budget)",
            )?,
            blobs: IntGauge::new("hubcache_cache_blobs", "Cached blobs")?,
            evicted_bytes: counter_vec(
                "hubcache_evicted_bytes_total",
                "Bytes freed by eviction, by policy and reason (budget, watermark, idle, enospc)",
                &["policy", "reason"],
            )?,
            evicted_blobs: counter_vec(
                "hubcache_evicted_blobs_total",
                "Blobs evicted, by policy and reason (budget, watermark, idle, enospc)",
                &["policy", "reason"],
            )?,
            blocked: counter_vec(
                "hubcache_evictions_blocked_total",
                "Eviction passes that could not free what they had to, by what was in the way \
                 (in_use, pinned, too_young, nothing_left)",
                &["reason"],
            )?,
        })
    }

    fn collectors(&self) -> [&dyn Collector; 9] {
        [
            &self.used,
            &self.capacity,
            &self.free,
            &self.allocated,
            &self.budget,
            &self.blobs,
            &self.evicted_bytes,
            &self.evicted_blobs,
            &self.blocked,
        ]
    }
}

impl EvictCollector {
    pub fn new(
        index: Arc<EvictionIndex>,
        store: Arc<Store>,
        stats: Arc<EvictStats>,
        budget: Option<u64>,
    ) -> Result<EvictCollector, prometheus::Error> {
        let families = Families::new()?;
        let descs = families
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(EvictCollector {
            index,
            store,
            stats,
            budget,
            descs,
        })
    }
}

impl Collector for EvictCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(f) = Families::new() else {
            return Vec::new();
        };
        let usage = self.index.usage();
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for root in self.store.roots() {
            let label = root.path.display().to_string();
            let used = usage
                .per_root
                .get(&(root.index as u16))
                .copied()
                .unwrap_or(0);
            f.used.with_label_values(&[&label]).set(as_i64(used));
            if let (Some(total), Some(free)) = (root.total_bytes, root.free_bytes) {
                f.capacity.with_label_values(&[&label]).set(as_i64(total));
                f.free.with_label_values(&[&label]).set(as_i64(free));
            }
        }
        f.allocated.set(as_i64(usage.allocated));
        f.budget.set(as_i64(self.budget.unwrap_or(0)));
        f.blobs.set(as_i64(usage.blobs as u64));
        let policy = self.index.policy_kind();
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let labels = [policy, reason.as_str()];
            f.evicted_bytes
                .with_label_values(&labels)
                .inc_by(self.stats.bytes[i].load(Ordering::Relaxed));
            f.evicted_blobs
                .with_label_values(&labels)
                .inc_by(self.stats.blobs[i].load(Ordering::Relaxed));
        }
        for (i, reason) in BLOCKED_REASONS.iter().enumerate() {
            f.blocked
                .with_label_values(&[reason])
                .inc_by(self.stats.blocked[i].load(Ordering::Relaxed));
        }
        f.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}
