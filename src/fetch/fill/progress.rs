//! What a fill can tell about itself without changing anything: its progress (for the status
//! page and metrics), how much of a range was cached when a request opened it, and where the
//! bytes of a read came from.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::BlobFill;
use crate::fetch::context::FillStats;
use crate::store::{BlobFile, BlobId};

/// The progress of one blob's fill.
#[derive(Debug, Clone)]
pub struct FillProgress {
    pub blob: BlobId,
    /// `models/org/name` and the file path the bytes are fetched as (unknown offline).
    pub repo: Option<String>,
    pub path: Option<String>,
    pub size: u64,
    /// Bytes of committed blocks.
    pub present_bytes: u64,
    /// Bytes on disk of blocks being fetched.
    pub in_flight_bytes: u64,
    /// Segment fetches running.
    pub segments: usize,
    /// Readers waiting for one of its blocks.
    pub readers_waiting: usize,
    /// Since the fill was set up in this process.
    pub age: Duration,
    /// Bytes fetched since then (present and in-flight now, minus present then).
    pub fetched_bytes: u64,
    /// The upstream it fetches from, once located.
    pub upstream: Option<crate::upstream::UpstreamId>,
}

impl FillProgress {
    /// The mean fetch rate since the fill was set up, in bytes per second.
    pub fn rate(&self) -> f64 {
        let secs = self.age.as_secs_f64();
        if secs > 0.0 {
            self.fetched_bytes as f64 / secs
        } else {
            0.0
        }
    }

    /// Whether bytes are being fetched for it, or readers wait for them.
    pub fn is_active(&self) -> bool {
        self.segments > 0 || self.readers_waiting > 0
    }
}

/// How much of the blocks a byte range needs were present when it was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheShare {
    /// Blocks present.
    pub present: u64,
    /// Blocks the range needs.
    pub total: u64,
    /// The byte ranges of the present blocks (runs of adjacent blocks merged).
    pub cached: Vec<Range<u64>>,
}

impl CacheShare {
    /// `hit` (all present), `partial` (some) or `miss` (none).
    pub fn outcome(&self) -> &'static str {
        if self.present >= self.total {
            "hit"
        } else if self.present == 0 {
            "miss"
        } else {
            "partial"
        }
    }
}

/// Where the bytes of one read came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// A block that was on disk when the reader asked for it.
    Cache,
    /// A block fetched (or still being fetched) while the reader waited.
    Upstream,
}

/// Bytes of the present blocks of `file`.
pub(super) fn present_bytes(file: &BlobFile) -> u64 {
    let count = file.block_count();
    let present = file.present_count();
    if count == 0 || present == 0 {
        return 0;
    }
    let full = present.saturating_mul(file.block_size());
    if file.is_present(count - 1) {
        // The last block is short.
        let last = file.block_span(count - 1);
        full - (file.block_size() - (last.end - last.start))
    } else {
        full
    }
    .min(file.size())
}

impl BlobFill {
    /// Its progress now.
    pub fn snapshot(&self) -> FillProgress {
        let (present, in_flight, segments) = {
            let st = self.state.lock();
            (
                present_bytes(&st.file),
                st.blocks.in_flight_written(),
                st.running,
            )
        };
        let (repo, path) = self.locator.describe().unzip();
        FillProgress {
            blob: self.id.clone(),
            repo,
            path,
            size: self.size,
            present_bytes: present,
            in_flight_bytes: in_flight,
            segments,
            readers_waiting: self.waiting.load(Ordering::Relaxed),
            age: self.created.elapsed(),
            fetched_bytes: (present + in_flight).saturating_sub(self.initial_bytes),
            upstream: self.locator.last_upstream(),
        }
    }

    /// Which of the blocks holding bytes `[start, end)` are present now.
    pub fn cached_share(&self, start: u64, end: u64) -> CacheShare {
        let st = self.state.lock();
        let file = &st.file;
        let mut share = CacheShare::default();
        if end <= start || start >= self.size {
            return share;
        }
        let first = file.block_of(start);
        let last = file.block_of(end.min(self.size) - 1);
        share.total = last - first + 1;
        for block in first..=last {
            if !file.is_present(block) {
                continue;
            }
            share.present += 1;
            let span = file.block_span(block);
            match share.cached.last_mut() {
                Some(run) if run.end == span.start => run.end = span.end,
                _ => share.cached.push(span),
            }
        }
        share
    }

    /// Count a reader as waiting until the guard is dropped.
    pub(super) fn reader_waits(self: &Arc<Self>) -> WaitingReader {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        FillStats::add(&self.ctx.stats.readers_waiting, 1);
        WaitingReader {
            fill: Arc::clone(self),
        }
    }
}

/// A reader waiting for a block (see [`BlobFill::reader_waits`]).
pub(super) struct WaitingReader {
    fill: Arc<BlobFill>,
}

impl Drop for WaitingReader {
    fn drop(&mut self) {
        self.fill.waiting.fetch_sub(1, Ordering::Relaxed);
        FillStats::sub(&self.fill.ctx.stats.readers_waiting, 1);
    }
}
