//! Warm-up metrics on the admin `/metrics` (listed in `docs/metrics.md`): jobs by state, files
//! by outcome, bytes fetched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::Warmup;

/// The outcomes of `hubcache_warmup_files_total` (shown from 0).
pub const FILE_OUTCOMES: [&str; 3] = ["fetched", "present", "failed"];

const JOBS: (&str, &str) = (
    "hubcache_warmup_jobs",
    "Warm-up jobs this node knows, by state (queued, listing, running, done, failed, cancelled)",
);
const FILES: (&str, &str) = (
    "hubcache_warmup_files_total",
    "Files warm-up jobs finished, by outcome: fetched, present (already complete), failed",
);
const BYTES: (&str, &str) = (
    "hubcache_warmup_bytes_total",
    "File bytes warm-up jobs read through the fill engine from files that were not complete",
);

/// Counters the jobs move.
#[derive(Debug, Default)]
pub struct WarmStats {
    files: [AtomicU64; 3],
    bytes: AtomicU64,
}

impl WarmStats {
    pub fn count_file(&self, outcome: &str) {
        if let Some(i) = FILE_OUTCOMES.iter().position(|o| *o == outcome) {
            self.files[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

pub struct WarmCollector {
    warmup: Weak<Warmup>,
    descs: Vec<Desc>,
}

fn jobs_vec() -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(JOBS.0, JOBS.1), &["state"])
}

fn files_vec() -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(FILES.0, FILES.1), &["outcome"])
}

impl WarmCollector {
    pub fn new(warmup: &Arc<Warmup>) -> Self {
        let mut descs = Vec::new();
        if let (Ok(jobs), Ok(files), Ok(bytes)) =
            (jobs_vec(), files_vec(), IntCounter::new(BYTES.0, BYTES.1))
        {
            descs.extend(jobs.desc().into_iter().cloned());
            descs.extend(files.desc().into_iter().cloned());
            descs.extend(bytes.desc().into_iter().cloned());
        }
        Self {
            warmup: Arc::downgrade(warmup),
            descs,
        }
    }
}

impl Collector for WarmCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(warmup) = self.warmup.upgrade() else {
            return Vec::new();
        };
        let mut families = Vec::new();
        if let Ok(jobs) = jobs_vec() {
            for (state, n) in warmup.count_by_state() {
                jobs.with_label_values(&[state.as_str()]).set(n as i64);
            }
            families.extend(jobs.collect());
        }
        if let Ok(files) = files_vec() {
            for (i, outcome) in FILE_OUTCOMES.iter().enumerate() {
                let n = warmup.stats.files[i].load(Ordering::Relaxed);
                files.with_label_values(&[outcome]).inc_by(n);
            }
            families.extend(files.collect());
        }
        if let Ok(bytes) = IntCounter::new(BYTES.0, BYTES.1) {
            bytes.inc_by(warmup.stats.bytes.load(Ordering::Relaxed));
            families.extend(bytes.collect());
        }
        families
    }
}
