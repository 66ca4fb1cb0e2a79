//! One segment fetch: a ranged GET of a run of whole blocks, streamed into the store.
//!
//! The response must be a `206` whose `Content-Range` is exactly what was asked (or a `200`
//! when the whole file was asked); anything else is rejected before a byte is written. A
//! stream that breaks off is resumed from the last byte received, after locating the file
//! again (the chain fails over to the next upstream when one keeps failing).

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::engine::EngineInner;
use super::error::store_failure;
use super::fill::{claim_run, BlobFill, Copy};
use super::FetchError;
use crate::store::{BlockChecksummer, BlockClaim, StoreError};
use crate::upstream::Location;

/// Consecutive attempts without progress before a segment's remaining blocks fail.
const MAX_ATTEMPTS: u32 = 6;
/// Attempts per segment in all (progress or not), so a stream that keeps breaking ends.
const MAX_TOTAL_ATTEMPTS: u32 = 64;
/// Broken streams in a row from one upstream before the next upstream is preferred.
const SWITCH_AFTER: u32 = 3;
/// Bytes buffered before a write to disk.
const WRITE_CHUNK: usize = 512 << 10;

pub(super) async fn run(fill: Arc<BlobFill>, copy: Copy, blocks: Range<u64>) {
    if let Err((from_block, error)) = fetch_segment(&fill, &copy, blocks.clone()).await {
        fill.fail_blocks(&copy, from_block..blocks.end, error);
    }
    fill.segment_finished();
}

/// Why one attempt ended early.
enum Interrupted {
    /// Try again (possibly elsewhere), from where we are.
    Retry(String),
    /// Stop: retrying cannot help.
    Fatal(FetchError),
}

async fn fetch_segment(
    fill: &Arc<BlobFill>,
    copy: &Copy,
    blocks: Range<u64>,
) -> Result<(), (u64, FetchError)> {
    let Some(engine) = fill.engine() else {
        return Err((blocks.start, FetchError::Store("engine stopped".into())));
    };
    let _connection = Arc::clone(&engine.connections)
        .acquire_owned()
        .await
        .map_err(|e| (blocks.start, FetchError::Store(e.to_string())))?;
    // Another process sharing the cache may be filling some of these blocks.
    let claimed = claim_run(fill, copy, blocks.clone())
        .await
        .map_err(|e| (blocks.start, e))?;
    if claimed.fetch.is_empty() {
        return Ok(());
    }
    let file = &copy.file;
    let end = file.block_span(claimed.fetch.end - 1).end;
    let mut writer = SegmentWriter::new(
        Arc::clone(fill),
        copy.clone(),
        file.block_span(claimed.fetch.start).start,
        claimed.claims,
    );
    let mut failures = 0;
    let mut attempts = 0;
    let mut streak: (Option<usize>, u32) = (None, 0);
    let mut last_reason = String::new();
    while writer.pos < end {
        let location = match fill.location().await {
            Ok(location) => location,
            Err(e) => return Err((writer.block(), e)),
        };
        let before = writer.pos;
        match stream_range(&engine, &location, &mut writer, end, failures > 0).await {
            Ok(()) => {}
            Err(Interrupted::Fatal(e)) => return Err((writer.block(), e)),
            Err(Interrupted::Retry(reason)) => {
                attempts += 1;
                // A stream that broke after delivering bytes is resumed; only attempts that
                // make no progress count towards giving up.
                failures = if writer.pos > before { 1 } else { failures + 1 };
                log::warn!(
                    "{}: bytes {}-{} from {}: {reason} (attempt {failures})",
                    fill.id(),
                    writer.pos,
                    end - 1,
                    location.url.origin().ascii_serialization()
                );
                if writer.pos > before {
                    engine.stats.resumes.fetch_add(1, Ordering::Relaxed);
                }
                fill.invalidate_location(&location).await;
                if let Some(upstream) = engine.upstream.get(location.upstream) {
                    upstream.record_failure();
                }
                streak = match streak {
                    (Some(u), n) if u == location.upstream => (Some(u), n + 1),
                    _ => (Some(location.upstream), 1),
                };
                if streak.1 >= SWITCH_AFTER {
                    fill.avoid_upstream(location.upstream);
                    streak = (None, 0);
                }
                last_reason = reason;
                if failures >= MAX_ATTEMPTS || attempts >= MAX_TOTAL_ATTEMPTS {
                    break;
                }
                let backoff = Duration::from_millis(100 << failures.min(4));
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

/// Parse `Content-Range: bytes a-b/total`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// Check that a response carries exactly `[start, end)` of a `size`-byte file. Returns how
/// many leading body bytes to skip: 0, or `start` when a whole-file `200` is accepted for a
/// ranged request (`accept_whole`: an upstream that keeps ignoring Range still delivers, the
/// bytes before the range being read and dropped, never written at a wrong offset).
pub(super) fn check_response(
    status: u16,
    content_range: Option<&str>,
    start: u64,
    end: u64,
    size: u64,
    accept_whole: bool,
) -> Result<u64, String> {
    match status {
        206 => match content_range.and_then(parse_content_range) {
            Some((a, b, total)) if a == start && b + 1 == end && total == size => Ok(0),
            Some((a, b, total)) => Err(format!(
                "Content-Range {a}-{b}/{total} does not match the request {start}-{}/{size}",
                end - 1
            )),
            None => Err("206 without a valid Content-Range".into()),
        },
        200 if start == 0 && end == size => Ok(0),
        200 if accept_whole => Ok(start),
        200 => Err(format!(
            "200 (whole file) to a request for bytes {start}-{}",
            end - 1
        )),
        other => Err(format!("HTTP {other}")),
    }
}

/// Drop the first `skip` bytes of a body, chunk by chunk.
pub(super) fn skip_prefix(chunk: bytes::Bytes, skip: &mut u64) -> bytes::Bytes {
    let n = (*skip).min(chunk.len() as u64) as usize;
    *skip -= n as u64;
    chunk.slice(n..)
}

async fn stream_range(
    engine: &EngineInner,
    location: &Location,
    writer: &mut SegmentWriter,
    end: u64,
    accept_whole: bool,
) -> Result<(), Interrupted> {
    let start = writer.pos;
    let size = writer.fill.size();
    let mut response = engine
        .upstream
        .get_range(location, start, end - 1)
        .await
        .map_err(|f| Interrupted::Retry(format!("{f:?}")))?;
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    let mut skip = match check_response(status, content_range, start, end, size, accept_whole) {
        Ok(skip) => skip,
        Err(reason) => {
            if matches!(status, 200 | 206) {
                engine
                    .stats
                    .rejected_responses
                    .fetch_add(1, Ordering::Relaxed);
            }
            if status == 416 {
                return Err(Interrupted::Fatal(FetchError::GaveUp {
                    start,
                    end: end - 1,
                    reason: "upstream says the range is unsatisfiable (size changed?)".into(),
                }));
            }
            return Err(Interrupted::Retry(reason));
        }
    };
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
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
                    Err(Interrupted::Retry(format!(
                        "body ended at byte {} of {end}",
                        writer.pos
                    )))
                } else {
                    Ok(())
                };
            }
            Err(e) => {
                writer.flush().await.map_err(Interrupted::Fatal)?;
                return Err(Interrupted::Retry(format!("stream broke: {e}")));
            }
        }
    }
}

/// Writes a segment's bytes in order, block by block, committing each block (with its page
/// checksums) when its last byte is on disk.
struct SegmentWriter {
    fill: Arc<BlobFill>,
    copy: Copy,
    /// Cross-process claims of the blocks still to commit, first block first.
    claims: std::collections::VecDeque<BlockClaim>,
    /// Next content offset to write to disk.
    pos: u64,
    /// Received bytes not yet written; they start at `pos`.
    buffer: BytesMut,
    /// Checksums of the block holding `pos`, fed with everything written to it so far.
    checksummer: Option<BlockChecksummer>,
}

impl SegmentWriter {
    fn new(fill: Arc<BlobFill>, copy: Copy, start: u64, claims: Vec<BlockClaim>) -> Self {
        Self {
            fill,
            copy,
            claims: claims.into(),
            pos: start,
            buffer: BytesMut::new(),
            checksummer: None,
        }
    }

    fn block(&self) -> u64 {
        self.copy.file.block_of(self.pos)
    }

    /// Offset just past the last byte received.
    fn received(&self) -> u64 {
        self.pos + self.buffer.len() as u64
    }

    async fn push(&mut self, chunk: Bytes, end: u64) -> Result<(), FetchError> {
        let room = end.saturating_sub(self.received()) as usize;
        let take = chunk.len().min(room);
        self.buffer.extend_from_slice(&chunk[..take]);
        // Write whenever a block's last byte arrived (so it is committed and verified
        // readers get it at once) or enough is buffered.
        while !self.buffer.is_empty() {
            let block_end = self.copy.file.block_span(self.block()).end.min(end);
            if self.buffer.len() >= WRITE_CHUNK || self.received() >= block_end {
                self.write_piece().await?;
            } else {
                break;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), FetchError> {
        while !self.buffer.is_empty() {
            self.write_piece().await?;
        }
        Ok(())
    }

    /// Write the buffered bytes that belong to the current block.
    async fn write_piece(&mut self) -> Result<(), FetchError> {
        let file = Arc::clone(&self.copy.file);
        let block = file.block_of(self.pos);
        let span = file.block_span(block);
        let len = (span.end - self.pos).min(self.buffer.len() as u64) as usize;
        let piece = self.buffer.split_to(len).freeze();
        let pos = self.pos;
        let checksummer = match self.checksummer.take() {
            Some(c) => c,
            None => file
                .checksummer(block)
                .map_err(|e| FetchError::Store(e.to_string()))?,
        };
        let completes = pos + len as u64 == span.end;
        let writer_file = Arc::clone(&file);
        let written = tokio::task::spawn_blocking(move || {
            let mut checksummer = checksummer;
            writer_file.write_data(pos, &piece)?;
            checksummer.update(&piece);
            if completes {
                let crcs = checksummer.finish()?;
                writer_file.commit_block(block, &crcs)?;
                Ok::<_, StoreError>(None)
            } else {
                Ok(Some(checksummer))
            }
        })
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?;
        let checksummer = match written {
            Ok(checksummer) => checksummer,
            Err(e) => return Err(self.write_failed(&file, e).await),
        };
        self.checksummer = checksummer;
        self.pos += len as u64;
        let committed = completes;
        if committed {
            // The block is on disk: other processes may read it; release its claim.
            self.claims.pop_front();
        }
        if let Some(engine) = self.fill.engine() {
            engine
                .stats
                .upstream_bytes
                .fetch_add(len as u64, Ordering::Relaxed);
            if committed {
                engine.stats.blocks_filled.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.fill
            .progress(&self.copy, block, self.pos - span.start, committed);
        Ok(())
    }

    /// A write failed: out of space (stream uncached instead), or a failing disk (move the
    /// blob to another copy; this segment's work is dropped and redone there).
    async fn write_failed(&self, file: &Arc<crate::store::BlobFile>, e: StoreError) -> FetchError {
        let Some(engine) = self.fill.engine() else {
            return FetchError::Store(e.to_string());
        };
        if e.is_io_error() && !e.is_no_space() {
            log::warn!(
                "{}: write failed ({e}); moving to another copy",
                self.fill.id()
            );
            let e = Arc::new(e);
            if let Err(switch) = self.fill.switch_copy(file, Arc::clone(&e)).await {
                return switch;
            }
            return FetchError::Store(e.to_string());
        }
        store_failure(&engine, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_content_range_is_accepted() {
        assert_eq!(
            check_response(206, Some("bytes 100-199/1000"), 100, 200, 1000, false),
            Ok(0)
        );
    }

    #[test]
    fn shifted_content_range_is_rejected() {
        let err =
            check_response(206, Some("bytes 1100-1199/5000"), 100, 200, 5000, true).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn wrong_total_size_is_rejected() {
        assert!(check_response(206, Some("bytes 0-99/999"), 0, 100, 1000, true).is_err());
    }

    #[test]
    fn full_200_is_accepted_only_for_the_whole_file() {
        assert_eq!(check_response(200, None, 0, 1000, 1000, false), Ok(0));
        assert!(check_response(200, None, 0, 100, 1000, false).is_err());
        assert!(check_response(200, None, 500, 1000, 1000, false).is_err());
    }

    #[test]
    fn content_range_ending_at_the_largest_integer_is_rejected_not_overflowed() {
        let err = check_response(
            206,
            Some("bytes 0-18446744073709551615/1000"),
            0,
            1000,
            1000,
            false,
        )
        .unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn partial_without_content_range_is_rejected() {
        assert!(check_response(206, None, 0, 100, 1000, true).is_err());
    }

    #[test]
    fn whole_file_answer_is_accepted_after_a_rejection_by_skipping_to_the_offset() {
        assert_eq!(check_response(200, None, 500, 1000, 1000, true), Ok(500));
        let mut skip = 5;
        let first = skip_prefix(bytes::Bytes::from_static(b"abc"), &mut skip);
        let second = skip_prefix(bytes::Bytes::from_static(b"defgh"), &mut skip);
        assert_eq!(
            (first.as_ref(), second.as_ref(), skip),
            (&b""[..], &b"fgh"[..], 0)
        );
    }
}
