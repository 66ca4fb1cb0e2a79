//! One storage root of a [`Store`](super::Store): its directories, its health, and the blob
//! handles open on it.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::blob::BlobFile;
use super::blob_id::BlobId;
use super::error::{Result, StoreError};
use super::fsutil::{create_dir_durable, remove_file_if_exists, unique_suffix};
use super::{Durability, TEMP_FILE_MAX_AGE};

/// Domain separation of the rendezvous hash.
const RENDEZVOUS_DOMAIN: &[u8] = b"hubcache-rendezvous-v1\0";

/// I/O errors on copies of one root within [`ERROR_WINDOW`] before the whole root is marked
/// unhealthy: one bad file (a bad sector) does not take a disk out of service.
pub(crate) const ERRORS_BEFORE_UNHEALTHY: u32 = 3;
/// See [`ERRORS_BEFORE_UNHEALTHY`].
pub(crate) const ERROR_WINDOW: Duration = Duration::from_secs(60);

/// Health and space of one storage root, from [`Store::roots`](super::Store::roots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootStatus {
    /// Index of the root in the store's root list.
    pub index: usize,
    /// The root directory.
    pub path: PathBuf,
    /// False while the root is considered failed (it is re-probed periodically).
    pub healthy: bool,
    /// Why the root is unhealthy.
    pub problem: Option<String>,
    /// Bytes available to the store on the root's file system (`statvfs`), if known.
    pub free_bytes: Option<u64>,
    /// Size of the root's file system, if known.
    pub total_bytes: Option<u64>,
    /// Free space the store leaves untouched: no new blob is created on the root if that
    /// would leave less than this free.
    pub reserve_bytes: Option<u64>,
    /// Whether a new blob of a few bytes would be created here now (healthy and above the
    /// reserve).
    pub accepts_new_blobs: bool,
    /// Blob handles currently open on this root in this `Store`. (The number of blobs on disk
    /// would need a directory walk; use [`Store::list_blobs_on`](super::Store::list_blobs_on).)
    pub open_blobs: usize,
}

#[derive(Default)]
struct Registry {
    open: HashMap<BlobId, Weak<BlobFile>>,
    prune_at: usize,
}

struct Problem {
    reason: String,
    retry_at: Instant,
}

/// A storage root: `{root}/blobs/` and `{root}/tmp/`.
pub(crate) struct Root {
    pub(crate) index: usize,
    pub(crate) path: PathBuf,
    pub(crate) blobs_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    durability: Durability,
    reprobe_after: Duration,
    /// The rendezvous hash state after absorbing the root's key (its path).
    hash_prefix: Sha256,
    /// Device of the root directory when it was first seen healthy: a root that comes back on
    /// another device (an unmounted disk revealing its mount point) stays unhealthy.
    dev: Mutex<Option<u64>>,
    problem: Mutex<Option<Problem>>,
    /// I/O errors on this root's copies since `.1` (see [`ERRORS_BEFORE_UNHEALTHY`]).
    errors: Mutex<(u32, Instant)>,
    registry: Mutex<Registry>,
}

impl Root {
    pub(crate) fn new(
        index: usize,
        path: PathBuf,
        durability: Durability,
        reprobe_after: Duration,
    ) -> Root {
        let mut hash_prefix = Sha256::new();
        hash_prefix.update(RENDEZVOUS_DOMAIN);
        hash_prefix.update(path.as_os_str().as_bytes());
        hash_prefix.update([0u8]);
        Root {
            index,
            blobs_dir: path.join("blobs"),
            tmp_dir: path.join("tmp"),
            path,
            durability,
            reprobe_after,
            hash_prefix,
            dev: Mutex::new(None),
            problem: Mutex::new(None),
            errors: Mutex::new((0, Instant::now())),
            registry: Mutex::new(Registry::default()),
        }
    }

    /// The rendezvous weight of blob `id` on this root: the first 8 bytes (big-endian) of
    /// `sha256("hubcache-rendezvous-v1\0" + root path + "\0" + id)`.
    pub(crate) fn weight(&self, id: &BlobId) -> u64 {
        let mut h = self.hash_prefix.clone();
        h.update(id.as_str().as_bytes());
        let d = h.finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// Where the blob `id` lives on this root: `{root}/blobs/{hex[0..2]}/{hex[2..4]}/{hex}`.
    pub(crate) fn blob_path(&self, id: &BlobId) -> PathBuf {
        let (a, b) = id.shard();
        self.blobs_dir.join(a).join(b).join(id.as_str())
    }

    fn unavailable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::RootUnavailable {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Prepares the root when the store is opened: creates the root directory (and parents) if
    /// missing, probes it, and removes stale temp files.
    pub(crate) fn init(&self) -> Result<()> {
        super::fsutil::create_dir_all_durable(&self.path, self.durability)?;
        self.probe()?;
        self.clean_tmp()
    }

    /// Checks that the root is usable: the root directory exists (it is never re-created
    /// after the store was opened: it may be the mount point of a missing disk), is on the
    /// device it was on, `blobs/` and `tmp/` exist (re-created inside the root if needed) and
    /// can be listed, and a file can be created in `tmp/` (a full file system passes: full is
    /// not broken).
    pub(crate) fn probe(&self) -> Result<()> {
        let meta = fs::metadata(&self.path).map_err(StoreError::io("stat root", &self.path))?;
        if !meta.is_dir() {
            return Err(self.unavailable("not a directory"));
        }
        {
            let mut dev = self.dev.lock();
            match *dev {
                Some(d) if d != meta.dev() => {
                    return Err(self.unavailable(format!(
                        "now on device {:#x}, was on {d:#x} (an unmounted disk?); reopen the \
                         store to accept the new device",
                        meta.dev()
                    )))
                }
                Some(_) => {}
                None => *dev = Some(meta.dev()),
            }
        }
        create_dir_durable(&self.blobs_dir, self.durability)?;
        create_dir_durable(&self.tmp_dir, self.durability)?;
        if let Some(entry) = fs::read_dir(&self.blobs_dir)
            .map_err(StoreError::io("list directory", &self.blobs_dir))?
            .next()
        {
            entry.map_err(StoreError::io("list directory", &self.blobs_dir))?;
        }
        let probe = self.tmp_dir.join(format!(".probe.{}", unique_suffix()));
        match OpenOptions::new().write(true).create_new(true).open(&probe) {
            Ok(_) => {
                remove_file_if_exists(&probe).map_err(StoreError::io("remove", &probe))?;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {}
            Err(e) => return Err(StoreError::io("create a file in", &self.tmp_dir)(e)),
        }
        Ok(())
    }

    /// Whether `blobs/` is (still) a directory: tells "blob missing" from "root gone" when
    /// opening a blob finds nothing.
    pub(crate) fn check_blobs_dir(&self) -> Result<()> {
        match fs::metadata(&self.blobs_dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(self.unavailable("blobs/ is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(self.unavailable("blobs/ directory missing"))
            }
            Err(e) => Err(StoreError::io("stat", &self.blobs_dir)(e)),
        }
    }

    /// Deletes files in `tmp/` older than [`TEMP_FILE_MAX_AGE`].
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

    /// Whether the root may be used now. A root marked unhealthy is re-probed once its retry
    /// time has come (one caller probes; the others keep skipping it meanwhile).
    pub(crate) fn usable(&self) -> bool {
        {
            let mut problem = self.problem.lock();
            match problem.as_mut() {
                None => return true,
                Some(p) => {
                    let now = Instant::now();
                    if now < p.retry_at {
                        return false;
                    }
                    p.retry_at = now + self.reprobe_after;
                }
            }
        }
        self.reprobe()
    }

    /// Probes an unhealthy root now; true if it is healthy (again).
    pub(crate) fn reprobe(&self) -> bool {
        match self.probe() {
            Ok(()) => {
                if let Some(p) = self.problem.lock().take() {
                    log::info!(
                        "store: storage root {:?} is usable again (it was unhealthy: {})",
                        self.path,
                        p.reason
                    );
                }
                true
            }
            Err(e) => {
                let mut problem = self.problem.lock();
                if let Some(p) = problem.as_mut() {
                    log::debug!("store: storage root {:?} still unhealthy: {e}", self.path);
                    p.reason = e.to_string();
                } else {
                    // It was healthy: this probe found it broken.
                    drop(problem);
                    self.mark_unhealthy(e.to_string());
                }
                false
            }
        }
    }

    /// Marks the root unhealthy (logged once per outage) and forgets its open handles. It is
    /// skipped until re-probed after the store's re-probe interval.
    pub(crate) fn mark_unhealthy(&self, reason: String) {
        let retry_at = Instant::now() + self.reprobe_after;
        {
            let mut problem = self.problem.lock();
            match problem.as_mut() {
                Some(p) => {
                    p.reason = reason;
                    p.retry_at = p.retry_at.max(retry_at);
                }
                None => {
                    log::warn!(
                        "store: storage root {:?} marked unhealthy: {reason}; its copies are not \
                         used until it passes a probe (every {:?})",
                        self.path,
                        self.reprobe_after
                    );
                    *problem = Some(Problem { reason, retry_at });
                }
            }
        }
        self.registry.lock().open.clear();
    }

    /// Counts an I/O error on one of this root's copies; the root is marked unhealthy once
    /// [`ERRORS_BEFORE_UNHEALTHY`] of them happened within [`ERROR_WINDOW`]. Returns whether
    /// it was.
    pub(crate) fn count_error(&self, what: String) -> bool {
        let count = {
            let mut errors = self.errors.lock();
            if errors.1.elapsed() > ERROR_WINDOW {
                *errors = (0, Instant::now());
            }
            errors.0 += 1;
            errors.0
        };
        if count < ERRORS_BEFORE_UNHEALTHY {
            log::warn!(
                "store: {what} (error {count} on {:?}; the root is taken out of service after \
                 {ERRORS_BEFORE_UNHEALTHY} within {ERROR_WINDOW:?})",
                self.path
            );
            return false;
        }
        *self.errors.lock() = (0, Instant::now());
        self.mark_unhealthy(format!(
            "{count} I/O errors within {ERROR_WINDOW:?}, the last: {what}"
        ));
        true
    }

    /// Makes the next [`usable`](Self::usable) call re-probe an unhealthy root.
    pub(crate) fn retry_now(&self) {
        if let Some(p) = self.problem.lock().as_mut() {
            p.retry_at = Instant::now();
        }
    }

    /// Why the root is unhealthy, if it is.
    pub(crate) fn problem(&self) -> Option<String> {
        self.problem.lock().as_ref().map(|p| p.reason.clone())
    }

    #[cfg(test)]
    pub(crate) fn set_recorded_dev(&self, dev: u64) {
        *self.dev.lock() = Some(dev);
    }

    pub(crate) fn lookup(&self, id: &BlobId) -> Option<Arc<BlobFile>> {
        self.registry.lock().open.get(id).and_then(Weak::upgrade)
    }

    pub(crate) fn remember(&self, blob: &Arc<BlobFile>) {
        let mut reg = self.registry.lock();
        reg.open.insert(blob.id().clone(), Arc::downgrade(blob));
        if reg.open.len() > reg.prune_at {
            reg.open.retain(|_, w| w.strong_count() > 0);
            reg.prune_at = (reg.open.len() * 2).max(1024);
        }
    }

    pub(crate) fn forget(&self, id: &BlobId) {
        self.registry.lock().open.remove(id);
    }

    /// Forgets `id` only if the registered handle is `blob`.
    pub(crate) fn forget_handle(&self, blob: &BlobFile) {
        let mut reg = self.registry.lock();
        if reg
            .open
            .get(blob.id())
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), blob))
        {
            reg.open.remove(blob.id());
        }
    }

    pub(crate) fn open_count(&self) -> usize {
        self.registry
            .lock()
            .open
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// The ids of all blob files on this root, sorted. Entries that are not blob files in
    /// their right place are ignored.
    pub(crate) fn list_blobs(&self) -> Result<Vec<BlobId>> {
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
        self.check_blobs_dir()?;
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
