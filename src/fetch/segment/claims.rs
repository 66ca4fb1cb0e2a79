//! Claiming a segment's blocks across processes (old and new process during a graceful
//! upgrade share the cache directory): the leading run that no other process is filling and
//! that is not on disk yet is ours to fetch; the rest is handed back.

use std::ops::Range;

use crate::fetch::blocks::Unclaimed;
use crate::store::{BlobFile, BlockClaim, StoreError};

/// What a segment may fetch after claiming.
pub(super) struct ClaimedRun {
    /// The blocks this process holds and must fetch, in order.
    pub(super) fetch: Range<u64>,
    /// One claim per block of `fetch`, released as each block is committed.
    pub(super) claims: Vec<BlockClaim>,
}

/// Claim the leading run of `blocks` that no other process is filling and that is not on disk
/// yet. Blocks before the run that are present or claimed elsewhere, and every block after
/// it, are handed back. Blocking (file locks and a bitmap read).
pub(super) fn claim_run(
    file: &BlobFile,
    blocks: Range<u64>,
) -> Result<(ClaimedRun, Unclaimed), StoreError> {
    let mut claimed: Vec<(u64, BlockClaim)> = Vec::new();
    let mut unclaimed = Unclaimed::default();
    let mut run_over = false;
    for block in blocks {
        if run_over {
            unclaimed.missing.push(block);
            continue;
        }
        match file.try_claim_block(block)? {
            Some(claim) => claimed.push((block, claim)),
            None => {
                unclaimed.elsewhere.push(block);
                run_over = !claimed.is_empty();
            }
        }
    }
    // Another process may have committed blocks just before releasing their claims.
    file.reload_bitmap()?;
    let mut run: Vec<(u64, BlockClaim)> = Vec::new();
    let mut run_closed = false;
    // The claimed blocks are contiguous; fetch the first stretch of them not on disk yet.
    for (block, claim) in claimed {
        if file.is_present(block) {
            unclaimed.present.push(block);
            run_closed |= !run.is_empty();
        } else if !run_closed {
            run.push((block, claim));
        } else {
            unclaimed.missing.push(block);
        }
    }
    let fetch = match (run.first(), run.last()) {
        (Some((first, _)), Some((last, _))) => *first..*last + 1,
        _ => 0..0,
    };
    let claims = run.into_iter().map(|(_, claim)| claim).collect();
    Ok((ClaimedRun { fetch, claims }, unclaimed))
}
