//! Writes a segment's bytes in order, block by block, committing each block (with its page
//! checksums) when its last byte is on disk, and reporting progress to the fill.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{CopyRef, SegmentSink};
use crate::fetch::context::{blocking, FillContext, FillStats};
use crate::fetch::FetchError;
use crate::store::{BlockChecksummer, BlockClaim, StoreError};

/// Bytes buffered before a write to disk.
const WRITE_CHUNK: usize = 512 << 10;

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
            None => file.checksummer(block)?,
        };
        let completes = pos + len as u64 == span.end;
        let writer_file = Arc::clone(&file);
        let written = blocking(move || {
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
        .await?;
        self.checksummer = match written {
            Ok(checksummer) => checksummer,
            Err(e) => return Err(self.write_failed(e).await),
        };
        self.pos += len as u64;
        if completes {
            // The block is on disk: other processes may read it; release its claim.
            self.claims.pop_front();
            FillStats::add(&self.ctx.stats.blocks_filled, 1);
        }
        FillStats::add(&self.ctx.stats.upstream_bytes, len as u64);
        self.sink
            .progress(&self.copy, block, self.pos - span.start, completes);
        Ok(())
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
