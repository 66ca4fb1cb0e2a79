//! A completed blob: verified once against its content hash (a mismatch discards it, so it is
//! fetched again), then replicated to its other home roots. Both run on the low-priority
//! threads; a blob already verified (header flag) is not hashed again.

use std::sync::Arc;
use std::time::Instant;

use super::{BlobFill, Verify};
use crate::fetch::context::{blocking, spawn, FillStats};
use crate::fetch::segment::CopyRef;
use crate::fetch::FetchError;
use crate::store::{ContentCheck, StoreError};

/// Completed files that fail verification this many times stop being refetched.
const MAX_VERIFY_FAILURES: u32 = 2;

impl BlobFill {
    /// When the file is complete, verify it (in the background) unless already verified,
    /// then make sure it has its replicas. Starts no task when there is nothing to do.
    pub(in crate::fetch) fn check_completed(&self) {
        let wants_replicas = self.ctx.store.replicas() >= 2;
        let (copy, hash) = {
            let mut st = self.state.lock();
            if !st.blocks.is_complete() || st.verify != Verify::NotStarted {
                return;
            }
            let hash = st.file.is_content_addressed() && !st.file.is_verified();
            if !hash && (!wants_replicas || st.replicated) {
                st.verify = Verify::Done;
                return;
            }
            st.verify = if hash { Verify::Running } else { Verify::Done };
            (st.copy(), hash)
        };
        let Some(this) = self.this() else { return };
        spawn(async move {
            if !hash || this.verify(&copy).await {
                this.replicate(&copy).await;
            }
        });
    }

    /// Hash the copy; true when it matches (or cannot be checked).
    async fn verify(self: &Arc<Self>, copy: &CopyRef) -> bool {
        let file = Arc::clone(&copy.file);
        let outcome = self
            .ctx
            .low_priority
            .run(move || {
                let check = file.verify_content()?;
                if check == ContentCheck::Match {
                    file.mark_verified()?;
                }
                Ok::<_, StoreError>(check)
            })
            .await;
        match outcome {
            Ok(Ok(check @ (ContentCheck::Match | ContentCheck::NotApplicable))) => {
                if check == ContentCheck::Match {
                    FillStats::add(&self.ctx.stats.verified_files, 1);
                }
                self.with_current(copy, |st| st.verify = Verify::Done);
                true
            }
            Ok(Ok(ContentCheck::Mismatch { actual })) => {
                self.discard_mismatch(copy, actual).await;
                false
            }
            Ok(Err(e)) => {
                log::warn!("{}: cannot verify: {e}", self.id);
                self.with_current(copy, |st| st.verify = Verify::NotStarted);
                false
            }
            Err(e) => {
                log::warn!("{}: verification failed: {e}", self.id);
                self.with_current(copy, |st| st.verify = Verify::NotStarted);
                false
            }
        }
    }

    /// Make the blob's missing replicas (once per copy in use).
    async fn replicate(&self, copy: &CopyRef) {
        if self.ctx.store.replicas() < 2 {
            return;
        }
        let first = self.with_current(copy, |st| !std::mem::replace(&mut st.replicated, true));
        if first != Some(true) {
            return;
        }
        let store = Arc::clone(&self.ctx.store);
        let id = self.id.clone();
        match self
            .ctx
            .low_priority
            .run(move || {
                let made = store.replicate(&id)?;
                Ok::<_, StoreError>((made, store.allocations(&id)))
            })
            .await
        {
            Ok(Ok((0, _))) => {}
            Ok(Ok((made, copies))) => {
                log::info!("{}: made {made} replica(s)", self.id);
                if let Some(observer) = self.ctx.observer() {
                    observer.copies(&self.id, self.size, &copies);
                }
            }
            Ok(Err(e)) => log::warn!("{}: replication failed: {e}", self.id),
            Err(e) => log::warn!("{}: replication failed: {e}", self.id),
        }
    }

    /// The content does not match its id: every block is invalidated on disk and fetched
    /// again, unless this keeps happening (then the file is given up on).
    async fn discard_mismatch(&self, copy: &CopyRef, actual: String) {
        log::error!(
            "{}: downloaded content hashes to {actual}; discarding the file",
            self.id
        );
        FillStats::add(&self.ctx.stats.verify_failures, 1);
        if let Some(observer) = self.ctx.observer() {
            observer.verify_failed(&self.id, &actual);
        }
        let file = Arc::clone(&copy.file);
        let invalidated = blocking(move || {
            for block in 0..file.block_count() {
                file.invalidate_block(block)?;
            }
            Ok::<_, StoreError>(())
        })
        .await;
        if let Err(e) = invalidated.and_then(|r| r.map_err(FetchError::from)) {
            log::warn!("{}: cannot invalidate every block: {e}", self.id);
        }
        let error = FetchError::Corrupt {
            blob: self.id.to_string(),
            actual,
        };
        self.with_current(copy, |st| {
            st.verify_failures += 1;
            st.verify = Verify::NotStarted;
            if st.verify_failures >= MAX_VERIFY_FAILURES {
                st.blocks.fail_all(&error, Instant::now());
                st.completion.call_off();
            } else {
                st.blocks.reset();
            }
        });
        self.notify();
        self.schedule();
    }
}
