//! The on-disk block store.
//!
//! Every cached file ("blob") is one file under `{root}/blobs/{hex[0..2]}/{hex[2..4]}/{hex}`,
//! named by its id ([`BlobId`]: sha256 for LFS files, git blob sha1 otherwise, or a private
//! id for files without a content hash), so blobs are shared by every repository and revision
//! that contains them. A blob file is a header (geometry, flags, a presence bitmap with one bit
//! per block, one CRC32C per 1 MiB page) and the content in fixed-size blocks, filled in any
//! order. `docs/storage-format.md` describes the format byte by byte and the crash-safety
//! argument.
//!
//! A [`Store`] spans one or more *storage roots* (disks). Each blob has `replicas` home roots
//! chosen by rendezvous hashing of its id over the root paths ([`Store::placement`]); it is
//! created on the first home that is healthy and has room, and copied to the others by
//! [`Store::replicate`]. Reads use the best copy on any root ([`Store::open_blob`]) and move
//! to another one when a disk fails ([`Store::failover`]).
//!
//! The store is pure, synchronous storage: no network, no async. [`Store`] and [`BlobFile`]
//! are `Send + Sync` and every method takes `&self` (positioned I/O), so async callers use
//! them from `spawn_blocking`.
//!
//! Guarantees:
//! - a block is *present* only after its bytes and checksums were written (and, with
//!   [`Durability::Fsync`], made durable), so a crash at any moment (kill -9; power loss with
//!   `Fsync`) loses at most the blocks in flight, and a write that fails (disk full) never
//!   leaves a block present;
//! - [`BlobFile::read_verified`] never returns a byte whose page fails its CRC32C; a damaged
//!   block is invalidated and reported as [`StoreError::Corrupt`] so it gets refetched;
//! - a replica is only ever made from page-checksummed bytes of a complete copy;
//! - several processes may share the cache directories (graceful binary upgrade): blobs are
//!   published without clobbering, bitmap updates are read-modify-writes under a byte-range
//!   lock, so no process loses another's bits, and [`BlobFile::try_claim_block`] lets them
//!   agree on who fetches which block.

mod blob;
mod blob_id;
mod blob_read;
mod blob_send;
mod checksum;
mod claims;
mod copies;
mod create;
mod custody;
mod error;
mod format;
mod fsutil;
mod locks;
mod removal;
mod replica;
mod root;
mod usage;
mod verified;
mod verify;

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use blob::BlobFile;
pub use blob_id::{BlobId, InvalidBlobId};
pub use blob_send::{FileStamp, SendWindow};
pub use checksum::BlockChecksummer;
pub use claims::BlockClaim;
pub use error::StoreError;
pub use format::{
    validate_block_size, Layout, CLAIM_LOCK_BASE, DATA_ALIGNMENT, DEFAULT_BLOCK_SIZE,
    FIXED_HEADER_LEN, FLAG_NOT_CONTENT_ADDRESSED, FLAG_VERIFIED, FORMAT_VERSION, IN_USE_LOCK,
    MAGIC, MAX_BLOCK_SIZE, MAX_PAGE_SIZE, MIN_BLOCK_SIZE,
};
#[cfg(test)]
pub(crate) use fsutil::faults;
pub use fsutil::{atomic_write, FsSpace};
pub use removal::{ListedBlob, Removal};
pub use root::RootStatus;
pub use usage::RootUsage;
pub use verify::{Problem, VerifyReport};

/// I/O errors on one root's copies within a minute before [`Store::failover`] marks the root
/// unhealthy.
pub const ROOT_ERRORS_BEFORE_UNHEALTHY: u32 = root::ERRORS_BEFORE_UNHEALTHY;

use copies::Found;
use error::Result;
use fsutil::{fs_space, remove_file_if_exists, FileIdentity};
use root::Root;

/// Temporary files in `{root}/tmp/` older than this are leftovers of a crash and are deleted
/// when the store is opened. Younger ones may belong to another live process sharing the
/// directory.
pub const TEMP_FILE_MAX_AGE: Duration = Duration::from_secs(3600);

/// How long a root marked unhealthy is skipped before it is probed again (default).
pub const DEFAULT_REPROBE_AFTER: Duration = Duration::from_secs(30);

/// Least free space kept on every root (default): no blob is created where it would leave
/// less than `max(DEFAULT_RESERVE_MIN_BYTES, DEFAULT_RESERVE_PERCENT % of the file system)`.
pub const DEFAULT_RESERVE_MIN_BYTES: u64 = 256 << 20;

/// See [`DEFAULT_RESERVE_MIN_BYTES`].
pub const DEFAULT_RESERVE_PERCENT: u8 = 1;

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
    /// The blob id is not a content hash (the blob was created with
    /// `content_addressed == false`): there is nothing to verify against.
    NotApplicable,
}

/// The state of one root's copy of a blob, from [`Store::replica_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaState {
    /// Every block is present.
    Complete {
        /// The verified flag is set (the content was hashed and matched the id).
        verified: bool,
    },
    /// A copy with some blocks missing.
    Partial {
        /// Present blocks.
        present: u64,
        /// Blocks of the blob.
        blocks: u64,
    },
    /// The root is healthy and has no copy.
    Missing,
    /// The root is unhealthy, or the copy could not be opened.
    Unreadable {
        /// Why.
        reason: String,
    },
}

/// A free-space probe: the space of the file system holding a root directory. The default is
/// `statvfs`; tests inject their own.
pub type SpaceProbe = Arc<dyn Fn(&Path) -> io::Result<FsSpace> + Send + Sync>;

/// How a [`Store`] is set up; [`Store::open_roots`] uses the defaults for everything but the
/// replica count and the durability.
#[derive(Clone)]
pub struct StoreOptions {
    /// Copies of each complete blob, `1..=roots`.
    pub replicas: usize,
    /// When data is forced to stable storage.
    pub durability: Durability,
    /// Free space always left on a root: at least this many bytes...
    pub reserve_min_bytes: u64,
    /// ...and at least this percentage of the root's file system.
    pub reserve_percent: u8,
    /// How long an unhealthy root is skipped before it is probed again.
    pub reprobe_after: Duration,
    /// Free-space probe (`None`: `statvfs`).
    pub space_probe: Option<SpaceProbe>,
}

impl StoreOptions {
    /// Defaults with `replicas` copies and `durability`.
    pub fn new(replicas: usize, durability: Durability) -> StoreOptions {
        StoreOptions {
            replicas,
            durability,
            reserve_min_bytes: DEFAULT_RESERVE_MIN_BYTES,
            reserve_percent: DEFAULT_RESERVE_PERCENT,
            reprobe_after: DEFAULT_REPROBE_AFTER,
            space_probe: None,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions::new(1, Durability::default())
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("replicas", &self.replicas)
            .field("durability", &self.durability)
            .field("reserve_min_bytes", &self.reserve_min_bytes)
            .field("reserve_percent", &self.reserve_percent)
            .field("reprobe_after", &self.reprobe_after)
            .field("space_probe", &self.space_probe.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// The cache: one or more storage roots of blob files.
///
/// Within one `Store`, every open copy of a blob has exactly one [`BlobFile`] (shared through
/// `Arc`), so all threads see the same in-memory bitmap. Separate `Store`s on the same
/// directories (for instance two processes during a graceful upgrade) each have their own
/// handles and coordinate through the file system: no-clobber publishing, byte-range locks
/// and block claims.
pub struct Store {
    roots: Box<[Root]>,
    replicas: usize,
    durability: Durability,
    reserve_min_bytes: u64,
    reserve_percent: u8,
    space_probe: Option<SpaceProbe>,
    stripes: Box<[Mutex<()>]>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("roots", &self.root_paths())
            .field("replicas", &self.replicas)
            .field("durability", &self.durability)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the one cache directory `root`: the shorthand for
    /// [`open_roots`](Self::open_roots)`(&[root], 1, durability)`.
    pub fn open(root: impl Into<PathBuf>, durability: Durability) -> Result<Store, StoreError> {
        Store::open_roots(&[root.into()], 1, durability)
    }

    /// Opens a store over `roots` keeping `replicas` copies (`1..=roots.len()`) of each
    /// complete blob, with the default reserve and re-probe interval.
    pub fn open_roots(
        roots: &[PathBuf],
        replicas: usize,
        durability: Durability,
    ) -> Result<Store, StoreError> {
        Store::open_with(roots, StoreOptions::new(replicas, durability))
    }

    /// Opens a store over `roots` with `options`.
    ///
    /// Every root directory is created if missing (with its parents), probed, and cleaned of
    /// temp files older than [`TEMP_FILE_MAX_AGE`]. A root that fails is marked unhealthy (and
    /// re-probed later) as long as at least one root works; if none does, the first root's
    /// error is returned. Roots are identified by their path as given, lexically normalised
    /// (trailing `/` and `.` components removed): it keys the placement of blobs.
    ///
    /// Errors: [`StoreError::InvalidConfig`] for no roots, a root listed twice, or `replicas`
    /// outside `1..=roots.len()`.
    pub fn open_with(roots: &[PathBuf], options: StoreOptions) -> Result<Store, StoreError> {
        let invalid = |reason: String| StoreError::InvalidConfig { reason };
        if roots.is_empty() {
            return Err(invalid("no storage root".into()));
        }
        if options.replicas == 0 || options.replicas > roots.len() {
            return Err(invalid(format!(
                "{} replicas need between 1 and {} (the number of roots)",
                options.replicas,
                roots.len()
            )));
        }
        let paths: Vec<PathBuf> = roots
            .iter()
            .map(|r| r.components().collect::<PathBuf>())
            .collect();
        for (i, p) in paths.iter().enumerate() {
            if p.as_os_str().is_empty() {
                return Err(invalid(format!("root {i} is an empty path")));
            }
            if let Some(j) = paths[..i].iter().position(|q| q == p) {
                return Err(invalid(format!("roots {j} and {i} are both {p:?}")));
            }
        }
        let store = Store {
            roots: paths
                .into_iter()
                .enumerate()
                .map(|(i, p)| Root::new(i, p, options.durability, options.reprobe_after))
                .collect(),
            replicas: options.replicas,
            durability: options.durability,
            reserve_min_bytes: options.reserve_min_bytes,
            reserve_percent: options.reserve_percent.min(100),
            space_probe: options.space_probe,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        };
        let mut first_error = None;
        let mut seen = Vec::new();
        for root in store.roots.iter() {
            match root.init() {
                Ok(()) => {
                    if let Ok(m) = fs::metadata(&root.path) {
                        let ident = FileIdentity::of(&m);
                        if let Some((j, _)) = seen.iter().find(|(_, id)| *id == ident) {
                            return Err(invalid(format!(
                                "roots {j} and {} are the same directory ({:?})",
                                root.index, root.path
                            )));
                        }
                        seen.push((root.index, ident));
                    }
                }
                Err(e) => {
                    if store.roots.len() > 1 {
                        root.mark_unhealthy(e.to_string());
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if seen.is_empty() => Err(e),
            _ => Ok(store),
        }
    }

    /// The root directories, in configuration order (a blob's [`placement`](Self::placement)
    /// and [`BlobFile::root_index`] index this list).
    pub fn root_paths(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.path.clone()).collect()
    }

    /// The number of copies kept of each complete blob.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The durability blobs are committed with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Where the blob `id` lives on root `root`: `{root}/blobs/{hex[0..2]}/{hex[2..4]}/{hex}`
    /// (`None` for a root index out of range).
    pub fn blob_path(&self, root: usize, id: &BlobId) -> Option<PathBuf> {
        self.roots.get(root).map(|r| r.blob_path(id))
    }

    /// Health and free space of every root, in configuration order. Unhealthy roots whose
    /// re-probe time has come are probed first.
    pub fn roots(&self) -> Vec<RootStatus> {
        self.roots
            .iter()
            .map(|root| {
                let healthy = root.usable();
                let space = if healthy { self.space(root).ok() } else { None };
                let reserve = space.map(|s| self.reserve(s.total));
                RootStatus {
                    index: root.index,
                    path: root.path.clone(),
                    healthy,
                    problem: root.problem(),
                    free_bytes: space.map(|s| s.free),
                    total_bytes: space.map(|s| s.total),
                    reserve_bytes: reserve,
                    accepts_new_blobs: healthy
                        && space.zip(reserve).is_some_and(|(s, r)| s.free > r),
                    open_blobs: root.open_count(),
                }
            })
            .collect()
    }

    /// Probes every healthy root (its directories can be listed and written, it is still on
    /// its device), marking a failing one unhealthy, and re-probes unhealthy roots whose time
    /// has come: a lost disk is noticed even while nothing reads from it. Blocking (a few
    /// syscalls per root).
    pub fn check_roots(&self) {
        for root in self.roots.iter() {
            if root.problem().is_some() {
                root.usable();
            } else if let Err(e) = root.probe() {
                root.mark_unhealthy(e.to_string());
            }
        }
    }

    /// Probes every unhealthy root now instead of waiting for its re-probe time (e.g. after
    /// an operator replaced a disk).
    pub fn probe_roots(&self) {
        for root in self.roots.iter() {
            root.retry_now();
            root.usable();
        }
    }

    /// All root indices in rendezvous order for blob `id`: decreasing
    /// `weight(root, id)` (see `docs/storage-format.md`), ties by index. The first
    /// [`replicas`](Self::replicas) are the blob's home roots. Adding a root moves only the
    /// blobs for which the new root ranks among the homes (about `replicas/n` of them).
    pub fn placement(&self, id: &BlobId) -> Vec<usize> {
        let mut ranked: Vec<(u64, usize)> =
            self.roots.iter().map(|r| (r.weight(id), r.index)).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.into_iter().map(|(_, i)| i).collect()
    }

    fn stripe(&self, id: &BlobId) -> &Mutex<()> {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        &self.stripes[(h.finish() % STRIPES as u64) as usize]
    }

    /// The free space of `root`'s file system.
    fn space(&self, root: &Root) -> io::Result<FsSpace> {
        match &self.space_probe {
            Some(probe) => probe(&root.path),
            None => fs_space(&root.path),
        }
    }

    /// The reserve kept free on a file system of `total` bytes.
    fn reserve(&self, total: u64) -> u64 {
        let percent = u64::try_from(u128::from(total) * u128::from(self.reserve_percent) / 100)
            .unwrap_or(u64::MAX);
        percent.max(self.reserve_min_bytes)
    }

    /// Whether `root` has room for `needed` more bytes above its reserve (`Err`: why not).
    fn check_room(&self, root: &Root, needed: u64) -> std::result::Result<(), String> {
        let space = self
            .space(root)
            .map_err(|e| format!("cannot read free space: {e}"))?;
        let reserve = self.reserve(space.total);
        if space.free >= needed.saturating_add(reserve) {
            Ok(())
        } else {
            Err(format!(
                "full ({} bytes free, {needed} needed plus a reserve of {reserve})",
                space.free
            ))
        }
    }

    /// Takes note of an error on `root`: errors that concern the root as a whole mark it
    /// unhealthy.
    fn note_error(&self, root: &Root, e: &StoreError) {
        if e.is_root_failure() {
            root.mark_unhealthy(e.to_string());
        } else {
            log::warn!("store: {:?}: {e}", root.path);
        }
    }

    /// Deletes every copy of blob `id` (nothing if absent). Handles already open keep working
    /// on the unlinked files, but nothing they write is visible to later opens.
    ///
    /// Every root is tried. A root already known to be unhealthy that cannot be reached is
    /// skipped silently (its copy, if any, stays there); an error on any other root marks it
    /// unhealthy and is returned once all roots were tried.
    pub fn remove_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        let _stripe = self.stripe(id).lock();
        let mut first_error = None;
        for root in self.roots.iter() {
            root.forget(id);
            let path = root.blob_path(id);
            match remove_file_if_exists(&path) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(e) => {
                    if root.problem().is_none() {
                        let e = StoreError::io("remove blob", &path)(e);
                        self.note_error(root, &e);
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The ids of all blobs on any usable root, sorted and deduplicated. Entries that are not
    /// blob files in their right place are ignored. A root that is unhealthy or fails to list
    /// is left out (and marked unhealthy); if no root could be listed, that is an error.
    pub fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        let mut ids = BTreeSet::new();
        let mut listed = false;
        let mut first_error = None;
        for root in self.roots.iter() {
            if !root.usable() {
                first_error.get_or_insert_with(|| StoreError::RootUnavailable {
                    path: root.path.clone(),
                    reason: root.problem().unwrap_or_else(|| "unhealthy".into()),
                });
                continue;
            }
            match root.list_blobs() {
                Ok(v) => {
                    listed = true;
                    ids.extend(v);
                }
                Err(e) => {
                    self.note_error(root, &e);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if !listed => Err(e),
            _ => Ok(ids.into_iter().collect()),
        }
    }

    /// The ids of the blobs on root `root` (sorted), e.g. for per-disk eviction. A root
    /// index out of range is [`StoreError::InvalidConfig`].
    pub fn list_blobs_on(&self, root: usize) -> Result<Vec<BlobId>, StoreError> {
        let r = self
            .roots
            .get(root)
            .ok_or_else(|| StoreError::InvalidConfig {
                reason: format!("no root {root} (the store has {})", self.roots.len()),
            })?;
        r.list_blobs().inspect_err(|e| self.note_error(r, e))
    }
}

// Compile-time check: the store is shared across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};

#[cfg(test)]
mod format_proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_custody;
#[cfg(test)]
mod tests_removal;
#[cfg(test)]
mod tests_roots;
#[cfg(test)]
mod tests_send;
#[cfg(test)]
mod tests_xproc;
