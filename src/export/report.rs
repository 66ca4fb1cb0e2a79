//! What an export did: one line per file, the ref written, and a summary computed from the
//! lines.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::reflink::CopyMethod;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    /// `models/org/name` form.
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// The repo's folder in the export directory (`…/models--org--name`).
    pub folder: PathBuf,
    pub files: Vec<ExportedFile>,
    /// `refs/{revision}` written (for a branch or tag).
    pub ref_written: Option<String>,
    /// Repo files left out by `--include` / `--exclude`.
    pub filtered_out: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    pub path: String,
    pub size: u64,
    /// The blob file name (the etag).
    pub blob: String,
    pub outcome: ExportOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExportOutcome {
    /// Copied from the mirror's cache.
    Copied {
        method: CopyMethod,
    },
    /// Not (completely) cached: fetched through the upstream chain (and cached on the way).
    Fetched,
    /// The export directory already had the blob (an earlier export); only linked.
    Shared,
    Failed {
        reason: String,
    },
}

/// The per-outcome counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportCounts {
    pub reflinked: usize,
    pub copy_file_range: usize,
    pub copied: usize,
    pub fetched: usize,
    pub shared: usize,
    pub failed: usize,
}

impl ExportReport {
    pub fn counts(&self) -> ExportCounts {
        let mut c = ExportCounts::default();
        for f in &self.files {
            match &f.outcome {
                ExportOutcome::Copied {
                    method: CopyMethod::Reflink,
                } => c.reflinked += 1,
                ExportOutcome::Copied {
                    method: CopyMethod::CopyFileRange,
                } => c.copy_file_range += 1,
                ExportOutcome::Copied {
                    method: CopyMethod::ReadWrite,
                } => c.copied += 1,
                ExportOutcome::Fetched => c.fetched += 1,
                ExportOutcome::Shared => c.shared += 1,
                ExportOutcome::Failed { .. } => c.failed += 1,
            }
        }
        c
    }

    /// Every file was exported (`hubcache export` exits 1 otherwise).
    pub fn is_complete(&self) -> bool {
        self.counts().failed == 0
    }
}

impl fmt::Display for ExportedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.outcome {
            ExportOutcome::Copied { method } => method.describe().to_string(),
            ExportOutcome::Fetched => "fetched".into(),
            ExportOutcome::Shared => "shared".into(),
            ExportOutcome::Failed { reason } => format!("FAILED: {reason}"),
        };
        write!(
            f,
            "{} ({} B, blob {}): {status}",
            self.path, self.size, self.blob
        )
    }
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "export {}@{} (commit {}) into {}",
            self.repo,
            self.revision,
            self.commit,
            self.folder.display()
        )?;
        for file in &self.files {
            writeln!(f, "  {file}")?;
        }
        if let Some(rev) = &self.ref_written {
            writeln!(f, "refs/{rev} -> {}", self.commit)?;
        }
        let c = self.counts();
        writeln!(
            f,
            "summary: {} files: {} reflinked (no space used), {} copied in the kernel \
             (copy_file_range), {} copied, {} fetched through the upstream chain, {} shared \
             with an earlier export, {} failed; {} left out by --include/--exclude",
            self.files.len(),
            c.reflinked,
            c.copy_file_range,
            c.copied,
            c.fetched,
            c.shared,
            c.failed,
            self.filtered_out
        )
    }
}
