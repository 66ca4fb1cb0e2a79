//! What an import did: one line per file found, per revision recorded and per entry left
//! out, and a summary computed from those lines (so its counts always match them).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// What an import did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportReport {
    /// The `repos` directory imported (canonical).
    pub root: PathBuf,
    /// Repositories found.
    pub repos: usize,
    /// Every file found (a cached file, or a cached `paths-info` answer without bytes), and
    /// what happened to it.
    pub files: Vec<FileReport>,
    /// Branch or tag -> commit mappings recorded.
    pub revisions: Vec<RevisionReport>,
    /// Repo-info answers recorded (one per repo and commit).
    pub repo_infos: usize,
    /// Blobs written into the store (complete or partial).
    pub blobs_copied: usize,
    /// Content bytes written into the store.
    pub bytes_copied: u64,
    /// Store blocks written (hubcache's `cache.block_size`).
    pub blocks_copied: u64,
    /// Entries that are not files and were left out (metadata that cannot be read,
    /// directories that are not repositories, orphan blobs that do not verify), with why.
    pub other: Vec<Skipped>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
}

/// One file of one commit of one repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileOutcome {
    /// Recorded; its bytes are the verified blob `blob`.
    Imported {
        blob: String,
        size: u64,
        /// False when the store already had a verified copy (nothing was copied).
        copied: bool,
    },
    /// Recorded, with the part of its bytes that passed their checks (`bytes` of `size`);
    /// the rest is fetched from an upstream on first use (not while offline).
    Partial {
        blob: String,
        size: u64,
        bytes: u64,
        /// What was missing or damaged in the cache.
        missing: Vec<String>,
    },
    /// The cache holds only the file's metadata (the mirror never downloaded its bytes):
    /// nothing to import.
    NotDownloaded { reason: String },
    /// Left out: the bytes could not be verified, or did not verify.
    #[serde(rename = "left_out")]
    Skipped { reason: String },
}

/// A branch or tag -> commit mapping recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionReport {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// The file it came from.
    pub source: String,
}

/// An entry left out that is not a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// The counts of the per-file lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    pub total: usize,
    pub imported: usize,
    /// Of `imported`: already in the store.
    pub already_present: usize,
    pub partial: usize,
    pub not_downloaded: usize,
    pub skipped: usize,
}

impl ImportReport {
    pub fn counts(&self) -> FileCounts {
        let mut c = FileCounts {
            total: self.files.len(),
            ..FileCounts::default()
        };
        for f in &self.files {
            match &f.outcome {
                FileOutcome::Imported { copied, .. } => {
                    c.imported += 1;
                    if !copied {
                        c.already_present += 1;
                    }
                }
                FileOutcome::Partial { .. } => c.partial += 1,
                FileOutcome::NotDownloaded { .. } => c.not_downloaded += 1,
                FileOutcome::Skipped { .. } => c.skipped += 1,
            }
        }
        c
    }

    /// Whether every file the cache had bytes for was imported, at least in part
    /// (`cache import` exits 1 otherwise).
    pub fn is_clean(&self) -> bool {
        self.counts().skipped == 0
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, detail) = match &self.outcome {
            FileOutcome::Imported {
                blob,
                size: n,
                copied,
            } => {
                let how = match (*n, *copied) {
                    (0, _) => "empty, nothing to copy",
                    (_, true) => "copied and verified",
                    (_, false) => "already in the store",
                };
                ("imported", format!("{}, {how} ({blob})", size(*n)))
            }
            FileOutcome::Partial {
                size: n,
                bytes,
                missing,
                ..
            } => (
                "partial",
                format!(
                    "{} of {} imported (checked against Olah's chunk CRCs; the rest is fetched \
                     on first use online); {}",
                    size(*bytes),
                    size(*n),
                    missing.join("; ")
                ),
            ),
            FileOutcome::NotDownloaded { reason } => ("not-downloaded", reason.clone()),
            FileOutcome::Skipped { reason } => ("left-out", reason.clone()),
        };
        write!(
            f,
            "{status:<14} {}@{} {}: {detail} [{}]",
            self.repo, self.commit, self.path, self.source
        )
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "import from {}", self.root.display())?;
        writeln!(f, "files:")?;
        for file in &self.files {
            writeln!(f, "  {file}")?;
        }
        writeln!(f, "revisions:")?;
        for r in &self.revisions {
            writeln!(
                f,
                "  {} {} -> {} [{}]",
                r.repo, r.revision, r.commit, r.source
            )?;
        }
        if !self.other.is_empty() {
            writeln!(f, "other entries left out:")?;
            for s in &self.other {
                writeln!(f, "  {}: {}", s.path, s.reason)?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let c = self.counts();
        writeln!(
            f,
            "summary: {} repos; {} files: {} imported ({} already in the store), {} partially \
             imported, {} not downloaded by the mirror, {} left out; {} revisions; {} repo-info \
             answers; {} blobs written ({} in {} blocks); {} other entries left out",
            self.repos,
            c.total,
            c.imported,
            c.already_present,
            c.partial,
            c.not_downloaded,
            c.skipped,
            self.revisions.len(),
            self.repo_infos,
            self.blobs_copied,
            size(self.bytes_copied),
            self.blocks_copied,
            self.other.len()
        )
    }
}
