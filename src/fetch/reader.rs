//! A reader of a byte range of one blob, for whoever serves it (the cache adapter): reads
//! through the blob's fill, and when the cache has no room for the bytes, streams the rest of
//! the range from upstream uncached. A seek starts over: from the store again, and a new
//! uncached stream if the cache is still full.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{
    BlobFill, BlobSource, DirectStream, FetchError, FillEngine, FillStats, Piece, ReadSource,
};
use crate::store::BlobId;

/// Bytes one request read, by where they came from: blocks already on disk when it asked
/// (`cache`), or blocks fetched while it waited and uncached streams (`upstream`).
#[derive(Debug, Default)]
pub struct ReadTally {
    cache: AtomicU64,
    upstream: AtomicU64,
}

impl ReadTally {
    pub(super) fn add(&self, source: ReadSource, n: u64) {
        let counter = match source {
            ReadSource::Cache => &self.cache,
            ReadSource::Upstream => &self.upstream,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// (bytes from the cache, bytes from upstream).
    pub fn get(&self) -> (u64, u64) {
        (
            self.cache.load(Ordering::Relaxed),
            self.upstream.load(Ordering::Relaxed),
        )
    }
}

pub struct BlobReader {
    engine: FillEngine,
    id: BlobId,
    size: u64,
    /// How to fetch missing blocks; `None` offline (only cached blocks are served).
    source: Option<BlobSource>,
    fill: Option<Arc<BlobFill>>,
    /// Set when the cache is full: the rest of the range streams from upstream uncached.
    direct: Option<DirectStream>,
    pos: u64,
    end: u64,
    /// The download this reader serves, counted as a read of the blob with its first bytes.
    download: Option<u64>,
    tally: Option<Arc<ReadTally>>,
    /// Byte ranges whose blocks were on disk when the request arrived (`None`: unknown, the
    /// fill says per read): bytes elsewhere count as fetched for this request.
    cached_at_open: Option<Arc<Vec<Range<u64>>>>,
}

impl BlobReader {
    pub(super) fn new(
        engine: FillEngine,
        id: BlobId,
        size: u64,
        source: Option<BlobSource>,
        fill: Option<Arc<BlobFill>>,
    ) -> Self {
        Self {
            engine,
            id,
            size,
            source,
            fill,
            direct: None,
            pos: 0,
            end: size,
            download: None,
            tally: None,
            cached_at_open: None,
        }
    }

    /// Count this reader's bytes as a read by download `download` (once, with the first
    /// bytes it returns: a HEAD or a 304 reads nothing and counts nothing).
    pub fn count_as(&mut self, download: u64) {
        self.download = Some(download);
    }

    fn counted(&mut self) {
        if let Some(download) = self.download.take() {
            self.engine.note_read(&self.id, download);
        }
    }

    /// Count what this reader reads, by where it came from, into `tally`: from the cache only
    /// within `cached_at_open` (the byte ranges present when the request arrived), if given.
    pub fn with_tally(
        mut self,
        tally: Option<Arc<ReadTally>>,
        cached_at_open: Option<Arc<Vec<Range<u64>>>>,
    ) -> Self {
        self.tally = tally;
        self.cached_at_open = cached_at_open;
        self
    }

    fn count(&self, source: ReadSource, n: usize) {
        if let Some(tally) = &self.tally {
            tally.add(source, n as u64);
            let stats = self.engine.stats();
            let counter = match source {
                ReadSource::Cache => &stats.served_cache_bytes,
                ReadSource::Upstream => &stats.served_upstream_bytes,
            };
            FillStats::add(counter, n as u64);
        }
    }

    /// Read `[start, end)` from now on (`end` exclusive, clamped to the blob).
    pub fn seek(&mut self, start: u64, end: Option<u64>) -> Result<(), FetchError> {
        let end = end.unwrap_or(self.size).min(self.size);
        if start > end || (start >= self.size && self.size > 0) {
            return Err(FetchError::OutOfRange {
                blob: self.id.to_string(),
                offset: start,
                size: self.size,
            });
        }
        self.pos = start;
        self.end = end;
        // An uncached stream serves the old range only.
        self.direct = None;
        Ok(())
    }

    /// The next bytes of the range (at most `max`), `None` at its end.
    pub async fn next(&mut self, max: usize) -> Result<Option<Bytes>, FetchError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.direct.is_none() {
            let want = (self.end - self.pos).min(max as u64) as usize;
            match self.read_cached(want).await {
                Ok(bytes) if bytes.is_empty() => return Err(self.empty_read()),
                Ok(bytes) => {
                    self.pos += bytes.len() as u64;
                    self.counted();
                    return Ok(Some(bytes));
                }
                Err(e @ FetchError::NoSpace(_)) => self.go_direct(e).await?,
                Err(e) => return Err(e),
            }
        }
        let Some(direct) = self.direct.as_mut() else {
            return Err(FetchError::Internal("no uncached stream".into()));
        };
        let chunk = direct.next().await?;
        if let Some(bytes) = &chunk {
            self.pos += bytes.len() as u64;
            self.count(ReadSource::Upstream, bytes.len());
        }
        Ok(chunk)
    }

    /// [`next`](Self::next) for a sender that can hand file bytes to the kernel: runs of the
    /// blob file this process wrote itself come as [`Piece::Own`] (at most `max` bytes),
    /// everything else as bytes. Counted like `next` (when handed out).
    pub async fn next_piece(&mut self, max: u64) -> Result<Option<Piece>, FetchError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.direct.is_none() {
            let fill = self.fill().await?;
            let want = (self.end - self.pos).min(max);
            match fill.piece_from(self.pos, want).await {
                Ok((piece, source)) if !piece.is_empty() => {
                    let n = piece.len();
                    if let Piece::Own { .. } = piece {
                        FillStats::add(&self.engine.stats().sendfile_bytes, n);
                    }
                    self.count(self.source_at(self.pos, source), n as usize);
                    self.pos += n;
                    self.counted();
                    return Ok(Some(piece));
                }
                Ok(_) => return Err(self.empty_read()),
                Err(e @ FetchError::NoSpace(_)) => self.go_direct(e).await?,
                Err(e) => return Err(e),
            }
        }
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Ok(self.next(max).await?.map(Piece::Bytes))
    }

    fn empty_read(&self) -> FetchError {
        FetchError::Internal(format!("empty read at {} of {}", self.pos, self.id))
    }

    async fn fill(&mut self) -> Result<Arc<BlobFill>, FetchError> {
        if let Some(fill) = &self.fill {
            return Ok(Arc::clone(fill));
        }
        let fill =
            match &self.source {
                Some(source) => self.engine.open(&self.id, source.clone()).await?,
                None => self.engine.open_cached(&self.id).await?.ok_or_else(|| {
                    FetchError::NotCached {
                        blob: self.id.to_string(),
                        block: 0,
                    }
                })?,
            };
        fill.want_completion();
        self.fill = Some(Arc::clone(&fill));
        Ok(fill)
    }

    /// The next chunk from the store (through the fill engine), counted by where it came from.
    async fn read_cached(&mut self, want: usize) -> Result<Bytes, FetchError> {
        let fill = self.fill().await?;
        let (bytes, source) = fill.read_from(self.pos, want).await?;
        self.count(self.source_at(self.pos, source), bytes.len());
        Ok(bytes)
    }

    /// Where bytes at `pos` came from: fetched for this request when their block was not
    /// cached when it arrived (if known), else as the fill says.
    fn source_at(&self, pos: u64, source: ReadSource) -> ReadSource {
        match &self.cached_at_open {
            Some(cached) if !cached.iter().any(|run| run.contains(&pos)) => ReadSource::Upstream,
            _ => source,
        }
    }

    /// Switch to streaming the rest of the range from upstream without caching.
    async fn go_direct(&mut self, why: FetchError) -> Result<(), FetchError> {
        let Some(source) = self.source.as_ref() else {
            return Err(why);
        };
        log::warn!(
            "{}: {why}; streaming bytes {}-{} from upstream without caching",
            self.id,
            self.pos,
            self.end - 1
        );
        self.direct = Some(self.engine.open_direct(source, self.pos, self.end).await?);
        Ok(())
    }
}
