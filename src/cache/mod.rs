//! The block store as a pingora-cache `Storage`.
//!
//! For every resolve request whose metadata is settled, the proxy enables the cache with
//! [`BLOB_STORAGE`] and puts a [`ServedBlob`] into the cache key's extensions. `lookup` always
//! answers a hit from it: the response header comes from the metadata, and the body from a
//! [`BlobHit`] that can seek and that reads present blocks from disk and waits for missing
//! ones from the fill engine. Pingora's own Range, If-Range, conditional and HEAD handling
//! then apply; its miss path (which strips Range and turns HEAD into a full GET) is never
//! used for blobs.

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

use crate::fetch::{BlobFill, BlobSource, DirectStream, FetchError, FillEngine};
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
}

impl ServedBlob {
    fn response_header(&self) -> Result<ResponseHeader> {
        let mut header = ResponseHeader::build(200, Some(5))?;
        header.insert_header("content-length", self.size.to_string())?;
        header.insert_header("accept-ranges", "bytes")?;
        header.insert_header("etag", format!("\"{}\"", self.etag))?;
        header.insert_header("content-type", "application/octet-stream")?;
        Ok(header)
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
            blob: Arc::clone(blob),
            fill: blob.fill.clone(),
            direct: None,
            pos: 0,
            end: blob.size,
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
    blob: Arc<ServedBlob>,
    fill: Option<Arc<BlobFill>>,
    /// Set when the cache is full: the rest of the range streams from upstream uncached.
    direct: Option<DirectStream>,
    pos: u64,
    end: u64,
}

fn read_error(e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::ReadError, e.to_string())
}

impl BlobHit {
    async fn fill(&mut self) -> Result<Arc<BlobFill>, FetchError> {
        if let Some(fill) = &self.fill {
            return Ok(Arc::clone(fill));
        }
        let fill = match &self.blob.source {
            Some(source) => self.blob.engine.open(&self.blob.id, source.clone()).await?,
            None => self
                .blob
                .engine
                .open_cached(&self.blob.id)
                .await?
                .ok_or_else(|| FetchError::NotCached {
                    blob: self.blob.id.to_string(),
                    block: 0,
                })?,
        };
        fill.want_completion();
        self.fill = Some(Arc::clone(&fill));
        Ok(fill)
    }

    /// The next chunk from the store (through the fill engine).
    async fn read_cached(&mut self, want: usize) -> Result<Bytes, FetchError> {
        let fill = self.fill().await?;
        fill.read(self.pos, want).await
    }

    /// Switch to streaming the rest of the range from upstream without caching.
    async fn go_direct(&mut self, why: &FetchError) -> Result<()> {
        let source = self.blob.source.as_ref().ok_or_else(|| read_error(why))?;
        log::warn!(
            "{}: {why}; streaming bytes {}-{} from upstream without caching",
            self.blob.id,
            self.pos,
            self.end - 1
        );
        let stream = self
            .blob
            .engine
            .open_direct(source, self.pos, self.end)
            .await
            .map_err(read_error)?;
        self.direct = Some(stream);
        Ok(())
    }
}

#[async_trait]
impl HandleHit for BlobHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.direct.is_none() {
            let want = (self.end - self.pos).min(READ_CHUNK as u64) as usize;
            match self.read_cached(want).await {
                Ok(bytes) if bytes.is_empty() => {
                    return Err(read_error(format!(
                        "empty read at {} of {}",
                        self.pos, self.blob.id
                    )))
                }
                Ok(bytes) => {
                    self.pos += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
                Err(e @ FetchError::NoSpace(_)) => self.go_direct(&e).await?,
                Err(e) => return Err(read_error(e)),
            }
        }
        let direct = self
            .direct
            .as_mut()
            .ok_or_else(|| read_error("no direct stream"))?;
        match direct.next().await.map_err(read_error)? {
            Some(bytes) => {
                self.pos += bytes.len() as u64;
                Ok(Some(bytes))
            }
            None => Ok(None),
        }
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
        let start = start as u64;
        let end = end
            .map(|e| e as u64)
            .unwrap_or(self.blob.size)
            .min(self.blob.size);
        if start > end || (start >= self.blob.size && self.blob.size > 0) {
            return Err(Error::explain(
                ErrorType::InternalError,
                format!("seek {start}..{end} outside {} bytes", self.blob.size),
            ));
        }
        self.pos = start;
        self.end = end;
        Ok(())
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
