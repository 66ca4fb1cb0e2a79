//! Walking an Olah or DingoSpeed `repos` directory.
//!
//! ```text
//! repos/
//!   files/{type}/{org}/{repo}/          (no-org repos: files/{type}/{repo}/)
//!     resolve/{sha}/{path}     Olah 0.4/0.5: a cache directory (meta.bin, blocks/ ...)
//!                              Olah 0.1-0.3: the OLAH v8 cache file itself
//!                              DingoSpeed: a relative symlink to ../../…/blobs/{etag}
//!     blobs/{etag}             DingoSpeed: the OLAH v8 file, shared by every commit
//!     cdn/{sha256}             Olah: files fetched through its CDN-style route
//!   api/{type}/{org}/{repo}/
//!     revision/{rev}/meta_get.json           repo-info answer for a branch, tag or sha
//!     revision/{rev}/resolved_commit.json    Olah 0.5: where the branch or tag pointed
//!     paths-info/{sha}/{path}/paths-info_post.json   one file's paths-info answer
//! ```
//!
//! Everything else (Olah's `access/`, `lfs/`, tree and commit caches, DingoSpeed's
//! `daily_process/`) is not read. Sources: Olah 0.5.4 `olah/proxy/files.py`
//! (`file_get_generator`, `cdn_file_get_generator`), `olah/proxy/pathsinfo.py`,
//! `olah/utils/repo_utils.py`; DingoSpeed `internal/dao/file_dao.go`, `meta_dao.go` (see
//! `shared/notes/dingospeed-behaviour.md` §3).
//!
//! Safety: the walk never follows a symlinked directory, and a symlinked file is used only if
//! its fully resolved target lies inside the (canonical) import directory. Every repo id,
//! revision and path is validated with the `hf` types before it is used.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::report::Skipped;
use super::source::is_entry_dir;
use crate::hf::{is_commit_sha, Repo, RepoId, RepoPath, RepoType, Revision};

/// The top-level trees read.
pub const TREES: [&str; 2] = ["files", "api"];

/// Deepest directory nesting followed under `resolve/{sha}/` (paths are at most 4096 bytes).
const MAX_DEPTH: usize = 512;

/// Where a repo's data lives.
#[derive(Debug, Default, Clone)]
pub struct RepoDirs {
    pub files: Option<PathBuf>,
    pub api: Option<PathBuf>,
}

/// The repos found, and what was left out on the way.
#[derive(Debug, Default)]
pub struct Discovery {
    pub repos: BTreeMap<Repo, RepoDirs>,
    pub skipped: Vec<Skipped>,
}

fn skip(out: &mut Vec<Skipped>, path: &Path, reason: impl Into<String>) {
    out.push(Skipped {
        path: path.display().to_string(),
        reason: reason.into(),
    });
}

/// The `repos` directory to import: `dir` itself when it holds `files/` or `api/`, else
/// `dir/repos` when that does. Canonical (symlinks resolved).
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
fn entries(dir: &Path, skipped: &mut Vec<Skipped>) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        skip(skipped, dir, "cannot list directory");
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        match entry.file_name().into_string() {
            Ok(name) => out.push((name, path)),
            Err(_) => skip(skipped, &path, "name is not UTF-8"),
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

/// The directories that make a directory a repo directory in `tree`.
fn markers(tree: &str) -> &'static [&'static str] {
    match tree {
        "files" => &["resolve", "blobs", "cdn"],
        _ => &["revision", "paths-info", "tree", "commits", "refs"],
    }
}

/// Strict check, for telling a no-org repo `{type}/{repo}/` from an org `{type}/{org}/`:
/// the marker directory must hold what such a directory holds.
fn strict_marker(dir: &Path, marker: &str) -> bool {
    let m = dir.join(marker);
    if !is_real_dir(&m) {
        return false;
    }
    let children = names(&m);
    match marker {
        "resolve" | "paths-info" | "tree" | "commits" => children
            .iter()
            .any(|c| is_commit_sha(c) && is_real_dir(&m.join(c))),
        "blobs" | "cdn" => children.iter().any(|c| is_hex_id(c)),
        "revision" => children.iter().any(|c| {
            ["meta_get.json", "meta_head.json", "resolved_commit.json"]
                .iter()
                .any(|f| is_real_file(&m.join(c).join(f)))
        }),
        "refs" => is_real_file(&m.join("refs_get.json")),
        _ => false,
    }
}

/// Finds the repo directories of both trees under `root`.
pub fn discover(root: &Path) -> Discovery {
    let mut d = Discovery::default();
    for tree in TREES {
        let tree_dir = root.join(tree);
        if !is_real_dir(&tree_dir) {
            continue;
        }
        for (type_name, type_dir) in entries(&tree_dir, &mut d.skipped) {
            let Some(kind) = RepoType::from_plural(&type_name) else {
                skip(&mut d.skipped, &type_dir, "not a repo type directory");
                continue;
            };
            if !is_real_dir(&type_dir) {
                skip(
                    &mut d.skipped,
                    &type_dir,
                    "not a directory (symlinks are not followed)",
                );
                continue;
            }
            for (a, a_dir) in entries(&type_dir, &mut d.skipped) {
                discover_under(&mut d, tree, kind, &a, &a_dir);
            }
        }
    }
    d
}

/// `a_dir` = `{tree}/{type}/{a}`: the no-org repo `a`, or the org `a` holding repos.
fn discover_under(d: &mut Discovery, tree: &str, kind: RepoType, a: &str, a_dir: &Path) {
    if !is_real_dir(a_dir) {
        skip(
            &mut d.skipped,
            a_dir,
            "not a directory (symlinks are not followed)",
        );
        return;
    }
    if markers(tree).iter().any(|m| strict_marker(a_dir, m)) {
        add_repo(d, tree, kind, None, a, a_dir);
        return;
    }
    let mut any = false;
    for (b, b_dir) in entries(a_dir, &mut d.skipped) {
        if is_real_dir(&b_dir) && markers(tree).iter().any(|m| is_real_dir(&b_dir.join(m))) {
            any = true;
            add_repo(d, tree, kind, Some(a), &b, &b_dir);
        }
    }
    if !any {
        skip(
            &mut d.skipped,
            a_dir,
            format!(
                "no repository data found (expected {})",
                markers(tree).join(", ")
            ),
        );
    }
}

fn add_repo(
    d: &mut Discovery,
    tree: &str,
    kind: RepoType,
    org: Option<&str>,
    name: &str,
    dir: &Path,
) {
    if org == Some("None") {
        skip(
            &mut d.skipped,
            dir,
            "older Olah releases wrote repos without an organisation under None/ (a Python None \
             in the path); not imported, as it may also be an organisation called None: move \
             it up one level to import it",
        );
        return;
    }
    match RepoId::from_segments(org, name) {
        Ok(id) => {
            let dirs = d.repos.entry(Repo::new(kind, id)).or_default();
            let slot = if tree == "files" {
                &mut dirs.files
            } else {
                &mut dirs.api
            };
            *slot = Some(dir.to_path_buf());
        }
        Err(e) => skip(&mut d.skipped, dir, format!("not a valid repo: {e}")),
    }
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

/// What a `resolve/{sha}/{path}` entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A cache directory (Olah 0.4/0.5).
    Dir,
    /// A regular file (Olah before 0.4: the v8 cache file).
    File,
    /// A symlink to a regular file inside the import directory (DingoSpeed: to
    /// `blobs/{etag}`); `blob_name` is the target's name when it sits in a `blobs/` directory.
    Link { blob_name: Option<String> },
}

/// One file of one commit.
#[derive(Debug, Clone)]
pub struct ResolveEntry {
    pub commit: String,
    pub path: RepoPath,
    /// Where it was found (for reports).
    pub found_at: PathBuf,
    /// The cache data: the directory, the file, or the symlink's resolved target.
    pub data: PathBuf,
    pub kind: EntryKind,
}

/// Olah's lock file of a directory entry whose `meta.bin` is missing (a crash before the
/// header was written): an empty regular `meta.lock`.
fn is_headerless_entry(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join("meta.lock")).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Every commit directory under `resolve_dir`, validated.
fn commit_dirs(resolve_dir: &Path, skipped: &mut Vec<Skipped>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (commit, dir) in entries(resolve_dir, skipped) {
        if !is_commit_sha(&commit) {
            skip(
                skipped,
                &dir,
                "not a commit sha directory (files are only imported per commit)",
            );
        } else if !is_real_dir(&dir) {
            skip(skipped, &dir, "not a directory (symlinks are not followed)");
        } else {
            out.push((commit, dir));
        }
    }
    out
}

/// Every file under `resolve_dir/{sha}/`.
pub fn walk_resolve(
    root: &Path,
    resolve_dir: &Path,
    skipped: &mut Vec<Skipped>,
) -> Vec<ResolveEntry> {
    let mut out = Vec::new();
    for (commit, commit_dir) in commit_dirs(resolve_dir, skipped) {
        let mut stack = vec![(commit_dir, String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            for (name, path) in entries(&dir, skipped) {
                let rel_path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    skip(skipped, &path, "cannot stat");
                    continue;
                };
                let (data, kind) = if meta.file_type().is_symlink() {
                    match confine(root, &path) {
                        Ok(target) if target.is_file() => {
                            let blob_name = target
                                .parent()
                                .and_then(Path::file_name)
                                .filter(|p| *p == "blobs")
                                .and_then(|_| target.file_name())
                                .and_then(|n| n.to_str())
                                .map(str::to_string);
                            (target, EntryKind::Link { blob_name })
                        }
                        Ok(_) => {
                            skip(
                                skipped,
                                &path,
                                "symlink to something other than a regular file; not followed",
                            );
                            continue;
                        }
                        Err(reason) => {
                            skip(skipped, &path, reason);
                            continue;
                        }
                    }
                } else if meta.is_dir() {
                    if is_entry_dir(&path) || is_headerless_entry(&path) {
                        (path.clone(), EntryKind::Dir)
                    } else if depth + 1 >= MAX_DEPTH {
                        skip(skipped, &path, "nested too deeply");
                        continue;
                    } else {
                        stack.push((path, rel_path, depth + 1));
                        continue;
                    }
                } else if meta.is_file() {
                    (path.clone(), EntryKind::File)
                } else {
                    skip(skipped, &path, "not a regular file");
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
                    Err(e) => skip(skipped, &path, e.to_string()),
                }
            }
        }
    }
    out
}

/// Content-named cache entries: DingoSpeed's `blobs/{etag}` and Olah's `cdn/{sha256}`.
/// Returns `(etag, path)`; other entries are reported.
pub fn walk_named(dir: &Path, skipped: &mut Vec<Skipped>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (name, path) in entries(dir, skipped) {
        if !is_hex_id(&name) {
            skip(
                skipped,
                &path,
                "name is not a content hash; cannot be verified",
            );
        } else if is_real_file(&path) || (is_real_dir(&path) && is_entry_dir(&path)) {
            out.push((name.to_ascii_lowercase(), path));
        } else {
            skip(
                skipped,
                &path,
                "not a regular file or Olah cache directory (symlinks are not followed)",
            );
        }
    }
    out
}

/// The files of `api_dir/paths-info/`: `(commit, path, paths-info_post.json)`.
pub fn paths_infos(api_dir: &Path, skipped: &mut Vec<Skipped>) -> Vec<(String, RepoPath, PathBuf)> {
    let base = api_dir.join("paths-info");
    let mut out = Vec::new();
    if !is_real_dir(&base) {
        return out;
    }
    for (commit, commit_dir) in commit_dirs(&base, skipped) {
        let mut stack = vec![(commit_dir, String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            for (name, path) in entries(&dir, skipped) {
                if !is_real_dir(&path) || depth + 1 >= MAX_DEPTH {
                    continue;
                }
                let rel_path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let answer = path.join("paths-info_post.json");
                if is_real_file(&answer) {
                    match RepoPath::new(&rel_path) {
                        Ok(p) => out.push((commit.clone(), p, answer)),
                        Err(e) => skip(skipped, &answer, e.to_string()),
                    }
                }
                stack.push((path, rel_path, depth + 1));
            }
        }
    }
    out.sort();
    out
}

/// The cached paths-info answer for one file, if there is one (a regular file, reached
/// without leaving `root`).
pub fn paths_info_for(
    root: &Path,
    api_dir: &Path,
    commit: &str,
    path: &RepoPath,
) -> Option<PathBuf> {
    let file = api_dir
        .join("paths-info")
        .join(commit)
        .join(path.as_str())
        .join("paths-info_post.json");
    if !is_real_file(&file) {
        return None;
    }
    confine(root, &file).ok().filter(|target| *target == file)
}

/// What a `revision/{rev}/` directory holds.
#[derive(Debug, Clone, Default)]
pub struct RevisionFiles {
    /// `meta_get.json`: the repo-info answer.
    pub info: Option<PathBuf>,
    /// `resolved_commit.json` (Olah 0.5).
    pub resolved: Option<PathBuf>,
}

/// The revision directories of `api_dir/revision/`, by revision name.
pub fn revisions(api_dir: &Path, skipped: &mut Vec<Skipped>) -> Vec<(Revision, RevisionFiles)> {
    let base = api_dir.join("revision");
    let mut out = Vec::new();
    if !is_real_dir(&base) {
        return out;
    }
    for (name, dir) in entries(&base, skipped) {
        if !is_real_dir(&dir) {
            skip(skipped, &dir, "not a directory (symlinks are not followed)");
            continue;
        }
        let file = |n: &str| Some(dir.join(n)).filter(|p| is_real_file(p));
        let files = RevisionFiles {
            info: file("meta_get.json"),
            resolved: file("resolved_commit.json"),
        };
        if files.info.is_none() && files.resolved.is_none() {
            continue;
        }
        match Revision::new(&name) {
            Ok(rev) => out.push((rev, files)),
            Err(e) => skip(skipped, &dir, e.to_string()),
        }
    }
    out
}
