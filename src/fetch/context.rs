//! What every fill is given: the store, the upstream chain, the settings, the connection and
//! background budgets, the counters and the low-priority threads. It knows nothing of fills.
//!
//! The chain and the settings are [`Live`]: a config reload changes them for the next read
//! (each scheduling round, each upstream request), and [`FillContext::follow_settings`]
//! resizes the budgets.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::budget::Budget;
use super::lowprio::LowPriority;
use super::{FetchError, FillMode, FillObserver};
use crate::live::Live;
use crate::store::{Store, StoreError};
use crate::upstream::sibling::Cluster;
use crate::upstream::UpstreamChain;

/// Tunables of the fill engine.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// No new upstream work: no background completion. Readers that started online (they
    /// offered a source) still get their blocks, so a download in flight finishes.
    pub offline: bool,
}

/// Counters, for metrics, tests and the benchmark.
#[derive(Debug, Default)]
pub struct FillStats {
    /// Body bytes received from upstreams and written to the store.
    pub upstream_bytes: AtomicU64,
    /// Body bytes received from sibling nodes (`cluster:`) and written to the store.
    pub sibling_bytes: AtomicU64,
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
    /// File bytes handed to clients with `sendfile` (also counted in `served_cache_bytes`).
    pub sendfile_bytes: AtomicU64,
    /// Bytes of files fetched ahead of any client (prefetch of listed small files).
    pub prefetched_bytes: AtomicU64,
    /// Files fetched ahead of any client.
    pub prefetched_files: AtomicU64,
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

/// How long a write that found the disk full waits for eviction to make room.
const MAKE_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Threads hashing and replicating completed files.
const LOW_PRIORITY_THREADS: usize = 2;

pub(super) struct FillContext {
    pub(super) store: Arc<Store>,
    upstream: Live<Arc<UpstreamChain>>,
    settings: Live<Arc<FillSettings>>,
    /// Upstream connections in use across all blobs.
    pub(super) connections: Arc<Budget>,
    /// Background completions in progress (a fair queue: first come, first served).
    pub(super) background: Arc<Budget>,
    /// The process is shutting down: finish what runs, start no background work.
    draining: AtomicBool,
    pub(super) stats: FillStats,
    pub(super) low_priority: LowPriority,
    /// Told about opened, stored, read and released blobs (set once, by the eviction service).
    pub(super) observer: OnceLock<Arc<dyn FillObserver>>,
    /// The sibling nodes to ask before the upstream chain (set once, by the app).
    pub(super) cluster: OnceLock<Live<Option<Arc<Cluster>>>>,
}

impl FillContext {
    pub(super) fn new(
        store: Arc<Store>,
        upstream: Live<Arc<UpstreamChain>>,
        settings: Live<Arc<FillSettings>>,
    ) -> Self {
        let now = settings.get();
        Self {
            connections: Budget::new(now.connections_total),
            background: Budget::new(now.background_fills),
            draining: AtomicBool::new(false),
            store,
            upstream,
            settings,
            stats: FillStats::default(),
            low_priority: LowPriority::new(LOW_PRIORITY_THREADS),
            observer: OnceLock::new(),
            cluster: OnceLock::new(),
        }
    }

    /// The upstream chain as configured now.
    pub(super) fn upstream(&self) -> Arc<UpstreamChain> {
        self.upstream.get()
    }

    /// The sibling nodes as configured now (`None`: a single node).
    pub(super) fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.get().and_then(Live::get)
    }

    /// The settings as configured now.
    pub(super) fn settings(&self) -> Arc<FillSettings> {
        self.settings.get()
    }

    /// Size the connection and background budgets to the current settings.
    pub(super) fn follow_settings(&self) {
        let now = self.settings.get();
        self.connections.resize(now.connections_total);
        self.background.resize(now.background_fills);
    }

    /// Background completion may start or continue (online and not shutting down).
    pub(super) fn may_complete(&self) -> bool {
        !self.settings.get().offline && !self.is_draining()
    }

    pub(super) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The observer, if one was set.
    pub(super) fn observer(&self) -> Option<&dyn FillObserver> {
        self.observer.get().map(|o| o.as_ref())
    }

    /// Asks the observer to make `room` for blob `id`; false without an observer or when
    /// nothing could be freed within [`MAKE_ROOM_WAIT`].
    pub(super) async fn make_room(&self, id: &crate::store::BlobId, room: super::Room) -> bool {
        let Some(observer) = self.observer() else {
            return false;
        };
        let asked = observer.make_room(id, room);
        matches!(tokio::time::timeout(MAKE_ROOM_WAIT, asked).await, Ok(true))
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
