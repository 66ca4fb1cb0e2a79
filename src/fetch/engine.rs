//! The engine: one live [`BlobFill`] per blob, the global connection budget, and the queue of
//! blobs waiting to be completed in the background.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::fill::BlobFill;
use super::{BlobSource, FetchError, FillMode};
use crate::store::{BlobFile, BlobId, Store};
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
}

impl FillStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub(super) struct EngineInner {
    pub(super) store: Arc<Store>,
    pub(super) upstream: Arc<UpstreamChain>,
    pub(super) settings: FillSettings,
    /// Upstream connections in use across all blobs.
    pub(super) connections: Arc<Semaphore>,
    /// Background completions in progress.
    pub(super) background: Arc<Semaphore>,
    pub(super) stats: FillStats,
    fills: Mutex<HashMap<BlobId, Weak<BlobFill>>>,
    /// Blobs kept alive while they complete in the background.
    pinned: Mutex<HashMap<BlobId, Arc<BlobFill>>>,
    /// Blobs that want a background slot (kept alive: a started file is completed even when
    /// every client went away).
    waiting: Mutex<VecDeque<Arc<BlobFill>>>,
}

impl EngineInner {
    pub(super) fn pin(&self, fill: &Arc<BlobFill>) {
        self.pinned
            .lock()
            .insert(fill.id().clone(), Arc::clone(fill));
    }

    pub(super) fn unpin(&self, id: &BlobId) {
        self.pinned.lock().remove(id);
    }

    pub(super) fn wait_for_background_slot(&self, fill: &Arc<BlobFill>) {
        self.waiting.lock().push_back(Arc::clone(fill));
    }

    /// A background slot was freed: let the next waiting blob take it.
    pub(super) fn background_slot_freed(&self) {
        loop {
            let next = self.waiting.lock().pop_front();
            let Some(fill) = next else { return };
            fill.leave_slot_queue();
            fill.schedule();
            if fill.holds_background_slot() {
                return;
            }
        }
    }

    pub(super) fn forget(&self, id: &BlobId) {
        let mut fills = self.fills.lock();
        if fills.get(id).is_some_and(|w| w.strong_count() == 0) {
            fills.remove(id);
        }
    }
}

/// The fill engine. Cheap to clone.
#[derive(Clone)]
pub struct FillEngine {
    inner: Arc<EngineInner>,
}

impl FillEngine {
    pub fn new(store: Arc<Store>, upstream: Arc<UpstreamChain>, settings: FillSettings) -> Self {
        let connections = Arc::new(Semaphore::new(settings.connections_total.max(1)));
        let background = Arc::new(Semaphore::new(settings.background_fills.max(1)));
        Self {
            inner: Arc::new(EngineInner {
                store,
                upstream,
                settings,
                connections,
                background,
                stats: FillStats::default(),
                fills: Mutex::new(HashMap::new()),
                pinned: Mutex::new(HashMap::new()),
                waiting: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Stream `[start, end)` of a file from upstream without caching it (disk full).
    pub async fn open_direct(
        &self,
        source: &BlobSource,
        start: u64,
        end: u64,
    ) -> Result<super::DirectStream, FetchError> {
        self.inner
            .stats
            .uncached_streams
            .fetch_add(1, Ordering::Relaxed);
        super::DirectStream::open(&self.inner.upstream, source, start, end).await
    }

    pub fn stats(&self) -> &FillStats {
        &self.inner.stats
    }

    pub fn settings(&self) -> &FillSettings {
        &self.inner.settings
    }

    fn live(&self, id: &BlobId) -> Option<Arc<BlobFill>> {
        self.inner.fills.lock().get(id).and_then(Weak::upgrade)
    }

    /// The fill of blob `id`, creating its file (empty) if it is not cached yet.
    pub async fn open(&self, id: &BlobId, source: BlobSource) -> Result<Arc<BlobFill>, FetchError> {
        if let Some(fill) = self.live(id) {
            fill.offer_source(source);
            return Ok(fill);
        }
        let store = Arc::clone(&self.inner.store);
        let (blob_id, size, block_size) = (id.clone(), source.size, self.inner.settings.block_size);
        let content_addressed = source.verifiable;
        let file = tokio::task::spawn_blocking(move || {
            store.create_blob(&blob_id, size, block_size, content_addressed)
        })
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?
        .map_err(|e| super::error::store_failure(&self.inner, e))?;
        Ok(self.adopt(id, file, Some(source)))
    }

    /// The fill of blob `id` only if it is already in the store (no file is created). Used
    /// offline, where nothing can be fetched.
    pub async fn open_cached(&self, id: &BlobId) -> Result<Option<Arc<BlobFill>>, FetchError> {
        if let Some(fill) = self.live(id) {
            return Ok(Some(fill));
        }
        let store = Arc::clone(&self.inner.store);
        let blob_id = id.clone();
        let file = tokio::task::spawn_blocking(move || store.open_blob(&blob_id))
            .await
            .map_err(|e| FetchError::Store(e.to_string()))?
            .map_err(|e| FetchError::Store(e.to_string()))?;
        Ok(file.map(|file| self.adopt(id, file, None)))
    }

    /// Register a fill for `file`, unless another task registered one meanwhile.
    fn adopt(&self, id: &BlobId, file: Arc<BlobFile>, source: Option<BlobSource>) -> Arc<BlobFill> {
        let mut fills = self.inner.fills.lock();
        if let Some(existing) = fills.get(id).and_then(Weak::upgrade) {
            if let Some(source) = source {
                existing.offer_source(source);
            }
            return existing;
        }
        let fill = BlobFill::new(id.clone(), file, source, Arc::downgrade(&self.inner));
        fills.insert(id.clone(), Arc::downgrade(&fill));
        drop(fills);
        fill.check_completed();
        fill
    }
}
