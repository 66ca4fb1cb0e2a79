//! The file side of an import: which content each cached file has (its etag), gathering
//! every copy of each content, copying the best one into the store, and recording the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::blobs::Attempt;
use super::cached::{self, PathInfo};
use super::layout::{self, EntryKind, RepoDirs, ResolveEntry};
use super::report::{FileOutcome, FileReport};
use super::source::CacheSource;
use super::{ImportError, Importer};
use crate::hf::{Repo, RepoPath};
use crate::meta::FileMeta;
use crate::store::BlobId;

/// The git blob sha1 of empty content.
pub const EMPTY_GIT_SHA1: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
/// The sha256 of empty content.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub(super) fn is_empty_content(id: &BlobId) -> bool {
    id.as_str() == EMPTY_GIT_SHA1 || id.as_str() == EMPTY_SHA256
}

/// One `(repo, commit, path)` that wants a blob.
#[derive(Debug)]
pub(super) struct FileRef {
    repo: Repo,
    commit: String,
    path: RepoPath,
    found_at: String,
    /// The size the metadata gives, if any.
    size: Option<u64>,
}

/// Everything known about one blob id: where copies may be read, and who refers to it.
#[derive(Debug, Default)]
pub(super) struct Group {
    /// `(cache entry, display)`, deduplicated by path.
    sources: Vec<(PathBuf, String)>,
    refs: Vec<FileRef>,
}

impl FileRef {
    pub(super) fn new(repo: Repo, commit: String, path: RepoPath, found_at: String) -> Self {
        FileRef {
            repo,
            commit,
            path,
            found_at,
            size: None,
        }
    }
}

impl Group {
    pub(super) fn add_ref(&mut self, file: FileRef) {
        self.refs.push(file);
    }

    pub(super) fn add_source(&mut self, data: PathBuf, display: String) {
        if !self.sources.iter().any(|(p, _)| *p == data) {
            self.sources.push((data, display));
        }
    }
}

/// The etag and size claimed for one file.
struct Claim {
    etag: String,
    size: Option<u64>,
}

impl Importer<'_> {
    /// Finds every file of `repo` and adds it to `groups`.
    pub(super) fn collect_files(
        &mut self,
        repo: &Repo,
        dirs: &RepoDirs,
        groups: &mut BTreeMap<BlobId, Group>,
    ) {
        let mut seen: BTreeSet<(String, RepoPath)> = BTreeSet::new();
        if let Some(files_dir) = &dirs.files {
            let resolve = files_dir.join("resolve");
            if layout::is_real_dir(&resolve) {
                let entries = layout::walk_resolve(&self.root, &resolve, &mut self.report.other);
                for entry in entries {
                    seen.insert((entry.commit.clone(), entry.path.clone()));
                    self.collect_entry(repo, dirs, entry, groups);
                }
            }
            for named in ["blobs", "cdn"] {
                let dir = files_dir.join(named);
                if layout::is_real_dir(&dir) {
                    for (etag, path) in layout::walk_named(&dir, &mut self.report.other) {
                        if let Ok(id) = BlobId::parse(&etag) {
                            let shown = path.display().to_string();
                            groups.entry(id).or_default().add_source(path, shown);
                        }
                    }
                }
            }
        }
        if let Some(api) = &dirs.api {
            for (commit, path, answer) in layout::paths_infos(api, &mut self.report.other) {
                if !seen.contains(&(commit.clone(), path.clone())) {
                    self.metadata_only(repo, &commit, &path, &answer, groups);
                }
            }
        }
    }

    /// A file whose paths-info answer is cached but whose bytes are not: an empty file is
    /// imported (its content is known), anything else was never downloaded.
    fn metadata_only(
        &mut self,
        repo: &Repo,
        commit: &str,
        path: &RepoPath,
        answer: &Path,
        groups: &mut BTreeMap<BlobId, Group>,
    ) {
        let found_at = answer.display().to_string();
        let info = match cached::read(answer).and_then(|a| cached::path_info(&a, path.as_str())) {
            Ok(info) => info,
            Err(e) => return self.skip(answer, format!("metadata ignored: {e}")),
        };
        match BlobId::parse(&info.etag) {
            Ok(id) if info.size == Some(0) && is_empty_content(&id) => {
                groups.entry(id).or_default().refs.push(FileRef {
                    repo: repo.clone(),
                    commit: commit.to_string(),
                    path: path.clone(),
                    found_at,
                    size: Some(0),
                });
            }
            _ => self.file_outcome(
                repo,
                commit,
                path.as_str(),
                &found_at,
                FileOutcome::NotDownloaded {
                    reason: "only its paths-info answer is cached: the mirror never stored its \
                             bytes"
                        .into(),
                },
            ),
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
        let outcome = match self.claim_for(dirs, &entry) {
            Ok(claim) => match BlobId::parse(&claim.etag) {
                Ok(id) => Ok((id, claim.size)),
                Err(_) => Err(format!(
                    "etag {:?} is not a content hash (sha256 or git blob sha1), so the file \
                     cannot be verified",
                    claim.etag
                )),
            },
            Err(reason) => Err(reason),
        };
        match outcome {
            Ok((id, size)) => {
                let group = groups.entry(id).or_default();
                group.add_source(entry.data.clone(), found_at.clone());
                group.refs.push(FileRef {
                    repo: repo.clone(),
                    commit: entry.commit,
                    path: entry.path,
                    found_at,
                    size,
                });
            }
            Err(reason) => self.file_outcome(
                repo,
                &entry.commit,
                entry.path.as_str(),
                &found_at,
                FileOutcome::Skipped { reason },
            ),
        }
    }

    /// The etag (and size, if known) of a cached file, from every source that says
    /// something: DingoSpeed's blob name, Olah's `meta.bin`, the cached paths-info answer.
    /// Content hashes among them must agree, and so must sizes.
    fn claim_for(&mut self, dirs: &RepoDirs, entry: &ResolveEntry) -> Result<Claim, String> {
        let mut claims: Vec<(String, Option<u64>, String)> = Vec::new();
        if let EntryKind::Link {
            blob_name: Some(name),
        } = &entry.kind
        {
            claims.push((
                name.to_ascii_lowercase(),
                None,
                "the blobs/ file name".into(),
            ));
        }
        let source = CacheSource::open(&entry.data).map_err(|e| e.to_string())?;
        let cached_size = source.size();
        if let Some(etag) = source.recorded_etag() {
            claims.push((etag.to_string(), None, "meta.bin".into()));
        }
        drop(source);
        if let Some(answer) = dirs
            .api
            .as_ref()
            .and_then(|api| layout::paths_info_for(&self.root, api, &entry.commit, &entry.path))
        {
            match cached::read(&answer).and_then(|a| cached::path_info(&a, entry.path.as_str())) {
                Ok(PathInfo { etag, size, .. }) => {
                    claims.push((etag, size, answer.display().to_string()))
                }
                Err(e) => self.skip(&answer, format!("metadata ignored: {e}")),
            }
        }
        let hashes: Vec<&(String, Option<u64>, String)> = claims
            .iter()
            .filter(|(etag, _, _)| BlobId::parse(etag).is_ok())
            .collect();
        let Some((etag, _, from)) = hashes.first() else {
            return match claims.into_iter().next() {
                Some((etag, size, _)) => Ok(Claim { etag, size }),
                None => Err(
                    "no etag known for this file (no meta.bin etag, blobs/ name or cached \
                     paths-info answer), so it cannot be verified"
                        .into(),
                ),
            };
        };
        if let Some((other, _, other_from)) = hashes.iter().find(|(e, _, _)| e != etag) {
            return Err(format!(
                "conflicting etags: {from} says {etag}, {other_from} says {other}"
            ));
        }
        let size = hashes.iter().find_map(|(_, size, _)| *size);
        if let Some(size) = size.filter(|&s| s != cached_size && cached_size != 0) {
            return Err(format!(
                "the metadata says {size} bytes but the cached copy holds {cached_size}"
            ));
        }
        Ok(Claim {
            etag: etag.clone(),
            size,
        })
    }

    pub(super) fn file_outcome(
        &mut self,
        repo: &Repo,
        commit: &str,
        path: &str,
        found_at: &str,
        outcome: FileOutcome,
    ) {
        if let FileOutcome::Skipped { reason } = &outcome {
            log::warn!("import: left out {repo}@{commit}/{path} ({found_at}): {reason}");
        }
        self.report.files.push(FileReport {
            repo: repo.to_string(),
            commit: commit.to_string(),
            path: path.to_string(),
            source: found_at.to_string(),
            outcome,
        });
    }

    /// Brings blob `id` into the store from its copies, then records every file that refers
    /// to it.
    pub(super) fn import_group(&mut self, id: BlobId, group: Group) -> Result<(), ImportError> {
        let mut reasons: Vec<(String, String)> = Vec::new();
        let mut copied = true;
        let only_empty = !group.refs.is_empty() && group.refs.iter().all(|r| r.size == Some(0));
        let mut result = if only_empty && is_empty_content(&id) {
            Attempt::Complete
        } else if self.already_present(&id, &mut reasons)? {
            copied = false;
            Attempt::Complete
        } else {
            Attempt::Failed(String::new())
        };
        if !matches!(result, Attempt::Complete) {
            for (data, shown) in &group.sources {
                match self.import_source(&id, data)? {
                    Attempt::Complete => {
                        result = Attempt::Complete;
                        break;
                    }
                    Attempt::Failed(reason) => reasons.push((shown.clone(), reason)),
                    partial @ Attempt::Partial { .. } => result = partial,
                }
            }
        }
        let size = self.store_size(&id)?;
        let outcome = match (result, size) {
            (Attempt::Complete, size) => Ok(FileOutcome::Imported {
                blob: id.to_string(),
                size: size.map_or(0, |(size, _)| size),
                copied,
            }),
            (Attempt::Partial { gaps }, Some((size, bytes))) => Ok(FileOutcome::Partial {
                blob: id.to_string(),
                size,
                bytes,
                missing: gaps.iter().map(ToString::to_string).collect(),
            }),
            _ => Err(reasons),
        };
        match outcome {
            Ok(outcome) if group.refs.is_empty() => {
                let from: Vec<&str> = group.sources.iter().map(|(_, s)| s.as_str()).collect();
                self.report.notes.push(format!(
                    "{}: imported as blob {id} ({}); no cached file refers to it, hubcache \
                     uses it when a request resolves to this content",
                    from.join(", "),
                    if matches!(outcome, FileOutcome::Partial { .. }) {
                        "partially"
                    } else {
                        "complete"
                    }
                ));
            }
            Ok(outcome) => self.record_refs(&id, group.refs, &outcome),
            Err(reasons) => self.refs_failed(group, &reasons),
        }
        Ok(())
    }

    /// Every file of a blob that could not be imported, with the reason that concerns it.
    fn refs_failed(&mut self, group: Group, reasons: &[(String, String)]) {
        let reason_for = |at: &str| match reasons {
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
            self.file_outcome(
                &r.repo,
                &r.commit,
                r.path.as_str(),
                &r.found_at,
                FileOutcome::Skipped { reason },
            );
        }
    }

    fn record_refs(&mut self, id: &BlobId, refs: Vec<FileRef>, outcome: &FileOutcome) {
        let size = match outcome {
            FileOutcome::Imported { size, .. } | FileOutcome::Partial { size, .. } => *size,
            _ => return,
        };
        for r in refs {
            if let Some(claimed) = r.size.filter(|&s| s != size) {
                let reason =
                    format!("the metadata says {claimed} bytes but the content ({id}) is {size}");
                self.file_outcome(
                    &r.repo,
                    &r.commit,
                    r.path.as_str(),
                    &r.found_at,
                    FileOutcome::Skipped { reason },
                );
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
            self.file_outcome(
                &r.repo,
                &r.commit,
                r.path.as_str(),
                &r.found_at,
                outcome.clone(),
            );
        }
    }
}
