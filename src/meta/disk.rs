//! Where metadata lives on disk, and atomic JSON reads and writes (blocking: callers use
//! [`MetaStore`](super::store::MetaStore), which runs them off the async workers).
//!
//! ```text
//! {root}/meta/{models|datasets|spaces}/{org, or - for a one-segment id}/{name}/
//!     refs.json                       branch/tag -> commit mappings (with when they were learned)
//!     access.json                     private/gated flags and per-token grants (hashed tokens)
//!     commits/{sha}/files/{h}.json    per-revision path index: one file's metadata, h = sha256(path)
//!     commits/{sha}/api/{h}.json      cached API answers bound to this commit
//!     live/{h}.json                   cached answers for mutable things (refs listings)
//! ```
//! Every repo directory is exactly two levels below its type, and `-` is never a valid org, so
//! no repo's directory lies inside another's (`gpt2` is `-/gpt2`, `gpt2/refs.json` is
//! `gpt2/refs.json`). Caches written with the older layout (`gpt2` directly under the type)
//! are moved once at startup (see `legacy`).
//!
//! Every write is temp file + rename, so a crash never leaves half a JSON file. With several
//! cache roots, metadata (small) is written to every root and read from the first that has
//! it, so losing a disk loses no metadata.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::hf::Repo;
use crate::store::{atomic_write, Durability};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The metadata directories of the cache roots. Paths handed out are under the first root;
/// `load` and `save` map them onto every root.
#[derive(Debug, Clone)]
pub struct MetaDir {
    root: PathBuf,
    mirrors: Vec<PathBuf>,
    durability: Durability,
}

/// The directory name standing for "no org" (one-segment repo ids). Not a valid org name.
pub const NO_ORG: &str = "-";

/// Hex sha256 of a string: stable, filesystem-safe names for arbitrary keys.
pub fn hashed_name(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl MetaDir {
    #[cfg(test)]
    pub fn new(cache_root: &Path, durability: Durability) -> Self {
        Self::with_roots(&[cache_root.to_path_buf()], durability)
    }

    /// Metadata kept on every one of `cache_roots` (the first is the primary).
    pub fn with_roots(cache_roots: &[PathBuf], durability: Durability) -> Self {
        let mut metas = cache_roots.iter().map(|r| r.join("meta"));
        let root = metas.next().unwrap_or_else(|| PathBuf::from("meta"));
        Self {
            root,
            mirrors: metas.collect(),
            durability,
        }
    }

    /// The same relative path under every root, the primary first.
    fn copies(&self, path: &Path) -> Vec<PathBuf> {
        let mut copies = vec![path.to_path_buf()];
        if let Ok(relative) = path.strip_prefix(&self.root) {
            copies.extend(self.mirrors.iter().map(|m| m.join(relative)));
        }
        copies
    }

    /// The primary root's metadata directory (`{root}/meta`).
    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every root's metadata directory, the primary first.
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.root.as_path()).chain(self.mirrors.iter().map(PathBuf::as_path))
    }

    pub fn repo_dir(&self, repo: &Repo) -> PathBuf {
        self.root
            .join(repo.kind.api_plural())
            .join(repo.id.namespace().unwrap_or(NO_ORG))
            .join(repo.id.name())
    }

    pub fn commit_dir(&self, repo: &Repo, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("commits").join(commit)
    }

    /// Whether `dir` exists on any root.
    pub fn exists_dir(&self, dir: &Path) -> bool {
        self.copies(dir).iter().any(|d| d.is_dir())
    }

    pub fn refs_file(&self, repo: &Repo) -> PathBuf {
        self.repo_dir(repo).join("refs.json")
    }

    pub fn access_file(&self, repo: &Repo) -> PathBuf {
        self.repo_dir(repo).join("access.json")
    }

    pub fn file_entry(&self, repo: &Repo, commit: &str, path: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("commits")
            .join(commit)
            .join("files")
            .join(format!("{}.json", hashed_name(path)))
    }

    pub fn api_entry(&self, repo: &Repo, commit: &str, key: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("commits")
            .join(commit)
            .join("api")
            .join(format!("{}.json", hashed_name(key)))
    }

    pub fn live_entry(&self, repo: &Repo, key: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("live")
            .join(format!("{}.json", hashed_name(key)))
    }

    /// Read a JSON file; `None` when it does not exist. A file that does not parse is treated
    /// as absent (and logged), never as an error that blocks serving.
    pub fn load<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, DiskError> {
        let mut first_error = None;
        for copy in self.copies(path) {
            match load_one(&copy) {
                Ok(Some(value)) => return Ok(Some(value)),
                Ok(None) => {}
                Err(e) => {
                    log::warn!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Write to every root; succeeds if at least one copy was written.
    #[cfg(test)]
    pub fn save<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<(), DiskError> {
        let bytes = serde_json::to_vec(value).map_err(|e| DiskError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        self.save_bytes(path, &bytes)
    }

    /// Write JSON bytes to every root; succeeds if at least one copy was written.
    pub fn save_bytes(&self, path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
        let mut written = false;
        let mut first_error = None;
        for copy in self.copies(path) {
            match save_one(&copy, bytes, self.durability) {
                Ok(()) => written = true,
                Err(e) => {
                    log::warn!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match (written, first_error) {
            (false, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl MetaDir {
    /// Remove a file from every root (absent is fine).
    pub fn remove(&self, path: &Path) -> Result<(), DiskError> {
        for copy in self.copies(path) {
            match std::fs::remove_file(&copy) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(DiskError::Write {
                        path: copy,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

fn load_one<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, DiskError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DiskError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            log::warn!("ignoring unreadable metadata file {}: {e}", path.display());
            Ok(None)
        }
    }
}

fn save_one(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), DiskError> {
    let failed = |reason: String| DiskError::Write {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| failed(e.to_string()))?;
    }
    atomic_write(path, bytes, durability).map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{RepoId, RepoType};

    fn repo() -> Repo {
        Repo {
            kind: RepoType::Dataset,
            id: RepoId::new("acme/data").unwrap(),
        }
    }

    #[test]
    fn save_then_load_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::new(dir.path(), Durability::Os);
        let path = meta.file_entry(&repo(), &"a".repeat(40), "sub/x y.txt");
        assert!(meta.load::<serde_json::Value>(&path).unwrap().is_none());
        meta.save(&path, &serde_json::json!({"k": 1})).unwrap();
        let back: serde_json::Value = meta.load(&path).unwrap().unwrap();
        assert_eq!(back["k"], 1);
        assert!(path.starts_with(dir.path().join("meta/datasets/acme/data/commits")));
    }

    #[test]
    fn no_repo_directory_lies_inside_another() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::new(dir.path(), Durability::Os);
        let model = |id: &str| Repo {
            kind: RepoType::Model,
            id: RepoId::new(id).unwrap(),
        };
        let names = [
            "gpt2",
            "gpt2/refs.json",
            "gpt2/access.json",
            "gpt2/commits",
            "gpt2/live",
            "commits",
            "_/gpt2",
        ];
        let dirs: Vec<PathBuf> = names.iter().map(|n| meta.repo_dir(&model(n))).collect();
        for (i, a) in dirs.iter().enumerate() {
            for (j, b) in dirs.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{} holds {}", a.display(), b.display());
                }
            }
        }
        // And so the files of one never collide with another's directory.
        meta.save(
            &meta.refs_file(&model("gpt2")),
            &serde_json::json!({"a": 1}),
        )
        .unwrap();
        meta.save(
            &meta.refs_file(&model("gpt2/refs.json")),
            &serde_json::json!({"b": 2}),
        )
        .unwrap();
        let a: serde_json::Value = meta.load(&meta.refs_file(&model("gpt2"))).unwrap().unwrap();
        assert_eq!(a["a"], 1);
        let sha = "a".repeat(40);
        meta.save(
            &meta.file_entry(&model("gpt2"), &sha, "config.json"),
            &serde_json::json!({}),
        )
        .unwrap();
        assert!(!meta.exists_dir(&meta.repo_dir(&model("gpt2/commits"))));
        assert!(meta.exists_dir(&meta.commit_dir(&model("gpt2"), &sha)));
    }

    #[test]
    fn metadata_is_written_to_every_root_and_survives_losing_one() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let roots = [a.path().to_path_buf(), b.path().to_path_buf()];
        let meta = MetaDir::with_roots(&roots, Durability::Os);
        let path = meta.refs_file(&repo());
        meta.save(&path, &serde_json::json!({"k": 2})).unwrap();
        std::fs::remove_dir_all(a.path().join("meta")).unwrap();
        let back: serde_json::Value = meta.load(&path).unwrap().unwrap();
        assert_eq!(back["k"], 2);
    }

    #[test]
    fn corrupt_json_is_treated_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::new(dir.path(), Durability::Os);
        let path = meta.refs_file(&repo());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        assert!(meta.load::<serde_json::Value>(&path).unwrap().is_none());
    }
}
