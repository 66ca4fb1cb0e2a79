//! Writes a segment's bytes in order, block by block, committing each block (with its page
//! checksums) when its last byte is on disk, and reporting progress to the fill.
//!
//! A block fetched range-first ([`SegmentWriter::split_at`]) is written in two parts: from
//! the split point to its end (its page checksums kept), then from its start to the split
//! point, after which the block is committed with both parts' checksums. Its bit is set only
//! once every byte and checksum is on disk, as for any block.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::{CopyRef, SegmentSink};
use crate::fetch::context::{blocking, FillContext, FillStats};
use crate::fetch::FetchError;
use crate::store::{BlobFile, BlockChecksummer, BlockClaim, StoreError};

/// Bytes buffered before a write to disk. Every fill connection holds up to about twice this
/// (the piece being written and the next one filling), so it bounds memory per connection.
const WRITE_CHUNK: usize = 256 << 10;

/// Received chunks not yet written, kept as they arrived (a write hands them all to one
/// `pwritev`: no copy into a write buffer).
#[derive(Default)]
struct Received {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Received {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` bytes (at most all of them), as chunks.
    fn take(&mut self, n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut left = n.min(self.len);
        self.len -= left;
        while left > 0 {
            let Some(mut chunk) = self.chunks.pop_front() else {
                break;
            };
            if chunk.len() > left {
                self.chunks.push_front(chunk.split_off(left));
            }
            left -= chunk.len();
            out.push(chunk);
        }
        out
    }
}

/// What is left to do of one piece's write when it failed: write the data (checksummer not
/// fed yet), or commit the block (data written, checksums computed).
enum Pending {
    Data(BlockChecksummer),
    Commit(Vec<u32>),
}

/// What completing a piece's part of a block does.
#[derive(Clone)]
enum Completes {
    /// Nothing: more of the part follows.
    No,
    /// The part ahead of a split block is written: keep its checksums.
    Ahead,
    /// The block is written: commit it with the piece's checksums and then `then` (the
    /// checksums of the part written ahead, if any).
    Block { then: Vec<u32> },
}

/// A block fetched in two parts: `at..` (the block's end) first, then its start `..at`.
struct Split {
    block: u64,
    /// Content offset where the part fetched first starts.
    at: u64,
    /// The first part's page checksums, once it is written.
    ahead: Option<Vec<u32>>,
}

/// A piece written: the checksummer to go on with, the checksums of a part written ahead, or
/// the block committed.
enum Written {
    Partly(BlockChecksummer),
    Ahead(Vec<u32>),
    Committed,
}

/// One piece of a block, written (and the block committed when the piece completes it).
#[derive(Clone)]
struct Write {
    file: Arc<BlobFile>,
    pos: u64,
    piece: Vec<Bytes>,
    block: u64,
    completes: Completes,
}

/// A write's result, or the error and what is left to do.
type WriteOutcome = Result<Written, Box<(StoreError, Pending)>>;

impl Write {
    /// Does what is `pending`, on a blocking thread.
    async fn run(self, pending: Pending) -> Result<WriteOutcome, FetchError> {
        blocking(move || {
            let crcs = match pending {
                Pending::Data(mut checksummer) => {
                    let parts: Vec<&[u8]> = self.piece.iter().map(|p| &p[..]).collect();
                    if let Err(e) = self.file.write_data_vectored(self.pos, &parts) {
                        return Err(Box::new((e, Pending::Data(checksummer))));
                    }
                    for part in &parts {
                        checksummer.update(part);
                    }
                    if matches!(self.completes, Completes::No) {
                        return Ok(Written::Partly(checksummer));
                    }
                    let mut crcs = match checksummer.finish() {
                        Ok(crcs) => crcs,
                        Err(e) => return Err(Box::new((e, Pending::Commit(Vec::new())))),
                    };
                    match self.completes {
                        Completes::Block { then } => crcs.extend(then),
                        _ => return Ok(Written::Ahead(crcs)),
                    }
                    crcs
                }
                Pending::Commit(crcs) => crcs,
            };
            match self.file.commit_block(self.block, &crcs) {
                Ok(()) => Ok(Written::Committed),
                Err(e) => Err(Box::new((e, Pending::Commit(crcs)))),
            }
        })
        .await
    }
}

pub(super) struct SegmentWriter {
    ctx: Arc<FillContext>,
    sink: Arc<dyn SegmentSink>,
    copy: CopyRef,
    /// Cross-process claims of the blocks still to commit, first block first.
    claims: VecDeque<BlockClaim>,
    /// Next content offset to write to disk.
    pub(super) pos: u64,
    /// Received bytes not yet written; they start at `pos`.
    buffer: Received,
    /// Checksums of the block holding `pos`, fed with everything written to it so far.
    checksummer: Option<BlockChecksummer>,
    /// The bytes come from a sibling node (counted apart from upstream bytes).
    pub(super) from_sibling: bool,
    /// The block fetched in two parts, if any.
    split: Option<Split>,
}

impl SegmentWriter {
    pub(super) fn new(
        ctx: Arc<FillContext>,
        sink: Arc<dyn SegmentSink>,
        copy: CopyRef,
        start: u64,
        claims: Vec<BlockClaim>,
    ) -> Self {
        Self {
            ctx,
            sink,
            copy,
            claims: claims.into(),
            pos: start,
            buffer: Received::default(),
            checksummer: None,
            from_sibling: false,
            split: None,
        }
    }

    /// Write `block` in two parts: from content offset `at` (on a page boundary) to its end
    /// first, then from its start to `at`. Call before writing anything.
    pub(super) fn split_at(&mut self, block: u64, at: u64) {
        self.split = Some(Split {
            block,
            at,
            ahead: None,
        });
    }

    /// Continue writing at content offset `pos` (the next part of a split block). Everything
    /// received so far must have been written ([`flush`](Self::flush)).
    pub(super) fn restart_at(&mut self, pos: u64) {
        debug_assert!(self.buffer.is_empty());
        if self.pos != pos {
            self.pos = pos;
            self.checksummer = None;
        }
    }

    /// Where the part holding `pos` in `block` (spanning `span`) ends, and which bytes of the
    /// block (offsets in it) that part is, when the block is split.
    fn part_of(&self, block: u64, span: &std::ops::Range<u64>) -> (u64, Option<(u64, u64)>) {
        match &self.split {
            Some(split) if split.block == block && self.pos < split.at => {
                (split.at, Some((0, split.at - span.start)))
            }
            Some(split) if split.block == block => (
                span.end,
                Some((split.at - span.start, span.end - span.start)),
            ),
            _ => (span.end, None),
        }
    }

    /// The block holding the next byte to write.
    pub(super) fn block(&self) -> u64 {
        self.copy.file.block_of(self.pos)
    }

    /// Offset just past the last byte received.
    pub(super) fn received(&self) -> u64 {
        self.pos + self.buffer.len() as u64
    }

    pub(super) async fn push(&mut self, chunk: Bytes, end: u64) -> Result<(), FetchError> {
        let room = end.saturating_sub(self.received()) as usize;
        let take = chunk.len().min(room);
        self.buffer.push(chunk.slice(..take));
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

    pub(super) async fn flush(&mut self) -> Result<(), FetchError> {
        while !self.buffer.is_empty() {
            self.write_piece().await?;
        }
        Ok(())
    }

    /// Write the buffered bytes that belong to the current block. A write that finds the
    /// disk full asks for room (eviction) and is retried once.
    async fn write_piece(&mut self) -> Result<(), FetchError> {
        let file = Arc::clone(&self.copy.file);
        let block = file.block_of(self.pos);
        let span = file.block_span(block);
        let (part_end, part) = self.part_of(block, &span);
        let len = (part_end - self.pos).min(self.buffer.len() as u64) as usize;
        let piece = self.buffer.take(len);
        let checksummer = match (self.checksummer.take(), part) {
            (Some(c), _) => c,
            (None, None) => file.checksummer(block)?,
            (None, Some((from, to))) => BlockChecksummer::for_part(file.layout(), block, from, to)
                .map_err(|e| {
                    FetchError::Internal(format!("range-first split of block {block}: {e}"))
                })?,
        };
        let ahead_part = part.is_some_and(|(from, _)| from > 0);
        let completes = if self.pos + len as u64 != part_end {
            Completes::No
        } else if ahead_part {
            Completes::Ahead
        } else {
            let then = self.split.as_mut().and_then(|s| s.ahead.take());
            Completes::Block {
                then: then.unwrap_or_default(),
            }
        };
        let write = Write {
            file: Arc::clone(&file),
            pos: self.pos,
            piece,
            block,
            completes: completes.clone(),
        };
        let mut outcome = write.clone().run(Pending::Data(checksummer)).await?;
        if let Err(failed) = outcome {
            let (e, pending) = *failed;
            if !e.is_no_space() || !self.make_room(&file).await {
                return Err(self.write_failed(e).await);
            }
            outcome = write.run(pending).await?;
        }
        let written = match outcome {
            Ok(written) => written,
            Err(failed) => return Err(self.write_failed(failed.0).await),
        };
        self.pos += len as u64;
        let committed = matches!(written, Written::Committed);
        match written {
            Written::Partly(checksummer) => self.checksummer = Some(checksummer),
            Written::Ahead(crcs) => {
                if let Some(split) = self.split.as_mut() {
                    split.ahead = Some(crcs);
                }
            }
            Written::Committed => {}
        }
        if let (true, Some((from, _))) = (ahead_part, part) {
            // The part fetched ahead: readers may read it raw.
            let ahead = from..self.pos - span.start;
            self.count_received(len as u64);
            self.sink.progress_ahead(&self.copy, block, ahead);
            return Ok(());
        }
        if committed {
            // The block is on disk: other processes may read it; release its claim.
            self.claims.pop_front();
            FillStats::add(&self.ctx.stats.blocks_filled, 1);
            if let Some(observer) = self.ctx.observer() {
                observer.stored(file.id(), &file);
            }
        }
        self.count_received(len as u64);
        self.sink
            .progress(&self.copy, block, self.pos - span.start, committed);
        Ok(())
    }

    /// Bytes received: from a sibling node or from the upstream chain.
    fn count_received(&self, len: u64) {
        let counter = if self.from_sibling {
            &self.ctx.stats.sibling_bytes
        } else {
            &self.ctx.stats.upstream_bytes
        };
        FillStats::add(counter, len);
    }

    /// The disk is full: ask for room for what is left of the blob on this copy's root.
    async fn make_room(&self, file: &BlobFile) -> bool {
        let held = file.allocated_estimate() - file.layout().data_offset();
        let left = file.size().saturating_sub(held).max(WRITE_CHUNK as u64);
        let room = crate::fetch::Room {
            root: file.root_index(),
            bytes: left,
            new_file: false,
        };
        let made = self.ctx.make_room(file.id(), room).await;
        if made {
            log::info!("{}: eviction made room; writing again", file.id());
        }
        made
    }

    /// A write failed: out of space (stream uncached instead), or a failing disk (move the
    /// blob to another copy; this segment's work is dropped and redone there).
    async fn write_failed(&self, e: StoreError) -> FetchError {
        if !e.is_io_error() {
            return self.ctx.store_failure(e);
        }
        let e = Arc::new(e);
        log::warn!(
            "{}: write failed ({e}); moving to another copy",
            self.sink.blob()
        );
        self.sink.disk_failed(&self.copy, Arc::clone(&e)).await;
        FetchError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::Received;
    use bytes::Bytes;

    #[test]
    fn received_chunks_are_taken_in_order_splitting_the_one_that_straddles() {
        let mut received = Received::default();
        received.push(Bytes::from_static(b"abc"));
        received.push(Bytes::new());
        received.push(Bytes::from_static(b"defgh"));
        received.push(Bytes::from_static(b"ij"));
        assert_eq!(received.len(), 10);
        let first = received.take(5);
        assert_eq!(
            first,
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]
        );
        assert_eq!(received.len(), 5);
        let rest = received.take(100);
        assert_eq!(
            rest,
            vec![Bytes::from_static(b"fgh"), Bytes::from_static(b"ij")]
        );
        assert!(received.is_empty());
        assert!(received.take(1).is_empty());
    }
}
