//! Importing an existing Olah or DingoSpeed cache (`hubcache cache import --olah DIR`), so
//! users switching to hubcache do not download everything again.
//!
//! `DIR` is the `repos` directory of either mirror (or its parent). What is read (layout in
//! [`layout`], formats in [`v10`], [`legacy`] and [`cached`]):
//!
//! - **File bytes** under `files/{type}/{repo}/resolve/{commit}/{path}`: Olah 0.5's cache
//!   directories (format v10: `meta.bin`, `chunks.crc`, `blocks/`), Olah 0.4's (v9), and the
//!   single-file v8 format of DingoSpeed (a symlink to `blobs/{etag}`) and Olah before 0.4;
//!   plus DingoSpeed's `blobs/{etag}` and Olah's `cdn/{sha256}` that no file refers to (they
//!   are stored by content id, so later requests for the same content find them).
//! - **Which content a file has**: its etag, from Olah's `meta.bin`, DingoSpeed's blob name
//!   and the cached `paths-info` answer (`api/…/paths-info/{commit}/{path}/
//!   paths-info_post.json`: the LFS sha256, else the git blob oid). When several say
//!   something, they must agree. A file whose paths-info answer is cached without bytes is
//!   reported as not downloaded (an empty file is imported: its content is known).
//! - **Revisions**: `api/{type}/{repo}/revision/{rev}/meta_get.json` (the repo-info answer:
//!   recorded for its commit, and tells hubcache whether the repo is private or gated) and
//!   Olah 0.5's `revision/{rev}/resolved_commit.json` (written when a file is downloaded by
//!   branch or tag). The newest of them gives `rev -> commit`, recorded with the time the
//!   mirror learned it; `main` also maps the default revision, as both mirrors treat it.
//!
//! **Nothing unverified is served.**
//! - A complete file is hashed while it is copied, before any block is committed: its blocks
//!   become present only when the whole content matched its id (sha256 for LFS files, git
//!   blob sha1 otherwise), then the stored copy is verified again
//!   ([`BlobFile::verify_content`](crate::store::BlobFile::verify_content), which also checks
//!   every page CRC) and marked verified; a mismatch removes it.
//! - A partial Olah 0.5 file (a download cut off, or a chunk that fails its CRC): every
//!   chunk is checked against `chunks.crc` as it is read, and the hubcache blocks made only of
//!   checked bytes are committed; the file is recorded, and hubcache fetches the rest from an
//!   upstream on first use and verifies the whole file then (offline it is not served).
//! - Partial v8/v9 files are left out: those formats keep no checksums, so their bytes can
//!   only be checked against the whole file's hash.
//!
//! Memory is bounded: content streams through one Olah chunk (1 MiB by default) or a 1 MiB
//! buffer; the page checksums of the blocks written (4 bytes per page) are kept until the
//! hash is known.
//!
//! Running the import while a hubcache server uses the same cache is safe (blocks only
//! become present after their checks, and a block the server committed meanwhile and the
//! import overwrote with identical bytes stays valid), but it is meant to be run before
//! switching over.

mod blobs;
mod cached;
mod copy;
mod files;
mod hf_cache;
mod layout;
mod legacy;
mod plain;
mod report;
mod revisions;
mod source;
#[cfg(test)]
mod tests;
mod v10;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::App;
use crate::hf::Repo;
use crate::meta::Meta;
use crate::store::{BlobId, Store, StoreError};

pub use copy::ContentHasher;
pub use hf_cache::{import_hf_cache_blocking, parse_folder_name};
pub use report::{FileCounts, FileOutcome, FileReport, ImportReport, RevisionReport, Skipped};

/// Why an import stopped. Malformed or unverifiable input never ends up here (it is in the
/// report); these are the failures that make going on pointless.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot open the import directory: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: no Olah or DingoSpeed cache here (expected files/ or api/, directly or under \
         repos/)"
    )]
    NotACache { path: PathBuf },
    #[error(
        "{path}: not a huggingface_hub cache (no models--*, datasets--* or spaces--* \
         directory holding blobs/ or snapshots/)"
    )]
    NotAnHfCache { path: PathBuf },
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
    let block_size = app.settings().config.cache.block_size;
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
        visibility: BTreeMap::new(),
        plain: false,
    };
    importer.run()
}

/// Visibility learned from a repo's imported repo-info answers: `(private, gated)`.
type Visibility = (bool, bool);

struct Importer<'a> {
    store: &'a Store,
    meta: &'a Meta,
    block_size: u64,
    root: PathBuf,
    report: ImportReport,
    visibility: BTreeMap<Repo, Visibility>,
    /// The cache entries are plain files holding exactly the content (a huggingface_hub
    /// cache), not Olah / DingoSpeed cache files.
    plain: bool,
}

impl Importer<'_> {
    fn run(mut self) -> Result<ImportReport, ImportError> {
        let discovery = layout::discover(&self.root);
        self.report.other.extend(discovery.skipped);
        self.report.repos = discovery.repos.len();
        for (repo, dirs) in &discovery.repos {
            self.import_revisions(repo, dirs);
        }
        let mut groups: BTreeMap<BlobId, files::Group> = BTreeMap::new();
        for (repo, dirs) in &discovery.repos {
            self.collect_files(repo, dirs, &mut groups);
        }
        for (id, group) in groups {
            self.import_group(id, group)?;
        }
        self.report
            .files
            .sort_by(|a, b| (&a.repo, &a.commit, &a.path).cmp(&(&b.repo, &b.commit, &b.path)));
        self.visibility_notes();
        // The metadata writes are queued: the import is only done once they are on disk (the
        // command exits right after, and a mirror started next must find them).
        self.meta.flush();
        let counts = self.report.counts();
        log::info!(
            "import: {} files: {} imported, {} partial, {} not downloaded, {} left out",
            counts.total,
            counts.imported,
            counts.partial,
            counts.not_downloaded,
            counts.skipped
        );
        Ok(self.report)
    }

    /// An entry that is not a file was left out.
    fn skip(&mut self, path: impl AsRef<Path>, reason: impl fmt::Display) {
        let path = path.as_ref().display().to_string();
        let reason = reason.to_string();
        log::warn!("import: skipped {path}: {reason}");
        self.report.other.push(Skipped { path, reason });
    }
}
