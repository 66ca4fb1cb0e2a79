//! Importing an existing Olah or DingoSpeed cache (`hubcache cache import --olah DIR`), so
//! users switching to hubcache do not download everything again.
//!
//! `DIR` is the `repos` directory of either mirror (or its parent). What is read:
//!
//! - **File bytes**: the OLAH cache files ([`olah`]: v8 single files with a presence bitmap,
//!   as DingoSpeed and Olah before its v9 format write them, and Olah's current v9 directories with one
//!   optionally gzip-compressed file per block), found under `files/{type}/{repo}/resolve/{sha}/{path}`
//!   (Olah: the cache file itself; DingoSpeed: a symlink to `blobs/{etag}`), plus
//!   DingoSpeed's `blobs/{etag}` and Olah's `cdn/{sha256}` even when nothing links to them
//!   (they are stored by content id, so later requests for the same content find them).
//! - **Which content a path has**: the etag, from the symlink target's name (DingoSpeed), the
//!   cached `paths-info` answer (`api/…/paths-info/{sha}/{path}/paths-info_post.json`: the LFS
//!   sha256, else the git blob oid) or Olah's cached resolve `HEAD` answer
//!   (`heads/…/resolve/{sha}/{path}`: `x-linked-etag`/`etag`). When several say something,
//!   they must agree.
//! - **Revisions**: `api/{type}/{repo}/revision/{rev}/meta_get.json`, the cached repo-info
//!   answer (hex body in a JSON envelope, see [`metajson`]): a branch or tag name gives a
//!   `rev -> sha` mapping (`main` also maps the default revision, as both mirrors treat it),
//!   and the answer itself is recorded for its sha, which also tells hubcache whether the repo
//!   is private or gated (needed before anything is served offline).
//!
//! **Nothing unverifiable is trusted.** Neither mirror keeps checksums (a set bit in Olah's
//! bitmap is written without `fsync`, after the data, and is the only evidence a block is
//! there), so:
//! - only *complete* files are imported: a file with blocks missing is left out and reported,
//!   because its present blocks cannot be checked against anything (the content hash covers
//!   the whole file) and importing them would give unverified bytes fresh, trustworthy-looking
//!   block checksums;
//! - a complete file is imported only if its etag is a content hash (64-hex sha256 for LFS
//!   files, 40-hex git blob sha1 otherwise); other etags are left out and reported;
//! - the content is hashed *while* it is copied, before any block is committed: blocks are
//!   written but become present only when the whole content matched its id, so a file that
//!   does not match never shows up in the store, not even briefly; after committing, the
//!   store copy is verified again ([`BlobFile::verify_content`], which also checks every
//!   page's CRC) and marked verified; a mismatch there removes the blob;
//! - only then are the `(repo, sha, path)` metadata entries of the file recorded.
//!
//! Memory is bounded: content streams through one 1 MiB buffer (for gzip-compressed v9 blocks,
//! plus the output of one 16 KiB input chunk); the page checksums of the blocks written, 4
//! bytes per MiB, are kept until the hash is known. Cached `paths-info` and `HEAD` answers are
//! only read for etags and sizes, not imported as API answers (hubcache asks for those again).
//!
//! **Layout differences** handled (see [`layout`]): Olah keeps each file under `resolve/{sha}/`
//! as its own cache file and has a `heads/` tree of resolve `HEAD` answers; DingoSpeed keeps
//! one `blobs/{etag}` per repo and symlinks `resolve/{sha}/{path}` to it, and has no `heads/`.
//! Olah before v9 wrote no-org repos under `None/{repo}`; DingoSpeed and Olah v9 under
//! `{repo}`. DingoSpeed keeps the percent-encoding of revision names (`refs%2Fpr%2F1`), Olah
//! nests them (`refs/pr/1/`). Olah stores API bodies as received (possibly gzip or brotli
//! compressed, with the `content-encoding` header kept); they are decoded.
//!
//! Known limitation: DingoSpeed writes the repo info of *any* revision to `revision/main/` when
//! that file does not exist yet, so its `main` mapping can be wrong; nothing in the cache tells
//! the cases apart. Online, hubcache re-checks mappings after `revision_ttl`; offline, such a
//! `main` serves the commit DingoSpeed last recorded, as DingoSpeed itself did.
//!
//! Running the import while a hubcache server uses the same cache is safe (never a wrong byte
//! served: blocks only become present after the hash check, and a block the server committed
//! meanwhile and the import overwrote with identical bytes stays valid), but it is meant to be
//! run before switching over.

mod layout;
mod metajson;
mod olah;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::hf::{Repo, RepoPath};
use crate::meta::{FileMeta, Meta};
use crate::store::{BlobFile, BlobId, ContentCheck, Store, StoreError};

use layout::{EntryKind, RepoDirs, ResolveEntry};
use metajson::FileClaim;
use olah::{OlahSource, StreamError};

/// The git blob sha1 of empty content.
const EMPTY_GIT_SHA1: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
/// The sha256 of empty content.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What an import did.
#[derive(Debug, Default, Clone)]
pub struct ImportReport {
    /// The `repos` directory imported (canonical).
    pub root: PathBuf,
    /// Repositories found.
    pub repos: usize,
    /// `(repo, commit, path)` file entries recorded in the metadata.
    pub files_imported: usize,
    /// Distinct blobs copied into the store and verified.
    pub blobs_imported: usize,
    /// Blobs that were already complete and verified in the store (nothing copied).
    pub blobs_already_present: usize,
    /// Content bytes written into the store.
    pub bytes_imported: u64,
    /// Store blocks written (in hubcache's block size, `cache.block_size`).
    pub blocks_imported: u64,
    /// Branch or tag → commit mappings recorded.
    pub revisions: usize,
    /// Repo-info answers recorded (one per repo and commit).
    pub repo_infos: usize,
    /// Every file found under a `resolve/{sha}/` tree, and what happened to it.
    pub files: Vec<FileReport>,
    /// Everything left out, as `(path in the import directory, reason)`: files, blobs and
    /// metadata files.
    pub skipped: Vec<(String, String)>,
    /// Things worth knowing that are not failures (layout quirks, repos whose files need an
    /// upstream check before they are served).
    pub notes: Vec<String>,
}

/// One file of one commit of one repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// `models/org/name` form.
    pub repo: String,
    pub commit: String,
    pub path: String,
    /// Where it was found in the import directory.
    pub source: String,
    pub outcome: FileOutcome,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Recorded; its bytes are the verified blob `blob` (copied now or already in the store).
    Imported { blob: String, size: u64 },
    /// Left out.
    Skipped { reason: String },
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "imported from {}", self.root.display())?;
        writeln!(
            f,
            "  {} repos, {} files recorded, {} revisions, {} repo-info answers",
            self.repos, self.files_imported, self.revisions, self.repo_infos
        )?;
        writeln!(
            f,
            "  {} blobs copied and verified ({} bytes in {} blocks), {} already in the store",
            self.blobs_imported,
            self.bytes_imported,
            self.blocks_imported,
            self.blobs_already_present
        )?;
        writeln!(f, "  {} left out", self.skipped.len())?;
        for (path, reason) in &self.skipped {
            writeln!(f, "    skipped {path}: {reason}")?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

/// Why an import stopped. Malformed or unverifiable input never ends up here (it is reported
/// in [`ImportReport::skipped`]); these are the failures that make going on pointless.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot open the import directory: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: no Olah or DingoSpeed cache here (expected files/, api/ or heads/, directly or \
         under repos/)"
    )]
    NotACache { path: PathBuf },
    /// The hubcache store failed (disk full, unusable root, I/O error) while importing `path`.
    #[error("{path}: the hubcache store failed ({op}): {source}")]
    Store {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("the import task failed: {0}")]
    Task(String),
}

/// Imports the Olah or DingoSpeed cache at `dir` into `app`'s store and metadata.
///
/// The work is blocking file I/O; it runs on tokio's blocking pool (`spawn_blocking`), so call
/// this from within a tokio runtime. It can take long: it reads every cached byte once.
pub async fn import_olah(app: &App, dir: &Path) -> Result<ImportReport, ImportError> {
    let store = Arc::clone(&app.store);
    let meta = app.meta.clone();
    let block_size = app.config.cache.block_size;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || import_olah_blocking(&store, &meta, block_size, &dir))
        .await
        .map_err(|e| ImportError::Task(e.to_string()))?
}

/// [`import_olah`] for callers that are not async (or already on a blocking thread): new
/// blobs get `block_size` (a valid `cache.block_size`).
pub fn import_olah_blocking(
    store: &Store,
    meta: &Meta,
    block_size: u64,
    dir: &Path,
) -> Result<ImportReport, ImportError> {
    let root = match layout::locate_root(dir) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(ImportError::NotACache {
                path: dir.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(ImportError::Open {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    log::info!("import: reading {}", root.display());
    let importer = Importer {
        store,
        meta,
        block_size,
        report: ImportReport {
            root: root.clone(),
            ..ImportReport::default()
        },
        root,
        repo_infos: BTreeMap::new(),
    };
    importer.run()
}

/// One `(repo, commit, path)` that wants a blob.
#[derive(Debug)]
struct FileRef {
    repo: Repo,
    commit: String,
    path: RepoPath,
    found_at: String,
    size: Option<u64>,
}

/// Everything known about one blob id: where copies may be read, and who refers to it.
#[derive(Debug, Default)]
struct Group {
    /// `(cache data path, display)`, deduplicated by path.
    sources: Vec<(PathBuf, String)>,
    refs: Vec<FileRef>,
}

impl Group {
    fn add_source(&mut self, data: PathBuf, display: String) {
        if !self.sources.iter().any(|(p, _)| *p == data) {
            self.sources.push((data, display));
        }
    }
}

/// Visibility learned from a repo's imported repo-info answers: `(private, gated)`.
type Visibility = (bool, bool);

struct Importer<'a> {
    store: &'a Store,
    meta: &'a Meta,
    block_size: u64,
    root: PathBuf,
    report: ImportReport,
    repo_infos: BTreeMap<Repo, Visibility>,
}

/// The result of copying one source into a blob.
struct Copied {
    /// Blocks written, with their page checksums (committed only if the hash matches).
    written: Vec<(u64, Vec<u32>)>,
    bytes: u64,
    /// Lower-case hex of the content hash, of the id's kind.
    actual: String,
}

enum ContentHasher {
    Sha256(Sha256),
    Sha1(Sha1),
}

impl ContentHasher {
    fn new(id: &BlobId, size: u64) -> Self {
        if id.is_sha256() {
            ContentHasher::Sha256(Sha256::new())
        } else {
            let mut h = Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            ContentHasher::Sha1(h)
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Sha256(h) => h.update(data),
            ContentHasher::Sha1(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            ContentHasher::Sha256(h) => hex::encode(h.finalize()),
            ContentHasher::Sha1(h) => hex::encode(h.finalize()),
        }
    }
}

/// Streams `src` into `file`: writes (without committing) every block not already present,
/// computing its page checksums, and hashes the whole content.
fn copy_and_hash(
    file: &BlobFile,
    id: &BlobId,
    src: &OlahSource,
) -> Result<Copied, StreamError<StoreError>> {
    let size = file.size();
    let blocks = file.block_count();
    let mut hasher = ContentHasher::new(id, size);
    let mut written = Vec::new();
    let mut bytes = 0u64;
    let mut pos = 0u64;
    let mut block = 0u64;
    let mut current = match blocks {
        0 => None,
        _ if file.is_present(0) => None,
        _ => Some(file.checksummer(0).map_err(StreamError::Sink)?),
    };
    let mut sink = |chunk: &[u8]| -> Result<(), StoreError> {
        hasher.update(chunk);
        let mut rest = chunk;
        while !rest.is_empty() {
            if block >= blocks {
                return Err(StoreError::OutOfRange {
                    path: file.path().to_path_buf(),
                    op: "import",
                    offset: pos,
                    len: rest.len() as u64,
                    size,
                });
            }
            let span = file.block_span(block);
            let take = ((span.end - pos) as usize).min(rest.len());
            let (part, tail) = rest.split_at(take);
            if let Some(sum) = current.as_mut() {
                file.write_data(pos, part)?;
                sum.update(part);
            }
            pos += take as u64;
            rest = tail;
            if pos == span.end {
                if let Some(sum) = current.take() {
                    written.push((block, sum.finish()?));
                    bytes += span.end - span.start;
                }
                block += 1;
                if block < blocks && !file.is_present(block) {
                    current = Some(file.checksummer(block)?);
                }
            }
        }
        Ok(())
    };
    src.stream(&mut sink)?;
    if pos != size {
        return Err(StreamError::Source(olah::OlahError::Invalid(format!(
            "streamed {pos} bytes of {size}"
        ))));
    }
    Ok(Copied {
        written,
        bytes,
        actual: hasher.finish(),
    })
}

impl Importer<'_> {
    fn run(mut self) -> Result<ImportReport, ImportError> {
        let discovery = layout::discover(&self.root);
        self.report.skipped.extend(discovery.skipped);
        self.report.notes.extend(discovery.notes);
        self.report.repos = discovery.repos.len();
        for (repo, dirs) in &discovery.repos {
            self.import_revisions(repo, dirs);
        }
        let mut groups: BTreeMap<BlobId, Group> = BTreeMap::new();
        for (repo, dirs) in &discovery.repos {
            self.collect_files(repo, dirs, &mut groups);
        }
        for (id, group) in groups {
            self.import_group(id, group)?;
        }
        self.visibility_notes();
        log::info!(
            "import: {} files recorded, {} blobs copied ({} bytes), {} left out",
            self.report.files_imported,
            self.report.blobs_imported,
            self.report.bytes_imported,
            self.report.skipped.len()
        );
        Ok(self.report)
    }

    fn skip(&mut self, path: impl fmt::Display, reason: impl Into<String>) {
        let reason = reason.into();
        log::warn!("import: skipped {path}: {reason}");
        self.report.skipped.push((path.to_string(), reason));
    }

    // ---- revisions and repo info ----

    fn import_revisions(&mut self, repo: &Repo, dirs: &RepoDirs) {
        let mut infos_done = BTreeSet::new();
        for api in &dirs.api {
            let mut skipped = Vec::new();
            let metas = layout::revision_metas(api, &mut skipped);
            for (path, reason) in skipped {
                self.skip(path, reason);
            }
            for (rev, file) in metas {
                let shown = file.display().to_string();
                let info = match metajson::read(&file).and_then(|r| metajson::repo_info(&r)) {
                    Ok(info) => info,
                    Err(reason) => {
                        self.skip(shown, reason);
                        continue;
                    }
                };
                if let Some(id) = &info.id {
                    if !id.eq_ignore_ascii_case(repo.id.as_str()) {
                        self.report.notes.push(format!(
                            "{shown}: the answer names repo {id:?} (renamed?); recorded for {repo}"
                        ));
                    }
                }
                let sha = info.summary.sha.clone();
                if rev.is_commit() {
                    if rev.as_str() != sha {
                        self.skip(shown, format!("answer is for commit {sha}, not {rev}"));
                        continue;
                    }
                } else {
                    self.meta.import_revision(repo, rev.as_str(), &sha);
                    self.report.revisions += 1;
                    if rev.as_str() == "main" {
                        // Both mirrors answer "no revision" with main.
                        self.meta.import_revision(repo, "", &sha);
                    }
                }
                if infos_done.insert(sha.clone()) {
                    match self.meta.import_repo_info(repo, &sha, &info.body) {
                        Ok(()) => {
                            self.report.repo_infos += 1;
                            self.repo_infos.insert(
                                repo.clone(),
                                (info.summary.private, info.summary.gated.is_gated()),
                            );
                        }
                        Err(e) => self.skip(shown, e.to_string()),
                    }
                }
            }
        }
    }

    fn visibility_notes(&mut self) {
        let with_files: BTreeSet<&str> = self
            .report
            .files
            .iter()
            .filter(|f| matches!(f.outcome, FileOutcome::Imported { .. }))
            .map(|f| f.repo.as_str())
            .collect();
        let mut notes = Vec::new();
        for repo in with_files {
            match self.repo_infos.iter().find(|(r, _)| r.to_string() == repo) {
                None => notes.push(format!(
                    "{repo}: no cached repo info, so its visibility is unknown: its files are \
                     served once an upstream confirms access (not while offline)"
                )),
                Some((_, (private, gated))) if *private || *gated => notes.push(format!(
                    "{repo} is {}: its files are served only to tokens an upstream authorises \
                     (no grants are imported)",
                    if *private { "private" } else { "gated" }
                )),
                Some(_) => {}
            }
        }
        self.report.notes.extend(notes);
    }

    // ---- files ----

    fn collect_files(
        &mut self,
        repo: &Repo,
        dirs: &RepoDirs,
        groups: &mut BTreeMap<BlobId, Group>,
    ) {
        for files_dir in &dirs.files {
            let resolve = files_dir.join("resolve");
            if layout::is_real_dir(&resolve) {
                let mut skipped = Vec::new();
                let entries = layout::walk_resolve(&self.root, &resolve, &mut skipped);
                for (path, reason) in skipped {
                    self.skip(path, reason);
                }
                for entry in entries {
                    self.collect_entry(repo, dirs, entry, groups);
                }
            }
            for named in ["blobs", "cdn"] {
                let dir = files_dir.join(named);
                if !layout::is_real_dir(&dir) {
                    continue;
                }
                let mut skipped = Vec::new();
                let found = layout::walk_named(&dir, &mut skipped);
                for (path, reason) in skipped {
                    self.skip(path, reason);
                }
                for (etag, path) in found {
                    if let Ok(id) = BlobId::parse(&etag) {
                        let shown = path.display().to_string();
                        groups.entry(id).or_default().add_source(path, shown);
                    }
                }
            }
        }
    }

    fn collect_entry(
        &mut self,
        repo: &Repo,
        dirs: &RepoDirs,
        entry: ResolveEntry,
        groups: &mut BTreeMap<BlobId, Group>,
    ) {
        let found_at = entry.found_at.display().to_string();
        let claim = match self.claim_for(dirs, &entry) {
            Ok(claim) => claim,
            Err(reason) => {
                self.file_skipped(repo, &entry.commit, entry.path.as_str(), &found_at, reason);
                return;
            }
        };
        let id = match BlobId::parse(&claim.etag) {
            Ok(id) => id,
            Err(_) => {
                let reason = format!(
                    "etag {:?} is not a content hash (sha256 or git blob sha1), so the file \
                     cannot be verified",
                    claim.etag
                );
                self.file_skipped(repo, &entry.commit, entry.path.as_str(), &found_at, reason);
                return;
            }
        };
        let group = groups.entry(id).or_default();
        group.add_source(entry.data.clone(), entry.data.display().to_string());
        group.refs.push(FileRef {
            repo: repo.clone(),
            commit: entry.commit,
            path: entry.path,
            found_at,
            size: claim.size,
        });
    }

    /// The etag (and size, if known) of a resolve entry, from every source that says
    /// something; they must agree.
    fn claim_for(&mut self, dirs: &RepoDirs, entry: &ResolveEntry) -> Result<FileClaim, String> {
        let mut claims: Vec<(FileClaim, String)> = Vec::new();
        if let EntryKind::Link {
            blob_name: Some(name),
        } = &entry.kind
        {
            claims.push((
                FileClaim {
                    etag: name.to_ascii_lowercase(),
                    size: None,
                },
                "the symlink target's name".into(),
            ));
        }
        let (commit, path) = (&entry.commit, entry.path.as_str());
        let mut metas = Vec::new();
        for api in &dirs.api {
            let rel = format!("paths-info/{commit}/{path}/paths-info_post.json");
            if let Some(file) = layout::lookup_file(&self.root, api, &rel) {
                metas.push((file, true));
            }
        }
        for heads in &dirs.heads {
            for sub in ["resolve", "resolve_head"] {
                let rel = format!("{sub}/{commit}/{path}");
                if let Some(file) = layout::lookup_file(&self.root, heads, &rel) {
                    metas.push((file, false));
                }
            }
        }
        for (file, paths_info) in metas {
            let claim = metajson::read(&file).and_then(|r| {
                if paths_info {
                    metajson::path_info(&r, path)
                } else {
                    metajson::head_info(&r, commit)
                }
            });
            match claim {
                Ok(c) => claims.push((c, file.display().to_string())),
                Err(reason) => self.skip(file.display(), format!("metadata ignored: {reason}")),
            }
        }
        if claims.is_empty() {
            return Err(
                "no etag known for this file (no blobs/ symlink, cached paths-info or \
                        HEAD answer), so it cannot be verified"
                    .into(),
            );
        }
        // Prefer content hashes; a non-hash etag (e.g. an offline placeholder) yields to one.
        let hashes: Vec<&(FileClaim, String)> = claims
            .iter()
            .filter(|(c, _)| BlobId::parse(&c.etag).is_ok())
            .collect();
        let Some(first) = hashes.first() else {
            return Ok(claims.swap_remove(0).0);
        };
        if let Some((other, from)) = hashes
            .iter()
            .map(|x| (&x.0, &x.1))
            .find(|(c, _)| c.etag != first.0.etag)
        {
            return Err(format!(
                "conflicting etags: {} says {}, {from} says {}",
                first.1, first.0.etag, other.etag
            ));
        }
        let sizes: BTreeSet<u64> = hashes.iter().filter_map(|(c, _)| c.size).collect();
        if sizes.len() > 1 {
            return Err(format!("conflicting sizes in the metadata: {sizes:?}"));
        }
        Ok(FileClaim {
            etag: first.0.etag.clone(),
            size: sizes.into_iter().next(),
        })
    }

    fn file_skipped(
        &mut self,
        repo: &Repo,
        commit: &str,
        path: &str,
        found_at: &str,
        reason: String,
    ) {
        self.report.files.push(FileReport {
            repo: repo.to_string(),
            commit: commit.to_string(),
            path: path.to_string(),
            source: found_at.to_string(),
            outcome: FileOutcome::Skipped {
                reason: reason.clone(),
            },
        });
        self.skip(found_at, reason);
    }

    fn fatal(path: &Path, op: &'static str) -> impl FnOnce(StoreError) -> ImportError {
        let path = path.to_path_buf();
        move |source| ImportError::Store { path, op, source }
    }

    /// Brings blob `id` into the store from the first source that verifies, then records every
    /// file that refers to it.
    fn import_group(&mut self, id: BlobId, group: Group) -> Result<(), ImportError> {
        let first_path = group
            .sources
            .first()
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| self.root.clone());
        let mut reasons = Vec::new();
        let mut size = self.already_present(&id, &first_path, &mut reasons)?;
        if size.is_some() {
            self.report.blobs_already_present += 1;
        } else {
            for (data, shown) in &group.sources {
                match self.import_source(&id, data)? {
                    Ok(n) => {
                        size = Some(n);
                        break;
                    }
                    Err(reason) => reasons.push((shown.clone(), reason)),
                }
            }
        }
        let Some(size) = size else {
            // The reason, naming the copy it concerns unless that is the file itself.
            let reason_for = |at: &str| match reasons.as_slice() {
                [] => "no readable copy".to_string(),
                [(source, reason)] if source == at => reason.clone(),
                all => all
                    .iter()
                    .map(|(source, reason)| format!("{source}: {reason}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            if group.refs.is_empty() {
                for (_, shown) in &group.sources {
                    let reason = reason_for(shown);
                    self.skip(shown, reason);
                }
            }
            for r in group.refs {
                let reason = reason_for(&r.found_at);
                self.file_skipped(&r.repo, &r.commit, r.path.as_str(), &r.found_at, reason);
            }
            return Ok(());
        };
        for r in group.refs {
            if let Some(claimed) = r.size.filter(|&s| s != size) {
                let reason = format!(
                    "the metadata says {claimed} bytes but the verified content ({id}) is {size}"
                );
                self.file_skipped(&r.repo, &r.commit, r.path.as_str(), &r.found_at, reason);
                continue;
            }
            self.meta.import_file(
                &r.repo,
                FileMeta {
                    path: r.path.as_str().to_string(),
                    commit: r.commit.clone(),
                    size,
                    etag: id.as_str().to_string(),
                    lfs: id.is_sha256(),
                    blob: id.as_str().to_string(),
                    verifiable: true,
                },
            );
            self.report.files_imported += 1;
            self.report.files.push(FileReport {
                repo: r.repo.to_string(),
                commit: r.commit,
                path: r.path.as_str().to_string(),
                source: r.found_at,
                outcome: FileOutcome::Imported {
                    blob: id.as_str().to_string(),
                    size,
                },
            });
        }
        Ok(())
    }

    /// `Some(size)` when the store already has a complete copy of `id` that is (or now gets)
    /// verified. A complete copy that fails verification is removed.
    fn already_present(
        &mut self,
        id: &BlobId,
        path: &Path,
        reasons: &mut Vec<(String, String)>,
    ) -> Result<Option<u64>, ImportError> {
        let fatal = |op| Self::fatal(path, op);
        let Some(existing) = self.store.open_blob(id).map_err(fatal("open blob"))? else {
            return Ok(None);
        };
        if !existing.is_complete() {
            return Ok(None);
        }
        if existing.is_verified() {
            return Ok(Some(existing.size()));
        }
        match existing.verify_content() {
            Ok(ContentCheck::Match) => {
                existing.mark_verified().map_err(fatal("mark verified"))?;
                Ok(Some(existing.size()))
            }
            Ok(ContentCheck::Mismatch { actual }) => {
                self.store.remove_blob(id).map_err(fatal("remove blob"))?;
                reasons.push((
                    "hubcache store".into(),
                    format!("its copy hashed to {actual} and was removed"),
                ));
                Ok(None)
            }
            // Created as not content-addressed: the import re-creates it as content-addressed.
            Ok(ContentCheck::NotApplicable) => Ok(None),
            // A damaged block was invalidated: the import fills it again.
            Err(e) if e.is_corrupt() || e.is_not_present() => Ok(None),
            Err(e) => Err(fatal("verify blob")(e)),
        }
    }

    /// Copies one Olah cache entry into blob `id`. `Ok(Err(reason))` when this source cannot
    /// be used; `Err` when the store fails.
    fn import_source(
        &mut self,
        id: &BlobId,
        data: &Path,
    ) -> Result<Result<u64, String>, ImportError> {
        let fatal = |op| Self::fatal(data, op);
        let src = match OlahSource::open(data) {
            Ok(src) => src,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if !src.is_complete() {
            let (present, total) = src.presence();
            return Ok(Err(format!(
                "incomplete ({present} of {total} blocks present; Olah keeps no checksums, so a \
                 partial file cannot be verified)"
            )));
        }
        if src.size() == 0 && id.as_str() != EMPTY_GIT_SHA1 && id.as_str() != EMPTY_SHA256 {
            return Ok(Err(format!(
                "holds no content ({}; the download never started)",
                src.describe()
            )));
        }
        let size = src.size();
        let existing = self.store.open_blob(id).map_err(fatal("open blob"))?;
        if let Some(existing) = &existing {
            if existing.size() != size {
                return Ok(Err(format!(
                    "holds {size} bytes but the hubcache store already has a {}-byte copy of \
                     this blob (kept)",
                    existing.size()
                )));
            }
        }
        let file = self
            .store
            .create_blob(id, size, self.block_size, true)
            .map_err(fatal("create blob"))?;
        file.reload_bitmap().map_err(fatal("read blob bitmap"))?;
        let copied = match copy_and_hash(&file, id, &src) {
            Ok(copied) => copied,
            Err(StreamError::Sink(e)) => return Err(fatal("write blob")(e)),
            Err(StreamError::Source(e)) => {
                self.discard(id, &file, existing.is_some(), data)?;
                return Ok(Err(format!("cannot read ({}): {e}", src.describe())));
            }
        };
        if copied.actual != id.as_str() {
            self.discard(id, &file, existing.is_some(), data)?;
            return Ok(Err(format!(
                "content does not match its etag: it hashes to {}",
                copied.actual
            )));
        }
        for (block, crcs) in &copied.written {
            file.commit_block(*block, crcs)
                .map_err(fatal("commit block"))?;
        }
        match file.verify_content() {
            Ok(ContentCheck::Match) => {
                file.mark_verified().map_err(fatal("mark verified"))?;
                self.report.blobs_imported += 1;
                self.report.blocks_imported += copied.written.len() as u64;
                self.report.bytes_imported += copied.bytes;
                log::info!(
                    "import: {id} ({size} bytes) from {} verified",
                    data.display()
                );
                Ok(Ok(size))
            }
            Ok(ContentCheck::Mismatch { actual }) => {
                self.store.remove_blob(id).map_err(fatal("remove blob"))?;
                Ok(Err(format!(
                    "the stored copy hashes to {actual}; removed from the store"
                )))
            }
            Ok(ContentCheck::NotApplicable) => Ok(Err(
                "the store does not treat the blob as content-addressed".into(),
            )),
            Err(e) if e.is_corrupt() || e.is_not_present() => {
                self.store.remove_blob(id).map_err(fatal("remove blob"))?;
                Ok(Err(format!(
                    "the stored copy failed verification ({e}); removed from the store"
                )))
            }
            Err(e) => Err(fatal("verify blob")(e)),
        }
    }

    /// After a failed copy: nothing was committed, so a blob this import created is empty and
    /// is removed again; a pre-existing one is left as it was.
    fn discard(
        &self,
        id: &BlobId,
        file: &BlobFile,
        existed: bool,
        data: &Path,
    ) -> Result<(), ImportError> {
        if !existed && file.present_count() == 0 {
            self.store
                .remove_blob(id)
                .map_err(Self::fatal(data, "remove blob"))?;
        }
        Ok(())
    }
}
