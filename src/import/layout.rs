//! Walking an Olah or DingoSpeed `repos` directory.
//!
//! ```text
//! repos/
//!   files/{type}/{org}/{repo}/                 (no-org repos: files/{type}/{repo}/; Olah < v9: files/{type}/None/{repo}/)
//!     resolve/{sha}/{path}        Olah: the OLAH cache file itself (v8), or a directory with
//!                                 meta.bin + blocks/ (v9);
//!                                 DingoSpeed: a relative symlink to ../../…/blobs/{etag}
//!     blobs/{etag}                DingoSpeed: the OLAH v8 file, shared by every commit
//!     cdn/{sha256}                Olah: LFS files fetched through CDN-style URLs
//!   api/{type}/{org}/{repo}/
//!     revision/{rev}/meta_get.json                      repo-info answer for a branch, tag or sha
//!     paths-info/{sha}/{path}/paths-info_post.json      one file's paths-info answer
//!   heads/{type}/{org}/{repo}/resolve/{sha}/{path}      Olah: the cached resolve HEAD answer
//! ```
//!
//! Sources: Olah `olah/proxy/files.py` (`file_get_generator`: `files/…/resolve/{commit}` and
//! `heads/…/resolve/{commit}`, `cdn_file_get_generator`), `olah/proxy/meta.py`,
//! `olah/proxy/pathsinfo.py`; DingoSpeed `internal/dao/file_dao.go`
//! (`ConstructBlobsAndFileFile`), `meta_dao.go` (see `shared/notes/dingospeed-behaviour.md` §3).
//!
//! Safety: the walk never follows a symlinked directory, and a symlinked file is used only if
//! its fully resolved target lies inside the (canonical) import directory. Every repo id,
//! revision and path is validated with the `hf` types before it is used.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use super::metajson;
use super::olah::{self, MAGIC, VERSION_9};
use crate::hf::{is_commit_sha, Repo, RepoId, RepoPath, RepoType, Revision};

/// The three top-level trees of a `repos` directory.
pub const TREES: [&str; 3] = ["files", "api", "heads"];

/// Deepest directory nesting followed under `resolve/{sha}/` (paths are at most 4096 bytes).
const MAX_DEPTH: usize = 512;

/// Where a repo's data lives (a repo may appear more than once, e.g. under `None/` and at the
/// top level).
#[derive(Debug, Default, Clone)]
pub struct RepoDirs {
    pub files: Vec<PathBuf>,
    pub api: Vec<PathBuf>,
    pub heads: Vec<PathBuf>,
}

impl RepoDirs {
    fn tree_mut(&mut self, tree: &str) -> &mut Vec<PathBuf> {
        match tree {
            "files" => &mut self.files,
            "api" => &mut self.api,
            _ => &mut self.heads,
        }
    }

    fn merge(&mut self, other: RepoDirs) {
        self.files.extend(other.files);
        self.api.extend(other.api);
        self.heads.extend(other.heads);
    }
}

/// The repos found, and what was left out on the way.
#[derive(Debug, Default)]
pub struct Discovery {
    pub repos: BTreeMap<Repo, RepoDirs>,
    pub skipped: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// The `repos` directory to import: `dir` itself when it holds `files/`, `api/` or `heads/`,
/// else `dir/repos` when that does. Canonical (symlinks resolved).
pub fn locate_root(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let dir = fs::canonicalize(dir)?;
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    let holds_trees = |d: &Path| TREES.iter().any(|t| is_real_dir(&d.join(t)));
    if holds_trees(&dir) {
        return Ok(Some(dir));
    }
    let nested = dir.join("repos");
    if is_real_dir(&nested) && holds_trees(&nested) {
        return Ok(Some(nested));
    }
    Ok(None)
}

/// A directory that is not a symlink.
pub fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// A regular file that is not a symlink.
pub fn is_real_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn is_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Sorted entries of a directory: `(name, path)`; non-UTF-8 names are reported and skipped.
fn entries(dir: &Path, skipped: &mut Vec<(String, String)>) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        skipped.push((dir.display().to_string(), "cannot list directory".into()));
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        match entry.file_name().into_string() {
            Ok(name) => out.push((name, path)),
            Err(_) => skipped.push((path.display().to_string(), "name is not UTF-8".into())),
        }
    }
    out.sort();
    out
}

/// Quietly lists a directory's UTF-8 entry names.
fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The marker directories that make a directory a repo directory in `tree`.
fn markers(tree: &str) -> &'static [&'static str] {
    match tree {
        "files" => &["resolve", "blobs", "cdn"],
        "api" => &["revision", "paths-info", "tree", "refs"],
        _ => &["resolve", "resolve_head", "cdn"],
    }
}

/// Strict check, for telling a no-org repo `{type}/{repo}/` from an org `{type}/{org}/`: the
/// marker directory must hold what such a directory holds.
fn strict_marker(dir: &Path, marker: &str) -> bool {
    let m = dir.join(marker);
    if !is_real_dir(&m) {
        return false;
    }
    let children = names(&m);
    match marker {
        "resolve" | "resolve_head" | "paths-info" | "tree" => children
            .iter()
            .any(|c| is_commit_sha(c) && is_real_dir(&m.join(c))),
        "blobs" | "cdn" => children.iter().any(|c| is_hex_id(c)),
        "revision" => children.iter().any(|c| {
            is_real_file(&m.join(c).join("meta_get.json"))
                || is_real_file(&m.join(c).join("meta_head.json"))
        }),
        "refs" => is_real_file(&m.join("refs_get.json")),
        _ => false,
    }
}

/// Finds the repo directories of every tree under `root`.
pub fn discover(root: &Path) -> Discovery {
    let mut found: BTreeMap<(RepoType, Option<String>, String), RepoDirs> = BTreeMap::new();
    let mut d = Discovery::default();
    for tree in TREES {
        let tree_dir = root.join(tree);
        if !is_real_dir(&tree_dir) {
            continue;
        }
        for (type_name, type_dir) in entries(&tree_dir, &mut d.skipped) {
            let Some(kind) = RepoType::from_plural(&type_name) else {
                d.skipped.push((
                    type_dir.display().to_string(),
                    "not a repo type directory".into(),
                ));
                continue;
            };
            if !is_real_dir(&type_dir) {
                d.skipped.push((
                    type_dir.display().to_string(),
                    "not a directory (symlinks are not followed)".into(),
                ));
                continue;
            }
            for (a, a_dir) in entries(&type_dir, &mut d.skipped) {
                if !is_real_dir(&a_dir) {
                    d.skipped.push((
                        a_dir.display().to_string(),
                        "not a directory (symlinks are not followed)".into(),
                    ));
                    continue;
                }
                let own: Vec<&str> = markers(tree)
                    .iter()
                    .copied()
                    .filter(|m| strict_marker(&a_dir, m))
                    .collect();
                let mut any = false;
                if !own.is_empty() {
                    any = true;
                    found
                        .entry((kind, None, a.clone()))
                        .or_default()
                        .tree_mut(tree)
                        .push(a_dir.clone());
                }
                for (b, b_dir) in entries(&a_dir, &mut d.skipped) {
                    if own.contains(&b.as_str()) || !is_real_dir(&b_dir) {
                        continue;
                    }
                    if markers(tree).iter().any(|m| is_real_dir(&b_dir.join(m))) {
                        any = true;
                        found
                            .entry((kind, Some(a.clone()), b.clone()))
                            .or_default()
                            .tree_mut(tree)
                            .push(b_dir);
                    }
                }
                if !any {
                    d.skipped.push((
                        a_dir.display().to_string(),
                        format!(
                            "no repository data found (expected {})",
                            markers(tree).join(", ")
                        ),
                    ));
                }
            }
        }
    }
    for ((kind, org, name), dirs) in found {
        let org = match org.as_deref() {
            Some("None") if !none_org_is_real(&dirs, &name) => {
                d.notes.push(format!(
                    "{}/None/{name}: Olah's directory for the no-org repo {name:?} (a Python None \
                     in the path); imported as {name:?}",
                    kind.api_plural()
                ));
                None
            }
            other => other.map(str::to_string),
        };
        match RepoId::from_segments(org.as_deref(), &name) {
            Ok(id) => d.repos.entry(Repo::new(kind, id)).or_default().merge(dirs),
            Err(e) => {
                let first = dirs
                    .files
                    .iter()
                    .chain(&dirs.api)
                    .chain(&dirs.heads)
                    .next()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                d.skipped.push((first, format!("not a valid repo: {e}")));
            }
        }
    }
    d
}

/// Olah before v9 wrote no-org repos under `None/{repo}`. Such a directory is taken as the
/// no-org repo unless one of its cached repo-info answers names `None/{repo}`.
fn none_org_is_real(dirs: &RepoDirs, name: &str) -> bool {
    let real = format!("None/{name}");
    for api in &dirs.api {
        let revision = api.join("revision");
        for rev in names(&revision) {
            let file = revision.join(rev).join("meta_get.json");
            if let Some(id) = metajson::read(&file)
                .ok()
                .and_then(|r| metajson::repo_info(&r).ok())
                .and_then(|info| info.id)
            {
                return id == real;
            }
        }
    }
    false
}

/// Resolves `path` (following symlinks) and checks it stays inside `root`.
pub fn confine(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let target = fs::canonicalize(path).map_err(|e| {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            format!("dangling symlink ({e})")
        } else {
            format!("cannot resolve: {e}")
        }
    })?;
    if !target.starts_with(root) {
        return Err(format!(
            "points outside the import directory (to {})",
            target.display()
        ));
    }
    Ok(target)
}

/// `base/rel` if it exists and resolves to a regular file inside `root`.
pub fn lookup_file(root: &Path, base: &Path, rel: &str) -> Option<PathBuf> {
    let path = base.join(rel);
    fs::symlink_metadata(&path).ok()?;
    let target = confine(root, &path).ok()?;
    target.is_file().then_some(target)
}

/// What a `resolve/{sha}/{path}` entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (Olah: the OLAH file itself).
    File,
    /// A symlink to a regular file inside the import directory (DingoSpeed: to `blobs/{etag}`).
    Link {
        /// The target's file name when it sits in a `blobs/` directory: DingoSpeed's etag.
        blob_name: Option<String>,
    },
    /// An Olah v9 cache directory.
    V9,
}

/// One file of one commit.
#[derive(Debug, Clone)]
pub struct ResolveEntry {
    pub commit: String,
    pub path: RepoPath,
    /// Where it was found (for reports).
    pub found_at: PathBuf,
    /// The cache data: the file, the symlink's resolved target, or the v9 directory.
    pub data: PathBuf,
    pub kind: EntryKind,
}

/// A directory holding an Olah v9 `meta.bin`.
fn is_v9_dir(dir: &Path) -> bool {
    olah::sniff(&dir.join("meta.bin"))
        .is_some_and(|b| b.len() >= 12 && &b[..4] == MAGIC && b[4..12] == VERSION_9.to_le_bytes())
}

/// Every file under `resolve_dir/{sha}/`.
pub fn walk_resolve(
    root: &Path,
    resolve_dir: &Path,
    skipped: &mut Vec<(String, String)>,
) -> Vec<ResolveEntry> {
    let mut out = Vec::new();
    for (commit, commit_dir) in entries(resolve_dir, skipped) {
        if !is_commit_sha(&commit) {
            skipped.push((
                commit_dir.display().to_string(),
                "not a commit sha directory (files are only imported per commit)".into(),
            ));
            continue;
        }
        if !is_real_dir(&commit_dir) {
            skipped.push((
                commit_dir.display().to_string(),
                "not a directory (symlinks are not followed)".into(),
            ));
            continue;
        }
        let mut stack = vec![(commit_dir, String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            for (name, path) in entries(&dir, skipped) {
                let rel_path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    skipped.push((path.display().to_string(), "cannot stat".into()));
                    continue;
                };
                let (data, kind) = if meta.file_type().is_symlink() {
                    match confine(root, &path) {
                        Ok(target) if target.is_file() => {
                            let blob_name = (target
                                .parent()
                                .and_then(Path::file_name)
                                .is_some_and(|p| p == "blobs"))
                            .then(|| target.file_name().and_then(|n| n.to_str()))
                            .flatten()
                            .map(str::to_string);
                            (target, EntryKind::Link { blob_name })
                        }
                        Ok(_) => {
                            skipped.push((
                                path.display().to_string(),
                                "symlink to something other than a regular file; not followed"
                                    .into(),
                            ));
                            continue;
                        }
                        Err(reason) => {
                            skipped.push((path.display().to_string(), reason));
                            continue;
                        }
                    }
                } else if meta.is_dir() {
                    if is_v9_dir(&path) {
                        (path.clone(), EntryKind::V9)
                    } else if depth + 1 >= MAX_DEPTH {
                        skipped.push((path.display().to_string(), "nested too deeply".into()));
                        continue;
                    } else {
                        stack.push((path, rel_path, depth + 1));
                        continue;
                    }
                } else if meta.is_file() {
                    (path.clone(), EntryKind::File)
                } else {
                    skipped.push((path.display().to_string(), "not a regular file".into()));
                    continue;
                };
                match RepoPath::new(&rel_path) {
                    Ok(repo_path) => out.push(ResolveEntry {
                        commit: commit.clone(),
                        path: repo_path,
                        found_at: path,
                        data,
                        kind,
                    }),
                    Err(e) => skipped.push((path.display().to_string(), e.to_string())),
                }
            }
        }
    }
    out
}

/// Content-named cache files: DingoSpeed's `blobs/{etag}` and Olah's `cdn/{sha256}`. Returns
/// `(etag, path)`; other entries are reported.
pub fn walk_named(dir: &Path, skipped: &mut Vec<(String, String)>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (name, path) in entries(dir, skipped) {
        if !is_hex_id(&name) {
            skipped.push((
                path.display().to_string(),
                "name is not a content hash; cannot be verified".into(),
            ));
        } else if is_real_file(&path) || (is_real_dir(&path) && is_v9_dir(&path)) {
            out.push((name.to_ascii_lowercase(), path));
        } else {
            skipped.push((
                path.display().to_string(),
                "not a regular file or Olah v9 directory (symlinks are not followed)".into(),
            ));
        }
    }
    out
}

/// The cached repo-info answers of a repo: `(revision, meta_get.json path)`, found under
/// `api_dir/revision/`. Revisions containing `/` are nested directories (Olah) or
/// percent-encoded names (DingoSpeed keeps the URL's encoding); both are accepted.
pub fn revision_metas(
    api_dir: &Path,
    skipped: &mut Vec<(String, String)>,
) -> Vec<(Revision, PathBuf)> {
    let base = api_dir.join("revision");
    let mut out = Vec::new();
    if !is_real_dir(&base) {
        return out;
    }
    let mut stack = vec![(base, String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        for (name, path) in entries(&dir, skipped) {
            let rel_name = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if is_real_dir(&path) {
                if depth < 8 {
                    stack.push((path, rel_name, depth + 1));
                }
                continue;
            }
            if name != "meta_get.json" || rel.is_empty() {
                continue;
            }
            let decoded = if rel.contains('%') {
                match percent_decode_str(&rel).decode_utf8() {
                    Ok(s) => s.into_owned(),
                    Err(_) => {
                        skipped.push((path.display().to_string(), "revision is not UTF-8".into()));
                        continue;
                    }
                }
            } else {
                rel.clone()
            };
            match Revision::new(&decoded) {
                Ok(rev) if is_real_file(&path) => out.push((rev, path)),
                Ok(_) => skipped.push((
                    path.display().to_string(),
                    "not a regular file (symlinks are not followed)".into(),
                )),
                Err(e) => skipped.push((path.display().to_string(), e.to_string())),
            }
        }
    }
    out.sort();
    out
}
