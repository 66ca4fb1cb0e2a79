//! Finding the copies of a blob on the roots: opening one, surveying all, choosing the best,
//! and failing over to another when a disk fails.

use std::fs::{self, OpenOptions};
use std::io;
use std::sync::Arc;

use super::error::Result;
use super::fsutil::{remove_if_same, FileIdentity};
use super::locks::hold_in_use;
use super::root::Root;
use super::{BlobFile, BlobId, ReplicaState, Store, StoreError};

/// What was found on one root when looking for copies of a blob.
pub(super) enum Found {
    Copy(Arc<BlobFile>),
    Missing,
    Unreadable(String),
}

/// Attempts at opening a blob file that an evictor keeps replacing underneath.
const OPEN_ATTEMPTS: usize = 3;

/// Opens the blob file at `path` and marks it in use (the shared in-use lock, held as long as
/// the file stays open), so that no evictor deletes it from now on. An evictor may have
/// unlinked it between the open and the lock: the file is used only if the path still names
/// it once the lock is held. `None` when there is no file.
fn open_in_use(path: &std::path::Path) -> Result<Option<(fs::File, fs::Metadata)>> {
    for _ in 0..OPEN_ATTEMPTS {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open blob", path)(e)),
        };
        hold_in_use(&file, path)?;
        let meta = file.metadata().map_err(StoreError::io("stat", path))?;
        match fs::metadata(path) {
            Ok(now) if FileIdentity::of(&now) == FileIdentity::of(&meta) => {
                return Ok(Some((file, meta)))
            }
            Ok(_) => continue, // evicted and created again meanwhile: open the new one
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("stat", path)(e)),
        }
    }
    Err(StoreError::io("open blob", path)(io::Error::other(
        "the file kept being replaced while it was opened",
    )))
}

impl Store {
    /// Opens the copy of `id` on `root`: `Ok(None)` if there is none. Call with the id's
    /// stripe held.
    ///
    /// Returns the handle already open if the file at the blob path is still the same inode.
    /// A file with a bad magic, an unknown version, a truncated header or inconsistent
    /// geometry is deleted (with a warning) and `None` returned.
    pub(super) fn open_copy(&self, root: &Root, id: &BlobId) -> Result<Option<Arc<BlobFile>>> {
        let path = root.blob_path(id);
        if let Some(blob) = root.lookup(id) {
            match fs::metadata(&path) {
                Ok(m) if FileIdentity::of(&m) == blob.identity() => return Ok(Some(blob)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("stat", &path)(e)),
            }
            // Removed or replaced by someone else since we opened it.
            root.forget(id);
        }
        let Some((file, meta)) = open_in_use(&path)? else {
            // No copy; unless the whole root went away.
            root.check_blobs_dir()?;
            return Ok(None);
        };
        let identity = FileIdentity::of(&meta);
        match BlobFile::open_existing(
            file,
            root.index,
            path.clone(),
            identity,
            id.clone(),
            self.durability,
            meta.len(),
        ) {
            Ok(blob) => {
                let blob = Arc::new(blob);
                root.remember(&blob);
                Ok(Some(blob))
            }
            Err(StoreError::BadHeader { reason, .. }) => {
                log::warn!("store: removing unusable blob file {path:?}: {reason}");
                remove_if_same(&path, identity)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// What each root holds of `id`, in the order of `roots` (indices). Unhealthy roots and
    /// copies that fail to open are `Unreadable` (root-wide errors mark the root unhealthy).
    /// Call with the id's stripe held.
    pub(super) fn survey(&self, id: &BlobId, roots: &[usize]) -> Vec<(usize, Found)> {
        roots
            .iter()
            .map(|&r| {
                let root = &self.roots[r];
                if !root.usable() {
                    let reason = root.problem().unwrap_or_else(|| "unhealthy".into());
                    return (r, Found::Unreadable(reason));
                }
                let found = match self.open_copy(root, id) {
                    Ok(Some(blob)) => Found::Copy(blob),
                    Ok(None) => Found::Missing,
                    Err(e) => {
                        self.note_error(root, &e);
                        Found::Unreadable(e.to_string())
                    }
                };
                (r, found)
            })
            .collect()
    }

    /// The best copy of `id` on the usable roots of `order` (placement order): the first
    /// complete one (the search stops there), else the first partial one. With `size`,
    /// copies of another size are removed on the way. Errors concerning a root mark it
    /// unhealthy and skip it. Call with the id's stripe held.
    pub(super) fn find_copy(
        &self,
        id: &BlobId,
        order: &[usize],
        size: Option<u64>,
    ) -> Option<Arc<BlobFile>> {
        let mut partial = None;
        for &r in order {
            let root = &self.roots[r];
            if !root.usable() {
                continue;
            }
            let blob = match self.open_copy(root, id) {
                Ok(Some(blob)) => blob,
                Ok(None) => continue,
                Err(e) => {
                    self.note_error(root, &e);
                    continue;
                }
            };
            if let Some(size) = size.filter(|&s| s != blob.size()) {
                log::warn!(
                    "store: {:?} holds {} bytes but {id} is {size} bytes; removing it",
                    blob.path(),
                    blob.size()
                );
                root.forget(id);
                if let Err(e) = remove_if_same(blob.path(), blob.identity()) {
                    self.note_error(root, &e);
                }
                continue;
            }
            if blob.is_complete() {
                return Some(blob);
            }
            partial.get_or_insert(blob);
        }
        partial
    }

    /// Opens the best existing copy of blob `id`, or `Ok(None)` if no usable root has one.
    ///
    /// Roots are searched in [`placement`](Self::placement) order (all roots, not only the
    /// homes: a copy may have been created elsewhere while a home was full or down). The
    /// first complete copy wins; failing that, the first partial one. Unhealthy roots are
    /// skipped; a root that turns out to be missing, unreadable or erroring is marked
    /// unhealthy (logged once) and skipped until it passes a re-probe.
    ///
    /// Returns the handle already open in this `Store` if the file at the blob path is still
    /// the same inode. A file with a bad magic, an unknown version, a truncated header or
    /// inconsistent geometry is deleted (with a warning) and treated as absent. Blocks
    /// extending beyond the end of a truncated file are cleared from the bitmap.
    pub fn open_blob(&self, id: &BlobId) -> Result<Option<Arc<BlobFile>>, StoreError> {
        let order = self.placement(id);
        let _stripe = self.stripe(id).lock();
        Ok(self.find_copy(id, &order, None))
    }

    /// Reading or writing the copy `failed` gave the I/O error `error`
    /// ([`StoreError::is_io_error`]): returns another copy of `id` of the same size, or
    /// `None`. Copies on other roots come first (a complete one if any, as for
    /// [`open_blob`](Self::open_blob)); failing that, `failed`'s own file opened afresh.
    ///
    /// An error about the root as a whole ([`StoreError::RootUnavailable`]) marks the root
    /// unhealthy at once; other errors are counted, and the root is marked unhealthy (it is
    /// re-probed later) after [`ROOT_ERRORS_BEFORE_UNHEALTHY`] of them within a minute, so one
    /// bad file does not take a disk out of service.
    pub fn failover(
        &self,
        id: &BlobId,
        failed: &BlobFile,
        error: &StoreError,
    ) -> Result<Option<Arc<BlobFile>>, StoreError> {
        let size = failed.size();
        let order = self.placement(id);
        let _stripe = self.stripe(id).lock();
        let Some(root) = self.roots.get(failed.root_index()) else {
            return Ok(self.find_copy(id, &order, Some(size)));
        };
        // Only if the handle is really one of this store's copies.
        if failed.path().starts_with(&root.blobs_dir) {
            root.forget_handle(failed);
            let what = format!("I/O error on {:?}: {error}", failed.path());
            if matches!(error, StoreError::RootUnavailable { .. }) {
                root.mark_unhealthy(what);
            } else {
                root.count_error(what);
            }
        }
        let others: Vec<usize> = order.iter().copied().filter(|&r| r != root.index).collect();
        Ok(self
            .find_copy(id, &others, Some(size))
            .or_else(|| self.find_copy(id, &[root.index], Some(size))))
    }

    /// The state of blob `id`'s copy on every root, indexed like
    /// [`root_paths`](Self::root_paths). Copies' bitmaps are re-read from disk first, so
    /// blocks committed by other processes count.
    pub fn replica_status(&self, id: &BlobId) -> Vec<ReplicaState> {
        let all: Vec<usize> = (0..self.roots.len()).collect();
        let _stripe = self.stripe(id).lock();
        self.survey(id, &all)
            .into_iter()
            .map(|(_, found)| match found {
                Found::Copy(blob) => match blob.reload_bitmap() {
                    Err(e) => ReplicaState::Unreadable {
                        reason: e.to_string(),
                    },
                    Ok(()) if blob.is_complete() => ReplicaState::Complete {
                        verified: blob.is_verified(),
                    },
                    Ok(()) => ReplicaState::Partial {
                        present: blob.present_count(),
                        blocks: blob.block_count(),
                    },
                },
                Found::Missing => ReplicaState::Missing,
                Found::Unreadable(reason) => ReplicaState::Unreadable { reason },
            })
            .collect()
    }
}
