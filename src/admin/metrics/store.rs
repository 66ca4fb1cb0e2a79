//! Store gauges per storage root: file-system capacity and free space (`statvfs`), the cache's
//! own allocated bytes and blob count (a directory walk off the async runtime, repeated when
//! asked for and older than [`usage_max_age`] of the last walk's duration), and health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

use crate::store::{RootStatus, RootUsage, Store};

/// The walked usage is refreshed when older than this many times the last walk took...
const WALK_COST_FACTOR: u32 = 100;
/// ...but never more often than this...
const USAGE_MIN_AGE: Duration = Duration::from_secs(2);
/// ...and at least this often.
const USAGE_MAX_AGE: Duration = Duration::from_secs(300);

/// How old the walked usage may be before a scrape or status call walks again: a hundred
/// times what the last walk took (so walking costs at most about 1% of one core), from 2 s
/// (a small cache) to 5 min (a huge one).
pub fn usage_max_age(last_walk: Duration) -> Duration {
    (last_walk * WALK_COST_FACTOR).clamp(USAGE_MIN_AGE, USAGE_MAX_AGE)
}
/// How long a caller waits for a walk before answering with what it has.
const USAGE_WAIT: Duration = Duration::from_secs(5);

/// One root as the admin listener shows it.
#[derive(Debug, Clone)]
pub struct RootReport {
    pub status: RootStatus,
    /// The cache's use of the root, once walked.
    pub usage: Option<RootUsage>,
}

#[derive(Default)]
struct Walked {
    at: Option<Instant>,
    /// How long the last walk took.
    took: Duration,
    usage: Vec<Option<RootUsage>>,
    running: bool,
}

/// The store's usage, walked now and then.
pub struct StoreUsage {
    store: Arc<Store>,
    walked: Arc<Mutex<Walked>>,
}

impl StoreUsage {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            walked: Arc::new(Mutex::new(Walked::default())),
        }
    }

    /// Walk the roots again if the last walk is older than [`usage_max_age`] (one walk at a
    /// time, on the blocking pool), waiting for it at most a few seconds.
    pub async fn refresh(&self) {
        {
            let mut walked = self.walked.lock();
            let max_age = usage_max_age(walked.took);
            let fresh = walked.at.is_some_and(|at| at.elapsed() < max_age);
            if fresh || walked.running {
                return;
            }
            walked.running = true;
        }
        let store = Arc::clone(&self.store);
        let walked = Arc::clone(&self.walked);
        let task = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let roots = store.root_paths().len();
            let usage: Vec<Option<RootUsage>> = (0..roots)
                .map(|i| match store.usage_of_root(i) {
                    Ok(usage) => Some(usage),
                    Err(e) => {
                        log::warn!("cannot measure the cache on root {i}: {e}");
                        None
                    }
                })
                .collect();
            let mut w = walked.lock();
            w.usage = usage;
            w.at = Some(Instant::now());
            w.took = started.elapsed();
            w.running = false;
        });
        if tokio::time::timeout(USAGE_WAIT, task).await.is_err() {
            log::debug!("store usage walk still running; answering with the last one");
        }
    }

    /// Health, space and usage of every root (statvfs now, usage as last walked).
    pub fn report(&self) -> Vec<RootReport> {
        let usage = self.walked.lock().usage.clone();
        self.store
            .roots()
            .into_iter()
            .map(|status| RootReport {
                usage: usage.get(status.index).copied().flatten(),
                status,
            })
            .collect()
    }
}

/// (name, help, reader) of each per-root gauge.
type RootGauge = (&'static str, &'static str, fn(&RootReport) -> Option<u64>);

const ROOT_GAUGES: &[RootGauge] = &[
    (
        "hubcache_store_capacity_bytes",
        "Size of the file system holding the storage root",
        |r| r.status.total_bytes,
    ),
    (
        "hubcache_store_free_bytes",
        "Bytes available to hubcache on the file system holding the storage root",
        |r| r.status.free_bytes,
    ),
    (
        "hubcache_store_reserve_bytes",
        "Free space hubcache leaves untouched on the root (no new blobs below it)",
        |r| r.status.reserve_bytes,
    ),
    (
        "hubcache_store_used_bytes",
        "Bytes the cache's blob files occupy on the root (allocated: sparse files count what \
         they hold; measured by a directory walk, at most every 2 s to 5 min)",
        |r| r.usage.map(|u| u.allocated_bytes),
    ),
    (
        "hubcache_store_blobs",
        "Blob files on the root (measured with hubcache_store_used_bytes)",
        |r| r.usage.map(|u| u.blobs),
    ),
    (
        "hubcache_store_root_healthy",
        "1 while the storage root is usable, 0 while it is failed",
        |r| Some(u64::from(r.status.healthy)),
    ),
];

pub(super) struct StoreCollector {
    usage: Arc<StoreUsage>,
    descs: Vec<Desc>,
}

fn gauge_vec(name: &str, help: &str) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), &["root"])
}

impl StoreCollector {
    pub(super) fn new(usage: Arc<StoreUsage>) -> prometheus::Result<Self> {
        let mut descs = Vec::new();
        for (name, help, _) in ROOT_GAUGES {
            descs.extend(gauge_vec(name, help)?.desc().into_iter().cloned());
        }
        Ok(Self { usage, descs })
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let roots = self.usage.report();
        ROOT_GAUGES
            .iter()
            .filter_map(|(name, help, read)| {
                let vec = gauge_vec(name, help).ok()?;
                for root in &roots {
                    if let Some(value) = read(root) {
                        let label = root.status.path.display().to_string();
                        vec.with_label_values(&[label.as_str()])
                            .set(i64::try_from(value).unwrap_or(i64::MAX));
                    }
                }
                vec.collect().into_iter().next()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_repeat_at_a_hundred_times_their_cost_within_bounds() {
        assert_eq!(usage_max_age(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(
            usage_max_age(Duration::from_millis(50)),
            Duration::from_secs(5)
        );
        assert_eq!(
            usage_max_age(Duration::from_secs(10)),
            Duration::from_secs(300)
        );
    }
}
