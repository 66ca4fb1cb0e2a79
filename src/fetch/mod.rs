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

mod background;
mod direct;
mod engine;
mod error;
mod fill;
mod segment;

pub use direct::DirectStream;
pub use engine::{FillEngine, FillSettings, FillStats};
pub use error::FetchError;
pub use fill::BlobFill;

use crate::hf::{Repo, RepoPath};

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

/// Whether a blob is filled only where clients read, or completed once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillMode {
    Complete,
    OnDemand,
}
