//! Readers: wait until an offset is readable (demanding its block and the read-ahead), read
//! verified bytes of committed blocks or raw bytes of blocks in flight, and recover from a
//! bad block (fetch it again) or a failing disk (move to another copy).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::large_reads::{LARGE_READ, LARGE_READS};
use super::{BlobFill, ReadSource};
use crate::fetch::blocks::Block;
use crate::fetch::context::{blocking, FillStats};
use crate::fetch::send::Piece;
use crate::fetch::FetchError;
use crate::store::{BlobFile, StoreError};

/// A reader that sees no progress at all on its blob for this long gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read at a time from a block still being filled. Readers that follow a fill (many
/// clients of one cold file) each hold their read until the socket took it, so it is kept
/// small; these reads check no checksums, so a small read costs only a system call.
const RAW_READ_MAX: usize = 256 << 10;
/// Bytes read at a time from pages already checked since the blob file last changed: such a
/// read needs no whole page (nothing to check), and readers that trail a fill hold their
/// read until the socket took it, so it is kept small as well.
const KNOWN_GOOD_READ_MAX: usize = 256 << 10;
/// How many times one read retries after a bad block or a lost copy.
const READ_RETRIES: usize = 3;

/// What a reader may read at an offset.
enum Readable {
    /// A committed block, readable with checksum verification up to `until`.
    Verified { until: u64 },
    /// A block in flight, whose bytes up to `until` are on disk.
    Raw { until: u64 },
}

/// One read of a reader: `len` bytes at `offset`, checked or raw. A checked read that runs to
/// the end of its page reads and checks the whole page, which is then shared with the other
/// readers of the blob ([`RecentPages`](super::recent::RecentPages)).
#[derive(Clone, Copy)]
struct PageRead {
    offset: u64,
    len: usize,
    verify: bool,
    /// The page and its span when the whole page is read.
    page: Option<(u64, u64, u64)>,
}

impl PageRead {
    fn plan(file: &BlobFile, readable: Readable, offset: u64, max: usize) -> Self {
        match readable {
            Readable::Raw { until } => Self {
                offset,
                len: (until - offset).min(max.min(RAW_READ_MAX) as u64) as usize,
                verify: false,
                page: None,
            },
            Readable::Verified { until } => {
                let page_size = file.page_size();
                let page = offset / page_size;
                let page_start = page * page_size;
                let page_end = (page_start + page_size).min(file.size());
                let len = (until.min(page_end) - offset).min(max as u64) as usize;
                let to_page_end = offset + len as u64 == page_end && until >= page_end;
                Self {
                    offset,
                    len,
                    verify: true,
                    page: to_page_end.then_some((page, page_start, page_end)),
                }
            }
        }
    }

    /// The bytes from a page another reader just read and checked, if it is kept.
    fn shared(&self, recent: &super::recent::RecentPages, file: &Arc<BlobFile>) -> Option<Bytes> {
        if !self.verify {
            return None;
        }
        recent.get(file, self.offset, self.len)
    }

    /// Read from disk: the bytes, and the page number when they are the whole page (else they
    /// are this read's bytes, or the first part of them). Bytes this handle wrote itself, or
    /// of pages already checked since the file last changed, are not read whole: only the
    /// first [`RAW_READ_MAX`] or [`KNOWN_GOOD_READ_MAX`] bytes.
    fn run(&self, file: &BlobFile) -> Result<(Bytes, Option<u64>), StoreError> {
        if self.verify {
            // Bytes this process wrote into the file it created need no check (`read_own`):
            // read large while the process-wide allowance lasts, else small.
            let large = (self.len > RAW_READ_MAX)
                .then(|| LARGE_READS.try_take())
                .flatten();
            let len = self.len.min(if large.is_some() {
                LARGE_READ
            } else {
                RAW_READ_MAX
            });
            if let Some(bytes) = file.read_own(self.offset, len)? {
                let bytes = match large {
                    Some(share) => share.hold(bytes),
                    None => bytes,
                };
                return Ok((bytes, None));
            }
        }
        match (self.verify, self.page) {
            (true, Some(_)) if file.is_known_good(self.offset, self.len) => {
                let len = self.len.min(KNOWN_GOOD_READ_MAX);
                file.read_verified(self.offset, len).map(|b| (b, None))
            }
            (true, Some((page, start, end))) => file
                .read_verified(start, (end - start) as usize)
                .map(|bytes| (bytes, Some(page))),
            (true, None) => file.read_verified(self.offset, self.len).map(|b| (b, None)),
            (false, _) => file.read_raw(self.offset, self.len).map(|b| (b, None)),
        }
    }

    /// This read's bytes out of what [`run`](Self::run) returned.
    fn part_of(&self, bytes: Bytes, whole_page: Option<u64>) -> Bytes {
        match self.page {
            Some((_, start, _)) if whole_page.is_some() => {
                let from = (self.offset - start) as usize;
                bytes.slice(from..from + self.len)
            }
            _ => bytes,
        }
    }
}

enum Step {
    Ready(Readable, Arc<BlobFile>),
    Wait,
}

impl BlobFill {
    /// Wait until the byte at `offset` can be read (fetching its block if needed). Used to
    /// answer an error status instead of a broken 200 when the upstream cannot deliver.
    pub async fn wait_readable(self: &Arc<Self>, offset: u64) -> Result<(), FetchError> {
        self.readable(offset).await.map(|_| ())
    }

    /// [`read_from`](Self::read_from) without saying where the bytes came from.
    pub async fn read(self: &Arc<Self>, offset: u64, max: usize) -> Result<Bytes, FetchError> {
        self.read_from(offset, max).await.map(|(bytes, _)| bytes)
    }

    /// Read up to `max` bytes at `offset`: verified bytes from committed blocks, or bytes of
    /// a block in flight as soon as they are on disk. Waits for missing blocks. A block that
    /// fails its checksum is fetched again; a copy on a failing disk is replaced. Also says
    /// whether the block was on disk when asked for, or had to be fetched.
    pub async fn read_from(
        self: &Arc<Self>,
        offset: u64,
        max: usize,
    ) -> Result<(Bytes, ReadSource), FetchError> {
        if offset >= self.size {
            return Err(FetchError::OutOfRange {
                blob: self.id.to_string(),
                offset,
                size: self.size,
            });
        }
        let mut retries = 0;
        let mut waited = false;
        loop {
            let (readable, file, waited_now) = self.readable(offset).await?;
            waited |= waited_now;
            let read = PageRead::plan(&file, readable, offset, max);
            let source = if waited || !read.verify {
                ReadSource::Upstream
            } else {
                ReadSource::Cache
            };
            if let Some(bytes) = read.shared(&self.recent, &file) {
                FillStats::add(&self.ctx.stats.verified_read_bytes, read.len as u64);
                return Ok((bytes, source));
            }
            let reader = Arc::clone(&file);
            let result = blocking(move || read.run(&reader)).await?;
            let error = match result {
                Ok((bytes, whole_page)) => {
                    if let Some(page) = whole_page {
                        self.recent.keep(&file, page, bytes.clone());
                    }
                    let part = read.part_of(bytes, whole_page);
                    if read.verify {
                        FillStats::add(&self.ctx.stats.verified_read_bytes, part.len() as u64);
                    }
                    return Ok((part, source));
                }
                Err(e) => e,
            };
            if retries >= READ_RETRIES {
                return Err(error.into());
            }
            retries += 1;
            self.recover_from_read_error(&file, offset, error).await?;
        }
    }

    /// The next bytes at `offset` (at most `max`) for a sender that can hand file bytes to the
    /// kernel: committed blocks of the blob file this process created and still has custody
    /// of come as a [`Piece::Own`] run of the file (at most to the block's end); anything
    /// else (a block in flight, a file opened from disk or changed by someone else) is read
    /// as [`read_from`](Self::read_from) does. Waits for missing blocks like a read.
    ///
    /// Blocks in flight are left out: their bytes may still be written again (a segment
    /// that fails starts its block over), while a committed block changes only once it is
    /// invalidated, which [`BlobFile::invalidations`] counts.
    pub async fn piece_from(
        self: &Arc<Self>,
        offset: u64,
        max: u64,
    ) -> Result<(Piece, ReadSource), FetchError> {
        if offset < self.size && max > 0 {
            let (readable, file, waited) = self.readable(offset).await?;
            if let Readable::Verified { until } = readable {
                let custody = file.has_custody() && {
                    let file = Arc::clone(&file);
                    blocking(move || file.in_custody()).await?
                };
                // The count first: the block is then present at least until it moves.
                let invalidations = file.invalidations();
                if custody && file.is_present(file.block_of(offset)) {
                    let source = if waited {
                        ReadSource::Upstream
                    } else {
                        ReadSource::Cache
                    };
                    let len = (until - offset).min(max);
                    let piece = Piece::Own {
                        file,
                        offset,
                        len,
                        invalidations,
                    };
                    return Ok((piece, source));
                }
            }
        }
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let (bytes, source) = self.read_from(offset, max).await?;
        Ok((Piece::Bytes(bytes), source))
    }

    /// A read failed: refetch a bad block, or move to another copy of a failing disk.
    async fn recover_from_read_error(
        self: &Arc<Self>,
        file: &Arc<BlobFile>,
        offset: u64,
        error: StoreError,
    ) -> Result<(), FetchError> {
        let block = file.block_of(offset);
        if error.is_short_read() {
            // Truncated underneath us: the block's bytes are gone; forget it on disk too.
            let truncated = Arc::clone(file);
            let invalidated = blocking(move || truncated.invalidate_block(block)).await?;
            if let Err(e) = invalidated {
                log::warn!(
                    "{}: cannot invalidate truncated block {block}: {e}",
                    self.id
                );
            }
        }
        if error.is_corrupt() || error.is_not_present() || error.is_short_read() {
            if error.is_corrupt() {
                FillStats::add(&self.ctx.stats.corrupt_blocks, 1);
            }
            log::warn!("{}: {error}; fetching block {block} again", self.id);
            self.block_lost(file, block);
            return Ok(());
        }
        if error.is_io_error() {
            log::warn!("{}: {error}; switching to another copy", self.id);
            return self.switch_copy(file, Arc::new(error)).await;
        }
        Err(error.into())
    }

    /// A committed block turned out bad (or vanished): it is fetched again.
    fn block_lost(&self, file: &Arc<BlobFile>, block: u64) {
        self.recent.clear();
        {
            let mut st = self.state.lock();
            if !Arc::ptr_eq(&st.file, file) {
                return;
            }
            st.blocks.lost(block);
        }
        self.notify();
    }

    /// Wait until `offset` is readable; demands its block (and the read-ahead) if missing.
    /// The bool says whether it had to wait.
    async fn readable(
        self: &Arc<Self>,
        offset: u64,
    ) -> Result<(Readable, Arc<BlobFile>, bool), FetchError> {
        let started = Instant::now();
        let mut changes = self.version.subscribe();
        let mut last_change = Instant::now();
        let mut waiting = None;
        loop {
            changes.borrow_and_update();
            let (step, demanded) = self.check(offset, started)?;
            if demanded {
                self.schedule();
            }
            match step {
                Step::Ready(readable, file) => return Ok((readable, file, waiting.is_some())),
                Step::Wait => {
                    if waiting.is_none() {
                        waiting = Some(self.reader_waits());
                    }
                    let left = STALL_TIMEOUT.saturating_sub(last_change.elapsed());
                    match tokio::time::timeout(left, changes.changed()).await {
                        Ok(Ok(())) => last_change = Instant::now(),
                        Ok(Err(_)) | Err(_) => {
                            return Err(FetchError::Stalled {
                                blob: self.id.to_string(),
                                secs: STALL_TIMEOUT.as_secs(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Look at the block holding `offset`; demand it (and the read-ahead) if missing.
    fn check(&self, offset: u64, started: Instant) -> Result<(Step, bool), FetchError> {
        let settings = self.ctx.settings();
        // Only readers that started online offered a source; such a reader keeps getting its
        // blocks even if `offline` was switched on since (its download finishes).
        let can_fetch = self.locator.has_source();
        let mut st = self.state.lock();
        let file = Arc::clone(&st.file);
        let block = file.block_of(offset);
        let span = file.block_span(block);
        let step = match st.blocks.state(block) {
            Block::Present => Step::Ready(Readable::Verified { until: span.end }, file.clone()),
            Block::InFlight { written, .. } if span.start + written > offset => Step::Ready(
                Readable::Raw {
                    until: span.start + written,
                },
                file.clone(),
            ),
            // Fetched first from the page a reader asked for (range-first).
            Block::InFlight { ahead, .. } if ahead.contains(&(offset - span.start)) => Step::Ready(
                Readable::Raw {
                    until: span.start + ahead.end,
                },
                file.clone(),
            ),
            Block::InFlight { .. } | Block::Elsewhere => Step::Wait,
            Block::Failed { at, error } if at >= started => return Err(error),
            Block::Failed { .. } | Block::Missing => {
                if let Some(at) = st.out_of_space() {
                    // The cache is full: let the reader stream these bytes uncached.
                    return Err(FetchError::NoSpace(format!(
                        "no space for {} {}s ago",
                        self.id,
                        at.elapsed().as_secs()
                    )));
                }
                if !can_fetch {
                    return Err(FetchError::NotCached {
                        blob: self.id.to_string(),
                        block,
                    });
                }
                st.blocks.demand_from(block, offset - span.start);
                Step::Wait
            }
        };
        let mut demanded = matches!(step, Step::Wait);
        if can_fetch {
            let ahead = settings.read_ahead.div_ceil(file.block_size().max(1));
            let last = (block + ahead).min(file.block_count().saturating_sub(1));
            demanded |= st.blocks.demand_ahead(block + 1..last + 1);
        }
        Ok((step, demanded))
    }
}
