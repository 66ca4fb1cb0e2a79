//! Counters of sibling traffic, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The process's sibling counters (counters outlive a reload that changes the cluster).
pub static STATS: SiblingStats = SiblingStats::new();

/// Sibling requests and bytes, both as the asking node and as the owner.
#[derive(Debug, Default)]
pub struct SiblingStats {
    /// Block requests this node sent to an owner that answered with the bytes.
    pub asked_ok: AtomicU64,
    /// Block requests this node sent that failed (no answer, refused, broke off).
    pub asked_failed: AtomicU64,
    /// Requests for cached blocks only that the peer did not have (404).
    pub asked_not_cached: AtomicU64,
    /// Bytes received from owners.
    pub received_bytes: AtomicU64,
    /// Sibling requests this node served.
    pub served: AtomicU64,
    /// Sibling requests refused with 403 (bad, missing or stale signature; token required).
    pub refused: AtomicU64,
    /// Sibling requests answered 503 because [`MAX_SERVED_STREAMS`](super::MAX_SERVED_STREAMS) were served.
    pub busy: AtomicU64,
    /// Bytes served to siblings.
    pub served_bytes: AtomicU64,
    /// Metadata questions this node asked a repo's owner node that it answered.
    pub meta_asked_ok: AtomicU64,
    /// Metadata questions asked of an owner node that went to the upstream chain instead
    /// (the owner failed, timed out, or none of its upstreams answered).
    pub meta_fallback: AtomicU64,
    /// Metadata questions this node answered for siblings.
    pub meta_served: AtomicU64,
}

impl SiblingStats {
    pub const fn new() -> Self {
        Self {
            asked_ok: AtomicU64::new(0),
            asked_failed: AtomicU64::new(0),
            asked_not_cached: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            served_bytes: AtomicU64::new(0),
            meta_asked_ok: AtomicU64::new(0),
            meta_fallback: AtomicU64::new(0),
            meta_served: AtomicU64::new(0),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
