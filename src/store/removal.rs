//! Eviction's side of the store: deleting a blob only when nobody has it open, what each copy
//! occupies on disk, and the listing the eviction index is reconciled with.
//!
//! Every open blob handle holds a shared OFD lock on its file's in-use byte
//! ([`IN_USE_LOCK`](super::IN_USE_LOCK)), in this process or any other sharing the cache.
//! [`Store::remove_unused`] takes that byte exclusively on every copy first; if any copy is
//! held, nothing is deleted. An opener that raced with the deletion finds, once its own lock
//! is granted, that the path no longer names its file, and treats the blob as absent (see
//! `copies::open_in_use`). So a blob being read or filled is never deleted under its reader.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use super::error::Result;
use super::format::{self, FIXED_HEADER_LEN};
use super::fsutil::{read_exact_at, remove_if_same, FileIdentity};
use super::locks::try_take_unused;
use super::{BlobFile, BlobId, Store, StoreError};

/// What [`Store::remove_unused`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Every reachable copy was deleted: the bytes each root got back (allocated blocks).
    Removed { freed: Vec<(usize, u64)> },
    /// A copy is open (being read or filled, by this process or another): nothing was deleted.
    InUse { root: usize },
    /// No usable root has a copy.
    Absent,
}

impl Removal {
    /// Bytes freed on all roots together.
    pub fn freed(&self) -> u64 {
        match self {
            Removal::Removed { freed } => freed.iter().map(|(_, b)| b).sum(),
            _ => 0,
        }
    }
}

/// One blob file found by [`Store::list_allocated`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    pub id: BlobId,
    pub root: usize,
    /// Content size, from the header.
    pub size: u64,
    /// Bytes the file occupies on disk (`st_blocks` × 512): a sparse, partly filled file
    /// counts what it holds.
    pub allocated: u64,
    /// Last modification, in ms since the epoch.
    pub modified: u64,
}

/// A copy locked for deletion.
struct Held {
    root: usize,
    path: PathBuf,
    identity: FileIdentity,
    allocated: u64,
    /// Holds the exclusive in-use lock until the copy is unlinked.
    _file: File,
}

fn allocated_of(meta: &fs::Metadata) -> u64 {
    meta.blocks().saturating_mul(512)
}

fn modified_ms(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

impl BlobFile {
    /// Bytes this copy holds by the index's reckoning: the header area plus the present
    /// blocks (a partly filled file counts only what it holds). No I/O.
    pub fn allocated_estimate(&self) -> u64 {
        let layout = self.layout();
        let blocks = layout.block_count();
        let mut bytes = self.present_count().saturating_mul(layout.block_size());
        if blocks > 0 && self.is_present(blocks - 1) {
            bytes = bytes.saturating_sub(layout.block_size() - layout.block_len(blocks - 1));
        }
        layout.data_offset() + bytes
    }
}

impl Store {
    /// Deletes every copy of `id` if none is open anywhere (see the module doc); otherwise
    /// deletes nothing and says which root's copy is in use. Copies on unhealthy roots cannot
    /// be reached and stay.
    pub fn remove_unused(&self, id: &BlobId) -> Result<Removal, StoreError> {
        let _stripe = self.stripe(id).lock();
        let held = match self.lock_copies(id)? {
            Ok(held) => held,
            Err(root) => return Ok(Removal::InUse { root }),
        };
        if held.is_empty() {
            return Ok(Removal::Absent);
        }
        let mut freed = Vec::with_capacity(held.len());
        let mut first_error = None;
        for copy in &held {
            let root = &self.roots[copy.root];
            root.forget(id);
            match remove_if_same(&copy.path, copy.identity) {
                Ok(true) => freed.push((copy.root, copy.allocated)),
                Ok(false) => {}
                Err(e) => {
                    self.note_error(root, &e);
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(held);
        match first_error {
            Some(e) if freed.is_empty() => Err(e),
            _ => Ok(Removal::Removed { freed }),
        }
    }

    /// Whether any copy of `id` is open now (by this process or another). Deletes nothing.
    pub fn is_in_use(&self, id: &BlobId) -> Result<bool, StoreError> {
        let _stripe = self.stripe(id).lock();
        Ok(self.lock_copies(id)?.is_err())
    }

    /// Takes every reachable copy's in-use byte exclusively: the copies, or the root of the
    /// first copy someone holds (all locks taken so far are released). Call with the stripe.
    fn lock_copies(&self, id: &BlobId) -> Result<std::result::Result<Vec<Held>, usize>> {
        let mut held = Vec::new();
        for root in self.roots.iter() {
            if !root.usable() {
                continue;
            }
            if root.lookup(id).is_some() {
                return Ok(Err(root.index));
            }
            let path = root.blob_path(id);
            let file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("open blob", &path)(e)),
            };
            let free = try_take_unused(&file).map_err(StoreError::io("lock (evict)", &path))?;
            if !free {
                return Ok(Err(root.index));
            }
            let meta = file.metadata().map_err(StoreError::io("stat", &path))?;
            let identity = FileIdentity::of(&meta);
            match fs::symlink_metadata(&path) {
                Ok(now) if FileIdentity::of(&now) == identity => {}
                // Replaced by a new copy meanwhile: someone is creating it.
                Ok(_) => return Ok(Err(root.index)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("stat", &path)(e)),
            }
            held.push(Held {
                root: root.index,
                path,
                identity,
                allocated: allocated_of(&meta),
                _file: file,
            });
        }
        Ok(Ok(held))
    }

    /// The bytes each usable root's copy of `id` occupies on disk (`st_blocks` × 512).
    pub fn allocations(&self, id: &BlobId) -> Vec<(usize, u64)> {
        self.roots
            .iter()
            .filter(|root| root.usable())
            .filter_map(|root| {
                let meta = fs::metadata(root.blob_path(id)).ok()?;
                Some((root.index, allocated_of(&meta)))
            })
            .collect()
    }

    /// Every blob file on every usable root with its size, allocation and modification time
    /// (one `stat` and one header read per file), and the roots that were listed. Files
    /// whose header cannot be read are left out. Blocking; meant for a background thread.
    pub fn list_allocated(&self) -> Result<(Vec<ListedBlob>, Vec<usize>), StoreError> {
        let mut out = Vec::new();
        let mut listed = Vec::new();
        let mut first_error = None;
        for root in self.roots.iter() {
            if !root.usable() {
                continue;
            }
            let ids = match root.list_blobs() {
                Ok(ids) => ids,
                Err(e) => {
                    self.note_error(root, &e);
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            listed.push(root.index);
            for id in ids {
                let path = root.blob_path(&id);
                let Ok(file) = File::open(&path) else {
                    continue; // removed meanwhile
                };
                let Ok(meta) = file.metadata() else { continue };
                let mut fixed = [0u8; FIXED_HEADER_LEN as usize];
                if read_exact_at(&file, &mut fixed, 0, &path, "read blob header").is_err() {
                    continue;
                }
                let Ok((layout, _)) = format::parse_fixed_header(&fixed, &id) else {
                    continue;
                };
                out.push(ListedBlob {
                    size: layout.size(),
                    allocated: allocated_of(&meta),
                    modified: modified_ms(&meta),
                    root: root.index,
                    id,
                });
            }
        }
        match first_error {
            Some(e) if listed.is_empty() => Err(e),
            _ => Ok((out, listed)),
        }
    }

    /// The free space of root `root`'s filesystem; `None` when the root is unusable or its
    /// space unknown.
    pub fn root_space(&self, root: usize) -> Option<super::FsSpace> {
        let r = self.roots.get(root)?;
        if !r.usable() {
            return None;
        }
        self.space(r).ok()
    }

    /// How many bytes must be freed on `root` for `bytes` more to fit above its reserve (0:
    /// they fit). `None` when the root is unusable or its free space unknown.
    pub fn room_needed(&self, root: usize, bytes: u64) -> Option<u64> {
        let r = self.roots.get(root)?;
        if !r.usable() {
            return None;
        }
        let space = self.space(r).ok()?;
        let wanted = bytes.saturating_add(self.reserve(space.total));
        Some(wanted.saturating_sub(space.free))
    }
}
