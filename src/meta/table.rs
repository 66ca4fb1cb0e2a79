//! Per-repo records (revision mappings, access decisions) kept in memory and persisted as one
//! JSON file per repo, loaded on first use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::disk::MetaDir;
use crate::hf::Repo;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) struct RepoTable<T> {
    dir: MetaDir,
    /// Where a repo's record lives.
    file: fn(&MetaDir, &Repo) -> PathBuf,
    /// What the records are, for log lines.
    what: &'static str,
    repos: Mutex<HashMap<String, T>>,
}

impl<T: Default + Clone + Serialize + DeserializeOwned> RepoTable<T> {
    pub(super) fn new(
        dir: MetaDir,
        file: fn(&MetaDir, &Repo) -> PathBuf,
        what: &'static str,
    ) -> Self {
        Self {
            dir,
            file,
            what,
            repos: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, repo: &Repo, f: impl FnOnce(&mut T) -> R) -> R {
        let key = repo.to_string();
        let mut repos = self.repos.lock();
        if !repos.contains_key(&key) {
            let path = (self.file)(&self.dir, repo);
            let loaded = self.dir.load::<T>(&path).ok().flatten().unwrap_or_default();
            repos.insert(key.clone(), loaded);
        }
        f(repos.entry(key).or_default())
    }

    /// Look at a repo's record.
    pub(super) fn read<R>(&self, repo: &Repo, f: impl FnOnce(&T) -> R) -> R {
        self.with(repo, |record| f(record))
    }

    /// Change a repo's record; `f` says whether it changed, and then it is persisted.
    pub(super) fn update(&self, repo: &Repo, f: impl FnOnce(&mut T) -> bool) {
        let snapshot = self.with(repo, |record| f(record).then(|| record.clone()));
        if let Some(snapshot) = snapshot {
            if let Err(e) = self.dir.save(&(self.file)(&self.dir, repo), &snapshot) {
                log::warn!("cannot persist {} of {repo}: {e}", self.what);
            }
        }
    }
}
