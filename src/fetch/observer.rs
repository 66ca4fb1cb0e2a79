//! What the fill engine tells the part of hubcache that keeps the cache's accounting (the
//! eviction service): blobs opened and for which repo, blocks stored, downloads read, fills
//! released, replicas made, files that failed verification; and the one thing it asks of it:
//! make room when a write finds the disk full.
//!
//! The engine names no implementation: it holds an optional [`FillObserver`] set once
//! ([`FillEngine::set_observer`](super::FillEngine::set_observer)). Every notification is
//! called on the fill's path, often under no lock but on a runtime worker: implementations
//! must be cheap and never block.

use futures::future::BoxFuture;

use crate::hf::Repo;
use crate::store::{BlobFile, BlobId};

/// Receives the fill engine's notifications. Every method has a no-op default.
pub trait FillObserver: Send + Sync {
    /// Blob `id` was opened (created empty if it was not cached) for a download of `repo`'s
    /// file (`None`: opened without a repo, offline). `copy` is the copy in use.
    fn opened(&self, _id: &BlobId, _repo: Option<&Repo>, _copy: &BlobFile) {}

    /// A block of `copy` was committed: the copy holds more.
    fn stored(&self, _id: &BlobId, _copy: &BlobFile) {}

    /// A download read blob `id`; `download` identifies the download (several range requests
    /// of one download carry the same id).
    fn read(&self, _id: &BlobId, _download: u64) {}

    /// The fill of `id` ended: no reader, fetch or background completion holds it any more.
    fn released(&self, _id: &BlobId) {}

    /// Blob `id` (of `size` bytes) now has these copies: (root, bytes on disk).
    fn copies(&self, _id: &BlobId, _size: u64, _copies: &[(usize, u64)]) {}

    /// A completed file of blob `id` hashed to `actual` instead and was discarded.
    fn verify_failed(&self, _id: &BlobId, _actual: &str) {}

    /// Blob `id` needs more space than its root has (see [`Room`]): free space there if
    /// possible. Resolves to whether anything was freed (the create or write is then retried
    /// once). The default frees nothing.
    fn make_room(&self, _id: &BlobId, _room: Room) -> BoxFuture<'static, bool> {
        Box::pin(async { false })
    }
}

/// What a blob needs room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The storage root (index in `cache.roots`).
    pub root: usize,
    /// Bytes still to be written.
    pub bytes: u64,
    /// A new blob file (the store creates one only with `bytes` plus its reserve free), or
    /// more bytes of a file being filled (any room lets the write go on).
    pub new_file: bool,
}
