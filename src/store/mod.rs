//! The on-disk block store.
//!
//! Every cached file ("blob") is one file under `{root}/blobs/{hex[0..2]}/{hex[2..4]}/{hex}`,
//! named by its content id ([`BlobId`]: sha256 for LFS files, git blob sha1 otherwise), so
//! blobs are shared by every repository and revision that contains them. A blob file is a
//! header (geometry, a presence bitmap with one bit per block, one CRC32C per 1 MiB page) and
//! the content in fixed-size blocks, filled in any order. `docs/storage-format.md` describes
//! the format byte by byte and the crash-safety argument.
//!
//! The store is pure, synchronous storage: no network, no async. [`Store`] and [`BlobFile`]
//! are `Send + Sync` and every method takes `&self` (positioned I/O), so async callers use
//! them from `spawn_blocking`.
//!
//! Guarantees:
//! - a block is *present* only after its bytes and checksums were written (and, with
//!   [`Durability::Fsync`], made durable), so a crash at any moment (kill -9; power loss with
//!   `Fsync`) loses at most the blocks in flight;
//! - [`BlobFile::read_verified`] never returns a byte whose page fails its CRC32C; a damaged
//!   block is invalidated and reported as [`StoreError::Corrupt`] so it gets refetched;
//! - several processes may share one cache directory (graceful binary upgrade): blobs are
//!   published without clobbering, and bitmap updates are read-modify-writes under a byte-range
//!   lock, so no process loses another's bits.

mod blob;
mod blob_id;
mod error;
mod format;
mod fsutil;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

pub use blob::{BlobFile, BlockChecksummer};
pub use blob_id::BlobId;
pub use error::StoreError;
pub use format::{
    validate_block_size, Layout, DATA_ALIGNMENT, DEFAULT_BLOCK_SIZE, FIXED_HEADER_LEN,
    FLAG_VERIFIED, FORMAT_VERSION, MAGIC, MAX_BLOCK_SIZE, MAX_PAGE_SIZE, MIN_BLOCK_SIZE,
};
pub use fsutil::atomic_write;

use error::Result;
use fsutil::{
    create_dir_all_durable, fsync_dir, publish_no_clobber, remove_file_if_exists, remove_if_same,
    unique_suffix, write_all_at, FileIdentity, Publish,
};

/// Temporary files in `{root}/tmp/` older than this are leftovers of a crash and are deleted
/// by [`Store::open`]. Younger ones may belong to another live process sharing the directory.
pub const TEMP_FILE_MAX_AGE: Duration = Duration::from_secs(3600);

/// Number of per-id lock stripes serialising open/create/remove of the same blob in-process.
const STRIPES: usize = 64;

/// How many times [`Store::create_blob`] retries when it keeps racing other publishers.
const PUBLISH_ATTEMPTS: u32 = 8;

/// When the store forces data to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fsync`/`fdatasync` at every ordering point: a committed block survives power loss, and
    /// a block is never marked present on disk before its bytes are durable.
    #[default]
    Fsync,
    /// Leave flushing to the OS. Safe against process crashes (kill -9: the page cache
    /// survives); after a power loss, blocks may come back marked present with unwritten data,
    /// which the page checksums then catch on read.
    Os,
}

impl std::str::FromStr for Durability {
    type Err = String;

    /// Parses `fsync` or `os` (any case), the spellings of the `cache.durability` setting.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            _ => Err(format!(
                "invalid durability {s:?}: expected \"fsync\" or \"os\""
            )),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
        })
    }
}

/// Outcome of [`BlobFile::verify_content`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentCheck {
    /// The content hashes to the blob id.
    Match,
    /// The content hashes to something else.
    Mismatch {
        /// The hash actually computed (lowercase hex, same kind as the id).
        actual: String,
    },
}

#[derive(Default)]
struct Registry {
    open: HashMap<BlobId, Weak<BlobFile>>,
    prune_at: usize,
}

/// A cache directory of blob files.
///
/// Within one `Store`, every open blob has exactly one [`BlobFile`] (shared through `Arc`), so
/// all threads see the same in-memory bitmap. Separate `Store`s on the same directory (for
/// instance two processes during a graceful upgrade) each have their own handles and
/// coordinate through the file system: no-clobber publishing and byte-range locks.
pub struct Store {
    root: PathBuf,
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
    durability: Durability,
    registry: Mutex<Registry>,
    stripes: Box<[Mutex<()>]>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("durability", &self.durability)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the cache directory `root`: makes `{root}/blobs` and
    /// `{root}/tmp`, and deletes files in `{root}/tmp` older than [`TEMP_FILE_MAX_AGE`].
    pub fn open(root: impl Into<PathBuf>, durability: Durability) -> Result<Store, StoreError> {
        let root = root.into();
        let blobs_dir = root.join("blobs");
        let tmp_dir = root.join("tmp");
        create_dir_all_durable(&blobs_dir, durability)?;
        create_dir_all_durable(&tmp_dir, durability)?;
        let store = Store {
            root,
            blobs_dir,
            tmp_dir,
            durability,
            registry: Mutex::new(Registry::default()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        };
        store.clean_tmp()?;
        Ok(store)
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The durability blobs are committed with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Where the blob `id` lives: `{root}/blobs/{hex[0..2]}/{hex[2..4]}/{hex}`.
    pub fn blob_path(&self, id: &BlobId) -> PathBuf {
        let (a, b) = id.shard();
        self.blobs_dir.join(a).join(b).join(id.as_str())
    }

    fn clean_tmp(&self) -> Result<()> {
        let entries = fs::read_dir(&self.tmp_dir)
            .map_err(StoreError::io("list temporary directory", &self.tmp_dir))?;
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(StoreError::io("list temporary directory", &self.tmp_dir))?;
            let path = entry.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("stat", &path)(e)),
            };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > TEMP_FILE_MAX_AGE);
            if old && !meta.is_dir() {
                match remove_file_if_exists(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => log::warn!("store: could not remove stale temp file {path:?}: {e}"),
                }
            }
        }
        if removed > 0 {
            log::info!(
                "store: removed {removed} stale temp file(s) from {:?}",
                self.tmp_dir
            );
        }
        Ok(())
    }

    fn stripe(&self, id: &BlobId) -> &Mutex<()> {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        &self.stripes[(h.finish() % STRIPES as u64) as usize]
    }

    fn lookup(&self, id: &BlobId) -> Option<Arc<BlobFile>> {
        self.registry.lock().open.get(id).and_then(Weak::upgrade)
    }

    fn remember(&self, blob: &Arc<BlobFile>) {
        let mut reg = self.registry.lock();
        reg.open.insert(blob.id().clone(), Arc::downgrade(blob));
        if reg.open.len() > reg.prune_at {
            reg.open.retain(|_, w| w.strong_count() > 0);
            reg.prune_at = (reg.open.len() * 2).max(1024);
        }
    }

    fn forget(&self, id: &BlobId) {
        self.registry.lock().open.remove(id);
    }

    /// Opens the existing blob `id`, or `Ok(None)` if there is none.
    ///
    /// Returns the handle already open in this `Store` if the file at the blob path is still
    /// the same inode. A file with a bad magic, an unknown version, a truncated header or
    /// inconsistent geometry is deleted (with a warning) and `None` returned. Blocks extending
    /// beyond the end of a truncated file are cleared from the bitmap.
    pub fn open_blob(&self, id: &BlobId) -> Result<Option<Arc<BlobFile>>, StoreError> {
        let _stripe = self.stripe(id).lock();
        self.open_blob_locked(id, &self.blob_path(id))
    }

    fn open_blob_locked(&self, id: &BlobId, path: &Path) -> Result<Option<Arc<BlobFile>>> {
        if let Some(blob) = self.lookup(id) {
            match fs::metadata(path) {
                Ok(m) if FileIdentity::of(&m) == blob.identity() => return Ok(Some(blob)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("stat", path)(e)),
            }
            // Removed or replaced by someone else since we opened it.
            self.forget(id);
        }
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open blob", path)(e)),
        };
        let meta = file.metadata().map_err(StoreError::io("stat", path))?;
        let identity = FileIdentity::of(&meta);
        match BlobFile::open_existing(
            file,
            path.to_path_buf(),
            identity,
            id.clone(),
            self.durability,
            meta.len(),
        ) {
            Ok(blob) => {
                let blob = Arc::new(blob);
                self.remember(&blob);
                Ok(Some(blob))
            }
            Err(StoreError::BadHeader { reason, .. }) => {
                log::warn!("store: removing unusable blob file {path:?}: {reason}");
                remove_if_same(path, identity)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the blob `id` for filling, creating it if needed.
    ///
    /// - An existing blob of content size `size` is reused as it is (its present blocks are
    ///   kept, and its own block size wins over `block_size`).
    /// - An existing blob of another size is replaced (with a warning).
    /// - Otherwise a new blob with no block present is written to a temp file in
    ///   `{root}/tmp/` (`fsync`ed with [`Durability::Fsync`]) and published by hard-linking
    ///   it to the blob path, which never clobbers a blob another process published
    ///   meanwhile: on `EEXIST` that blob is opened instead.
    ///
    /// `block_size` must be a power of two in `MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE`
    /// ([`StoreError::InvalidBlockSize`]). Empty content (`size == 0`) has no blocks and is
    /// complete at once.
    pub fn create_blob(
        &self,
        id: &BlobId,
        size: u64,
        block_size: u64,
    ) -> Result<Arc<BlobFile>, StoreError> {
        let layout = Layout::new(size, block_size)?;
        let path = self.blob_path(id);
        let _stripe = self.stripe(id).lock();
        for _ in 0..PUBLISH_ATTEMPTS {
            if let Some(existing) = self.open_blob_locked(id, &path)? {
                if existing.size() == size {
                    return Ok(existing);
                }
                log::warn!(
                    "store: {path:?} holds {} bytes but {id} is {size} bytes; replacing it",
                    existing.size()
                );
                self.forget(id);
                remove_if_same(&path, existing.identity())?;
            }
            if let Some(blob) = self.publish_new(id, &path, layout)? {
                let blob = Arc::new(blob);
                self.remember(&blob);
                return Ok(blob);
            }
            // Someone else published first: loop and open theirs.
        }
        Err(StoreError::PublishConflict {
            path,
            attempts: PUBLISH_ATTEMPTS,
        })
    }

    /// Writes a new empty blob to a temp file and publishes it at `path` unless something is
    /// already there (`Ok(None)`).
    fn publish_new(&self, id: &BlobId, path: &Path, layout: Layout) -> Result<Option<BlobFile>> {
        let shard_dir = path.parent().unwrap_or(&self.blobs_dir);
        create_dir_all_durable(shard_dir, self.durability)?;
        let tmp = self
            .tmp_dir
            .join(format!("{}.{}.tmp", id.as_str(), unique_suffix()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(StoreError::io("create temporary blob", &tmp))?;
        let published = (|| {
            let header = format::encode_fixed_header(&layout, 0, id);
            write_all_at(&file, &header, 0, &tmp, "write blob header")?;
            // Bitmap and checksums start zeroed: extend the file to the data offset (sparse).
            file.set_len(layout.data_offset())
                .map_err(StoreError::io("extend blob header", &tmp))?;
            if self.durability == Durability::Fsync {
                file.sync_all()
                    .map_err(StoreError::io("fsync temporary blob", &tmp))?;
            }
            publish_no_clobber(&tmp, path).map_err(StoreError::io("publish blob", path))
        })();
        if let Err(e) = remove_file_if_exists(&tmp) {
            log::warn!("store: could not remove temporary blob {tmp:?}: {e}");
        }
        match published? {
            Publish::AlreadyExists => Ok(None),
            Publish::Published => {
                if self.durability == Durability::Fsync {
                    fsync_dir(shard_dir)?;
                }
                let meta = file.metadata().map_err(StoreError::io("stat", path))?;
                let blob = BlobFile::new_created(
                    file,
                    path.to_path_buf(),
                    FileIdentity::of(&meta),
                    id.clone(),
                    layout,
                    self.durability,
                )?;
                Ok(Some(blob))
            }
        }
    }

    /// Deletes the blob `id` (nothing if absent). Handles already open keep working on the
    /// unlinked file, but nothing they write is visible to later opens.
    pub fn remove_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        let path = self.blob_path(id);
        let _stripe = self.stripe(id).lock();
        self.forget(id);
        remove_file_if_exists(&path).map_err(StoreError::io("remove blob", &path))
    }

    /// The ids of all blob files in the store, sorted. Entries that are not blob files in
    /// their right place are ignored.
    pub fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        fn dir_names(dir: &Path) -> Result<Vec<(String, PathBuf, fs::FileType)>> {
            let mut out = Vec::new();
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(StoreError::io("list directory", dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(StoreError::io("list directory", dir))?;
                let ft = entry
                    .file_type()
                    .map_err(StoreError::io("stat", entry.path()))?;
                if let Some(name) = entry.file_name().to_str() {
                    out.push((name.to_owned(), entry.path(), ft));
                }
            }
            Ok(out)
        }
        let mut ids = Vec::new();
        for (a, a_path, a_type) in dir_names(&self.blobs_dir)? {
            if !a_type.is_dir() || a.len() != 2 {
                continue;
            }
            for (b, b_path, b_type) in dir_names(&a_path)? {
                if !b_type.is_dir() || b.len() != 2 {
                    continue;
                }
                for (name, _, ft) in dir_names(&b_path)? {
                    if !ft.is_file() {
                        continue;
                    }
                    if let Ok(id) = BlobId::parse(&name) {
                        if id.as_str() == name && id.shard() == (a.as_str(), b.as_str()) {
                            ids.push(id);
                        }
                    }
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

// Compile-time check: the store is shared across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};

#[cfg(test)]
mod tests;
