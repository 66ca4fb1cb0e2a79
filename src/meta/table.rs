//! Per-repo records (revision mappings, access decisions) kept in a bounded in-memory LRU and
//! persisted as one JSON file per repo.
//!
//! Reading a repo nobody recorded anything for inserts nothing, so asking about random repo
//! names costs a disk probe (on the blocking pool) and no memory. A record is loaded outside the
//! table's lock; the lock is only ever held for memory operations.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use lru::LruCache;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::disk::MetaDir;
use super::store::MetaStore;
use crate::hf::Repo;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Repos whose records are kept in memory per table.
pub(super) const TABLE_ENTRIES: usize = 16_384;

pub(super) struct RepoTable<T> {
    store: MetaStore,
    /// Where a repo's record lives.
    file: fn(&MetaDir, &Repo) -> PathBuf,
    repos: Mutex<LruCache<Repo, T>>,
}

impl<T> RepoTable<T>
where
    T: Default + Clone + Serialize + DeserializeOwned + Send + 'static,
{
    pub(super) fn new(
        store: MetaStore,
        file: fn(&MetaDir, &Repo) -> PathBuf,
        capacity: usize,
    ) -> Self {
        Self {
            store,
            file,
            repos: Mutex::new(crate::bounded::lru(capacity)),
        }
    }

    fn path(&self, repo: &Repo) -> PathBuf {
        (self.file)(self.store.dir(), repo)
    }

    /// Look at a repo's record (a default one when nothing is recorded).
    pub(super) async fn read<R>(&self, repo: &Repo, f: impl FnOnce(&T) -> R) -> R {
        if let Some(record) = self.repos.lock().get(repo) {
            return f(record);
        }
        match self.store.load::<T>(self.path(repo)).await {
            Some(loaded) => f(self.repos.lock().get_or_insert(repo.clone(), || loaded)),
            None => f(&T::default()),
        }
    }

    /// Change a repo's record; `f` says whether it changed, and then it is persisted (written
    /// behind: the caller does not wait for the disk).
    pub(super) async fn update(&self, repo: &Repo, f: impl FnOnce(&mut T) -> bool) {
        let cached = self.repos.lock().contains(repo);
        let loaded = if cached {
            None
        } else {
            self.store.load::<T>(self.path(repo)).await
        };
        self.apply(repo, loaded, f);
    }

    /// [`update`](Self::update) for callers on a blocking thread (cache import).
    pub(super) fn update_blocking(&self, repo: &Repo, f: impl FnOnce(&mut T) -> bool) {
        let cached = self.repos.lock().contains(repo);
        let loaded = if cached {
            None
        } else {
            self.store.load_blocking::<T>(&self.path(repo))
        };
        self.apply(repo, loaded, f);
    }

    fn apply(&self, repo: &Repo, loaded: Option<T>, f: impl FnOnce(&mut T) -> bool) {
        let snapshot = {
            let mut repos = self.repos.lock();
            let record = repos.get_or_insert_mut(repo.clone(), || loaded.unwrap_or_default());
            f(record).then(|| record.clone())
        };
        if let Some(snapshot) = snapshot {
            self.store.save(self.path(repo), &snapshot);
        }
    }

    /// Records held in memory.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.repos.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{RepoId, RepoType};
    use crate::store::Durability;
    use std::collections::HashMap;

    type Record = HashMap<String, u32>;

    fn repo(name: &str) -> Repo {
        Repo {
            kind: RepoType::Model,
            id: RepoId::new(name).unwrap(),
        }
    }

    fn table(dir: &std::path::Path, capacity: usize) -> RepoTable<Record> {
        let store = MetaStore::new(MetaDir::new(dir, Durability::Os));
        RepoTable::new(store, MetaDir::refs_file, capacity)
    }

    #[tokio::test]
    async fn reading_unknown_repos_keeps_nothing_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let table = table(tmp.path(), 8);
        for i in 0..100 {
            let n = table.read(&repo(&format!("acme/r{i}")), |r| r.len()).await;
            assert_eq!(n, 0);
        }
        assert_eq!(table.len(), 0);
    }

    #[tokio::test]
    async fn records_are_bounded_and_evicted_ones_are_read_back_from_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let table = table(tmp.path(), 4);
        for i in 0..10u32 {
            let r = repo(&format!("acme/r{i}"));
            table
                .update(&r, |rec| rec.insert("v".into(), i).is_none())
                .await;
        }
        assert_eq!(table.len(), 4);
        let first = table.read(&repo("acme/r0"), |r| r.get("v").copied()).await;
        assert_eq!(first, Some(0));
    }

    #[tokio::test]
    async fn a_slow_load_does_not_hold_the_table() {
        // repo a's record is a FIFO: reading it blocks until someone writes to it, like a
        // disk that does not answer. Another repo must still be readable meanwhile.
        let tmp = tempfile::tempdir().unwrap();
        let table = std::sync::Arc::new(table(tmp.path(), 8));
        table
            .update(&repo("acme/b"), |rec| rec.insert("v".into(), 2).is_none())
            .await;
        let fifo = MetaDir::new(tmp.path(), Durability::Os).refs_file(&repo("acme/a"));
        std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let slow = {
            let table = table.clone();
            tokio::spawn(async move { table.read(&repo("acme/a"), |r| r.len()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let other = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            table.read(&repo("acme/b"), |r| r.get("v").copied()),
        )
        .await;
        // Unblock the FIFO reader (an empty write: the record does not parse, so is absent).
        std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        assert_eq!(other.expect("read of another repo waited"), Some(2));
        assert_eq!(slow.await.unwrap(), 0);
    }
}
