//! The fill engine: gets the bytes of a blob from the upstream chain into the block store.
//!
//! - **One fetch per block.** Each blob has one in-memory [`BlobFill`] shared by every reader;
//!   a missing block is claimed once and fetched once, whoever asks and whatever range.
//! - **Range-aware.** Readers demand the block they need (plus read-ahead) first; a ranged
//!   request at the end of a cold file does not wait for its start.
//! - **Parallel and resumable.** Missing runs are fetched as segments of whole blocks on up to
//!   `connections_per_file` connections (and `connections_total` overall); a broken stream
//!   resumes from the last byte received; a `206` whose `Content-Range` does not match, or a
//!   `200` to a ranged request, is never written.
//! - **Streaming.** Readers read bytes of a block still in flight as soon as they are on
//!   disk, and verified bytes (page checksums) once the block is committed.
//! - **Complete in the background** (`fill.mode: complete`), bounded by `background_fills`.
//! - **Cache full.** A [`BlobReader`] streams what the cache cannot take from upstream.
//!
//! Layout: `engine` (opening fills) → `registry` (live fills) and `fill` (one blob's state)
//! → `blocks` (block states, pure) and `segment` (one ranged fetch, reporting through a
//! sink) → `context` (store, upstream, settings, budgets, counters) and `locator` (where the
//! bytes are, with whose token). `lowprio` runs hashing and replication off the runtime.

mod blocks;
mod budget;
mod context;
mod direct;
mod engine;
mod error;
mod fill;
mod locator;
mod lowprio;
mod observer;
mod prefetch;
mod reader;
mod registry;
mod segment;
mod send;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use context::{FillSettings, FillStats};
pub use direct::DirectStream;
pub use engine::FillEngine;
pub use error::FetchError;
pub use fill::{BlobFill, CacheShare, FillProgress, ReadSource};
pub use observer::{FillObserver, Room};
pub use reader::{BlobReader, ReadTally};
pub use send::{OwnSent, Piece, SendSource};

use crate::hf::{self, Repo, RepoPath, Revision};

/// How a blob's bytes are fetched: the resolve URL of one file that has this content.
#[derive(Debug, Clone)]
pub struct BlobSource {
    pub repo: Repo,
    pub commit: String,
    pub path: RepoPath,
    /// The Authorization of the client that started the fill (needed for gated repos; sent
    /// only to the hub's own origin, never to a CDN).
    pub auth: Option<String>,
    pub size: u64,
    /// Whether the blob id is the content hash, so a completed file can be verified.
    pub verifiable: bool,
}

impl BlobSource {
    /// The resolve path of the file on an upstream.
    pub(crate) fn resolve_path(&self) -> Result<String, FetchError> {
        let commit = Revision::new(&self.commit)
            .map_err(|e| FetchError::BadSource(format!("commit {:?}: {e}", self.commit)))?;
        Ok(hf::resolve_path(&self.repo, &commit, &self.path))
    }
}

/// Whether a blob is filled only where clients read, or completed once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillMode {
    Complete,
    OnDemand,
}
