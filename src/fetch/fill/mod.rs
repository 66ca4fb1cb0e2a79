//! The shared, in-memory state of one blob being read and filled: [`BlobFill`].
//!
//! Submodules: `read` (readers: what is readable, demand, recovery from bad blocks and lost
//! copies), `schedule` (segment fetches, and what they report), `completion` (the
//! background completion of a started file), `verify` (hashing and replicating a completed
//! file), `elsewhere` (blocks another process is filling, during a graceful upgrade).
//!
//! Block states and their transitions are the [`BlockTable`]'s; the fill holds one table per
//! copy of the blob it uses, and everything else a reader or a segment needs.

mod completion;
mod elsewhere;
mod large_reads;
mod progress;
mod read;
mod recent;
mod schedule;
mod verify;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::blocks::{BlockTable, Presence};
use super::context::FillContext;
use super::locator::Locator;
use super::segment::CopyRef;
use super::BlobSource;
use crate::store::{BlobFile, BlobId};
use completion::Completion;
pub use progress::{CacheShare, FillProgress, ReadSource};

/// After the cache ran out of space for a blob, its missing bytes are streamed uncached for
/// this long before filling is tried again.
const NO_SPACE_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    NotStarted,
    Running,
    Done,
}

struct FillState {
    /// The copy of the blob being read and written.
    file: Arc<BlobFile>,
    /// Bumped when `file` is replaced (a lost disk): work for an older copy is ignored.
    generation: u64,
    /// The blocks of `file`.
    blocks: BlockTable,
    /// Segment tasks running for this blob.
    running: usize,
    completion: Completion,
    /// A task is watching blocks another process is filling.
    polling: bool,
    verify: Verify,
    verify_failures: u32,
    replicated: bool,
    /// When a write for this blob last failed for lack of space.
    no_space_at: Option<Instant>,
}

impl FillState {
    fn new(file: Arc<BlobFile>) -> Self {
        Self {
            blocks: BlockTable::new(Arc::clone(&file) as Arc<dyn Presence>),
            file,
            generation: 0,
            running: 0,
            completion: Completion::default(),
            polling: false,
            verify: Verify::NotStarted,
            verify_failures: 0,
            replicated: false,
            no_space_at: None,
        }
    }

    fn copy(&self) -> CopyRef {
        CopyRef {
            file: Arc::clone(&self.file),
            generation: self.generation,
        }
    }

    /// The cache was full for this blob a moment ago.
    fn out_of_space(&self) -> Option<Instant> {
        self.no_space_at
            .filter(|at| at.elapsed() < NO_SPACE_BACKOFF)
    }
}

impl Drop for BlobFill {
    fn drop(&mut self) {
        if let Some(observer) = self.ctx.observer() {
            observer.released(&self.id);
        }
    }
}

/// One blob's fill: the block states, readers' demand, and the running segment fetches.
pub struct BlobFill {
    id: BlobId,
    size: u64,
    /// This fill itself, for the tasks it starts.
    me: Weak<BlobFill>,
    ctx: Arc<FillContext>,
    locator: Arc<Locator>,
    state: Mutex<FillState>,
    /// Bumped on every state change; readers and the completion wait on it.
    version: watch::Sender<u64>,
    /// When this fill was set up, and the bytes present then (for its fetch rate).
    created: Instant,
    initial_bytes: u64,
    /// Readers waiting for one of its blocks now.
    waiting: AtomicUsize,
    /// The last pages readers read and checked, shared by the other readers.
    recent: recent::RecentPages,
}

impl BlobFill {
    pub(super) fn new(
        id: BlobId,
        file: Arc<BlobFile>,
        source: Option<BlobSource>,
        ctx: Arc<FillContext>,
    ) -> Arc<Self> {
        let (version, _) = watch::channel(0);
        let initial_bytes = progress::present_bytes(&file);
        Arc::new_cyclic(|me| Self {
            id,
            size: file.size(),
            me: me.clone(),
            ctx,
            locator: Arc::new(Locator::new(source)),
            state: Mutex::new(FillState::new(file)),
            version,
            created: Instant::now(),
            initial_bytes,
            waiting: AtomicUsize::new(0),
            recent: recent::RecentPages::default(),
        })
    }

    pub fn id(&self) -> &BlobId {
        &self.id
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether every block is on disk.
    pub fn is_complete(&self) -> bool {
        self.state.lock().blocks.is_complete()
    }

    /// The copy being read, if every block holding `range` is present in it (for serving
    /// those bytes straight from the file: see `fetch::send`).
    pub(crate) fn present_file(&self, range: std::ops::Range<u64>) -> Option<Arc<BlobFile>> {
        let st = self.state.lock();
        let mut blocks = st.file.layout().blocks_covering(range);
        blocks
            .all(|b| matches!(st.blocks.state(b), super::blocks::Block::Present))
            .then(|| Arc::clone(&st.file))
    }

    /// The blob file's checksum page size, and whether this process created the file and
    /// has written it alone so far (custody: its bytes may be sent as [`Piece::Own`] runs,
    /// see [`BlobFill::piece_from`]).
    ///
    /// [`Piece::Own`]: crate::fetch::Piece::Own
    pub fn file_custody(&self) -> (u64, bool) {
        let st = self.state.lock();
        (st.file.page_size(), st.file.has_custody())
    }

    /// This fill serves a sibling: it never asks a sibling for bytes itself.
    pub(super) fn forbid_siblings(&self) {
        self.locator.forbid_siblings();
    }

    /// A later reader offers how to fetch this blob (its token is kept in reserve).
    pub(super) fn offer_source(&self, source: BlobSource) {
        self.locator.offer(source);
    }

    fn this(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    fn notify(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wake whoever waits on this fill to look at the settings again.
    pub(in crate::fetch) fn wake(&self) {
        self.notify();
    }

    /// Run `f` on the state if `copy` is still the copy in use.
    fn with_current<T>(&self, copy: &CopyRef, f: impl FnOnce(&mut FillState) -> T) -> Option<T> {
        let mut st = self.state.lock();
        (st.generation == copy.generation).then(|| f(&mut st))
    }

    /// While the whole file is wanted and not complete yet: the root of the copy in use and
    /// the content bytes still missing.
    pub(super) fn pending(&self) -> Option<(usize, u64)> {
        let st = self.state.lock();
        if !st.completion.is_wanted() || st.blocks.is_complete() {
            return None;
        }
        let held = st.file.allocated_estimate() - st.file.layout().data_offset();
        Some((st.file.root_index(), self.size.saturating_sub(held)))
    }

    #[cfg(test)]
    pub(super) fn running_segments(&self) -> usize {
        self.state.lock().running
    }

    #[cfg(test)]
    pub(super) fn block_state(&self, block: u64) -> super::blocks::Block {
        self.state.lock().blocks.state(block)
    }
}
