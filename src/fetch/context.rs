//! What every fill is given: the store, the upstream chain, the settings, the connection and
//! background budgets, the counters and the low-priority threads. It knows nothing of fills.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::lowprio::LowPriority;
use super::{FetchError, FillMode};
use crate::store::{Store, StoreError};
use crate::upstream::UpstreamChain;

/// Tunables of the fill engine.
#[derive(Debug, Clone)]
pub struct FillSettings {
    pub mode: FillMode,
    /// Bytes per ranged upstream request (rounded to whole blocks, at least one).
    pub segment: u64,
    pub connections_per_file: usize,
    pub connections_total: usize,
    pub read_ahead: u64,
    pub background_fills: usize,
    /// Block size of newly created blobs.
    pub block_size: u64,
    pub offline: bool,
}

/// Counters, for metrics, tests and the benchmark.
#[derive(Debug, Default)]
pub struct FillStats {
    /// Body bytes received from upstreams and written to the store.
    pub upstream_bytes: AtomicU64,
    /// Blocks committed to the store.
    pub blocks_filled: AtomicU64,
    /// Upstream responses rejected (bad `Content-Range`, `200` to a range).
    pub rejected_responses: AtomicU64,
    /// Streams resumed after an upstream broke off.
    pub resumes: AtomicU64,
    /// Blocks that failed their checksum when read, and were fetched again.
    pub corrupt_blocks: AtomicU64,
    /// Completed files whose content did not match their hash.
    pub verify_failures: AtomicU64,
    /// Completed files verified against their hash.
    pub verified_files: AtomicU64,
    /// Writes that failed because the cache was full.
    pub no_space: AtomicU64,
    /// Client ranges streamed from upstream without caching (cache full).
    pub uncached_streams: AtomicU64,
    /// Readers waiting for a block now (a gauge).
    pub readers_waiting: AtomicU64,
    /// Bytes read from committed blocks after their page checksums were checked.
    pub verified_read_bytes: AtomicU64,
    /// File bytes handed to clients from blocks on disk when the request arrived.
    pub served_cache_bytes: AtomicU64,
    /// File bytes handed to clients that were fetched while they waited (or streamed uncached).
    pub served_upstream_bytes: AtomicU64,
}

impl FillStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Threads hashing and replicating completed files.
const LOW_PRIORITY_THREADS: usize = 2;

pub(super) struct FillContext {
    pub(super) store: Arc<Store>,
    pub(super) upstream: Arc<UpstreamChain>,
    pub(super) settings: FillSettings,
    /// Upstream connections in use across all blobs.
    pub(super) connections: Arc<Semaphore>,
    /// Background completions in progress (a fair queue: first come, first served).
    pub(super) background: Arc<Semaphore>,
    pub(super) stats: FillStats,
    pub(super) low_priority: LowPriority,
}

impl FillContext {
    pub(super) fn new(
        store: Arc<Store>,
        upstream: Arc<UpstreamChain>,
        settings: FillSettings,
    ) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(settings.connections_total.max(1))),
            background: Arc::new(Semaphore::new(settings.background_fills.max(1))),
            store,
            upstream,
            settings,
            stats: FillStats::default(),
            low_priority: LowPriority::new(LOW_PRIORITY_THREADS),
        }
    }

    /// A store error as a fetch error; running out of space is counted and logged.
    pub(super) fn store_failure(&self, e: StoreError) -> FetchError {
        if e.is_no_space() {
            FillStats::add(&self.stats.no_space, 1);
            log::warn!("cache full: {e}");
        }
        e.into()
    }

    /// Run store work on the blocking pool; its error becomes a fetch error (counted).
    pub(super) async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, FetchError> {
        blocking(f).await?.map_err(|e| self.store_failure(e))
    }
}

/// Run blocking work (disk I/O, locks another process may hold) on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FetchError> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// Start a detached task, if there is a runtime to run it (a fill settling its blocks while
/// the runtime shuts down has nothing left to start).
pub(super) fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}
