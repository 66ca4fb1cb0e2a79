//! The eviction index: what is cached, how much disk it takes, and how it is used, in memory,
//! so that choosing what to evict never scans the disk.
//!
//! ```text
//! let (index, report) = EvictionIndex::open(&snapshot_path, policy, &config.pin);
//! index.reconcile(store_listing);              // the blobs really on disk (sizes, copies)
//! index.record_fill(&id, size, root, allocated, now);
//! index.record_read(&id, DownloadId::of(&[client_ip, user_agent]), now);
//! let plan = index.plan(&PlanRequest::free(bytes, now), &|id| fill.is_in_use(id));
//! // the caller deletes plan.victims (every replica), then index.evicted(&id) for each
//! index.save(&snapshot_path)?;                 // periodically and on shutdown
//! ```
//!
//! The index keeps per blob: size, allocated bytes per storage root (every replica; a partly
//! filled blob counts what it holds), first fill, last read (hubcache's own record, not atime),
//! downloads (one per download however many range requests it makes, see [`DownloadId`]), the
//! policy's key, and the repos that reference it (for pins). It ranks candidates with the
//! configured [`EvictionPolicy`](hubcache_plugin_api::EvictionPolicy) and leaves out blobs in
//! use, pinned or younger than `min_age`. It deletes nothing: the store does, and the index is
//! told afterwards. It does no I/O except loading and saving its snapshot (`persist`).
//!
//! Around it: `pass` (what must be freed and freeing it in paced batches through a
//! [`pass::Remover`]), `alarm` (when `disk_high`, `disk_ok`, `root_lost` fire), `metrics`,
//! `service` + `background` (the [`CacheService`] a running mirror starts: the fill engine's
//! observer, the loop that evicts, publishes the core's events and runs the alert dispatcher)
//! and `cli` (`hubcache cache gc` / `cache ls`).

pub mod alarm;
mod background;
pub mod cli;
mod index;
pub mod metrics;
pub mod pass;
mod persist;
mod plan;
pub mod service;
mod snapshot;

use std::time::{SystemTime, UNIX_EPOCH};

pub use index::{BlobInfo, EvictionIndex, LoadReport, ReconcileReport, SnapshotState, Usage};
pub use persist::disk_blobs;
pub use plan::{Blocked, Excluded, Plan, PlanRequest, Target, Victim};
pub use service::{CacheService, Summary};
pub use snapshot::SnapshotError;

use crate::store::BlobId;

/// Identifies a storage root (its position in `cache.roots`).
pub type RootId = u16;

/// Milliseconds since the Unix epoch (the index's clock).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One copy of a blob on one root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub root: RootId,
    /// Bytes it occupies on disk (header and present blocks).
    pub allocated: u64,
}

/// A blob as found on disk, for [`EvictionIndex::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskBlob {
    pub id: BlobId,
    /// The file's length.
    pub size: u64,
    /// Its copies; a blob with none is treated as gone.
    pub copies: Vec<Copy>,
    /// When it was last written (ms since the epoch): first fill and last read of a blob the
    /// index did not know (one filled by an older version, or after a lost snapshot).
    pub modified: u64,
}

/// Who is downloading: the caller's identity of one download (e.g. a hash of the client's
/// address and user agent), so that the dozens of range requests of one `hf_transfer` or Xet
/// download count as one access. Reads of a blob with the same id within the session window
/// (10 minutes after the last one) are one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DownloadId(pub u64);

impl DownloadId {
    /// An id from parts that identify a download (64-bit FNV-1a over the parts).
    pub fn of(parts: &[&str]) -> DownloadId {
        DownloadId(fnv1a(parts.iter().flat_map(|p| p.bytes().chain([0xff]))))
    }
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pass;
