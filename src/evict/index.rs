//! The in-memory index and its bookkeeping.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use hubcache_plugin_api::{BlobStats, EvictionPolicy};

use super::snapshot::{self, Snapshot, SnapshotBlob, SnapshotError};
use super::{fnv1a, Copy, DiskBlob, DownloadId, RootId};
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
    sessions: lru::LruCache<(u64, DownloadId), u64>,
}

impl Inner {
    fn new(pins: &[RepoGlob]) -> Inner {
        Inner {
            entries: HashMap::new(),
            repos: Vec::new(),
            repo_ids: HashMap::new(),
            repo_pinned: Vec::new(),
            pins: pins.to_vec(),
            sessions: lru::LruCache::new(NonZeroUsize::new(SESSIONS).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    fn intern(&mut self, repo: &str) -> u32 {
        if let Some(&index) = self.repo_ids.get(repo) {
            return index;
        }
        let index = self.repos.len() as u32;
        self.repos.push(repo.into());
        self.repo_ids.insert(repo.into(), index);
        self.repo_pinned
            .push(self.pins.iter().any(|pin| pin.matches(repo)));
        index
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
}

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
        }
    }

    /// The index saved at `path`, or an empty one if there is none or it is unusable (then
    /// [`reconcile`](Self::reconcile) rebuilds it from the disk listing). Never fails.
    pub fn open(
        path: &Path,
        policy: Arc<dyn EvictionPolicy>,
        pins: &[RepoGlob],
    ) -> (EvictionIndex, LoadReport) {
        let index = EvictionIndex::new(policy, pins);
        let mut report = LoadReport {
            snapshot: SnapshotState::Loaded,
            blobs: 0,
            policy_changed: false,
        };
        match snapshot::read(path) {
            Ok(snapshot) => {
                report.policy_changed = snapshot.policy != index.policy.kind();
                report.blobs = index.restore(snapshot, report.policy_changed);
            }
            Err(SnapshotError::Missing) => report.snapshot = SnapshotState::Missing,
            Err(e) => {
                log::warn!(
                    "eviction index {}: {e}; rebuilding it from the cache",
                    path.display()
                );
                report.snapshot = SnapshotState::Unusable(e.to_string());
            }
        }
        (index, report)
    }

    fn restore(&self, snapshot: Snapshot, policy_changed: bool) -> usize {
        if !policy_changed {
            self.policy.restore_state(snapshot.policy_state);
        }
        let mut inner = self.inner.lock();
        let repo_map: Vec<u32> = snapshot.repos.iter().map(|r| inner.intern(r)).collect();
        inner.entries.reserve(snapshot.blobs.len());
        for blob in snapshot.blobs {
            let mut entry = Entry {
                size: blob.size,
                copies: blob.copies,
                first_fill: blob.first_fill,
                last_read: blob.last_read,
                hits: blob.hits,
                policy_key: blob.policy_key,
                repos: blob
                    .repos
                    .iter()
                    .filter_map(|&r| repo_map.get(r as usize).copied())
                    .collect(),
            };
            if policy_changed {
                entry.policy_key = self.policy.key_on_access(&entry.stats());
            }
            inner.entries.insert(blob.id, entry);
        }
        inner.entries.len()
    }

    /// Writes the index to `path` (a temporary file, flushed, then renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        let bytes = {
            let inner = self.inner.lock();
            let blobs = inner.entries.iter().map(|(id, e)| SnapshotBlob {
                id: id.clone(),
                size: e.size,
                first_fill: e.first_fill,
                last_read: e.last_read,
                hits: e.hits,
                policy_key: e.policy_key,
                copies: e.copies.clone(),
                repos: e.repos.clone(),
            });
            snapshot::encode(self.policy.kind(), self.policy.state(), &inner.repos, blobs)
        };
        snapshot::write(path, &bytes)
    }

    /// Makes the index agree with the blobs really on disk, as listed from `listed_at` (ms)
    /// on: sizes and copies are taken from `disk`, blobs missing from it are forgotten unless
    /// first filled since `listed_at` (filled while the listing ran), new ones added (first
    /// fill and last read = their modification time, no hits). Access and repo records of
    /// known blobs stay. The listing is collected before the index is locked.
    pub fn reconcile(
        &self,
        disk: impl IntoIterator<Item = DiskBlob>,
        listed_at: u64,
    ) -> ReconcileReport {
        let disk: Vec<DiskBlob> = disk.into_iter().collect();
        let mut report = ReconcileReport::default();
        let mut inner = self.inner.lock();
        let mut seen: HashMap<BlobId, Entry> = HashMap::with_capacity(disk.len());
        for blob in disk {
            if blob.copies.is_empty() {
                continue;
            }
            let entry = match inner.entries.remove(&blob.id) {
                Some(mut entry) => {
                    if entry.size != blob.size || entry.copies != blob.copies {
                        report.updated += 1;
                        entry.size = blob.size;
                        entry.copies = blob.copies;
                    }
                    entry
                }
                None => match seen.remove(&blob.id) {
                    // Listed twice (one line per root): merge the copies.
                    Some(mut entry) => {
                        for copy in blob.copies {
                            set_copy(&mut entry.copies, copy);
                        }
                        entry
                    }
                    None => {
                        report.added += 1;
                        let mut entry = Entry {
                            size: blob.size,
                            copies: blob.copies,
                            first_fill: blob.modified,
                            last_read: blob.modified,
                            hits: 0,
                            policy_key: 0,
                            repos: Vec::new(),
                        };
                        entry.policy_key = self.policy.key_on_access(&entry.stats());
                        entry
                    }
                },
            };
            seen.insert(blob.id, entry);
        }
        let left = std::mem::take(&mut inner.entries);
        for (id, entry) in left {
            if entry.first_fill >= listed_at {
                seen.insert(id, entry);
            } else {
                report.removed += 1;
            }
        }
        inner.entries = seen;
        report
    }

    /// Records that `root` now holds `allocated` bytes of blob `id` (a fill stored blocks, or a
    /// replica was made). A new blob gets `now` as first fill and last read.
    pub fn record_fill(&self, id: &BlobId, size: u64, root: RootId, allocated: u64, now: u64) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entries.get_mut(id) {
            entry.size = size;
            set_copy(&mut entry.copies, Copy { root, allocated });
            return;
        }
        let mut entry = Entry {
            size,
            copies: vec![Copy { root, allocated }],
            first_fill: now,
            last_read: now,
            hits: 0,
            policy_key: 0,
            repos: Vec::new(),
        };
        entry.policy_key = self.policy.key_on_access(&entry.stats());
        inner.entries.insert(id.clone(), entry);
    }

    /// Records that `root` no longer holds a copy of `id` (a lost root, a removed replica). The
    /// blob is forgotten when no copy is left.
    pub fn record_copy_removed(&self, id: &BlobId, root: RootId) {
        let mut inner = self.inner.lock();
        let gone = match inner.entries.get_mut(id) {
            Some(entry) => {
                entry.copies.retain(|c| c.root != root);
                entry.copies.is_empty()
            }
            None => false,
        };
        if gone {
            inner.entries.remove(id);
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
        let pinned: Vec<bool> = inner
            .repos
            .iter()
            .map(|repo| pins.iter().any(|pin| pin.matches(repo)))
            .collect();
        inner.repo_pinned = pinned;
        inner.pins = pins.to_vec();
    }

    /// Forgets a blob that was deleted for another reason than eviction (failed verification,
    /// a purge). Returns its last stats.
    pub fn remove(&self, id: &BlobId) -> Option<BlobStats> {
        self.inner.lock().entries.remove(id).map(|e| e.stats())
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
        let mut usage = Usage {
            blobs: inner.entries.len(),
            ..Usage::default()
        };
        for entry in inner.entries.values() {
            for copy in &entry.copies {
                usage.allocated += copy.allocated;
                *usage.per_root.entry(copy.root).or_default() += copy.allocated;
            }
        }
        usage
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

/// Sets (or adds) the copy on `copy.root`.
fn set_copy(copies: &mut Vec<Copy>, copy: Copy) {
    match copies.iter_mut().find(|c| c.root == copy.root) {
        Some(existing) => existing.allocated = copy.allocated,
        None => copies.push(copy),
    }
}
