//! The engine: opens the fill of a blob (one per blob, through the [`Registry`]) with the
//! [`FillContext`] every fill shares, and readers over it.

use std::sync::Arc;

use super::context::{FillContext, FillSettings, FillStats};
use super::fill::{BlobFill, FillProgress};
use super::reader::BlobReader;
use super::registry::Registry;
use super::{BlobSource, DirectStream, FetchError};
use crate::store::{BlobFile, BlobId, Store};
use crate::upstream::UpstreamChain;

/// The fill engine. Cheap to clone.
#[derive(Clone)]
pub struct FillEngine {
    ctx: Arc<FillContext>,
    registry: Arc<Registry>,
}

impl FillEngine {
    pub fn new(store: Arc<Store>, upstream: Arc<UpstreamChain>, settings: FillSettings) -> Self {
        Self {
            ctx: Arc::new(FillContext::new(store, upstream, settings)),
            registry: Arc::new(Registry::default()),
        }
    }

    pub fn stats(&self) -> &FillStats {
        &self.ctx.stats
    }

    pub fn settings(&self) -> &FillSettings {
        &self.ctx.settings
    }

    /// Number of blobs with a live fill (readers, fetches or a background completion).
    pub fn live_fills(&self) -> usize {
        self.registry.len()
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

    /// The upstream (index in the chain) blob `id`'s bytes were last located on, if it has a
    /// live fill.
    pub fn upstream_of(&self, id: &BlobId) -> Option<usize> {
        self.registry
            .live(id)
            .and_then(|fill| fill.snapshot().upstream)
    }

    /// Upstream connections in use by fills now.
    pub fn connections_in_use(&self) -> usize {
        self.ctx
            .settings
            .connections_total
            .max(1)
            .saturating_sub(self.ctx.connections.available_permits())
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
        DirectStream::open(&self.ctx.upstream, source, start, end).await
    }

    /// The fill of blob `id`, creating its file (empty) if it is not cached yet.
    pub async fn open(&self, id: &BlobId, source: BlobSource) -> Result<Arc<BlobFill>, FetchError> {
        if let Some(fill) = self.registry.live(id) {
            fill.offer_source(source);
            return Ok(fill);
        }
        let store = Arc::clone(&self.ctx.store);
        let (blob_id, size, block_size) = (id.clone(), source.size, self.ctx.settings.block_size);
        let content_addressed = source.verifiable;
        let file = self
            .ctx
            .store_call(move || store.create_blob(&blob_id, size, block_size, content_addressed))
            .await?;
        Ok(self.adopt(id, file, Some(source)))
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
        Ok(file.map(|file| self.adopt(id, file, None)))
    }

    /// Take a background completion slot, as another blob's completion would.
    #[cfg(test)]
    pub(crate) async fn take_background_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        Arc::clone(&self.ctx.background)
            .acquire_owned()
            .await
            .expect("semaphore open")
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
