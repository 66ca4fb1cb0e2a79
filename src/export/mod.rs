//! `hubcache export REPO --to DIR`: writes one revision of a repo into `DIR` in the exact
//! layout of the huggingface_hub cache, so containers can mount it read-only with
//! `HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1` (layout in [`layout`]; the reading side is
//! `hubcache cache import --hf-cache`, [`crate::import::import_hf_cache_blocking`]).
//!
//! - The files are those the repo info lists at the commit (`siblings`); offline without a
//!   cached repo info, those whose metadata the mirror cached at that commit.
//! - Each file's bytes come from the mirror's cache: reflinked where the filesystem can
//!   (`FICLONERANGE`), else copied in the kernel (`copy_file_range`), else copied
//!   ([`reflink`]). What is not cached completely is fetched through the upstream chain
//!   exactly as a client download would (and cached on the way); offline, it is reported.
//! - Every blob written is hashed against its id (sha256 or git blob sha1) before it is
//!   renamed into place; a blob already in `DIR` (an earlier export of another revision) is
//!   hashed too and shared, not copied again.
//! - `snapshots/{commit}/{path}` are relative symlinks into `blobs/`; `refs/{revision}` is
//!   written for a branch or tag. Directories are created without following any symlink.

pub mod layout;
pub mod reflink;
mod report;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::app::App;
use crate::config::plugins::glob_match;
use crate::fetch::{BlobSource, FetchError};
use crate::hf::{Repo, RepoPath, Revision};
use crate::import::ContentHasher;
use crate::meta::FileMeta;
use crate::store::BlobId;

pub use reflink::CopyMethod;
pub use report::{ExportCounts, ExportOutcome, ExportReport, ExportedFile};

/// Read size when streaming a file through the fill engine.
const READ_CHUNK: usize = 1 << 20;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub repo: Repo,
    pub revision: Revision,
    /// huggingface_hub's `allow_patterns`: fnmatch-style, `*` also matches `/`; a pattern
    /// ending in `/` matches everything below.
    pub include: Vec<String>,
    /// `ignore_patterns`, likewise.
    pub exclude: Vec<String>,
    /// The cache directory (what `HF_HUB_CACHE` will name).
    pub to: PathBuf,
    /// The `Authorization` value to read gated or private repos with (`Bearer hf_…`), as a
    /// client's request would carry it.
    pub auth: Option<String>,
}

/// Why an export could not start or go on (a single file that fails is in the report).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{repo}: cannot resolve revision {revision}: {reason}")]
    Resolve {
        repo: String,
        revision: String,
        reason: String,
    },
    #[error("{repo}@{commit}: cannot list the files: {reason}")]
    List {
        repo: String,
        commit: String,
        reason: String,
    },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { path, op, source }
}

/// Whether `path` is selected by huggingface_hub's pattern rules.
pub fn selected(path: &str, include: &[String], exclude: &[String]) -> bool {
    let matches = |pattern: &String| {
        let pattern = if pattern.ends_with('/') {
            format!("{pattern}*")
        } else {
            pattern.clone()
        };
        glob_match(pattern.as_bytes(), path.as_bytes())
    };
    (include.is_empty() || include.iter().any(matches)) && !exclude.iter().any(matches)
}

/// Exports `request` from `app`'s cache (fetching what is missing unless offline).
pub async fn export(app: &App, request: &ExportRequest) -> Result<ExportReport, ExportError> {
    let repo = &request.repo;
    let commit = app
        .meta
        .commit_for(repo, Some(&request.revision), request.auth.as_deref())
        .await
        .map_err(|e| ExportError::Resolve {
            repo: repo.to_string(),
            revision: request.revision.to_string(),
            reason: e.to_string(),
        })?;
    let all = list_files(app, repo, &commit, request.auth.as_deref()).await?;
    let total = all.len();
    let paths: Vec<String> = all
        .into_iter()
        .filter(|p| selected(p, &request.include, &request.exclude))
        .collect();
    fs::create_dir_all(&request.to).map_err(io_err(&request.to, "create"))?;
    let folder = layout::make_dirs(&request.to, Path::new(&layout::folder_name(repo)))
        .map_err(io_err(&request.to, "create the repo folder"))?;
    let mut exporter = Exporter {
        app,
        repo,
        commit: commit.clone(),
        folder: folder.clone(),
        auth: request.auth.clone(),
    };
    let mut report = ExportReport {
        repo: repo.to_string(),
        revision: request.revision.to_string(),
        commit: commit.clone(),
        folder,
        filtered_out: total - paths.len(),
        ..ExportReport::default()
    };
    for path in paths {
        report.files.push(exporter.export_path(&path).await);
    }
    if !request.revision.is_commit() {
        exporter.write_ref(&request.revision)?;
        report.ref_written = Some(request.revision.to_string());
    }
    app.meta.flush();
    Ok(report)
}

/// The repo's files at `commit`: the repo info's `siblings`, else (offline, no repo info
/// cached) the files whose metadata is cached.
async fn list_files(
    app: &App,
    repo: &Repo,
    commit: &str,
    auth: Option<&str>,
) -> Result<Vec<String>, ExportError> {
    let list_err = |reason: String| ExportError::List {
        repo: repo.to_string(),
        commit: commit.to_string(),
        reason,
    };
    let rev = Revision::new(commit).map_err(|e| list_err(e.to_string()))?;
    let info = app.meta.repo_info(repo, Some(&rev), None, auth).await;
    let from_info = match &info {
        Ok(answer) => siblings(&answer.body),
        Err(_) => None,
    };
    if let Some(paths) = from_info {
        return Ok(paths);
    }
    let meta = app.meta.clone();
    let (r, c) = (repo.clone(), commit.to_string());
    let cached = tokio::task::spawn_blocking(move || meta.cached_files_blocking(&r, &c))
        .await
        .map_err(|e| list_err(e.to_string()))?;
    if cached.is_empty() {
        let reason = match info {
            Err(e) => format!("no repo info ({e}) and no cached file metadata"),
            Ok(_) => "the repo info lists no files and no file metadata is cached".into(),
        };
        return Err(list_err(reason));
    }
    Ok(cached.into_iter().map(|m| m.path).collect())
}

/// `siblings[].rfilename` of a repo-info answer.
fn siblings(body: &[u8]) -> Option<Vec<String>> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let list = json.get("siblings")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|s| s.get("rfilename")?.as_str().map(str::to_string))
            .collect(),
    )
}

struct Exporter<'a> {
    app: &'a App,
    repo: &'a Repo,
    commit: String,
    /// `DIR/models--org--name`.
    folder: PathBuf,
    auth: Option<String>,
}

impl Exporter<'_> {
    async fn export_path(&mut self, path: &str) -> ExportedFile {
        let mut line = ExportedFile {
            path: path.to_string(),
            size: 0,
            blob: String::new(),
            outcome: ExportOutcome::Shared,
        };
        match self.export_file(path, &mut line).await {
            Ok(outcome) => line.outcome = outcome,
            Err(reason) => {
                log::warn!("export: {}@{} {path}: {reason}", self.repo, self.commit);
                line.outcome = ExportOutcome::Failed { reason };
            }
        }
        line
    }

    async fn export_file(
        &mut self,
        path: &str,
        line: &mut ExportedFile,
    ) -> Result<ExportOutcome, String> {
        let repo_path = RepoPath::new(path).map_err(|e| e.to_string())?;
        let meta = self
            .app
            .meta
            .file_at(self.repo, &self.commit, &repo_path, self.auth.as_deref())
            .await
            .map_err(|e| {
                if self.app.settings().config.offline {
                    format!("not cached, and hubcache is offline (`offline: true`): {e}")
                } else {
                    format!("no metadata: {e}")
                }
            })?;
        line.size = meta.size;
        line.blob = meta.etag.clone();
        if !layout::safe_blob_name(&meta.etag) {
            return Err(format!("etag {:?} cannot be a file name", meta.etag));
        }
        let id = BlobId::parse(&meta.blob).map_err(|e| e.to_string())?;
        let blobs =
            layout::make_dirs(&self.folder, Path::new("blobs")).map_err(|e| e.to_string())?;
        let blob_path = blobs.join(&meta.etag);
        let outcome = if self.existing_blob_ok(&blob_path, &id, &meta).await? {
            ExportOutcome::Shared
        } else {
            self.write_blob(&blob_path, &id, &meta, &repo_path).await?
        };
        self.link(&repo_path, &meta.etag)
            .map_err(|e| format!("cannot link the snapshot entry: {e}"))?;
        Ok(outcome)
    }

    /// Whether `DIR` already holds this blob intact (an earlier export). A damaged one is
    /// removed and written again.
    async fn existing_blob_ok(
        &self,
        blob_path: &Path,
        id: &BlobId,
        meta: &FileMeta,
    ) -> Result<bool, String> {
        let Ok(found) = fs::symlink_metadata(blob_path) else {
            return Ok(false);
        };
        if !found.is_file() {
            return Err(format!(
                "{} exists and is not a regular file",
                blob_path.display()
            ));
        }
        let (p, id2, m) = (blob_path.to_path_buf(), id.clone(), meta.clone());
        let ok = tokio::task::spawn_blocking(move || check_file(&p, &id2, &m).is_ok())
            .await
            .map_err(|e| e.to_string())?;
        if !ok {
            log::warn!(
                "export: {} does not match {id}; writing it again",
                blob_path.display()
            );
            fs::remove_file(blob_path).map_err(|e| e.to_string())?;
        }
        Ok(ok)
    }

    /// Writes `blobs/{etag}` through `{etag}.incomplete`: from the cache, else through the
    /// fill engine.
    async fn write_blob(
        &self,
        blob_path: &Path,
        id: &BlobId,
        meta: &FileMeta,
        repo_path: &RepoPath,
    ) -> Result<ExportOutcome, String> {
        let tmp = blob_path.with_file_name(format!("{}.incomplete", meta.etag));
        if meta.size == 0 {
            // Nothing to read or fetch: the content is known.
            create_tmp(&tmp)?;
            check_file(&tmp, id, meta)?;
            fs::rename(&tmp, blob_path).map_err(|e| format!("cannot rename into place: {e}"))?;
            return Ok(ExportOutcome::Copied {
                method: CopyMethod::ReadWrite,
            });
        }
        let store = self.app.store.clone();
        let (t, id2, m) = (tmp.clone(), id.clone(), meta.clone());
        let copied = tokio::task::spawn_blocking(move || copy_from_store(&store, &t, &id2, &m))
            .await
            .map_err(|e| e.to_string())?;
        let outcome = match copied {
            Ok(Some(method)) => ExportOutcome::Copied { method },
            Ok(None) => {
                self.stream_blob(&tmp, id, meta, repo_path).await?;
                ExportOutcome::Fetched
            }
            Err(reason) => {
                log::warn!("export: the cached copy of {id} failed ({reason}); reading it again");
                self.stream_blob(&tmp, id, meta, repo_path).await?;
                ExportOutcome::Fetched
            }
        };
        fs::rename(&tmp, blob_path).map_err(|e| format!("cannot rename into place: {e}"))?;
        Ok(outcome)
    }

    /// Reads the file through the fill engine (cached blocks from disk, checked; missing ones
    /// from the upstream chain unless offline) into `tmp`, hashing it.
    async fn stream_blob(
        &self,
        tmp: &Path,
        id: &BlobId,
        meta: &FileMeta,
        repo_path: &RepoPath,
    ) -> Result<(), String> {
        let offline = self.app.settings().config.offline;
        // Public files are fetched without the token, as for a client download.
        let auth = if self.app.meta.files_public(self.repo).await {
            None
        } else {
            self.auth.clone()
        };
        let source = (!offline).then(|| BlobSource {
            repo: self.repo.clone(),
            commit: self.commit.clone(),
            path: repo_path.clone(),
            auth,
            size: meta.size,
            verifiable: meta.verifiable,
        });
        let file = create_tmp(tmp)?;
        let mut hasher = ContentHasher::new(id, meta.size);
        // The fill is opened here (not by the reader) so that the export can wait for the
        // blob to be committed to the cache before the process exits.
        let fill = match &source {
            Some(source) => self.app.fill.open(id, source.clone()).await.ok(),
            None => self.app.fill.open_cached(id).await.ok().flatten(),
        };
        let mut reader = self
            .app
            .fill
            .reader(id.clone(), meta.size, source, fill.clone());
        let mut written = 0u64;
        loop {
            let chunk = match reader.next(READ_CHUNK).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    let _ = fs::remove_file(tmp);
                    return Err(fetch_reason(&e, offline));
                }
            };
            hasher.update(&chunk);
            use std::os::unix::fs::FileExt;
            file.write_all_at(&chunk, written)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            written += chunk.len() as u64;
        }
        let hash = hasher.finish();
        if written != meta.size || (meta.verifiable && hash != id.as_str()) {
            let _ = fs::remove_file(tmp);
            return Err(format!(
                "the bytes read ({written} B, hash {hash}) do not match the file ({} B, {id})",
                meta.size
            ));
        }
        if let Some(fill) = fill.filter(|_| !offline) {
            wait_cached(&fill).await;
        }
        Ok(())
    }

    /// `snapshots/{commit}/{path}` -> `../../blobs/{etag}` (replacing a different link).
    fn link(&self, repo_path: &RepoPath, etag: &str) -> io::Result<()> {
        let rel = Path::new("snapshots")
            .join(&self.commit)
            .join(repo_path.as_str());
        let parent = rel.parent().unwrap_or(Path::new("snapshots"));
        let dir = layout::make_dirs(&self.folder, parent)?;
        let entry = dir.join(repo_path.file_name());
        let target = layout::snapshot_target(repo_path.as_str(), etag);
        match fs::symlink_metadata(&entry) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if fs::read_link(&entry)? == target {
                    return Ok(());
                }
                fs::remove_file(&entry)?;
            }
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a symlink",
                    entry.display()
                )))
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &entry)
    }

    fn write_ref(&self, revision: &Revision) -> Result<(), ExportError> {
        let rel = Path::new("refs").join(revision.as_str());
        let parent = rel.parent().unwrap_or(Path::new("refs"));
        let dir = layout::make_dirs(&self.folder, parent).map_err(io_err(&self.folder, "refs"))?;
        let name = rel.file_name().unwrap_or_default();
        let file = dir.join(name);
        let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
        // A stale temporary file (or a symlink planted there) is removed, never followed.
        let _ = fs::remove_file(&tmp);
        let mut out = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create"))?;
        io::Write::write_all(&mut out, self.commit.as_bytes()).map_err(io_err(&tmp, "write"))?;
        fs::rename(&tmp, &file).map_err(io_err(&file, "rename"))
    }
}

/// Waits (bounded) until a fill the export drove has committed every block, so the mirror's
/// cache keeps what was fetched.
async fn wait_cached(fill: &crate::fetch::BlobFill) {
    const POLL: std::time::Duration = std::time::Duration::from_millis(20);
    const POLLS: u32 = 1500;
    for _ in 0..POLLS {
        if fill.is_complete() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    log::warn!(
        "export: {} is exported but not yet complete in the cache",
        fill.id()
    );
}

fn fetch_reason(e: &FetchError, offline: bool) -> String {
    if offline && matches!(e, FetchError::NotCached { .. }) {
        "not cached, and hubcache is offline (`offline: true`)".into()
    } else {
        format!("cannot read it through the mirror: {e}")
    }
}

/// A new empty `tmp` (a stale one from an interrupted export is replaced).
fn create_tmp(tmp: &Path) -> Result<File, String> {
    let _ = fs::remove_file(tmp);
    File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))
}

/// Copies the cached blob's content into `tmp` and checks it. `Ok(None)`: not completely
/// cached. `Err`: the copy failed or did not match (tmp removed).
fn copy_from_store(
    store: &crate::store::Store,
    tmp: &Path,
    id: &BlobId,
    meta: &FileMeta,
) -> Result<Option<CopyMethod>, String> {
    let blob = match store.open_blob(id) {
        Ok(Some(blob)) if blob.is_complete() && blob.size() == meta.size => blob,
        Ok(_) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let src = File::open(blob.path()).map_err(|e| e.to_string())?;
    let dst = create_tmp(tmp)?;
    let result = reflink::copy_range(&src, blob.layout().data_offset(), meta.size, &dst)
        .map_err(|e| e.to_string())
        .and_then(|method| check_file(tmp, id, meta).map(|()| method));
    drop(blob);
    match result {
        Ok(method) => Ok(Some(method)),
        Err(e) => {
            let _ = fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Checks a file in the export directory: its size and (for a content-addressed blob) its
/// hash.
fn check_file(path: &Path, id: &BlobId, meta: &FileMeta) -> Result<(), String> {
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != meta.size {
        return Err(format!("{len} bytes, the file has {}", meta.size));
    }
    if !meta.verifiable {
        return Ok(());
    }
    let mut hasher = ContentHasher::new(id, meta.size);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hash = hasher.finish();
    if hash != id.as_str() {
        return Err(format!("hashes to {hash}, not {id}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
