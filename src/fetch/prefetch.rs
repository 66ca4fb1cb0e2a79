//! Fetching a small file ahead of any client (the prefetcher's per-file work): the file's
//! fill is opened and read to its end like a reader would, so a client asking meanwhile
//! joins the same fill, and nothing is fetched twice. A file that is cached or already being
//! fetched is left alone.

use super::context::FillStats;
use super::{BlobSource, FetchError, FillEngine};
use crate::store::BlobId;

/// Bytes read per step while reading a prefetched file through.
const READ_STEP: usize = 1 << 20;

impl FillEngine {
    /// Fetch blob `id` into the cache from `source` unless it is cached or being fetched.
    /// Returns whether it was fetched (and counted as prefetched).
    pub async fn prefetch(&self, id: &BlobId, source: BlobSource) -> Result<bool, FetchError> {
        if source.size == 0 || self.registry.live(id).is_some() {
            return Ok(false);
        }
        let fill = self.open(id, source).await?;
        if fill.is_complete() {
            return Ok(false);
        }
        let size = fill.size();
        let mut offset = 0;
        while offset < size {
            let bytes = fill.read(offset, READ_STEP).await?;
            if bytes.is_empty() {
                break;
            }
            offset += bytes.len() as u64;
        }
        FillStats::add(&self.ctx.stats.prefetched_bytes, size);
        FillStats::add(&self.ctx.stats.prefetched_files, 1);
        Ok(true)
    }
}
