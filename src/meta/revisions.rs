//! Branch, tag and `refs/pr/N` -> commit mappings, remembered per repo (in memory and on
//! disk). Online they are trusted for `revision_ttl`; offline, or when every upstream is
//! down, the last known mapping keeps serving (stale-if-error).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::disk::MetaDir;
use super::store::MetaStore;
use super::table::{unix_now, RepoTable, TABLE_ENTRIES};
use crate::hf::Repo;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefEntry {
    commit: String,
    /// Unix seconds when the upstream last confirmed this mapping.
    learned_at: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RefsFile {
    /// Revision name -> entry. The empty name is the repo's default branch.
    refs: HashMap<String, RefEntry>,
}

/// A remembered mapping and how old it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRevision {
    pub commit: String,
    pub age: Duration,
}

pub struct Revisions {
    store: MetaStore,
    repos: RepoTable<RefsFile>,
}

impl Revisions {
    pub fn new(store: MetaStore) -> Self {
        Self {
            repos: RepoTable::new(store.clone(), MetaDir::refs_file, TABLE_ENTRIES),
            store,
        }
    }

    /// The last known commit for `name` ("" = default branch).
    pub async fn lookup(&self, repo: &Repo, name: &str) -> Option<KnownRevision> {
        let now = unix_now();
        self.repos
            .read(repo, |refs| {
                refs.refs.get(name).map(|entry| KnownRevision {
                    commit: entry.commit.clone(),
                    age: Duration::from_secs(now.saturating_sub(entry.learned_at)),
                })
            })
            .await
    }

    /// Whether anything at all is known about this repo (used to tell RepoNotFound from
    /// RevisionNotFound when offline).
    pub async fn knows_repo(&self, repo: &Repo) -> bool {
        self.repos.read(repo, |refs| !refs.refs.is_empty()).await
            || self.store.has_dir(self.store.dir().repo_dir(repo)).await
    }

    /// Remember that `name` pointed at `commit` as of `learned_at` (unix seconds), unless a
    /// mapping learned later is already known (cache import: the age is that of the imported
    /// answer, so online the mapping is re-checked once `revision_ttl` has passed). Returns
    /// whether it was recorded. Blocking: call it from a blocking thread.
    pub fn record_if_newer(&self, repo: &Repo, name: &str, commit: &str, learned_at: u64) -> bool {
        let mut recorded = false;
        self.repos.update_blocking(repo, |refs| {
            if refs
                .refs
                .get(name)
                .is_some_and(|known| known.learned_at > learned_at)
            {
                return false;
            }
            refs.refs.insert(
                name.to_string(),
                RefEntry {
                    commit: commit.to_string(),
                    learned_at,
                },
            );
            recorded = true;
            true
        });
        recorded
    }

    /// Remember that `name` points at `commit` as of now.
    pub async fn record(&self, repo: &Repo, name: &str, commit: &str) {
        self.repos
            .update(repo, |refs| insert(refs, name, commit))
            .await;
    }
}

fn insert(refs: &mut RefsFile, name: &str, commit: &str) -> bool {
    refs.refs.insert(
        name.to_string(),
        RefEntry {
            commit: commit.to_string(),
            learned_at: unix_now(),
        },
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{RepoId, RepoType};
    use crate::store::Durability;

    fn repo() -> Repo {
        Repo {
            kind: RepoType::Model,
            id: RepoId::new("acme/tiny").unwrap(),
        }
    }

    fn revisions(dir: &std::path::Path) -> Revisions {
        Revisions::new(MetaStore::new(MetaDir::new(dir, Durability::Os)))
    }

    #[tokio::test]
    async fn recorded_mapping_is_found_fresh_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "a".repeat(40);
        {
            let revs = revisions(dir.path());
            assert!(revs.lookup(&repo(), "main").await.is_none());
            revs.record(&repo(), "main", &sha).await;
            let known = revs.lookup(&repo(), "main").await.unwrap();
            assert_eq!(known.commit, sha);
            assert!(known.age < Duration::from_secs(5));
        }
        let again = revisions(dir.path());
        assert_eq!(again.lookup(&repo(), "main").await.unwrap().commit, sha);
        assert!(again.knows_repo(&repo()).await);
        assert!(again.lookup(&repo(), "dev").await.is_none());
    }

    #[tokio::test]
    async fn an_older_imported_mapping_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let revs = revisions(dir.path());
        let (old, new) = ("a".repeat(40), "b".repeat(40));
        let now = unix_now();
        assert!(revs.record_if_newer(&repo(), "main", &new, now - 10));
        assert!(!revs.record_if_newer(&repo(), "main", &old, now - 3600));
        let known = revs.lookup(&repo(), "main").await.unwrap();
        assert_eq!(known.commit, new);
        assert!(known.age >= Duration::from_secs(10), "{known:?}");
        assert!(revs.record_if_newer(&repo(), "main", &old, now));
        assert_eq!(revs.lookup(&repo(), "main").await.unwrap().commit, old);
    }
}
