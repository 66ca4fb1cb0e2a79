//! The engine: opens the fill of a blob (one per blob, through the [`Registry`]) with the
//! [`FillContext`] every fill shares, and readers over it.

use std::sync::Arc;

#[cfg(test)]
use super::budget::BudgetPermit;
use super::context::{FillContext, FillSettings, FillStats};
use super::fill::{BlobFill, FillProgress};
use super::reader::BlobReader;
use super::registry::Registry;
use super::{BlobSource, DirectStream, FetchError, FillObserver, Room};
use crate::live::Live;
use crate::store::{BlobFile, BlobId, Removal, Store, StoreError};
use crate::upstream::UpstreamChain;

/// The fill engine. Cheap to clone.
#[derive(Clone)]
pub struct FillEngine {
    pub(super) ctx: Arc<FillContext>,
    pub(super) registry: Arc<Registry>,
}

impl FillEngine {
    /// An engine with a fixed chain and settings.
    pub fn new(store: Arc<Store>, upstream: Arc<UpstreamChain>, settings: FillSettings) -> Self {
        Self::live(
            store,
            Live::fixed(upstream),
            Live::fixed(Arc::new(settings)),
        )
    }

    /// An engine that follows config reloads: it reads `upstream` and `settings` anew for
    /// each piece of work; call [`follow_settings`](Self::follow_settings) after a change.
    pub fn live(
        store: Arc<Store>,
        upstream: Live<Arc<UpstreamChain>>,
        settings: Live<Arc<FillSettings>>,
    ) -> Self {
        Self {
            ctx: Arc::new(FillContext::new(store, upstream, settings)),
            registry: Arc::new(Registry::default()),
        }
    }

    pub fn stats(&self) -> &FillStats {
        &self.ctx.stats
    }

    /// The settings as configured now.
    pub fn settings(&self) -> Arc<FillSettings> {
        self.ctx.settings()
    }

    /// Apply changed settings: resize the connection and background budgets (work running
    /// keeps its permits), and wake every live fill so paused or resumed background
    /// completions notice (`offline`).
    pub fn follow_settings(&self) {
        self.ctx.follow_settings();
        self.wake_all();
    }

    /// The process is shutting down: no new background completion segments; running ones
    /// and readers' fetches finish.
    pub fn drain(&self) {
        self.ctx.drain();
        self.wake_all();
    }

    /// Upstream connections in use now (segment fetches running).
    pub fn connections_in_use(&self) -> usize {
        self.ctx.connections.in_use()
    }

    fn wake_all(&self) {
        for fill in self.registry.all() {
            fill.wake();
        }
    }

    /// Number of blobs with a live fill (readers, fetches or a background completion).
    pub fn live_fills(&self) -> usize {
        self.registry.len()
    }

    /// Sets who is told about opened, stored, read and released blobs and asked to make room
    /// on a full disk (once; later calls are ignored and return false).
    pub fn set_observer(&self, observer: Arc<dyn FillObserver>) -> bool {
        self.ctx.observer.set(observer).is_ok()
    }

    /// Whether blob `id` is being read or filled in this process.
    pub fn is_live(&self, id: &BlobId) -> bool {
        self.registry.live(id).is_some()
    }

    /// For every live fill that is completing its file: the root its copy is on and the
    /// content bytes still to come (what the fill will add to the cache).
    pub fn pending(&self) -> Vec<(usize, u64)> {
        self.registry
            .all()
            .iter()
            .filter_map(|fill| fill.pending())
            .collect()
    }

    /// Deletes blob `id` for eviction, through the engine: never while it has a live fill here
    /// (readers, fetches, a background completion), never while another process has it open,
    /// every replica or none (`Store::remove_unused`). Blocking: call from a blocking thread.
    pub fn evict_blocking(&self, id: &BlobId) -> Result<Removal, StoreError> {
        if self.is_live(id) {
            return Ok(Removal::InUse { root: 0 });
        }
        self.ctx.store.remove_unused(id)
    }

    /// Counts a read of blob `id` by download `download` (one access per download, however
    /// many range requests it makes: the observer dedups by this id).
    pub fn note_read(&self, id: &BlobId, download: u64) {
        if let Some(observer) = self.ctx.observer() {
            observer.read(id, download);
        }
    }

    /// The progress of every fill fetching bytes or with readers waiting, largest first.
    pub fn active_fills(&self) -> Vec<FillProgress> {
        let mut active: Vec<FillProgress> = self
            .registry
            .all()
            .iter()
            .map(|fill| fill.snapshot())
            .filter(FillProgress::is_active)
            .collect();
        active.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.blob.cmp(&b.blob)));
        active
    }

    /// The upstream blob `id`'s bytes were last located on, if it has a live fill.
    pub fn upstream_of(&self, id: &BlobId) -> Option<crate::upstream::UpstreamId> {
        self.registry
            .live(id)
            .and_then(|fill| fill.snapshot().upstream)
    }

    /// A reader of `[0, size)` of blob `id`: from the store through its fill, or (when the
    /// cache is full) streamed from upstream uncached. `fill` is an already opened fill;
    /// without `source` only cached bytes can be read.
    pub fn reader(
        &self,
        id: BlobId,
        size: u64,
        source: Option<BlobSource>,
        fill: Option<Arc<BlobFill>>,
    ) -> BlobReader {
        BlobReader::new(self.clone(), id, size, source, fill)
    }

    /// Stream `[start, end)` of a file from upstream without caching it (disk full).
    pub async fn open_direct(
        &self,
        source: &BlobSource,
        start: u64,
        end: u64,
    ) -> Result<DirectStream, FetchError> {
        FillStats::add(&self.ctx.stats.uncached_streams, 1);
        DirectStream::open(&self.ctx.upstream(), source, start, end).await
    }

    /// Ask the owner node of each blob (`cluster:`) for its bytes before the upstream chain.
    /// Set once; false if it was set already.
    pub fn set_cluster(
        &self,
        cluster: crate::live::Live<Option<Arc<crate::upstream::sibling::Cluster>>>,
    ) -> bool {
        self.ctx.cluster.set(cluster).is_ok()
    }

    /// The fill of blob `id` for a sibling's request: like [`open`](Self::open), but this
    /// fill never asks a sibling itself (a sibling request is never forwarded again).
    pub async fn open_for_sibling(
        &self,
        id: &BlobId,
        source: BlobSource,
    ) -> Result<Arc<BlobFill>, FetchError> {
        let fill = self.open(id, source).await?;
        fill.forbid_siblings();
        Ok(fill)
    }

    /// The fill of blob `id`, creating its file (empty) if it is not cached yet.
    pub async fn open(&self, id: &BlobId, source: BlobSource) -> Result<Arc<BlobFill>, FetchError> {
        if let Some(fill) = self.registry.live(id) {
            fill.offer_source(source);
            return Ok(fill);
        }
        let file = match self.create(id, &source).await {
            Err(FetchError::NoSpace(why)) => {
                // Full: let eviction make room on the blob's first home, then try once more.
                let home = self.ctx.store.placement(id).first().copied().unwrap_or(0);
                let room = Room {
                    root: home,
                    bytes: source.size,
                    new_file: true,
                };
                if !self.ctx.make_room(id, room).await {
                    return Err(FetchError::NoSpace(why));
                }
                self.create(id, &source).await?
            }
            other => other?,
        };
        if let Some(observer) = self.ctx.observer() {
            observer.opened(id, Some(&source.repo), &file);
        }
        Ok(self.adopt(id, file, Some(source)))
    }

    /// Creates (or finds) the blob's file for `source`.
    async fn create(&self, id: &BlobId, source: &BlobSource) -> Result<Arc<BlobFile>, FetchError> {
        let store = Arc::clone(&self.ctx.store);
        let block_size = self.ctx.settings().block_size;
        let (blob_id, size) = (id.clone(), source.size);
        let content_addressed = source.verifiable;
        self.ctx
            .store_call(move || store.create_blob(&blob_id, size, block_size, content_addressed))
            .await
    }

    /// The fill of blob `id` only if it is already in the store (no file is created). Used
    /// offline, where nothing can be fetched.
    pub async fn open_cached(&self, id: &BlobId) -> Result<Option<Arc<BlobFill>>, FetchError> {
        if let Some(fill) = self.registry.live(id) {
            return Ok(Some(fill));
        }
        let store = Arc::clone(&self.ctx.store);
        let blob_id = id.clone();
        let file = self
            .ctx
            .store_call(move || store.open_blob(&blob_id))
            .await?;
        if let (Some(observer), Some(file)) = (self.ctx.observer(), &file) {
            observer.opened(id, None, file);
        }
        Ok(file.map(|file| self.adopt(id, file, None)))
    }

    /// Take a background completion slot, as another blob's completion would.
    #[cfg(test)]
    pub(crate) async fn take_background_slot(&self) -> BudgetPermit {
        self.ctx.background.acquire().await.expect("semaphore open")
    }

    /// Register a fill for `file`, unless another task registered one meanwhile.
    fn adopt(&self, id: &BlobId, file: Arc<BlobFile>, source: Option<BlobSource>) -> Arc<BlobFill> {
        let ctx = Arc::clone(&self.ctx);
        let offered = source.clone();
        let (fill, new) = self
            .registry
            .get_or_insert(id, || BlobFill::new(id.clone(), file, source, ctx));
        if new {
            fill.check_completed();
        } else if let Some(source) = offered {
            fill.offer_source(source);
        }
        fill
    }
}
