//! The in-memory index and its bookkeeping.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use hubcache_plugin_api::{BlobStats, EvictionPolicy};

use super::{fnv1a, Copy, DownloadId, RootId};
use crate::config::RepoGlob;
use crate::store::BlobId;

/// Reads of one blob by one download within this time count as one access.
pub const SESSION_WINDOW: Duration = Duration::from_secs(600);

/// (blob, download) pairs remembered for [`SESSION_WINDOW`].
const SESSIONS: usize = 65_536;

/// One blob.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub size: u64,
    pub copies: Vec<Copy>,
    pub first_fill: u64,
    pub last_read: u64,
    pub hits: u64,
    pub policy_key: u64,
    /// Indices into `Inner::repos`.
    pub repos: Vec<u32>,
    /// When this process last recorded stored bytes for it (ms; 0: never). Not persisted:
    /// reconciling keeps a blob missing from a listing that started before this.
    pub filled_at: u64,
}

impl Entry {
    pub fn allocated(&self) -> u64 {
        self.copies.iter().map(|c| c.allocated).sum()
    }

    pub fn allocated_on(&self, root: RootId) -> u64 {
        self.copies
            .iter()
            .filter(|c| c.root == root)
            .map(|c| c.allocated)
            .sum()
    }

    pub fn stats(&self) -> BlobStats {
        BlobStats {
            size: self.size,
            allocated: self.allocated(),
            first_fill: self.first_fill,
            last_read: self.last_read.max(self.first_fill),
            hits: self.hits,
            policy_key: self.policy_key,
        }
    }
}

pub(super) struct Inner {
    pub entries: HashMap<BlobId, Entry>,
    pub repos: Vec<Box<str>>,
    repo_ids: HashMap<Box<str>, u32>,
    /// Per repo index: matched by a pin.
    pub repo_pinned: Vec<bool>,
    pins: Vec<RepoGlob>,
    /// Pins that do not come from `plugins.eviction.pin` (the repos of pin manifests).
    extra_pins: Vec<RepoGlob>,
    sessions: lru::LruCache<(u64, DownloadId), u64>,
    /// Allocated bytes of every copy, all roots together and per root (kept up to date by
    /// every change, so checking the budget costs nothing).
    total: u64,
    per_root: BTreeMap<RootId, u64>,
}

impl Inner {
    fn new(pins: &[RepoGlob]) -> Inner {
        Inner {
            entries: HashMap::new(),
            repos: Vec::new(),
            repo_ids: HashMap::new(),
            repo_pinned: Vec::new(),
            pins: pins.to_vec(),
            extra_pins: Vec::new(),
            sessions: crate::bounded::lru(SESSIONS),
            total: 0,
            per_root: BTreeMap::new(),
        }
    }

    /// Counts `copies` in (`add`) or out of the totals.
    fn account(&mut self, copies: &[Copy], add: bool) {
        for copy in copies {
            let slot = self.per_root.entry(copy.root).or_default();
            if add {
                *slot = slot.saturating_add(copy.allocated);
                self.total = self.total.saturating_add(copy.allocated);
            } else {
                *slot = slot.saturating_sub(copy.allocated);
                self.total = self.total.saturating_sub(copy.allocated);
            }
        }
    }

    /// Recomputes the totals from the entries (after bulk changes).
    pub(super) fn recount(&mut self) {
        self.total = 0;
        self.per_root.clear();
        let copies: Vec<Copy> = self
            .entries
            .values()
            .flat_map(|e| e.copies.iter().copied())
            .collect();
        self.account(&copies, true);
    }

    pub(super) fn insert(&mut self, id: BlobId, entry: Entry) {
        self.account(&entry.copies, true);
        if let Some(old) = self.entries.insert(id, entry) {
            self.account(&old.copies, false);
        }
    }

    pub(super) fn take(&mut self, id: &BlobId) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.account(&entry.copies, false);
        Some(entry)
    }

    /// Sets (or adds) the copy on `copy.root` of the entry `id` (which must exist).
    fn set_copy(&mut self, id: &BlobId, copy: Copy) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let old = match entry.copies.iter_mut().find(|c| c.root == copy.root) {
            Some(existing) => std::mem::replace(existing, copy),
            None => {
                entry.copies.push(copy);
                Copy {
                    root: copy.root,
                    allocated: 0,
                }
            }
        };
        self.account(&[old], false);
        self.account(&[copy], true);
    }

    pub(super) fn intern(&mut self, repo: &str) -> u32 {
        if let Some(&index) = self.repo_ids.get(repo) {
            return index;
        }
        let index = self.repos.len() as u32;
        self.repos.push(repo.into());
        self.repo_ids.insert(repo.into(), index);
        let pinned = self.matches_pin(repo);
        self.repo_pinned.push(pinned);
        index
    }

    fn matches_pin(&self, repo: &str) -> bool {
        self.pins
            .iter()
            .chain(&self.extra_pins)
            .any(|pin| pin.matches(repo))
    }

    fn recompute_pins(&mut self) {
        let pinned: Vec<bool> = self.repos.iter().map(|r| self.matches_pin(r)).collect();
        self.repo_pinned = pinned;
    }

    pub fn is_pinned(&self, entry: &Entry) -> bool {
        entry
            .repos
            .iter()
            .any(|&r| self.repo_pinned.get(r as usize).copied().unwrap_or(false))
    }
}

/// Where the snapshot came from at [`EvictionIndex::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotState {
    /// Loaded.
    Loaded,
    /// No snapshot yet (first start): the index starts empty.
    Missing,
    /// Unreadable or corrupt: the index starts empty and is rebuilt by reconciling.
    Unusable(String),
}

/// What [`EvictionIndex::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub snapshot: SnapshotState,
    pub blobs: usize,
    /// The snapshot was written under another policy: the policy's keys were recomputed and
    /// its saved state ignored.
    pub policy_changed: bool,
}

/// What [`EvictionIndex::reconcile`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReconcileReport {
    /// Blobs on disk the index did not know (added with their modification time).
    pub added: usize,
    /// Blobs the index knew that are no longer on disk (forgotten).
    pub removed: usize,
    /// Blobs whose size or copies changed.
    pub updated: usize,
}

/// Space used, from the index (no disk access).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    pub blobs: usize,
    /// Allocated bytes of all copies.
    pub allocated: u64,
    /// Allocated bytes per root.
    pub per_root: BTreeMap<RootId, u64>,
}

/// What the index knows about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub id: BlobId,
    pub stats: BlobStats,
    pub copies: Vec<Copy>,
    pub repos: Vec<String>,
    pub pinned: bool,
}

/// The eviction index. Thread-safe; every method holds its lock briefly (planning over 100k
/// blobs takes milliseconds).
pub struct EvictionIndex {
    pub(super) inner: Mutex<Inner>,
    pub(super) policy: Arc<dyn EvictionPolicy>,
    /// Bumped by every change (to save only what changed).
    pub(super) changes: AtomicU64,
    /// Blobs evicted before all others (see [`EvictionIndex::set_demoted`]).
    pub(super) demoted: Mutex<Option<Demoted>>,
}

/// Tells whether a blob goes before the policy's order when evicting (a copy this node keeps
/// of a blob another cluster node owns).
pub type Demoted = Arc<dyn Fn(&BlobId) -> bool + Send + Sync>;

impl std::fmt::Debug for EvictionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvictionIndex")
            .field("policy", &self.policy.kind())
            .field("blobs", &self.inner.lock().entries.len())
            .finish()
    }
}

impl EvictionIndex {
    /// An empty index.
    pub fn new(policy: Arc<dyn EvictionPolicy>, pins: &[RepoGlob]) -> EvictionIndex {
        EvictionIndex {
            inner: Mutex::new(Inner::new(pins)),
            policy,
            changes: AtomicU64::new(0),
            demoted: Mutex::new(None),
        }
    }

    /// Blobs for which `demoted` is true are evicted before every other blob (in the policy's
    /// order among themselves), whatever the policy says: the core applies this, the policy
    /// plugins know nothing of it. A running node sets it to "another cluster node owns it".
    pub fn set_demoted(&self, demoted: Demoted) {
        *self.demoted.lock() = Some(demoted);
    }

    pub(super) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// A number that changes whenever the index does.
    pub fn version(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Records that `root` now holds `allocated` bytes of blob `id` (a fill stored blocks, or a
    /// replica was made). A new blob gets `now` as first fill and last read.
    pub fn record_fill(&self, id: &BlobId, size: u64, root: RootId, allocated: u64, now: u64) {
        let mut inner = self.inner.lock();
        self.changed();
        let copy = Copy { root, allocated };
        if let Some(entry) = inner.entries.get_mut(id) {
            entry.size = size;
            entry.filled_at = entry.filled_at.max(now);
            inner.set_copy(id, copy);
            return;
        }
        let mut entry = Entry {
            size,
            copies: vec![copy],
            first_fill: now,
            last_read: now,
            hits: 0,
            policy_key: 0,
            repos: Vec::new(),
            filled_at: now,
        };
        entry.policy_key = self.policy.key_on_access(&entry.stats());
        inner.insert(id.clone(), entry);
    }

    /// Records every copy of blob `id` at once (after replicas were made): (root, bytes).
    /// Roots not listed hold none. Known blobs only.
    pub fn set_copies(&self, id: &BlobId, size: u64, copies: &[(RootId, u64)], now: u64) {
        let mut inner = self.inner.lock();
        let Some(mut entry) = inner.take(id) else {
            return;
        };
        self.changed();
        entry.size = size;
        entry.filled_at = entry.filled_at.max(now);
        entry.copies = copies
            .iter()
            .map(|&(root, allocated)| Copy { root, allocated })
            .collect();
        if !entry.copies.is_empty() {
            inner.insert(id.clone(), entry);
        }
    }

    /// Whether the index knows blob `id`.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.inner.lock().entries.contains_key(id)
    }

    /// Allocated bytes of every copy of every blob (no scan: kept up to date).
    pub fn allocated(&self) -> u64 {
        self.inner.lock().total
    }

    /// Allocated bytes of the copies on `root`.
    pub fn allocated_on(&self, root: RootId) -> u64 {
        self.inner.lock().per_root.get(&root).copied().unwrap_or(0)
    }

    /// Records that `root` no longer holds a copy of `id` (a lost root, a removed replica). The
    /// blob is forgotten when no copy is left.
    pub fn record_copy_removed(&self, id: &BlobId, root: RootId) {
        let mut inner = self.inner.lock();
        let Some(mut entry) = inner.take(id) else {
            return;
        };
        self.changed();
        entry.copies.retain(|c| c.root != root);
        if !entry.copies.is_empty() {
            inner.insert(id.clone(), entry);
        }
    }

    /// Records that `repo` (`owner/name`, `datasets/owner/name`, ...) references blob `id`, so
    /// that pins of that repo protect it.
    pub fn add_repo(&self, id: &BlobId, repo: &str) {
        let mut inner = self.inner.lock();
        let index = inner.intern(repo);
        if let Some(entry) = inner.entries.get_mut(id) {
            if !entry.repos.contains(&index) {
                entry.repos.push(index);
                self.changed();
            }
        }
    }

    /// Records a read of `id` by `download` at `now`. Returns whether it counted as a new
    /// access (the first read of this download within [`SESSION_WINDOW`]).
    pub fn record_read(&self, id: &BlobId, download: DownloadId, now: u64) -> bool {
        let mut inner = self.inner.lock();
        if !inner.entries.contains_key(id) {
            return false;
        }
        let key = (fnv1a(id.as_str().bytes()), download);
        let window = SESSION_WINDOW.as_millis() as u64;
        let counted = match inner.sessions.get(&key) {
            Some(&seen) => now.saturating_sub(seen) >= window,
            None => true,
        };
        inner.sessions.put(key, now);
        let Some(entry) = inner.entries.get_mut(id) else {
            return false;
        };
        self.changes.fetch_add(1, Ordering::Relaxed);
        entry.last_read = entry.last_read.max(now);
        if counted {
            entry.hits = entry.hits.saturating_add(1);
            entry.policy_key = self.policy.key_on_access(&entry.stats());
        }
        counted
    }

    /// Replaces the pins (config reload).
    pub fn set_pins(&self, pins: &[RepoGlob]) {
        let mut inner = self.inner.lock();
        inner.pins = pins.to_vec();
        inner.recompute_pins();
    }

    /// Replaces the pins kept beside `plugins.eviction.pin` (the repos of pin manifests; a
    /// config reload of `plugins.eviction.pin` leaves them).
    pub fn set_extra_pins(&self, pins: &[RepoGlob]) {
        let mut inner = self.inner.lock();
        inner.extra_pins = pins.to_vec();
        inner.recompute_pins();
    }

    /// Forgets a blob that was deleted for another reason than eviction (failed verification,
    /// a purge). Returns its last stats.
    pub fn remove(&self, id: &BlobId) -> Option<BlobStats> {
        let stats = self.inner.lock().take(id).map(|e| e.stats());
        if stats.is_some() {
            self.changed();
        }
        stats
    }

    /// Forgets a blob the caller evicted, and tells the policy (LFUDA's aging).
    pub fn evicted(&self, id: &BlobId) -> Option<BlobStats> {
        let stats = self.remove(id)?;
        self.policy.on_evicted(&stats);
        Some(stats)
    }

    /// The space the index accounts for.
    pub fn usage(&self) -> Usage {
        let inner = self.inner.lock();
        Usage {
            blobs: inner.entries.len(),
            allocated: inner.total,
            per_root: inner
                .per_root
                .iter()
                .filter(|(_, &bytes)| bytes > 0)
                .map(|(&root, &bytes)| (root, bytes))
                .collect(),
        }
    }

    /// What the index knows about `id`.
    pub fn get(&self, id: &BlobId) -> Option<BlobInfo> {
        let inner = self.inner.lock();
        inner.entries.get(id).map(|e| info(&inner, id, e))
    }

    /// Every blob, largest allocation first (for `cache ls`).
    pub fn list(&self) -> Vec<BlobInfo> {
        let inner = self.inner.lock();
        let mut all: Vec<BlobInfo> = inner
            .entries
            .iter()
            .map(|(id, e)| info(&inner, id, e))
            .collect();
        all.sort_by(|a, b| {
            b.stats
                .allocated
                .cmp(&a.stats.allocated)
                .then_with(|| a.id.cmp(&b.id))
        });
        all
    }

    /// The policy's kind.
    pub fn policy_kind(&self) -> &'static str {
        self.policy.kind()
    }
}

fn info(inner: &Inner, id: &BlobId, entry: &Entry) -> BlobInfo {
    BlobInfo {
        id: id.clone(),
        stats: entry.stats(),
        copies: entry.copies.clone(),
        repos: entry
            .repos
            .iter()
            .filter_map(|&r| inner.repos.get(r as usize).map(|s| s.to_string()))
            .collect(),
        pinned: inner.is_pinned(entry),
    }
}
