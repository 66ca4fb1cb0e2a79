//! The block store as a pingora-cache `Storage`.
//!
//! For every resolve request whose metadata is settled, the proxy enables the cache with
//! [`BLOB_STORAGE`] and puts a [`ServedBlob`] into the cache key's extensions. `lookup` always
//! answers a hit from it: the response header comes from the metadata, and the body from a
//! [`BlobHit`] that can seek: it adapts the fill engine's [`BlobReader`] (present blocks from
//! disk, missing ones waited for, an uncached stream when the cache is full) to Pingora.
//! Pingora's own Range, If-Range, conditional and HEAD handling then apply; its miss path
//! (which strips Range and turns HEAD into a full GET) is never used for blobs.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::CacheKey;
use pingora::cache::storage::{
    HandleHit, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, Storage};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use crate::fetch::{BlobFill, BlobReader, BlobSource, FillEngine, ReadTally};
use crate::store::BlobId;

/// Bytes handed to Pingora per `read_body` call.
const READ_CHUNK: usize = 1 << 20;

/// What the proxy decided to serve for one request.
pub struct ServedBlob {
    pub id: BlobId,
    pub size: u64,
    /// The ETag value (unquoted) the response carries.
    pub etag: String,
    pub engine: FillEngine,
    /// How to fetch missing blocks; `None` offline (only cached blocks are served).
    pub source: Option<BlobSource>,
    /// An already opened fill (the proxy opens it to check the first byte before answering).
    pub fill: Option<Arc<BlobFill>>,
    /// Which download this request belongs to (client address and agent), so that the range
    /// requests of one download count as one read of the blob.
    pub download: Option<u64>,
    /// Counts the bytes served, by where they came from (for metrics and the access log).
    pub tally: Arc<ReadTally>,
    /// The byte ranges that were cached when the request arrived (`None`: not known).
    pub cached_at_open: Option<Arc<Vec<std::ops::Range<u64>>>>,
}

impl ServedBlob {
    /// The stored response header of the whole blob (Pingora's range filter, the HF headers
    /// and the connection headers are added on the way out).
    pub fn response_header(&self) -> Result<ResponseHeader> {
        let mut header = ResponseHeader::build(200, Some(5))?;
        header.insert_header("content-length", self.size.to_string())?;
        header.insert_header("accept-ranges", "bytes")?;
        header.insert_header("etag", format!("\"{}\"", self.etag))?;
        header.insert_header("content-type", "application/octet-stream")?;
        Ok(header)
    }

    /// A reader of the whole blob that counts what it reads into this request's tally and
    /// as a read by its download.
    pub fn reader(&self) -> BlobReader {
        let mut reader = self
            .engine
            .reader(
                self.id.clone(),
                self.size,
                self.source.clone(),
                self.fill.clone(),
            )
            .with_tally(Some(Arc::clone(&self.tally)), self.cached_at_open.clone());
        if let Some(download) = self.download {
            reader.count_as(download);
        }
        reader
    }
}

/// The storage: stateless; everything it needs rides in the cache key.
pub struct BlobStorage;

pub static BLOB_STORAGE: BlobStorage = BlobStorage;

#[async_trait]
impl Storage for BlobStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(blob) = key.extensions.get::<Arc<ServedBlob>>() else {
            return Ok(None);
        };
        let now = SystemTime::now();
        // Blobs are immutable: fresh "forever" (a year is plenty; nothing is stored).
        let fresh_until = now + Duration::from_secs(365 * 24 * 3600);
        let meta = CacheMeta::new(fresh_until, now, 0, 0, blob.response_header()?);
        let hit = BlobHit {
            reader: blob.reader(),
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        _key: &CacheKey,
        _meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Err(Error::explain(
            ErrorType::InternalError,
            "the blob storage is never written through pingora's miss path",
        ))
    }

    async fn purge(
        &'static self,
        _target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(PurgeOutcome::NotFound)
    }

    async fn update_meta(
        &'static self,
        _key: &CacheKey,
        _meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        Ok(false)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Streams one blob (or a range of it) to Pingora.
pub struct BlobHit {
    reader: BlobReader,
}

fn read_error(e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::ReadError, e.to_string())
}

#[async_trait]
impl HandleHit for BlobHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        self.reader.next(READ_CHUNK).await.map_err(read_error)
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    /// `end` is exclusive, as in Pingora's range filter.
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        self.reader
            .seek(start as u64, end.map(|e| e as u64))
            .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))
    }

    fn should_count_access(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests;
