//! The shared, in-memory state of one blob being read and filled.
//!
//! Submodules: `claims` (coordination with another process filling the same blob, during a
//! graceful upgrade), `complete` (verification and replication of a completed blob).

mod claims;
pub(super) use claims::claim_run;
mod complete;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::engine::EngineInner;
use super::{BlobSource, FetchError, FillMode};
use crate::hf::{self, Revision};
use crate::store::{BlobFile, BlobId, StoreError};
use crate::upstream::Location;

/// A reader that sees no progress at all on its blob for this long gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A signed CDN location is reused for at most this long (they expire within minutes).
const LOCATION_TTL: Duration = Duration::from_secs(120);
/// How many times one read retries after a bad block or a lost copy.
const READ_RETRIES: usize = 3;
/// After the cache ran out of space for a blob, its missing bytes are streamed uncached for
/// this long before filling is tried again.
const NO_SPACE_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Block {
    Missing,
    /// Being fetched; `written` bytes from the block's start are on disk (not yet verified).
    InFlight {
        written: u64,
    },
    /// Committed: all bytes on disk with their page checksums.
    Present,
    /// Being fetched by another process sharing the cache (it holds the block's claim).
    Elsewhere,
    /// The last fetch failed at `at`.
    Failed {
        at: Instant,
        error: FetchError,
    },
}

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
    blocks: Vec<Block>,
    /// Blocks readers are waiting for, most urgent first.
    demand: VecDeque<u64>,
    /// Segment tasks running for this blob.
    running: usize,
    source: Option<BlobSource>,
    wants_completion: bool,
    background: Option<OwnedSemaphorePermit>,
    waiting_for_slot: bool,
    /// A task is watching blocks another process is filling.
    polling: bool,
    verify: Verify,
    verify_failures: u32,
    replicated: bool,
    /// When a write for this blob last failed for lack of space.
    no_space_at: Option<Instant>,
    /// Upstreams whose streams of this blob kept breaking off: asked last from now on.
    avoid: Vec<usize>,
}

/// What a reader may read at an offset.
enum Readable {
    /// A committed block, readable with checksum verification up to `until`.
    Verified { until: u64 },
    /// A block in flight, whose bytes up to `until` are on disk.
    Raw { until: u64 },
}

enum Step {
    Ready(Readable, Arc<BlobFile>),
    Wait,
}

/// The copy a piece of work was started on.
#[derive(Clone)]
pub(super) struct Copy {
    pub(super) file: Arc<BlobFile>,
    pub(super) generation: u64,
}

fn block_states(file: &BlobFile) -> Vec<Block> {
    (0..file.block_count())
        .map(|b| {
            if file.is_present(b) {
                Block::Present
            } else {
                Block::Missing
            }
        })
        .collect()
}

/// One blob's fill: the block states, readers' demand, and the running segment fetches.
pub struct BlobFill {
    id: BlobId,
    size: u64,
    engine: Weak<EngineInner>,
    state: Mutex<FillState>,
    /// Bumped on every state change; readers wait on it.
    version: watch::Sender<u64>,
    location: tokio::sync::Mutex<Option<(Location, Instant)>>,
}

impl BlobFill {
    pub(super) fn new(
        id: BlobId,
        file: Arc<BlobFile>,
        source: Option<BlobSource>,
        engine: Weak<EngineInner>,
    ) -> Arc<Self> {
        let (version, _) = watch::channel(0);
        Arc::new(Self {
            id,
            size: file.size(),
            engine,
            state: Mutex::new(FillState {
                blocks: block_states(&file),
                file,
                generation: 0,
                demand: VecDeque::new(),
                running: 0,
                source,
                wants_completion: false,
                background: None,
                waiting_for_slot: false,
                polling: false,
                verify: Verify::NotStarted,
                verify_failures: 0,
                replicated: false,
                no_space_at: None,
                avoid: Vec::new(),
            }),
            version,
            location: tokio::sync::Mutex::new(None),
        })
    }

    pub fn id(&self) -> &BlobId {
        &self.id
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The copy currently in use.
    pub(super) fn copy(&self) -> Copy {
        let st = self.state.lock();
        Copy {
            file: Arc::clone(&st.file),
            generation: st.generation,
        }
    }

    pub(super) fn engine(&self) -> Option<Arc<EngineInner>> {
        self.engine.upgrade()
    }

    /// Whether every block is on disk.
    pub fn is_complete(&self) -> bool {
        self.state
            .lock()
            .blocks
            .iter()
            .all(|b| matches!(b, Block::Present))
    }

    fn notify(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A later reader offers how to fetch this blob; kept if we had none.
    pub(super) fn offer_source(&self, source: BlobSource) {
        let mut st = self.state.lock();
        if st.source.is_none() {
            st.source = Some(source);
        }
    }

    /// Taken off the engine's queue of blobs waiting for a background slot.
    pub(super) fn leave_slot_queue(&self) {
        self.state.lock().waiting_for_slot = false;
    }

    pub(super) fn holds_background_slot(&self) -> bool {
        self.state.lock().background.is_some()
    }

    /// A client started downloading: in `complete` mode, fetch the rest in the background.
    pub fn want_completion(self: &Arc<Self>) {
        let Some(engine) = self.engine() else { return };
        if engine.settings.mode != FillMode::Complete || engine.settings.offline {
            return;
        }
        {
            let mut st = self.state.lock();
            if st.wants_completion || st.source.is_none() {
                return;
            }
            st.wants_completion = true;
        }
        self.schedule();
    }

    /// Wait until the byte at `offset` can be read (fetching its block if needed). Used to
    /// answer an error status instead of a broken 200 when the upstream cannot deliver.
    pub async fn wait_readable(self: &Arc<Self>, offset: u64) -> Result<(), FetchError> {
        self.readable(offset).await.map(|_| ())
    }

    /// Read up to `max` bytes at `offset`: verified bytes from committed blocks, or bytes of
    /// a block in flight as soon as they are on disk. Waits for missing blocks. A block that
    /// fails its checksum is fetched again; a copy on a failing disk is replaced.
    pub async fn read(self: &Arc<Self>, offset: u64, max: usize) -> Result<Bytes, FetchError> {
        if offset >= self.size {
            return Err(FetchError::OutOfRange {
                blob: self.id.to_string(),
                offset,
                size: self.size,
            });
        }
        let mut retries = 0;
        loop {
            let (readable, file) = self.readable(offset).await?;
            let (len, verify) = match readable {
                Readable::Raw { until } => ((until - offset).min(max as u64) as usize, false),
                Readable::Verified { until } => {
                    let page = file.page_size();
                    let page_end = (offset / page + 1) * page;
                    let len = (until.min(page_end) - offset).min(max as u64) as usize;
                    (len, true)
                }
            };
            let reader = Arc::clone(&file);
            let result = tokio::task::spawn_blocking(move || {
                if verify {
                    reader.read_verified(offset, len)
                } else {
                    reader.read_raw(offset, len)
                }
            })
            .await
            .map_err(|e| FetchError::Store(e.to_string()))?;
            let error = match result {
                Ok(bytes) => return Ok(bytes),
                Err(e) => e,
            };
            if retries >= READ_RETRIES {
                return Err(FetchError::Store(error.to_string()));
            }
            retries += 1;
            self.recover_from_read_error(&file, offset, error).await?;
        }
    }

    /// A read failed: refetch a bad block, or move to another copy of a failing disk.
    async fn recover_from_read_error(
        self: &Arc<Self>,
        file: &Arc<BlobFile>,
        offset: u64,
        error: StoreError,
    ) -> Result<(), FetchError> {
        let block = file.block_of(offset);
        if error.is_short_read() {
            // Truncated underneath us: the block's bytes are gone; forget it on disk too.
            if let Err(e) = file.invalidate_block(block) {
                log::warn!(
                    "{}: cannot invalidate truncated block {block}: {e}",
                    self.id
                );
            }
        }
        if error.is_corrupt() || error.is_not_present() || error.is_short_read() {
            if error.is_corrupt() {
                if let Some(engine) = self.engine() {
                    engine
                        .stats
                        .corrupt_blocks
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            log::warn!("{}: {error}; fetching block {block} again", self.id);
            self.mark_missing(file, block);
            return Ok(());
        }
        if error.is_io_error() {
            log::warn!("{}: {error}; switching to another copy", self.id);
            return self.switch_copy(file, Arc::new(error)).await;
        }
        Err(FetchError::Store(error.to_string()))
    }

    /// A committed block turned out bad (or vanished): forget it so it is fetched again.
    fn mark_missing(&self, file: &Arc<BlobFile>, block: u64) {
        {
            let mut st = self.state.lock();
            if !Arc::ptr_eq(&st.file, file) {
                return;
            }
            if let Some(b @ Block::Present) = st.blocks.get_mut(block as usize) {
                *b = Block::Missing;
            }
        }
        self.notify();
    }

    /// The copy in use sits on a failing disk: continue with another copy (or a new, empty
    /// one on a healthy root). Work still running on the old copy is ignored from now on.
    pub(super) async fn switch_copy(
        self: &Arc<Self>,
        failed: &Arc<BlobFile>,
        error: Arc<StoreError>,
    ) -> Result<(), FetchError> {
        let engine = self
            .engine()
            .ok_or_else(|| FetchError::Store("engine stopped".into()))?;
        let store = Arc::clone(&engine.store);
        let (id, size, block_size) = (self.id.clone(), self.size, engine.settings.block_size);
        let content_addressed = failed.is_content_addressed();
        let broken = Arc::clone(failed);
        let replacement =
            tokio::task::spawn_blocking(move || match store.failover(&id, &broken, &error)? {
                Some(copy) => Ok(copy),
                None => store.create_blob(&id, size, block_size, content_addressed),
            })
            .await
            .map_err(|e| FetchError::Store(e.to_string()))?
            .map_err(|e| super::error::store_failure(&engine, e))?;
        {
            let mut st = self.state.lock();
            if !Arc::ptr_eq(&st.file, failed) {
                return Ok(()); // someone switched already
            }
            log::warn!(
                "{}: continuing on the copy at {}",
                self.id,
                replacement.path().display()
            );
            st.blocks = block_states(&replacement);
            st.file = replacement;
            st.generation += 1;
            st.verify = Verify::NotStarted;
            st.replicated = false;
            st.polling = false;
        }
        self.notify();
        self.schedule();
        Ok(())
    }

    async fn readable(
        self: &Arc<Self>,
        offset: u64,
    ) -> Result<(Readable, Arc<BlobFile>), FetchError> {
        let started = Instant::now();
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            let (step, demanded) = self.check(offset, started)?;
            if demanded {
                self.schedule();
            }
            match step {
                Step::Ready(readable, file) => return Ok((readable, file)),
                Step::Wait => {
                    if tokio::time::timeout(STALL_TIMEOUT, rx.changed())
                        .await
                        .is_err()
                    {
                        return Err(FetchError::Stalled {
                            blob: self.id.to_string(),
                            secs: STALL_TIMEOUT.as_secs(),
                        });
                    }
                }
            }
        }
    }

    /// Look at the block holding `offset`; demand it (and the read-ahead) if missing.
    fn check(&self, offset: u64, started: Instant) -> Result<(Step, bool), FetchError> {
        let engine = self.engine();
        let offline = engine.as_ref().is_none_or(|e| e.settings.offline);
        let read_ahead = engine.as_ref().map(|e| e.settings.read_ahead).unwrap_or(0);
        let mut st = self.state.lock();
        let file = Arc::clone(&st.file);
        let block = file.block_of(offset);
        let span = file.block_span(block);
        let can_fetch = !offline && st.source.is_some();
        let step = match &st.blocks[block as usize] {
            Block::Present => Step::Ready(Readable::Verified { until: span.end }, file.clone()),
            Block::InFlight { written } if span.start + written > offset => Step::Ready(
                Readable::Raw {
                    until: span.start + written,
                },
                file.clone(),
            ),
            Block::InFlight { .. } | Block::Elsewhere => Step::Wait,
            Block::Failed { at, error } if *at >= started => return Err(error.clone()),
            Block::Failed { .. } | Block::Missing => {
                if let Some(at) = st.no_space_at.filter(|at| at.elapsed() < NO_SPACE_BACKOFF) {
                    // The cache is full: let the reader stream these bytes uncached.
                    return Err(FetchError::NoSpace(format!(
                        "no space for {} {}s ago",
                        self.id,
                        at.elapsed().as_secs()
                    )));
                }
                if !can_fetch {
                    return Err(FetchError::NotCached {
                        blob: self.id.to_string(),
                        block,
                    });
                }
                st.blocks[block as usize] = Block::Missing;
                if !st.demand.contains(&block) {
                    st.demand.push_front(block);
                }
                Step::Wait
            }
        };
        let mut demanded = matches!(step, Step::Wait);
        if can_fetch {
            let ahead_blocks = read_ahead.div_ceil(file.block_size().max(1));
            let last = (block + ahead_blocks).min(file.block_count().saturating_sub(1));
            for b in block + 1..=last {
                if matches!(st.blocks[b as usize], Block::Missing) && !st.demand.contains(&b) {
                    st.demand.push_back(b);
                    demanded = true;
                }
            }
        }
        Ok((step, demanded))
    }

    /// Start segment fetches while there is work and connections for this blob.
    pub(super) fn schedule(self: &Arc<Self>) {
        let Some(engine) = self.engine() else { return };
        if engine.settings.offline {
            return;
        }
        let mut launches: Vec<(Copy, Range<u64>)> = Vec::new();
        let mut took_slot = false;
        let mut must_wait = false;
        {
            let mut st = self.state.lock();
            if st.source.is_none() {
                return;
            }
            let per_file = engine.settings.connections_per_file.max(1);
            let per_segment = (engine.settings.segment / st.file.block_size()).max(1);
            let count = st.blocks.len() as u64;
            while st.running < per_file {
                let next = match pop_demand(&mut st) {
                    Some(block) => Some(block),
                    None if st.wants_completion => {
                        let first_missing = st
                            .blocks
                            .iter()
                            .position(|b| matches!(b, Block::Missing))
                            .map(|b| b as u64);
                        if first_missing.is_some() && st.background.is_none() {
                            match Arc::clone(&engine.background).try_acquire_owned() {
                                Ok(permit) => {
                                    st.background = Some(permit);
                                    took_slot = true;
                                }
                                Err(_) => {
                                    if !st.waiting_for_slot {
                                        st.waiting_for_slot = true;
                                        must_wait = true;
                                    }
                                }
                            }
                        }
                        first_missing.filter(|_| st.background.is_some())
                    }
                    None => None,
                };
                let Some(start) = next else { break };
                // A segment runs over the following missing blocks when the whole file is
                // wanted; on demand, only over blocks readers asked for (incl. read-ahead).
                let mut end = start + 1;
                while end < count
                    && end - start < per_segment
                    && matches!(st.blocks[end as usize], Block::Missing)
                    && (st.wants_completion || st.demand.contains(&end))
                {
                    end += 1;
                }
                for b in start..end {
                    st.blocks[b as usize] = Block::InFlight { written: 0 };
                }
                st.running += 1;
                let copy = Copy {
                    file: Arc::clone(&st.file),
                    generation: st.generation,
                };
                launches.push((copy, start..end));
            }
            if took_slot {
                st.waiting_for_slot = false;
            }
        }
        if took_slot {
            engine.pin(self);
        }
        if must_wait {
            engine.wait_for_background_slot(self);
        }
        for (copy, blocks) in launches {
            tokio::spawn(super::segment::run(Arc::clone(self), copy, blocks));
        }
    }

    /// Run `f` on the state if `copy` is still the copy in use.
    fn with_current<T>(&self, copy: &Copy, f: impl FnOnce(&mut FillState) -> T) -> Option<T> {
        let mut st = self.state.lock();
        (st.generation == copy.generation).then(|| f(&mut st))
    }

    /// Bytes of `block` up to `written` are on disk; `committed` once the block is complete.
    pub(super) fn progress(&self, copy: &Copy, block: u64, written: u64, committed: bool) {
        self.with_current(copy, |st| {
            if let Some(b) = st.blocks.get_mut(block as usize) {
                *b = if committed {
                    Block::Present
                } else {
                    Block::InFlight { written }
                };
            }
        });
        self.notify();
    }

    /// Set the state of blocks a segment will not fetch after all.
    pub(super) fn settle_unfetched(
        &self,
        copy: &Copy,
        present: &[u64],
        elsewhere: &[u64],
        missing: &[u64],
    ) {
        self.with_current(copy, |st| {
            for (blocks, state) in [
                (present, Block::Present),
                (elsewhere, Block::Elsewhere),
                (missing, Block::Missing),
            ] {
                for b in blocks {
                    if let Some(block) = st.blocks.get_mut(*b as usize) {
                        *block = state.clone();
                    }
                }
            }
        });
        self.notify();
    }

    /// A segment gave up: its unfinished blocks fail (readers waiting on them get `error`;
    /// later readers try again).
    pub(super) fn fail_blocks(&self, copy: &Copy, blocks: Range<u64>, error: FetchError) {
        log::warn!("{}: blocks {blocks:?} failed: {error}", self.id);
        self.with_current(copy, |st| {
            let at = Instant::now();
            if matches!(error, FetchError::NoSpace(_)) {
                // Stop filling (incl. the background completion) until space may be back.
                st.no_space_at = Some(at);
                st.wants_completion = false;
            }
            for b in blocks {
                if let Some(block) = st.blocks.get_mut(b as usize) {
                    if matches!(block, Block::InFlight { .. } | Block::Missing) {
                        *block = Block::Failed {
                            at,
                            error: error.clone(),
                        };
                    }
                }
            }
        });
        self.notify();
    }

    /// A segment task ended (successfully or not).
    pub(super) fn segment_finished(self: &Arc<Self>) {
        {
            let mut st = self.state.lock();
            st.running = st.running.saturating_sub(1);
        }
        self.schedule();
        self.release_background_if_done();
        self.check_completed();
    }

    fn release_background_if_done(self: &Arc<Self>) {
        let released = {
            let mut st = self.state.lock();
            let done = !st.blocks.iter().any(|b| {
                matches!(
                    b,
                    Block::Missing | Block::InFlight { .. } | Block::Elsewhere
                )
            });
            // Also when completion was called off (cache full, content kept mismatching).
            let idle = st.running == 0 && (done || !st.wants_completion);
            if idle {
                st.background.take().is_some()
            } else {
                false
            }
        };
        if released {
            if let Some(engine) = self.engine() {
                engine.unpin(&self.id);
                engine.background_slot_freed();
            }
        }
    }

    /// Where to fetch this blob's bytes: reuse the last location while fresh, otherwise ask
    /// the upstream chain (one HEAD on the resolve URL).
    pub(super) async fn location(&self) -> Result<Location, FetchError> {
        let mut cached = self.location.lock().await;
        if let Some((location, at)) = cached.as_ref() {
            if at.elapsed() < LOCATION_TTL {
                return Ok(location.clone());
            }
        }
        let (source, avoid) = {
            let st = self.state.lock();
            (st.source.clone(), st.avoid.clone())
        };
        let source = source.ok_or_else(|| FetchError::NotCached {
            blob: self.id.to_string(),
            block: 0,
        })?;
        let engine = self
            .engine()
            .ok_or_else(|| FetchError::Store("engine stopped".into()))?;
        let commit = Revision::new(&source.commit)
            .map_err(|e| FetchError::Store(format!("bad commit in source: {e}")))?;
        let path = hf::resolve_path(&source.repo, &commit, &source.path);
        match engine
            .upstream
            .locate(&path, source.auth.as_deref(), &avoid)
            .await?
        {
            Ok(location) => {
                *cached = Some((location.clone(), Instant::now()));
                Ok(location)
            }
            Err(response) => Err(FetchError::Refused {
                what: path,
                status: response.status,
            }),
        }
    }

    /// Ask `upstream` last for this blob from now on (its streams keep breaking off).
    pub(super) fn avoid_upstream(&self, upstream: usize) {
        let mut st = self.state.lock();
        if !st.avoid.contains(&upstream) {
            log::warn!(
                "{}: upstream {upstream} keeps failing; trying the next one",
                self.id
            );
            st.avoid.push(upstream);
        }
    }

    /// Forget `used` (expired, or its host failed) so the next attempt locates again.
    pub(super) async fn invalidate_location(&self, used: &Location) {
        if let Some(engine) = self.engine() {
            engine.upstream.forget_location(&used.url);
        }
        let mut cached = self.location.lock().await;
        if cached.as_ref().is_some_and(|(l, _)| l.url == used.url) {
            *cached = None;
        }
    }
}

fn pop_demand(st: &mut FillState) -> Option<u64> {
    while let Some(block) = st.demand.pop_front() {
        if matches!(st.blocks.get(block as usize), Some(Block::Missing)) {
            return Some(block);
        }
    }
    None
}

impl Drop for BlobFill {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.forget(&self.id);
        }
    }
}
