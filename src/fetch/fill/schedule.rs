//! Segment fetches: which runs of blocks to fetch next, on how many connections, and what
//! the segments report back (as the fill's [`SegmentSink`]). Also moving the blob to another
//! copy when its disk fails.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::BlobFill;
use crate::fetch::blocks::{BlockTable, Presence, Unclaimed};
use crate::fetch::segment::{spawn_segment, CopyRef, Segment, SegmentSink};
use crate::fetch::FetchError;
use crate::store::{BlobFile, BlobId, StoreError};

impl BlobFill {
    /// Start segment fetches while there is work and connections for this blob: demanded
    /// blocks first, then (while completing in the background) the first missing ones.
    pub(super) fn schedule(&self) {
        let settings = self.ctx.settings();
        if !self.locator.has_source() {
            return;
        }
        let may_complete = self.ctx.may_complete();
        let Some(this) = self.this() else { return };
        let per_file = settings.connections_per_file.max(1);
        let mut launches: Vec<(CopyRef, Range<u64>, u64)> = Vec::new();
        {
            let mut st = self.state.lock();
            let per_segment = (settings.segment / st.file.block_size()).max(1);
            // A segment runs over the following missing blocks when the whole file is
            // wanted; on demand, only over blocks readers asked for (incl. read-ahead).
            let whole_file = st.completion.is_wanted();
            let completing =
                may_complete && st.completion.is_running() && st.out_of_space().is_none();
            let page = st.file.page_size().max(1);
            while st.running < per_file {
                let (start, at) = match st.blocks.next_demanded() {
                    Some(block) => (block, st.blocks.take_demand_offset(block)),
                    None if completing => match st.blocks.first_missing() {
                        Some(block) => (block, 0),
                        None => break,
                    },
                    None => break,
                };
                // Range-first: a reader waiting in the middle of a block gets the fetch to
                // start at its page; that block is fetched on its own (the rest of it after
                // the part from the reader's page), the following ones by other segments.
                let from = at / page * page;
                let run = if from > 0 {
                    st.blocks.start_run(start, 1, false)
                } else {
                    st.blocks.start_run(start, per_segment, whole_file)
                };
                if run.is_empty() {
                    continue;
                }
                st.running += 1;
                launches.push((st.copy(), run, from));
            }
        }
        for (copy, blocks, from) in launches {
            self.launch(&this, copy, blocks, from);
        }
    }

    fn launch(&self, this: &Arc<Self>, copy: CopyRef, blocks: Range<u64>, from: u64) {
        spawn_segment(Segment {
            ctx: Arc::clone(&self.ctx),
            locator: Arc::clone(&self.locator),
            sink: Arc::clone(this) as Arc<dyn SegmentSink>,
            copy,
            blocks,
            from,
        });
    }

    /// Mark `blocks` in flight as `schedule` does, and fetch them reporting to `sink` (which
    /// reports on to this fill): lets a test inject faults into a segment.
    #[cfg(test)]
    pub(in crate::fetch) fn launch_for_test(
        &self,
        blocks: Range<u64>,
        sink: impl FnOnce(Arc<Self>) -> Arc<dyn SegmentSink>,
    ) -> Range<u64> {
        let Some(this) = self.this() else { return 0..0 };
        let (copy, run) = {
            let mut st = self.state.lock();
            let run = st
                .blocks
                .start_run(blocks.start, blocks.end - blocks.start, true);
            st.running += 1;
            (st.copy(), run)
        };
        spawn_segment(Segment {
            ctx: Arc::clone(&self.ctx),
            locator: Arc::clone(&self.locator),
            sink: sink(this),
            copy,
            blocks: run.clone(),
            from: 0,
        });
        run
    }

    /// The copy in use sits on a failing disk: continue with another copy (or a new, empty
    /// one on a healthy root). Work still running on the old copy is ignored from now on.
    pub(super) async fn switch_copy(
        &self,
        failed: &Arc<BlobFile>,
        error: Arc<StoreError>,
    ) -> Result<(), FetchError> {
        let store = Arc::clone(&self.ctx.store);
        let block_size = self.ctx.settings().block_size;
        let (id, size) = (self.id.clone(), self.size);
        let content_addressed = failed.is_content_addressed();
        let broken = Arc::clone(failed);
        let replacement = self
            .ctx
            .store_call(move || match store.failover(&id, &broken, &error)? {
                Some(copy) => Ok(copy),
                None => store.create_blob(&id, size, block_size, content_addressed),
            })
            .await?;
        {
            let mut st = self.state.lock();
            if !Arc::ptr_eq(&st.file, failed) {
                return Ok(()); // someone switched already
            }
            log::warn!(
                "{}: continuing on the copy at {}",
                self.id,
                replacement.path().display()
            );
            st.blocks = BlockTable::new(Arc::clone(&replacement) as Arc<dyn Presence>);
            st.file = replacement;
            st.generation += 1;
            st.verify = super::Verify::NotStarted;
            st.replicated = false;
            st.polling = false;
        }
        self.notify();
        self.schedule();
        self.check_completed();
        Ok(())
    }
}

#[async_trait]
impl SegmentSink for BlobFill {
    fn blob(&self) -> &BlobId {
        &self.id
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn unclaimed(&self, copy: &CopyRef, blocks: &Unclaimed) {
        self.with_current(copy, |st| st.blocks.unclaimed(blocks));
        self.notify();
        if !blocks.elsewhere.is_empty() {
            self.watch_elsewhere();
        }
    }

    fn progress_ahead(&self, copy: &CopyRef, block: u64, ahead: Range<u64>) {
        self.with_current(copy, |st| st.blocks.progress_ahead(block, ahead));
        self.notify();
    }

    fn progress(&self, copy: &CopyRef, block: u64, written: u64, committed: bool) {
        self.with_current(copy, |st| {
            if committed {
                st.blocks.committed(block);
            } else {
                st.blocks.progress(block, written);
            }
        });
        self.notify();
    }

    fn failed(&self, copy: &CopyRef, blocks: Range<u64>, error: FetchError) {
        self.with_current(copy, |st| {
            let at = Instant::now();
            if matches!(error, FetchError::NoSpace(_)) {
                // Stop filling (incl. the background completion) until space may be back.
                st.no_space_at = Some(at);
                st.completion.call_off();
            }
            st.blocks.fail(blocks, &error, at);
        });
        self.notify();
    }

    fn finished(&self) {
        {
            let mut st = self.state.lock();
            st.running = st.running.saturating_sub(1);
        }
        self.notify();
        self.schedule();
        self.check_completed();
    }

    async fn disk_failed(&self, copy: &CopyRef, error: Arc<StoreError>) {
        if let Err(e) = self.switch_copy(&copy.file, error).await {
            log::error!("{}: no other copy to continue on: {e}", self.id);
        }
    }
}
