//! The index across restarts: loading a snapshot (into an index that may already be in use),
//! saving one, and reconciling with the blobs really on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hubcache_plugin_api::EvictionPolicy;

use super::index::{Entry, EvictionIndex, LoadReport, ReconcileReport, SnapshotState};
use super::snapshot::{self, Snapshot, SnapshotBlob, SnapshotError};
use super::{DiskBlob, RootId};
use crate::config::RepoGlob;
use crate::store::BlobId;

impl EvictionIndex {
    /// The index saved at `path`, or an empty one if there is none or it is unusable (then
    /// [`reconcile`](Self::reconcile) rebuilds it from the disk listing). Never fails.
    pub fn open(
        path: &Path,
        policy: Arc<dyn EvictionPolicy>,
        pins: &[RepoGlob],
    ) -> (EvictionIndex, LoadReport) {
        let index = EvictionIndex::new(policy, pins);
        let report = index.load(&[path.to_path_buf()]);
        (index, report)
    }

    /// Loads the newest usable snapshot of `paths` (the same file on several roots) into this
    /// index, which may already hold blobs recorded since the process started: for a blob in
    /// both, the earlier first fill, the later last read, the hits of both and the copies
    /// recorded since start win. Never fails: without a usable snapshot nothing is loaded.
    pub fn load(&self, paths: &[PathBuf]) -> LoadReport {
        let mut report = LoadReport {
            snapshot: SnapshotState::Missing,
            blobs: 0,
            policy_changed: false,
        };
        let mut candidates: Vec<(std::time::SystemTime, &PathBuf)> = paths
            .iter()
            .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (_, path) in candidates {
            match snapshot::read(path) {
                Ok(snapshot) => {
                    report.snapshot = SnapshotState::Loaded;
                    report.policy_changed = snapshot.policy != self.policy.kind();
                    report.blobs = self.restore(snapshot, report.policy_changed);
                    return report;
                }
                Err(SnapshotError::Missing) => {}
                Err(e) => {
                    log::warn!(
                        "eviction index {}: {e}; rebuilding it from the cache",
                        path.display()
                    );
                    report.snapshot = SnapshotState::Unusable(e.to_string());
                }
            }
        }
        report
    }

    fn restore(&self, snapshot: Snapshot, policy_changed: bool) -> usize {
        if !policy_changed {
            self.policy.restore_state(snapshot.policy_state);
        }
        let mut inner = self.inner.lock();
        let repo_map: Vec<u32> = snapshot.repos.iter().map(|r| inner.intern(r)).collect();
        inner.entries.reserve(snapshot.blobs.len());
        for blob in snapshot.blobs {
            let repos = blob
                .repos
                .iter()
                .filter_map(|&r| repo_map.get(r as usize).copied());
            let mut entry = match inner.entries.remove(&blob.id) {
                // Recorded since start: merge.
                Some(mut live) => {
                    live.first_fill = live.first_fill.min(blob.first_fill);
                    live.last_read = live.last_read.max(blob.last_read);
                    live.hits = live.hits.saturating_add(blob.hits);
                    for copy in blob.copies {
                        if !live.copies.iter().any(|c| c.root == copy.root) {
                            live.copies.push(copy);
                        }
                    }
                    for repo in repos {
                        if !live.repos.contains(&repo) {
                            live.repos.push(repo);
                        }
                    }
                    live.policy_key = blob.policy_key;
                    live
                }
                None => Entry {
                    size: blob.size,
                    copies: blob.copies,
                    first_fill: blob.first_fill,
                    last_read: blob.last_read,
                    hits: blob.hits,
                    policy_key: blob.policy_key,
                    repos: repos.collect(),
                    filled_at: 0,
                },
            };
            if policy_changed || entry.filled_at > 0 {
                entry.policy_key = self.policy.key_on_access(&entry.stats());
            }
            inner.entries.insert(blob.id, entry);
        }
        inner.recount();
        self.changed();
        inner.entries.len()
    }

    /// Writes the index to `path` (a temporary file, flushed, then renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        let bytes = self.encode();
        snapshot::write(path, &bytes)
    }

    /// Writes the index to every one of `paths` (one per root: losing a disk loses no
    /// stats); succeeds if one was written.
    pub fn save_all(&self, paths: &[PathBuf]) -> Result<(), SnapshotError> {
        let bytes = self.encode();
        let mut first_error = None;
        let mut written = false;
        for path in paths {
            if let Some(dir) = path.parent() {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    first_error.get_or_insert(SnapshotError::Io(e));
                    continue;
                }
            }
            match snapshot::write(path, &bytes) {
                Ok(()) => written = true,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if !written => Err(e),
            _ => Ok(()),
        }
    }

    fn encode(&self) -> Vec<u8> {
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
    }

    /// Makes the index agree with the blobs really on disk, as listed from `listed_at` (ms)
    /// on: sizes and copies are taken from `disk`, blobs missing from it are forgotten unless
    /// stored since `listed_at` (filled while the listing ran), new ones added (first fill
    /// and last read = their modification time, no hits). Access and repo records of known
    /// blobs stay. The listing is collected before the index is locked.
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
                            match entry.copies.iter_mut().find(|c| c.root == copy.root) {
                                Some(existing) => existing.allocated = copy.allocated,
                                None => entry.copies.push(copy),
                            }
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
                            filled_at: 0,
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
            if entry.filled_at >= listed_at && entry.filled_at > 0 {
                seen.insert(id, entry);
            } else {
                report.removed += 1;
            }
        }
        inner.entries = seen;
        inner.recount();
        self.changed();
        report
    }
}

/// The blobs of a store listing, one [`DiskBlob`] per blob with its copies on every root.
pub fn disk_blobs(listed: Vec<crate::store::ListedBlob>) -> Vec<DiskBlob> {
    let mut by_id: HashMap<BlobId, DiskBlob> = HashMap::with_capacity(listed.len());
    for blob in listed {
        let copy = super::Copy {
            root: blob.root as RootId,
            allocated: blob.allocated,
        };
        let entry = by_id.entry(blob.id.clone()).or_insert_with(|| DiskBlob {
            id: blob.id,
            size: blob.size,
            copies: Vec::new(),
            modified: blob.modified,
        });
        entry.copies.push(copy);
        entry.modified = entry.modified.max(blob.modified);
    }
    by_id.into_values().collect()
}
