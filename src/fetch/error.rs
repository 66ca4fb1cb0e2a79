//! Errors of the fill engine.

use std::sync::Arc;

use crate::store::StoreError;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("cache storage failed: {0}")]
    Store(Arc<StoreError>),
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
    /// The request that started the fill names no valid file (a bad commit).
    #[error("bad source for the fill: {0}")]
    BadSource(String),
    /// A task of the engine panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<UpstreamError> for FetchError {
    fn from(e: UpstreamError) -> Self {
        FetchError::Upstream(Arc::new(e))
    }
}

/// A store error: running out of space is its own case (the bytes can still be streamed to
/// the client uncached). Use `FillContext::store_failure` where the engine's counters are at
/// hand, so the event is also counted.
impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        if e.is_no_space() {
            FetchError::NoSpace(e.to_string())
        } else {
            FetchError::Store(Arc::new(e))
        }
    }
}

impl From<tokio::task::JoinError> for FetchError {
    fn from(e: tokio::task::JoinError) -> Self {
        FetchError::Internal(format!("blocking task failed: {e}"))
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
            FetchError::Store(_)
            | FetchError::NoSpace(_)
            | FetchError::OutOfRange { .. }
            | FetchError::BadSource(_)
            | FetchError::Internal(_) => 500,
            _ => 502,
        }
    }

    /// Whether the upstream refused the credentials the fill used (another reader's may work).
    pub(super) fn is_refusal(status: u16) -> bool {
        matches!(status, 401 | 403)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(errno: i32) -> StoreError {
        StoreError::io("write block data", "/c/blobs/x")(std::io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_full_disk_is_no_space_and_other_store_errors_keep_their_source() {
        assert!(matches!(
            FetchError::from(io(libc::ENOSPC)),
            FetchError::NoSpace(_)
        ));
        assert!(matches!(
            FetchError::from(io(libc::EDQUOT)),
            FetchError::NoSpace(_)
        ));
        match FetchError::from(io(libc::EIO)) {
            FetchError::Store(e) => assert!(e.is_io_error()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_panicked_blocking_task_is_an_internal_error() {
        let join = tokio::task::spawn_blocking(|| panic!("boom")).await;
        let e = FetchError::from(join.unwrap_err());
        assert!(matches!(e, FetchError::Internal(_)));
        assert_eq!(e.gateway_status(), 500);
    }
}
