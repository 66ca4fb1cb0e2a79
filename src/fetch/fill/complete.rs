//! A completed blob: verified once against its content hash (a mismatch discards it, so it is
//! fetched again), then replicated to its other home roots.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{BlobFill, Block, Copy, Verify};
use crate::fetch::background::low_priority;
use crate::fetch::FetchError;
use crate::store::{ContentCheck, StoreError};

/// Completed files that fail verification this many times stop being refetched.
const MAX_VERIFY_FAILURES: u32 = 2;

impl BlobFill {
    /// When the file is complete, verify it (in the background) unless already verified,
    /// then make sure it has its replicas.
    pub(in crate::fetch) fn check_completed(self: &Arc<Self>) {
        let copy = {
            let mut st = self.state.lock();
            let complete = st.blocks.iter().all(|b| matches!(b, Block::Present));
            if !complete || st.verify != Verify::NotStarted {
                return;
            }
            st.verify = Verify::Running;
            Copy {
                file: Arc::clone(&st.file),
                generation: st.generation,
            }
        };
        let this = Arc::clone(self);
        tokio::spawn(async move { this.verify_and_replicate(copy).await });
    }

    async fn verify_and_replicate(self: Arc<Self>, copy: Copy) {
        let file = Arc::clone(&copy.file);
        let outcome = tokio::task::spawn_blocking(move || {
            low_priority(|| {
                if file.is_verified() {
                    return Ok(ContentCheck::Match);
                }
                let check = file.verify_content()?;
                if check == ContentCheck::Match {
                    file.mark_verified()?;
                }
                Ok::<_, StoreError>(check)
            })
        })
        .await;
        let engine = self.engine();
        match outcome {
            Ok(Ok(ContentCheck::Match)) | Ok(Ok(ContentCheck::NotApplicable)) => {
                if let (Some(engine), Ok(Ok(ContentCheck::Match))) = (&engine, &outcome) {
                    engine.stats.verified_files.fetch_add(1, Ordering::Relaxed);
                }
                self.with_current(&copy, |st| st.verify = Verify::Done);
                self.replicate(&copy).await;
            }
            Ok(Ok(ContentCheck::Mismatch { actual })) => self.discard_mismatch(&copy, actual),
            Ok(Err(e)) => {
                log::warn!("{}: cannot verify: {e}", self.id);
                self.with_current(&copy, |st| st.verify = Verify::NotStarted);
            }
            Err(e) => {
                log::warn!("{}: verification task failed: {e}", self.id);
                self.with_current(&copy, |st| st.verify = Verify::NotStarted);
            }
        }
    }

    /// Make the blob's missing replicas (once per copy in use).
    async fn replicate(&self, copy: &Copy) {
        let Some(engine) = self.engine() else { return };
        if engine.store.replicas() < 2 {
            return;
        }
        let first = self.with_current(copy, |st| !std::mem::replace(&mut st.replicated, true));
        if first != Some(true) {
            return;
        }
        let store = Arc::clone(&engine.store);
        let id = self.id.clone();
        match tokio::task::spawn_blocking(move || low_priority(|| store.replicate(&id))).await {
            Ok(Ok(0)) => {}
            Ok(Ok(made)) => log::info!("{}: made {made} replica(s)", self.id),
            Ok(Err(e)) => log::warn!("{}: replication failed: {e}", self.id),
            Err(e) => log::warn!("{}: replication task failed: {e}", self.id),
        }
    }

    fn discard_mismatch(self: &Arc<Self>, copy: &Copy, actual: String) {
        log::error!(
            "{}: downloaded content hashes to {actual}; discarding the file",
            self.id
        );
        if let Some(engine) = self.engine() {
            engine.stats.verify_failures.fetch_add(1, Ordering::Relaxed);
        }
        for block in 0..copy.file.block_count() {
            if let Err(e) = copy.file.invalidate_block(block) {
                log::warn!("{}: cannot invalidate block {block}: {e}", self.id);
            }
        }
        let error = FetchError::Corrupt {
            blob: self.id.to_string(),
            actual,
        };
        self.with_current(copy, |st| {
            st.verify_failures += 1;
            st.verify = Verify::NotStarted;
            let give_up = st.verify_failures >= MAX_VERIFY_FAILURES;
            let at = Instant::now();
            for block in st.blocks.iter_mut() {
                *block = if give_up {
                    Block::Failed {
                        at,
                        error: error.clone(),
                    }
                } else {
                    Block::Missing
                };
            }
            if give_up {
                st.wants_completion = false;
            }
        });
        self.notify();
        self.schedule();
    }
}
