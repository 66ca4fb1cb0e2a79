//! Importing a huggingface_hub cache directory (`hubcache cache import --hf-cache DIR`): what
//! `HF_HUB_CACHE` (by default `~/.cache/huggingface/hub`) holds, e.g. carried into an
//! air-gapped site on a disk.
//!
//! The layout, as huggingface_hub writes it (`file_download.py`):
//!
//! ```text
//! models--org--name/                   (datasets--…, spaces--…)
//!   blobs/{etag}                       the content; etag = sha256 (LFS) or git blob sha1
//!   blobs/{etag}.incomplete            a download under way or cut off
//!   snapshots/{commit}/{path}          relative symlink to ../../blobs/{etag}
//!   refs/{revision}                    the commit a branch or tag pointed at (refs/pr/1 too)
//!   .no_exist/{commit}/{path}          "this file does not exist at this commit"
//! ```
//!
//! Every snapshot entry must be a symlink that stays inside its repo's `blobs/` and names a
//! regular file there; the blob's name is its content id, and the bytes are hashed against
//! it before anything is committed (the same copy-then-verify path as the Olah import). What
//! does not fit (dangling or escaping symlinks, copies in place of symlinks, a blob name
//! that is no content hash, `.incomplete` downloads) is reported and left out. Nothing is
//! ever written into `DIR`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::files::{FileRef, Group};
use super::layout::{is_real_dir, is_real_file};
use super::report::{FileOutcome, ImportReport};
use super::{ImportError, Importer};
use crate::hf::{is_commit_sha, Repo, RepoId, RepoPath, RepoType, Revision};
use crate::meta::Meta;
use crate::store::{BlobId, Store};

/// Directory depth walked under `snapshots/{commit}` and `refs/` (deeper is reported).
const MAX_DEPTH: usize = 64;

/// The repo a cache folder name (`models--org--name`) stands for.
pub fn parse_folder_name(name: &str) -> Option<Repo> {
    let (plural, rest) = name.split_once("--")?;
    let kind = RepoType::from_plural(plural)?;
    let id = RepoId::new(&rest.split("--").collect::<Vec<_>>().join("/")).ok()?;
    Some(Repo::new(kind, id))
}

/// Imports the huggingface_hub cache at `dir` into the store and metadata (blocking: run it
/// on a blocking thread). New blobs get `block_size`.
pub fn import_hf_cache_blocking(
    store: &Store,
    meta: &Meta,
    block_size: u64,
    dir: &Path,
) -> Result<ImportReport, ImportError> {
    let open = |source| ImportError::Open {
        path: dir.to_path_buf(),
        source,
    };
    let root = fs::canonicalize(dir).map_err(open)?;
    let entries = fs::read_dir(&root).map_err(open)?;
    let mut repos: Vec<(Repo, PathBuf)> = Vec::new();
    let mut other = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        match parse_folder_name(&name) {
            Some(repo) if is_real_dir(&path) => repos.push((repo, path)),
            Some(_) => other.push((path, "not a directory (symlinks are not followed)")),
            None if matches!(name.as_str(), ".locks" | "version.txt" | "CACHEDIR.TAG") => {}
            None => other.push((path, "not a huggingface_hub repo folder")),
        }
    }
    let looks_like_cache = repos
        .iter()
        .any(|(_, p)| is_real_dir(&p.join("blobs")) || is_real_dir(&p.join("snapshots")));
    if !looks_like_cache {
        return Err(ImportError::NotAnHfCache {
            path: dir.to_path_buf(),
        });
    }
    repos.sort();
    log::info!(
        "import: reading the huggingface_hub cache {}",
        root.display()
    );
    let mut importer = Importer {
        store,
        meta,
        block_size,
        report: ImportReport {
            root: root.clone(),
            repos: repos.len(),
            ..ImportReport::default()
        },
        root,
        visibility: BTreeMap::new(),
        plain: true,
    };
    for (path, reason) in other {
        importer.skip(path, reason);
    }
    importer.run_hf(&repos)
}

/// What a snapshot entry turned out to be.
enum Entry {
    /// A symlink to `blobs/{name}`, a regular file.
    Blob { id: BlobId, blob: PathBuf },
    /// Left out, with why.
    Bad(String),
}

impl Importer<'_> {
    fn run_hf(mut self, repos: &[(Repo, PathBuf)]) -> Result<ImportReport, ImportError> {
        let mut groups: BTreeMap<BlobId, Group> = BTreeMap::new();
        for (repo, dir) in repos {
            self.hf_refs(repo, dir);
            self.hf_blobs(dir, &mut groups);
            self.hf_snapshots(repo, dir, &mut groups);
        }
        for (id, group) in groups {
            self.import_group(id, group)?;
        }
        self.report
            .files
            .sort_by(|a, b| (&a.repo, &a.commit, &a.path).cmp(&(&b.repo, &b.commit, &b.path)));
        self.hf_visibility(repos);
        self.meta.flush();
        Ok(self.report)
    }

    /// `refs/{revision}` files: `revision -> commit`, learned at the file's mtime.
    fn hf_refs(&mut self, repo: &Repo, dir: &Path) {
        let refs = dir.join("refs");
        if !is_real_dir(&refs) {
            return;
        }
        for (file, rel) in self.walk(&refs) {
            let Ok(rev) = Revision::new(&rel) else {
                self.skip(&file, "not a valid revision name");
                continue;
            };
            let commit = match fs::read_to_string(&file) {
                Ok(text) => text.trim().to_string(),
                Err(e) => {
                    self.skip(&file, format!("cannot read: {e}"));
                    continue;
                }
            };
            if !is_commit_sha(&commit) {
                self.skip(&file, "does not hold a commit sha");
                continue;
            }
            let learned_at = fs::metadata(&file)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            self.record_revision(repo, &rev, &commit, learned_at, file.display().to_string());
        }
    }

    /// Every blob, so one no snapshot refers to is still imported; `.incomplete` downloads
    /// are reported.
    fn hf_blobs(&mut self, dir: &Path, groups: &mut BTreeMap<BlobId, Group>) {
        let blobs = dir.join("blobs");
        if !is_real_dir(&blobs) {
            return;
        }
        let Ok(entries) = fs::read_dir(&blobs) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".incomplete") {
                self.skip(&path, "an incomplete download (left out)");
            } else if !is_real_file(&path) {
                self.skip(&path, "not a regular file (symlinks are not followed)");
            } else if let Ok(id) = BlobId::parse(&name) {
                let shown = path.display().to_string();
                groups.entry(id).or_default().add_source(path, shown);
            } else {
                self.skip(
                    &path,
                    "the name is not a content hash (sha256 or git blob sha1)",
                );
            }
        }
    }

    fn hf_snapshots(&mut self, repo: &Repo, dir: &Path, groups: &mut BTreeMap<BlobId, Group>) {
        let snapshots = dir.join("snapshots");
        let Ok(entries) = fs::read_dir(&snapshots) else {
            return;
        };
        let blobs_dir = dir.join("blobs");
        let blobs = is_real_dir(&blobs_dir)
            .then(|| fs::canonicalize(&blobs_dir).ok())
            .flatten();
        for entry in entries.flatten() {
            let path = entry.path();
            let commit = entry.file_name().to_string_lossy().into_owned();
            if !is_commit_sha(&commit) || !is_real_dir(&path) {
                self.skip(&path, "not a snapshot (a directory named by a commit sha)");
                continue;
            }
            for (file, rel) in self.walk(&path) {
                let found_at = file.display().to_string();
                let repo_path = match RepoPath::new(&rel) {
                    Ok(p) => p,
                    Err(e) => {
                        self.skip(&file, format!("not a valid repo path: {e}"));
                        continue;
                    }
                };
                match snapshot_entry(&file, blobs.as_deref()) {
                    Entry::Blob { id, blob } => {
                        let group = groups.entry(id).or_default();
                        group.add_source(blob.clone(), blob.display().to_string());
                        group.add_ref(FileRef::new(
                            repo.clone(),
                            commit.clone(),
                            repo_path,
                            found_at,
                        ));
                    }
                    Entry::Bad(reason) => self.file_outcome(
                        repo,
                        &commit,
                        repo_path.as_str(),
                        &found_at,
                        FileOutcome::Skipped { reason },
                    ),
                }
            }
        }
    }

    /// The files (and symlinks) under `top`, with their `/`-joined relative paths. Symlinked
    /// directories are not followed (reported), nor is anything deeper than [`MAX_DEPTH`].
    fn walk(&mut self, top: &Path) -> Vec<(PathBuf, String)> {
        let mut found = Vec::new();
        let mut stack = vec![(top.to_path_buf(), String::new(), 0usize)];
        while let Some((dir, prefix, depth)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                self.skip(&dir, "cannot be read");
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    if depth + 1 >= MAX_DEPTH {
                        self.skip(&path, "nested too deep");
                    } else {
                        stack.push((path, rel, depth + 1));
                    }
                } else if meta.file_type().is_symlink() && path.is_dir() {
                    self.skip(&path, "a symlink to a directory (not followed)");
                } else {
                    found.push((path, rel));
                }
            }
        }
        found.sort();
        found
    }

    /// huggingface_hub records no visibility: the imported repos are treated as public
    /// unless hubcache already knows better (noted in the report).
    fn hf_visibility(&mut self, repos: &[(Repo, PathBuf)]) {
        for (repo, _) in repos {
            let name = repo.to_string();
            let imported = self
                .report
                .files
                .iter()
                .any(|f| f.repo == name && matches!(f.outcome, FileOutcome::Imported { .. }));
            if imported && self.meta.import_assume_public(repo) {
                self.report.notes.push(format!(
                    "{repo}: a huggingface_hub cache records no visibility; the repo is served \
                     to every client as public (an origin's repo info, once hubcache is online, \
                     takes precedence)"
                ));
            }
        }
    }
}

/// Checks one snapshot entry: a relative symlink whose target, taken lexically from the
/// entry's directory, is `blobs/{name}` of the same repo, naming a regular file whose name
/// is a content hash.
fn snapshot_entry(file: &Path, blobs: Option<&Path>) -> Entry {
    let Ok(meta) = fs::symlink_metadata(file) else {
        return Entry::Bad("vanished while importing".into());
    };
    if !meta.file_type().is_symlink() {
        return Entry::Bad(
            "a copy, not a symlink to blobs/ (huggingface_hub without symlink support): its \
             content id is unknown, so it cannot be verified"
                .into(),
        );
    }
    let Ok(target) = fs::read_link(file) else {
        return Entry::Bad("cannot read the symlink".into());
    };
    if target.is_absolute() {
        return Entry::Bad(format!(
            "an absolute symlink ({}); huggingface_hub writes relative ones into blobs/",
            target.display()
        ));
    }
    let Some(blobs) = blobs else {
        return Entry::Bad("the repo has no blobs/ directory".into());
    };
    let Some(parent) = file.parent() else {
        return Entry::Bad("no parent directory".into());
    };
    let Some(lexical) = normalize(&parent.join(&target)) else {
        return Entry::Bad(format!(
            "the symlink ({}) escapes the import directory",
            target.display()
        ));
    };
    let Ok(real) = fs::canonicalize(&lexical) else {
        return Entry::Bad(format!("a dangling symlink ({})", target.display()));
    };
    if real.parent() != Some(blobs) || real != lexical {
        return Entry::Bad(format!(
            "the symlink ({}) points outside the repo's blobs/ directory",
            target.display()
        ));
    }
    if !is_real_file(&real) {
        return Entry::Bad(format!(
            "the symlink ({}) does not name a regular file",
            target.display()
        ));
    }
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match BlobId::parse(&name) {
        Ok(id) => Entry::Blob { id, blob: real },
        Err(_) => Entry::Bad(format!(
            "the blob name {name:?} is not a content hash (sha256 or git blob sha1), so it \
             cannot be verified"
        )),
    }
}

/// `path` with `.` and `..` resolved lexically; `None` when `..` climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}
