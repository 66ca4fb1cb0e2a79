//! The per-revision path index on disk as a catalog (which repo files are cached under which
//! blob, for `hubcache cache ls` and for pins), and its garbage collection: entries of files
//! whose blob was evicted do not pile up for ever.
//!
//! The rule (simple on purpose): a `commits/{sha}/files/{h}.json` entry is deleted when its
//! blob is no longer cached and the entry is older than the given age (the service uses one
//! day, so a file asked about with HEAD and fetched soon after keeps its entry). A commit left
//! without file entries loses its cached API answers of that age too, and its directory. The
//! next request for such a file or answer is a normal miss: asked upstream again. Refs,
//! access records and the answers of commits that still have cached files are kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::files::FileEntry;
use super::Meta;

/// One file of the per-revision path index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The repo as displayed everywhere: `models/acme/x`, `datasets/acme/y`.
    pub repo: String,
    pub commit: String,
    pub path: String,
    /// The blob id holding its bytes.
    pub blob: String,
    pub size: u64,
}

/// What [`Meta::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcReport {
    /// File entries removed (counted once per root holding a copy).
    pub files: usize,
    /// Cached API answers removed with their commit.
    pub answers: usize,
    /// Commit directories removed.
    pub commits: usize,
}

/// The entries of a directory (none if it cannot be read).
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

/// Every `commits/{sha}` directory under one metadata root: (repo, sha, directory).
fn commit_dirs(meta_root: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for (plural, kind_dir) in entries(meta_root) {
        if crate::hf::RepoType::from_plural(&plural).is_none() {
            continue;
        }
        for (org, org_dir) in entries(&kind_dir) {
            for (name, repo_dir) in entries(&org_dir) {
                let id = if org == super::disk::NO_ORG {
                    name
                } else {
                    format!("{org}/{name}")
                };
                let repo = format!("{plural}/{id}");
                for (sha, commit_dir) in entries(&repo_dir.join("commits")) {
                    out.push((repo.clone(), sha, commit_dir));
                }
            }
        }
    }
    out
}

fn read_entry(path: &Path) -> Option<super::FileMeta> {
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice::<FileEntry>(&bytes).ok()? {
        FileEntry::Present(meta) => Some(meta),
        FileEntry::Missing { .. } => None,
    }
}

fn older_than(path: &Path, age: Duration, now: SystemTime) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed >= age)
}

impl Meta {
    /// Every present file entry of the path index (from every root, each file once).
    /// Blocking: reads one small JSON file per entry.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for meta_root in self.inner.store.dir().roots() {
            for (repo, commit, dir) in commit_dirs(meta_root) {
                for (name, path) in entries(&dir.join("files")) {
                    if !seen.insert((repo.clone(), commit.clone(), name)) {
                        continue;
                    }
                    if let Some(meta) = read_entry(&path) {
                        out.push(CatalogEntry {
                            repo: repo.clone(),
                            commit: commit.clone(),
                            path: meta.path,
                            blob: meta.blob,
                            size: meta.size,
                        });
                    }
                }
            }
        }
        out
    }

    /// Removes the file entries whose blob `is_cached` denies and that are older than
    /// `min_age` (see the module doc), on every root. Blocking.
    pub fn collect_garbage(
        &self,
        is_cached: &dyn Fn(&str) -> bool,
        min_age: Duration,
        now: SystemTime,
    ) -> GcReport {
        let mut report = GcReport::default();
        for meta_root in self.inner.store.dir().roots() {
            for (_, _, dir) in commit_dirs(meta_root) {
                let files = dir.join("files");
                let mut left = 0;
                for (_, path) in entries(&files) {
                    let gone = read_entry(&path).is_some_and(|meta| !is_cached(&meta.blob));
                    if gone && older_than(&path, min_age, now) && fs::remove_file(&path).is_ok() {
                        report.files += 1;
                    } else {
                        left += 1;
                    }
                }
                if left > 0 {
                    continue;
                }
                let api = dir.join("api");
                let answers = entries(&api);
                if answers.iter().any(|(_, p)| !older_than(p, min_age, now)) {
                    continue;
                }
                for (_, path) in answers {
                    if fs::remove_file(path).is_ok() {
                        report.answers += 1;
                    }
                }
                let _ = fs::remove_dir(&files);
                let _ = fs::remove_dir(&api);
                if fs::remove_dir(&dir).is_ok() {
                    report.commits += 1;
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hf::Repo;
    use crate::meta::{FileMeta, MetaSettings};
    use crate::store::Durability;
    use crate::upstream::UpstreamChain;

    fn meta(root: &Path) -> Meta {
        let upstream = Arc::new(UpstreamChain::new(&[], true).unwrap());
        Meta::new(
            &[root.to_path_buf()],
            Durability::Os,
            crate::live::Live::fixed(upstream),
            crate::live::Live::fixed(Arc::new(MetaSettings {
                offline: true,
                revision_ttl: Duration::from_secs(60),
                auth_ttl: Duration::from_secs(60),
            })),
        )
    }

    fn file(commit: &str, path: &str, blob: &str) -> FileMeta {
        FileMeta {
            path: path.into(),
            commit: commit.into(),
            size: 10,
            etag: blob.into(),
            lfs: true,
            blob: blob.into(),
            verifiable: true,
        }
    }

    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn the_catalog_lists_cached_files_with_their_repo_and_blob() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(dir.path());
        let model = Repo::parse("acme/model").unwrap();
        let gpt2 = Repo::parse("gpt2").unwrap();
        let data = Repo::parse("datasets/acme/eval").unwrap();
        m.import_file(&model, file(C1, "a.bin", "aa"));
        m.import_file(&gpt2, file(C1, "b.bin", "bb"));
        m.import_file(&data, file(C2, "c/d.parquet", "cc"));
        m.flush();
        let mut catalog = m.catalog();
        catalog.sort_by(|a, b| a.blob.cmp(&b.blob));
        let got: Vec<(&str, &str, &str)> = catalog
            .iter()
            .map(|e| (e.repo.as_str(), e.path.as_str(), e.blob.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("models/acme/model", "a.bin", "aa"),
                ("models/gpt2", "b.bin", "bb"),
                ("datasets/acme/eval", "c/d.parquet", "cc"),
            ]
        );
        assert_eq!(got[0].0, model.to_string(), "the same form as Repo's");
    }

    #[test]
    fn entries_of_evicted_blobs_go_once_old_and_empty_commits_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(dir.path());
        let repo = Repo::parse("acme/model").unwrap();
        m.import_file(&repo, file(C1, "kept.bin", "aa"));
        m.import_file(&repo, file(C1, "gone.bin", "bb"));
        m.import_file(&repo, file(C2, "gone-too.bin", "cc"));
        m.flush();
        let cached = |blob: &str| blob == "aa";
        let now = SystemTime::now();
        // Young entries stay, whatever their blob.
        let young = m.collect_garbage(&cached, Duration::from_secs(3600), now);
        assert_eq!(young, GcReport::default());
        let later = now + Duration::from_secs(7200);
        let report = m.collect_garbage(&cached, Duration::from_secs(3600), later);
        assert_eq!(
            report,
            GcReport {
                files: 2,
                answers: 0,
                commits: 1
            }
        );
        let left: Vec<String> = m.catalog().into_iter().map(|e| e.path).collect();
        assert_eq!(left, ["kept.bin"]);
        let commits = dir.path().join("meta/models/acme/model/commits");
        assert!(commits.join(C1).is_dir() && !commits.join(C2).exists());
    }
}
