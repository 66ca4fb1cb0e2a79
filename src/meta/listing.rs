//! Per-file metadata learned from per-commit listings (tree pages, paths-info, repo info with
//! `blobs=true`), so a listed file's `HEAD` is answered without asking the hub.
//!
//! A listing names each file with its size and object id, which is all a resolve `HEAD`
//! tells (the commit is the listing's own): the entry recorded is the one
//! [`file_meta_from_head`](super::files) would have made from the hub's answer. Entries are
//! served only to callers who may read the repo's files (the usual access rule), so learning
//! from a listing never widens access. Whoever registered a [`ListingObserver`] (the
//! prefetcher) hears of every listing learned from the hub.

use std::sync::Arc;

use super::files::{FileEntry, FileMeta};
use super::Meta;
use crate::hf::{ListedFile, Repo};

/// Told about the files of every listing the hub sent (not those served from the cache).
pub trait ListingObserver: Send + Sync {
    /// `files` were listed at `commit` of `repo` for a client with Authorization `auth`.
    fn listed(&self, repo: &Repo, commit: &str, files: &[FileMeta], auth: Option<&str>);
}

/// Which answers list files, and how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listing {
    /// Tree pages and paths-info: arrays of entries.
    Entries,
    /// Repo info: `siblings`, complete only with `blobs=true`.
    Siblings,
}

impl Listing {
    fn files(self, body: &[u8]) -> Vec<ListedFile> {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Vec::new();
        };
        match self {
            Listing::Entries => crate::hf::listed_in_tree(&json),
            Listing::Siblings => crate::hf::listed_in_repo_info(&json),
        }
    }
}

/// The metadata a resolve `HEAD` at `commit` would have given for a listed file.
pub(super) fn file_meta_from_listing(commit: &str, file: &ListedFile) -> FileMeta {
    FileMeta {
        path: file.path.clone(),
        commit: commit.to_string(),
        size: file.size,
        etag: file.etag.clone(),
        lfs: file.lfs,
        // Listed ids are always 40 or 64 hex characters: content hashes.
        blob: file.etag.clone(),
        verifiable: true,
    }
}

impl Meta {
    /// Register the one observer of listings (replacing any earlier one).
    pub fn observe_listings(&self, observer: Arc<dyn ListingObserver>) {
        *self.inner.listing_observer.lock() = Some(observer);
    }

    /// Record the files an upstream listing at `commit` names, and tell the observer.
    pub(super) fn learn_listing(
        &self,
        repo: &Repo,
        commit: &str,
        kind: Listing,
        body: &[u8],
        auth: Option<&str>,
    ) {
        let listed = kind.files(body);
        if listed.is_empty() {
            return;
        }
        let metas: Vec<FileMeta> = listed
            .iter()
            .map(|file| file_meta_from_listing(commit, file))
            .collect();
        for meta in &metas {
            let key = super::files::file_key(repo, commit, &meta.path);
            if self.inner.files.lock().contains(&key) {
                continue;
            }
            let entry = Arc::new(FileEntry::Present(meta.clone()));
            self.remember_file(repo, commit, &meta.path, entry);
        }
        let observer = self.inner.listing_observer.lock().clone();
        if let Some(observer) = observer {
            observer.listed(repo, commit, &metas, auth);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_lfs_file_is_described_by_its_sha256_and_real_size() {
        let sha = "ab".repeat(32);
        let file = ListedFile {
            path: "model.safetensors".into(),
            size: 5_242_880,
            etag: sha.clone(),
            lfs: true,
        };
        let meta = file_meta_from_listing(&"c".repeat(40), &file);
        assert_eq!(meta.etag, sha);
        assert_eq!(meta.blob, sha);
        assert_eq!(meta.size, 5_242_880);
        assert!(meta.lfs && meta.verifiable);
        assert_eq!(meta.commit, "c".repeat(40));
    }

    #[test]
    fn listing_kinds_read_their_own_shapes_only() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let tree = format!(r#"[{{"type":"file","oid":"{oid}","size":3,"path":"a"}}]"#);
        assert_eq!(Listing::Entries.files(tree.as_bytes()).len(), 1);
        assert!(Listing::Siblings.files(tree.as_bytes()).is_empty());
        assert!(Listing::Entries.files(b"not json").is_empty());
    }
}
