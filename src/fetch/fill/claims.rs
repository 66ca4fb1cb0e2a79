//! Coordination with another process filling the same blob (old and new process during a
//! graceful upgrade share the cache directory). Before fetching, a segment claims its blocks
//! with cross-process locks; blocks another process holds are marked `Elsewhere` and watched
//! until they are on disk (or their claim is released without them, then we fetch them).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::{BlobFill, Block, Copy};
use crate::fetch::FetchError;
use crate::store::{BlobFile, BlockClaim, StoreError};

/// How often blocks being filled elsewhere are checked.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// What a segment may fetch after claiming.
pub(in crate::fetch) struct ClaimedRun {
    /// The blocks this process holds and must fetch, in order.
    pub(in crate::fetch) fetch: Range<u64>,
    /// One claim per block of `fetch`, released as each block is committed.
    pub(in crate::fetch) claims: Vec<BlockClaim>,
}

/// Claim the leading run of `blocks` that no other process is filling and that is not on disk
/// yet. Blocks before the run that are present or claimed elsewhere, and every block after it,
/// are handed back to the fill's state.
pub(in crate::fetch) async fn claim_run(
    fill: &Arc<BlobFill>,
    copy: &Copy,
    blocks: Range<u64>,
) -> Result<ClaimedRun, FetchError> {
    let file = Arc::clone(&copy.file);
    let outcome = tokio::task::spawn_blocking(move || claim_blocking(&file, blocks))
        .await
        .map_err(|e| FetchError::Store(format!("claim task failed: {e}")))?
        .map_err(|e| FetchError::Store(e.to_string()))?;
    fill.settle_unfetched(copy, &outcome.present, &outcome.elsewhere, &outcome.missing);
    if !outcome.elsewhere.is_empty() {
        fill.watch_elsewhere();
    }
    Ok(outcome.run)
}

struct ClaimOutcome {
    run: ClaimedRun,
    present: Vec<u64>,
    elsewhere: Vec<u64>,
    missing: Vec<u64>,
}

fn claim_blocking(file: &BlobFile, blocks: Range<u64>) -> Result<ClaimOutcome, StoreError> {
    let mut claimed: Vec<(u64, BlockClaim)> = Vec::new();
    let mut elsewhere = Vec::new();
    let mut missing = Vec::new();
    let mut run_over = false;
    for block in blocks {
        if run_over {
            missing.push(block);
            continue;
        }
        match file.try_claim_block(block)? {
            Some(claim) => claimed.push((block, claim)),
            None if claimed.is_empty() => elsewhere.push(block),
            None => {
                elsewhere.push(block);
                run_over = true;
            }
        }
    }
    // Another process may have committed blocks just before releasing their claims.
    file.reload_bitmap()?;
    let mut present = Vec::new();
    let mut run: Vec<(u64, BlockClaim)> = Vec::new();
    let mut run_closed = false;
    // The claimed blocks are contiguous; fetch the first stretch of them not on disk yet.
    for (block, claim) in claimed {
        if file.is_present(block) {
            present.push(block);
            run_closed |= !run.is_empty();
        } else if !run_closed {
            run.push((block, claim));
        } else {
            missing.push(block);
        }
    }
    let fetch = match (run.first(), run.last()) {
        (Some((first, _)), Some((last, _))) => *first..*last + 1,
        _ => 0..0,
    };
    Ok(ClaimOutcome {
        run: ClaimedRun {
            fetch,
            claims: run.into_iter().map(|(_, claim)| claim).collect(),
        },
        present,
        elsewhere,
        missing,
    })
}

impl BlobFill {
    /// Watch blocks another process is filling until none is left.
    fn watch_elsewhere(self: &Arc<Self>) {
        {
            let mut st = self.state.lock();
            if st.polling {
                return;
            }
            st.polling = true;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move { this.poll_elsewhere().await });
    }

    async fn poll_elsewhere(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let copy = self.copy();
            let waiting: Vec<u64> = {
                let st = self.state.lock();
                if !st.polling {
                    return; // the copy was replaced; its poller is gone
                }
                st.blocks
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| matches!(b, Block::Elsewhere))
                    .map(|(i, _)| i as u64)
                    .collect()
            };
            if waiting.is_empty() {
                self.state.lock().polling = false;
                return;
            }
            let file = Arc::clone(&copy.file);
            let checked = tokio::task::spawn_blocking(move || {
                file.reload_bitmap()?;
                let mut done = Vec::new();
                let mut abandoned = Vec::new();
                for block in waiting {
                    if file.is_present(block) {
                        done.push(block);
                    } else if file.try_claim_block(block)?.is_some() {
                        // The other process let go without committing it: ours to fetch.
                        abandoned.push(block);
                    }
                }
                Ok::<_, StoreError>((done, abandoned))
            })
            .await;
            let (done, abandoned) = match checked {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => {
                    log::warn!("{}: watching blocks filled elsewhere: {e}", self.id);
                    continue;
                }
                Err(e) => {
                    log::warn!("{}: watcher task failed: {e}", self.id);
                    continue;
                }
            };
            if done.is_empty() && abandoned.is_empty() {
                continue;
            }
            self.with_current(&copy, |st| {
                for block in &done {
                    st.blocks[*block as usize] = Block::Present;
                }
                for block in &abandoned {
                    st.blocks[*block as usize] = Block::Missing;
                    if !st.demand.contains(block) {
                        st.demand.push_back(*block);
                    }
                }
            });
            self.notify();
            self.schedule();
            self.check_completed();
        }
    }
}
