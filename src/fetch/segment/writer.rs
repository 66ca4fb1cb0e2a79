//! Writes a segment's bytes in order, block by block, committing each block (with its page
//! checksums) when its last byte is on disk, and reporting progress to the fill.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{CopyRef, SegmentSink};
use crate::fetch::context::{blocking, FillContext, FillStats};
use crate::fetch::FetchError;
use crate::store::{BlobFile, BlockChecksummer, BlockClaim, StoreError};

/// Bytes buffered before a write to disk.
const WRITE_CHUNK: usize = 512 << 10;

/// What is left to do of one piece's write when it failed: write the data (checksummer not
/// fed yet), or commit the block (data written, checksums computed).
enum Pending {
    Data(BlockChecksummer),
    Commit(Vec<u32>),
}

/// One piece of a block, written (and the block committed when the piece completes it).
#[derive(Clone)]
struct Write {
    file: Arc<BlobFile>,
    pos: u64,
    piece: Bytes,
    block: u64,
    completes: bool,
}

/// A write's result: the checksummer to go on with (`None` once the block is committed), or
/// the error and what is left to do.
type WriteOutcome = Result<Option<BlockChecksummer>, Box<(StoreError, Pending)>>;

impl Write {
    /// Does what is `pending`, on a blocking thread.
    async fn run(self, pending: Pending) -> Result<WriteOutcome, FetchError> {
        blocking(move || {
            let crcs = match pending {
                Pending::Data(mut checksummer) => {
                    if let Err(e) = self.file.write_data(self.pos, &self.piece) {
                        return Err(Box::new((e, Pending::Data(checksummer))));
                    }
                    checksummer.update(&self.piece);
                    if !self.completes {
                        return Ok(Some(checksummer));
                    }
                    match checksummer.finish() {
                        Ok(crcs) => crcs,
                        Err(e) => return Err(Box::new((e, Pending::Commit(Vec::new())))),
                    }
                }
                Pending::Commit(crcs) => crcs,
            };
            match self.file.commit_block(self.block, &crcs) {
                Ok(()) => Ok(None),
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
    buffer: BytesMut,
    /// Checksums of the block holding `pos`, fed with everything written to it so far.
    checksummer: Option<BlockChecksummer>,
    /// The bytes come from a sibling node (counted apart from upstream bytes).
    pub(super) from_sibling: bool,
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
            buffer: BytesMut::new(),
            checksummer: None,
            from_sibling: false,
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
        let len = (span.end - self.pos).min(self.buffer.len() as u64) as usize;
        let piece = self.buffer.split_to(len).freeze();
        let checksummer = match self.checksummer.take() {
            Some(c) => c,
            None => file.checksummer(block)?,
        };
        let completes = self.pos + len as u64 == span.end;
        let write = Write {
            file: Arc::clone(&file),
            pos: self.pos,
            piece,
            block,
            completes,
        };
        let mut outcome = write.clone().run(Pending::Data(checksummer)).await?;
        if let Err(failed) = outcome {
            let (e, pending) = *failed;
            if !e.is_no_space() || !self.make_room(&file).await {
                return Err(self.write_failed(e).await);
            }
            outcome = write.run(pending).await?;
        }
        self.checksummer = match outcome {
            Ok(checksummer) => checksummer,
            Err(failed) => return Err(self.write_failed(failed.0).await),
        };
        self.pos += len as u64;
        if completes {
            // The block is on disk: other processes may read it; release its claim.
            self.claims.pop_front();
            FillStats::add(&self.ctx.stats.blocks_filled, 1);
            if let Some(observer) = self.ctx.observer() {
                observer.stored(file.id(), &file);
            }
        }
        let counter = if self.from_sibling {
            &self.ctx.stats.sibling_bytes
        } else {
            &self.ctx.stats.upstream_bytes
        };
        FillStats::add(counter, len as u64);
        self.sink
            .progress(&self.copy, block, self.pos - span.start, completes);
        Ok(())
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
