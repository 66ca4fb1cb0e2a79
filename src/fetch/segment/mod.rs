//! One segment fetch: a ranged GET of a run of whole blocks, streamed into the store.
//!
//! Range-first: a segment for one block a reader waits for in its middle fetches from the
//! reader's page to the block's end first, then the block's bytes before that page, and
//! commits the block (with the two parts' page checksums) once both are on disk.
//!
//! The response must be a `206` whose `Content-Range` is exactly what was asked (or a `200`
//! when the whole file was asked); anything else is rejected before a byte is written. A
//! stream that breaks off is resumed from the last byte received, after locating the file
//! again (the chain fails over to the next upstream when one keeps failing).
//!
//! A segment knows nothing of the fill that started it: it reports what happens to its
//! blocks through a [`SegmentSink`], and settles them even when it panics or is cancelled.

mod claims;
mod response;
mod sibling;
mod writer;

pub(super) use response::{check_response, skip_prefix};

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::blocks::Unclaimed;
use super::context::{blocking, spawn, FillContext, FillStats};
use super::locator::Locator;
use super::FetchError;
use crate::store::{BlobFile, BlobId, StoreError};
use crate::upstream::{FailureKind, Location, UpstreamId};
use writer::SegmentWriter;

/// Consecutive attempts without progress before a segment's remaining blocks fail.
const MAX_ATTEMPTS: u32 = 6;
/// Attempts per segment in all (progress or not), so a stream that keeps breaking ends.
const MAX_TOTAL_ATTEMPTS: u32 = 64;
/// Broken streams in a row from one upstream before the next upstream is preferred.
const SWITCH_AFTER: u32 = 3;

/// The copy of a blob a piece of work was started on: when the fill moves to another copy
/// (a failing disk), it bumps the generation and ignores reports about older ones.
#[derive(Clone)]
pub(super) struct CopyRef {
    pub(super) file: Arc<BlobFile>,
    pub(super) generation: u64,
}

/// Where a segment reports what happens to its blocks.
#[async_trait]
pub(super) trait SegmentSink: Send + Sync {
    /// The blob, for log lines.
    fn blob(&self) -> &BlobId;
    /// The blob's size in bytes.
    fn size(&self) -> u64;
    /// Claiming handed these blocks back (present, filled elsewhere, or left for later).
    fn unclaimed(&self, copy: &CopyRef, blocks: &Unclaimed);
    /// `written` bytes of `block` are on disk; all of it and committed if `committed`.
    fn progress(&self, copy: &CopyRef, block: u64, written: u64, committed: bool);
    /// The bytes `ahead` (offsets in `block`) are on disk, fetched before the block's first
    /// bytes (range-first).
    fn progress_ahead(&self, _copy: &CopyRef, _block: u64, _ahead: Range<u64>) {}
    /// The segment gave up on `blocks` (those not committed fail with `error`).
    fn failed(&self, copy: &CopyRef, blocks: Range<u64>, error: FetchError);
    /// The segment ended, whichever way (always called exactly once).
    fn finished(&self);
    /// Writing to `copy` failed with a disk error: continue on another copy.
    async fn disk_failed(&self, copy: &CopyRef, error: Arc<StoreError>);
}

/// One run of blocks to fetch.
pub(super) struct Segment {
    pub(super) ctx: Arc<FillContext>,
    pub(super) locator: Arc<Locator>,
    pub(super) sink: Arc<dyn SegmentSink>,
    pub(super) copy: CopyRef,
    pub(super) blocks: Range<u64>,
    /// Offset in the first block (on a page boundary) to start fetching at; its bytes before
    /// that are fetched last. 0: fetch in order.
    pub(super) from: u64,
}

/// Fetch `segment` in a task of its own (a client that disconnects does not cancel it).
pub(super) fn spawn_segment(segment: Segment) {
    spawn(run(segment));
}

/// Settles a segment's blocks however its task ends: the blocks still `unsettled` fail (so
/// they are fetched again) and the sink hears `finished`, even when the task panics or is
/// cancelled.
struct Settle {
    sink: Arc<dyn SegmentSink>,
    copy: CopyRef,
    unsettled: Range<u64>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        if !self.unsettled.is_empty() {
            let blocks = std::mem::replace(&mut self.unsettled, 0..0);
            log::error!(
                "{}: the fetch of blocks {blocks:?} ended unexpectedly",
                self.sink.blob()
            );
            let error = FetchError::Internal("the fetch of these blocks ended unexpectedly".into());
            self.sink.failed(&self.copy, blocks, error);
        }
        self.sink.finished();
    }
}

pub(super) async fn run(segment: Segment) {
    let mut settle = Settle {
        sink: Arc::clone(&segment.sink),
        copy: segment.copy.clone(),
        unsettled: segment.blocks.clone(),
    };
    let outcome = fetch_segment(&segment).await;
    settle.unsettled = 0..0;
    if let Err((from_block, error)) = outcome {
        log::warn!(
            "{}: blocks {from_block}..{} failed: {error}",
            segment.sink.blob(),
            segment.blocks.end
        );
        segment
            .sink
            .failed(&segment.copy, from_block..segment.blocks.end, error);
    }
}

/// Why one attempt ended early.
enum Interrupted {
    /// Try again (possibly elsewhere), from where we are. `blame`: what it says about the
    /// upstream's health that the chain has not counted yet (a body that broke off or came
    /// back wrong); `None` for what the chain counted itself (no answer, 5xx, 429) or what is
    /// not the upstream's fault (an expired signed URL).
    Retry {
        reason: String,
        blame: Option<FailureKind>,
    },
    /// Stop: retrying cannot help.
    Fatal(FetchError),
}

impl Interrupted {
    fn retry(reason: String) -> Self {
        Interrupted::Retry {
            reason,
            blame: None,
        }
    }

    fn blame(reason: String, kind: FailureKind) -> Self {
        Interrupted::Retry {
            reason,
            blame: Some(kind),
        }
    }
}

async fn fetch_segment(segment: &Segment) -> Result<(), (u64, FetchError)> {
    let Segment {
        ctx,
        sink,
        copy,
        blocks,
        from,
        ..
    } = segment;
    let _connection = ctx.connections.acquire().await.map_err(|_| {
        (
            blocks.start,
            FetchError::Internal("connection budget closed".into()),
        )
    })?;
    // Another process sharing the cache may be filling some of these blocks.
    let file = Arc::clone(&copy.file);
    let range = blocks.clone();
    let (claimed, unclaimed) = blocking(move || claims::claim_run(&file, range))
        .await
        .and_then(|claimed| claimed.map_err(FetchError::from))
        .map_err(|e| (blocks.start, e))?;
    sink.unclaimed(copy, &unclaimed);
    if claimed.fetch.is_empty() {
        return Ok(());
    }
    let file = &copy.file;
    let start = file.block_span(claimed.fetch.start).start;
    let end = file.block_span(claimed.fetch.end - 1).end;
    let mut writer = SegmentWriter::new(
        Arc::clone(ctx),
        Arc::clone(sink),
        copy.clone(),
        start,
        claimed.claims,
    );
    // Range-first (only when the block asked for is the one claimed): from the reader's page
    // to the end, then the bytes before it.
    let split = *from > 0 && claimed.fetch.start == blocks.start && start + from < end;
    let mut parts = Vec::with_capacity(2);
    if split {
        writer.split_at(claimed.fetch.start, start + from);
        parts.push(start + from..end);
        parts.push(start..start + from);
    } else {
        parts.push(start..end);
    }
    let mut failures = 0;
    let mut attempts = 0;
    for part in parts {
        writer.restart_at(part.start);
        // In a cluster, the blob's owner node first; the upstream chain for what it leaves.
        sibling::fetch_from_siblings(segment, &mut writer, part.end)
            .await
            .map_err(|e| (writer.block(), e))?;
        fetch_part(segment, &mut writer, part.end, &mut failures, &mut attempts).await?;
    }
    Ok(())
}

/// Fetch the bytes from `writer.pos` to `end`, resuming broken streams.
async fn fetch_part(
    segment: &Segment,
    writer: &mut SegmentWriter,
    end: u64,
    failures: &mut u32,
    attempts: &mut u32,
) -> Result<(), (u64, FetchError)> {
    let Segment {
        ctx, locator, sink, ..
    } = segment;
    let mut streak: (Option<UpstreamId>, u32) = (None, 0);
    let mut last_reason = String::new();
    while writer.pos < end {
        let location = match locator.locate(ctx, sink.blob()).await {
            Ok(location) => location,
            Err(e) => return Err((writer.block(), e)),
        };
        let before = writer.pos;
        match stream_range(ctx, sink.size(), &location, writer, end, *failures > 0).await {
            Ok(()) => {}
            Err(Interrupted::Fatal(e)) => return Err((writer.block(), e)),
            Err(Interrupted::Retry { reason, blame }) => {
                *attempts += 1;
                // A stream that broke after delivering bytes is resumed; only attempts that
                // make no progress count towards giving up.
                *failures = if writer.pos > before {
                    1
                } else {
                    *failures + 1
                };
                log::warn!(
                    "{}: bytes {}-{} from {}: {reason} (attempt {failures})",
                    sink.blob(),
                    writer.pos,
                    end - 1,
                    location.url.origin().ascii_serialization()
                );
                if writer.pos > before {
                    FillStats::add(&ctx.stats.resumes, 1);
                }
                locator.forget(ctx, &location).await;
                if let (Some(kind), Some(upstream)) = (blame, ctx.upstream().get(location.upstream))
                {
                    ctx.upstream().record_failure(upstream, kind);
                }
                streak = match streak {
                    (Some(u), n) if u == location.upstream => (Some(u), n + 1),
                    _ => (Some(location.upstream), 1),
                };
                if streak.1 >= SWITCH_AFTER {
                    locator.avoid(location.upstream, sink.blob());
                    streak = (None, 0);
                }
                last_reason = reason;
                if *failures >= MAX_ATTEMPTS || *attempts >= MAX_TOTAL_ATTEMPTS {
                    break;
                }
                let backoff = Duration::from_millis(100 << (*failures).min(4));
                tokio::time::sleep(backoff).await;
            }
        }
    }
    if writer.pos < end {
        return Err((
            writer.block(),
            FetchError::GaveUp {
                start: writer.pos,
                end: end - 1,
                reason: last_reason,
            },
        ));
    }
    Ok(())
}

async fn stream_range(
    ctx: &FillContext,
    size: u64,
    location: &Location,
    writer: &mut SegmentWriter,
    end: u64,
    accept_whole: bool,
) -> Result<(), Interrupted> {
    let start = writer.pos;
    let mut response = ctx
        .upstream()
        .get_range(location, start, end - 1)
        .await
        .map_err(|f| Interrupted::retry(format!("{f:?}")))?;
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    let mut skip = match check_response(status, content_range, start, end, size, accept_whole) {
        Ok(skip) => skip,
        Err(reason) => {
            let wrong_bytes = matches!(status, 200 | 206);
            if wrong_bytes {
                FillStats::add(&ctx.stats.rejected_responses, 1);
            }
            if status == 416 {
                return Err(Interrupted::Fatal(FetchError::GaveUp {
                    start,
                    end: end - 1,
                    reason: "upstream says the range is unsatisfiable (size changed?)".into(),
                }));
            }
            return Err(if wrong_bytes {
                Interrupted::blame(reason, FailureKind::Stream)
            } else {
                Interrupted::retry(reason)
            });
        }
    };
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                ctx.upstream()
                    .count_bytes(location.upstream, chunk.len() as u64);
                let chunk = skip_prefix(chunk, &mut skip);
                if chunk.is_empty() {
                    continue;
                }
                writer.push(chunk, end).await.map_err(Interrupted::Fatal)?;
                if writer.received() >= end {
                    writer.flush().await.map_err(Interrupted::Fatal)?;
                    return Ok(());
                }
            }
            Ok(None) => {
                writer.flush().await.map_err(Interrupted::Fatal)?;
                return if writer.pos < end {
                    Err(Interrupted::blame(
                        format!("body ended at byte {} of {end}", writer.pos),
                        FailureKind::Stream,
                    ))
                } else {
                    Ok(())
                };
            }
            Err(e) => {
                writer.flush().await.map_err(Interrupted::Fatal)?;
                let e = e.without_url();
                let kind = if e.is_timeout() {
                    FailureKind::Timeout
                } else {
                    FailureKind::Stream
                };
                return Err(Interrupted::blame(format!("stream broke: {e}"), kind));
            }
        }
    }
}
