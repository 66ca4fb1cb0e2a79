//! The state of every block of one copy of a blob, and every transition between states.
//!
//! Presence comes from the store's bitmap only (through [`Presence`]); the table keeps just
//! the transient states of blocks that are not present — being fetched here, being fetched
//! by another process, or failed — in a small map, plus the queue of blocks readers demand.
//!
//! Invariants (each checked by the tests below):
//! - a block present in the bitmap is [`Block::Present`], whatever the map says;
//! - a run is started only over [`Block::Missing`] blocks, so a block is never fetched twice
//!   at once, nor fetched while present or while another process fills it;
//! - only blocks being fetched (or missing) can fail; present and elsewhere blocks never do;
//! - the demand queue holds each block at most once, and hands out only missing blocks;
//! - once a block is committed (or found present), the map holds nothing for it.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use super::FetchError;
use crate::store::BlobFile;

/// Where presence comes from: the blob file's bitmap (tests use a plain set).
pub(super) trait Presence: Send + Sync {
    fn block_count(&self) -> u64;
    fn is_present(&self, block: u64) -> bool;
    fn present_count(&self) -> u64;
}

impl Presence for BlobFile {
    fn block_count(&self) -> u64 {
        BlobFile::block_count(self)
    }

    fn is_present(&self, block: u64) -> bool {
        BlobFile::is_present(self, block)
    }

    fn present_count(&self) -> u64 {
        BlobFile::present_count(self)
    }
}

/// The state of one block.
#[derive(Debug, Clone)]
pub(super) enum Block {
    Missing,
    /// Being fetched; `written` bytes from the block's start are on disk (not yet verified),
    /// and so are the bytes `ahead` (offsets in the block) when the fetch started at the page
    /// a reader asked for (range-first; the bytes before it follow).
    InFlight {
        written: u64,
        ahead: Range<u64>,
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

/// The states a block that is not present can be in besides missing.
#[derive(Debug, Clone)]
enum Transient {
    InFlight { written: u64, ahead: Range<u64> },
    Elsewhere,
    Failed { at: Instant, error: FetchError },
}

/// Blocks that claiming handed back: on disk after all, claimed by another process, or
/// left for a later segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Unclaimed {
    pub(super) present: Vec<u64>,
    pub(super) elsewhere: Vec<u64>,
    pub(super) missing: Vec<u64>,
}

pub(super) struct BlockTable {
    presence: Arc<dyn Presence>,
    transient: HashMap<u64, Transient>,
    /// Blocks readers are waiting for, most urgent first.
    demand: VecDeque<u64>,
    /// Where in a demanded block (offset in it) the reader waiting for it wants to start.
    demand_at: HashMap<u64, u64>,
    /// No block before this one was missing when last looked (a hint; see `first_missing`).
    missing_from: u64,
}

impl BlockTable {
    pub(super) fn new(presence: Arc<dyn Presence>) -> Self {
        Self {
            presence,
            transient: HashMap::new(),
            demand: VecDeque::new(),
            demand_at: HashMap::new(),
            missing_from: 0,
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.presence.block_count()
    }

    pub(super) fn state(&self, block: u64) -> Block {
        if self.presence.is_present(block) {
            return Block::Present;
        }
        match self.transient.get(&block) {
            None => Block::Missing,
            Some(Transient::InFlight { written, ahead }) => Block::InFlight {
                written: *written,
                ahead: ahead.clone(),
            },
            Some(Transient::Elsewhere) => Block::Elsewhere,
            Some(Transient::Failed { at, error }) => Block::Failed {
                at: *at,
                error: error.clone(),
            },
        }
    }

    fn is_missing(&self, block: u64) -> bool {
        block < self.count()
            && !self.presence.is_present(block)
            && !self.transient.contains_key(&block)
    }

    /// Every block is present.
    pub(super) fn is_complete(&self) -> bool {
        self.presence.present_count() >= self.count()
    }

    /// Bytes on disk of blocks being fetched (not yet committed).
    pub(super) fn in_flight_written(&self) -> u64 {
        self.transient
            .values()
            .map(|t| match t {
                Transient::InFlight { written, ahead } => *written + (ahead.end - ahead.start),
                _ => 0,
            })
            .sum()
    }

    /// Nothing is left to fetch or to wait for: every block is present or failed.
    pub(super) fn is_settled(&self) -> bool {
        let failed = self
            .transient
            .iter()
            .filter(|(b, t)| {
                matches!(t, Transient::Failed { .. }) && !self.presence.is_present(**b)
            })
            .count() as u64;
        self.presence.present_count() + failed >= self.count()
    }

    /// A reader needs `block` now: a failed one is tried again, and a missing one goes to the
    /// front of the queue. Returns whether it was queued.
    pub(super) fn demand(&mut self, block: u64) -> bool {
        if matches!(self.transient.get(&block), Some(Transient::Failed { .. })) {
            self.forget(block);
        }
        if !self.is_missing(block) {
            return false;
        }
        if let Some(i) = self.demand.iter().position(|&b| b == block) {
            self.demand.remove(i);
        }
        self.demand.push_front(block);
        true
    }

    /// A reader needs the bytes of `block` from offset `at` in it now: as
    /// [`demand`](Self::demand), remembering where the reader starts (see
    /// [`take_demand_offset`](Self::take_demand_offset)).
    pub(super) fn demand_from(&mut self, block: u64, at: u64) -> bool {
        let queued = self.demand(block);
        if queued {
            self.demand_at.insert(block, at);
        }
        queued
    }

    /// Where in `block` the reader that demanded it starts (0 if none said): a fetch of the
    /// block may start there.
    pub(super) fn take_demand_offset(&mut self, block: u64) -> u64 {
        self.demand_at.remove(&block).unwrap_or(0)
    }

    /// A reader will soon need `blocks` (read-ahead): the missing ones not queued yet go to
    /// the back of the queue. Returns whether any was queued.
    pub(super) fn demand_ahead(&mut self, blocks: Range<u64>) -> bool {
        let mut queued = false;
        for block in blocks {
            if self.is_missing(block) && !self.demand.contains(&block) {
                self.demand.push_back(block);
                queued = true;
            }
        }
        queued
    }

    /// The most urgent demanded block that is still missing.
    pub(super) fn next_demanded(&mut self) -> Option<u64> {
        while let Some(block) = self.demand.pop_front() {
            if self.is_missing(block) {
                return Some(block);
            }
        }
        None
    }

    /// The first missing block (for completing the whole file).
    pub(super) fn first_missing(&mut self) -> Option<u64> {
        let count = self.count();
        let from = self.missing_from.min(count);
        let found = (from..count).chain(0..from).find(|&b| self.is_missing(b));
        if let Some(block) = found {
            self.missing_from = block;
        }
        found
    }

    /// Start fetching the run of missing blocks from `start` (which must be missing): up to
    /// `max_blocks`, each following block only if missing and either demanded or
    /// `whole_file`. Every block of the run is then in flight. Empty if `start` is not missing.
    pub(super) fn start_run(
        &mut self,
        start: u64,
        max_blocks: u64,
        whole_file: bool,
    ) -> Range<u64> {
        if !self.is_missing(start) {
            return start..start;
        }
        let mut end = start + 1;
        while end < self.count()
            && end - start < max_blocks.max(1)
            && self.is_missing(end)
            && (whole_file || self.demand.contains(&end))
        {
            end += 1;
        }
        for block in start..end {
            self.transient.insert(
                block,
                Transient::InFlight {
                    written: 0,
                    ahead: 0..0,
                },
            );
        }
        start..end
    }

    /// Bytes up to `written` of an in-flight block are on disk.
    pub(super) fn progress(&mut self, block: u64, written: u64) {
        if let Some(Transient::InFlight { written: w, .. }) = self.transient.get_mut(&block) {
            *w = written;
        }
    }

    /// The bytes `ahead` (offsets in the block) of an in-flight block are on disk: fetched
    /// first, before the bytes from the block's start.
    pub(super) fn progress_ahead(&mut self, block: u64, ahead: Range<u64>) {
        if let Some(Transient::InFlight { ahead: a, .. }) = self.transient.get_mut(&block) {
            *a = ahead;
        }
    }

    /// The block is committed (its bit is set).
    pub(super) fn committed(&mut self, block: u64) {
        self.transient.remove(&block);
        self.demand_at.remove(&block);
    }

    /// Blocks a run will not fetch after all (see [`Unclaimed`]).
    pub(super) fn unclaimed(&mut self, unclaimed: &Unclaimed) {
        for &block in unclaimed.present.iter().chain(&unclaimed.missing) {
            self.forget(block);
        }
        for &block in &unclaimed.elsewhere {
            if !self.presence.is_present(block) {
                self.transient.insert(block, Transient::Elsewhere);
            }
        }
    }

    /// Fetching `blocks` failed: those still in flight (or missing) fail with `error`.
    pub(super) fn fail(&mut self, blocks: Range<u64>, error: &FetchError, at: Instant) {
        for block in blocks.start..blocks.end.min(self.count()) {
            let failing = !self.presence.is_present(block)
                && matches!(
                    self.transient.get(&block),
                    None | Some(Transient::InFlight { .. })
                );
            if failing {
                self.transient.insert(
                    block,
                    Transient::Failed {
                        at,
                        error: error.clone(),
                    },
                );
            }
        }
    }

    /// Every block that is not present (nor filled elsewhere) fails: the file is given up on.
    pub(super) fn fail_all(&mut self, error: &FetchError, at: Instant) {
        self.demand.clear();
        self.demand_at.clear();
        for block in 0..self.count() {
            let elsewhere = matches!(self.transient.get(&block), Some(Transient::Elsewhere));
            if !self.presence.is_present(block) && !elsewhere {
                self.transient.insert(
                    block,
                    Transient::Failed {
                        at,
                        error: error.clone(),
                    },
                );
            }
        }
    }

    /// A present block turned out bad or vanished (the store has cleared its bit): it is
    /// missing again.
    pub(super) fn lost(&mut self, block: u64) {
        self.forget(block);
    }

    /// Every block was invalidated in the store: all are missing again.
    pub(super) fn reset(&mut self) {
        self.transient.clear();
        self.demand.clear();
        self.demand_at.clear();
        self.missing_from = 0;
    }

    /// Blocks another process is filling.
    pub(super) fn elsewhere(&self) -> Vec<u64> {
        let mut blocks: Vec<u64> = self
            .transient
            .iter()
            .filter(|(_, t)| matches!(t, Transient::Elsewhere))
            .map(|(b, _)| *b)
            .collect();
        blocks.sort_unstable();
        blocks
    }

    /// Blocks another process was filling: `done` are on disk, `abandoned` were let go
    /// without (they are queued to be fetched here).
    pub(super) fn resolve_elsewhere(&mut self, done: &[u64], abandoned: &[u64]) {
        for &block in done.iter().chain(abandoned) {
            if matches!(self.transient.get(&block), Some(Transient::Elsewhere)) {
                self.forget(block);
            }
        }
        for &block in abandoned {
            if self.is_missing(block) && !self.demand.contains(&block) {
                self.demand.push_back(block);
            }
        }
    }

    fn forget(&mut self, block: u64) {
        self.transient.remove(&block);
        self.demand_at.remove(&block);
        self.missing_from = self.missing_from.min(block);
    }

    #[cfg(test)]
    fn transient_len(&self) -> usize {
        self.transient.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A bitmap in memory.
    struct Bits(Vec<AtomicBool>);

    impl Bits {
        fn new(count: usize) -> Arc<Self> {
            Arc::new(Self((0..count).map(|_| AtomicBool::new(false)).collect()))
        }
        fn set(&self, block: u64, present: bool) {
            self.0[block as usize].store(present, Ordering::SeqCst);
        }
    }

    impl Presence for Bits {
        fn block_count(&self) -> u64 {
            self.0.len() as u64
        }
        fn is_present(&self, block: u64) -> bool {
            self.0
                .get(block as usize)
                .is_some_and(|b| b.load(Ordering::SeqCst))
        }
        fn present_count(&self) -> u64 {
            self.0.iter().filter(|b| b.load(Ordering::SeqCst)).count() as u64
        }
    }

    fn table(count: usize) -> (Arc<Bits>, BlockTable) {
        let bits = Bits::new(count);
        let table = BlockTable::new(Arc::clone(&bits) as Arc<dyn Presence>);
        (bits, table)
    }

    fn error() -> FetchError {
        FetchError::Internal("test".into())
    }

    fn is(block: Block, name: &str) -> bool {
        name == match block {
            Block::Missing => "missing",
            Block::InFlight { .. } => "inflight",
            Block::Present => "present",
            Block::Elsewhere => "elsewhere",
            Block::Failed { .. } => "failed",
        }
    }

    #[test]
    fn presence_comes_from_the_bitmap_whatever_the_map_says() {
        let (bits, mut t) = table(4);
        t.start_run(0, 1, false);
        t.fail(0..1, &error(), Instant::now());
        assert!(is(t.state(0), "failed"));
        // Another process committed it meanwhile.
        bits.set(0, true);
        assert!(is(t.state(0), "present"));
        assert!(!t.demand(0), "a present block is never demanded");
    }

    #[test]
    fn a_run_covers_only_missing_blocks_and_never_refetches_one_in_flight() {
        let (bits, mut t) = table(10);
        bits.set(3, true);
        assert_eq!(t.start_run(0, 8, true), 0..3, "stops at a present block");
        assert_eq!(
            t.start_run(1, 8, true),
            1..1,
            "block 1 is in flight already"
        );
        t.unclaimed(&Unclaimed {
            elsewhere: vec![5],
            ..Unclaimed::default()
        });
        assert_eq!(
            t.start_run(4, 8, true),
            4..5,
            "stops at a block filled elsewhere"
        );
        assert_eq!(t.start_run(6, 2, true), 6..8, "at most max_blocks");
        assert!(is(t.state(7), "inflight"));
    }

    #[test]
    fn on_demand_a_run_extends_only_over_demanded_blocks() {
        let (_, mut t) = table(10);
        t.demand(2);
        t.demand_ahead(3..5);
        let start = t.next_demanded().unwrap();
        assert_eq!(start, 2);
        assert_eq!(t.start_run(start, 8, false), 2..5);
        assert_eq!(
            t.next_demanded(),
            None,
            "blocks in flight are not handed out again"
        );
    }

    #[test]
    fn demand_puts_the_most_urgent_block_first_once() {
        let (_, mut t) = table(10);
        t.demand_ahead(4..7);
        assert!(t.demand(8));
        assert!(t.demand(5));
        assert_eq!(
            t.demand.iter().copied().collect::<Vec<_>>(),
            vec![5, 8, 4, 6]
        );
        assert!(!t.demand_ahead(4..7), "nothing new to queue");
    }

    #[test]
    fn failing_never_touches_present_or_elsewhere_blocks() {
        let (bits, mut t) = table(6);
        t.start_run(0, 6, true);
        t.committed(0);
        bits.set(0, true);
        t.unclaimed(&Unclaimed {
            elsewhere: vec![1],
            missing: vec![5],
            ..Unclaimed::default()
        });
        t.fail(0..6, &error(), Instant::now());
        assert!(is(t.state(0), "present"));
        assert!(is(t.state(1), "elsewhere"));
        for b in 2..6 {
            assert!(is(t.state(b), "failed"), "block {b}");
        }
    }

    #[test]
    fn a_failed_block_is_tried_again_when_demanded() {
        let (_, mut t) = table(3);
        t.start_run(1, 1, false);
        t.fail(1..2, &error(), Instant::now());
        assert_eq!(t.first_missing(), Some(0));
        assert!(t.demand(1));
        assert!(is(t.state(1), "missing"));
        assert_eq!(t.next_demanded(), Some(1));
    }

    #[test]
    fn settled_means_every_block_present_or_failed() {
        let (bits, mut t) = table(3);
        assert!(!t.is_settled());
        bits.set(0, true);
        t.start_run(1, 2, true);
        assert!(!t.is_settled(), "blocks in flight");
        t.fail(2..3, &error(), Instant::now());
        assert!(!t.is_settled());
        t.committed(1);
        bits.set(1, true);
        assert!(t.is_settled());
        assert!(!t.is_complete());
        t.unclaimed(&Unclaimed {
            elsewhere: vec![2],
            ..Unclaimed::default()
        });
        assert!(!t.is_settled(), "waiting for another process");
    }

    #[test]
    fn committed_and_found_present_blocks_leave_nothing_in_the_map() {
        let (bits, mut t) = table(5);
        t.start_run(0, 5, true);
        for b in 0..3 {
            t.progress(b, 10);
            bits.set(b, true);
            t.committed(b);
        }
        bits.set(3, true);
        t.unclaimed(&Unclaimed {
            present: vec![3],
            missing: vec![4],
            ..Unclaimed::default()
        });
        assert_eq!(t.transient_len(), 0);
        assert_eq!(t.first_missing(), Some(4));
    }

    #[test]
    fn blocks_filled_elsewhere_resolve_to_present_or_back_to_us() {
        let (bits, mut t) = table(4);
        t.start_run(0, 4, true);
        t.unclaimed(&Unclaimed {
            elsewhere: vec![1, 2],
            ..Unclaimed::default()
        });
        assert_eq!(t.elsewhere(), vec![1, 2]);
        bits.set(1, true);
        t.resolve_elsewhere(&[1], &[2]);
        assert!(t.elsewhere().is_empty());
        assert!(is(t.state(1), "present"));
        assert_eq!(
            t.next_demanded(),
            Some(2),
            "an abandoned block is fetched here"
        );
    }

    #[test]
    fn a_lost_block_and_a_reset_make_blocks_missing_again() {
        let (bits, mut t) = table(4);
        for b in 0..4 {
            bits.set(b, true);
        }
        assert!(t.is_complete());
        assert_eq!(t.first_missing(), None);
        bits.set(2, false); // the store invalidated a corrupt block
        t.lost(2);
        assert_eq!(t.first_missing(), Some(2));
        for b in 0..4 {
            bits.set(b, false);
        }
        t.fail_all(&error(), Instant::now());
        assert!(t.is_settled());
        t.reset();
        assert_eq!(t.first_missing(), Some(0));
    }

    #[test]
    fn first_missing_finds_blocks_before_its_hint() {
        let (bits, mut t) = table(6);
        for b in 0..6 {
            bits.set(b, true);
        }
        bits.set(5, false);
        assert_eq!(t.first_missing(), Some(5));
        // Block 1 lost without the table being told (another process invalidated it).
        bits.set(1, false);
        t.start_run(5, 1, true);
        assert_eq!(t.first_missing(), Some(1));
    }
}
