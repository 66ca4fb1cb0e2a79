//! Errors of the fill engine.

use std::sync::Arc;

use super::engine::EngineInner;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("cache storage failed: {0}")]
    Store(String),
    /// The cache has no room for these bytes (every root full); they can still be streamed
    /// to the client without caching.
    #[error("no space left in the cache: {0}")]
    NoSpace(String),
    #[error(transparent)]
    Upstream(Arc<UpstreamError>),
    #[error("upstream refused {what}: HTTP {status}")]
    Refused { what: String, status: u16 },
    #[error("upstream kept failing for bytes {start}-{end}: {reason}")]
    GaveUp {
        start: u64,
        end: u64,
        reason: String,
    },
    #[error("offline: block {block} of {blob} is not cached")]
    NotCached { blob: String, block: u64 },
    #[error("no progress on {blob} for {secs} s")]
    Stalled { blob: String, secs: u64 },
    #[error("content of {blob} does not match its hash (got {actual})")]
    Corrupt { blob: String, actual: String },
    #[error("offset {offset} is beyond the end of {blob} ({size} bytes)")]
    OutOfRange {
        blob: String,
        offset: u64,
        size: u64,
    },
}

impl From<UpstreamError> for FetchError {
    fn from(e: UpstreamError) -> Self {
        FetchError::Upstream(Arc::new(e))
    }
}

impl FetchError {
    /// The HTTP status to answer with when this happens before any byte was sent.
    pub fn gateway_status(&self) -> u16 {
        match self {
            FetchError::Upstream(e) => e.gateway_status(),
            // The upstream's own refusal (an expired or revoked token) is passed on.
            FetchError::Refused { status, .. } if (400..500).contains(status) => *status,
            FetchError::Stalled { .. } => 504,
            FetchError::NotCached { .. } => 404,
            FetchError::Store(_) | FetchError::NoSpace(_) | FetchError::OutOfRange { .. } => 500,
            _ => 502,
        }
    }
}

/// A store error as a fetch error: running out of space is its own case (the bytes can still
/// be streamed to the client uncached), and is counted.
pub(super) fn store_failure(engine: &EngineInner, e: StoreError) -> FetchError {
    if e.is_no_space() {
        engine
            .stats
            .no_space
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::warn!("cache full: {e}");
        FetchError::NoSpace(e.to_string())
    } else {
        FetchError::Store(e.to_string())
    }
}
