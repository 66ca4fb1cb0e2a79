//! The revision side of an import: branch and tag -> commit mappings, and repo-info answers
//! (which also tell hubcache whether a repo is private or gated).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use super::cached;
use super::layout::{self, RepoDirs, RevisionFiles};
use super::report::{FileOutcome, RevisionReport};
use super::Importer;
use crate::hf::{Repo, Revision};

/// One claim of where a revision pointed: `(learned at, commit, file)`.
type Mapping = (u64, String, String);

/// The file's modification time in unix seconds (DingoSpeed and old Olah record no time in
/// their answers; they rewrite the file when they refresh it).
fn mtime(path: &Path) -> Option<u64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

impl Importer<'_> {
    /// Imports the repo-info answers and revision mappings cached for `repo`.
    pub(super) fn import_revisions(&mut self, repo: &Repo, dirs: &RepoDirs) {
        let Some(api) = &dirs.api else {
            return;
        };
        let mut infos_done = BTreeSet::new();
        for (rev, files) in layout::revisions(api, &mut self.report.other) {
            let mut mappings: Vec<Mapping> = Vec::new();
            if let Some(file) = &files.info {
                if let Some(mapping) = self.import_info(repo, &rev, file, &mut infos_done) {
                    mappings.push(mapping);
                }
            }
            if let Some(mapping) = self.resolved(&rev, &files) {
                mappings.push(mapping);
            }
            // The newest claim wins, as in Olah's `get_commit_hf_offline`.
            if let Some((learned_at, commit, source)) = mappings.into_iter().max() {
                self.record_revision(repo, &rev, &commit, learned_at, source);
            }
        }
    }

    pub(super) fn record_revision(
        &mut self,
        repo: &Repo,
        rev: &Revision,
        commit: &str,
        learned_at: u64,
        source: String,
    ) {
        if !self
            .meta
            .import_revision(repo, rev.as_str(), commit, learned_at)
        {
            self.report.notes.push(format!(
                "{repo}: {rev} -> {commit} from {source} not recorded: hubcache already knows \
                 a newer mapping"
            ));
            return;
        }
        if rev.as_str() == "main" {
            // Both mirrors answer a request without a revision with `main`.
            self.meta.import_revision(repo, "", commit, learned_at);
        }
        self.report.revisions.push(RevisionReport {
            repo: repo.to_string(),
            revision: rev.to_string(),
            commit: commit.to_string(),
            source,
        });
    }

    /// Olah's `resolved_commit.json` for a branch or tag.
    fn resolved(&mut self, rev: &Revision, files: &RevisionFiles) -> Option<Mapping> {
        let file = files.resolved.as_ref()?;
        if rev.is_commit() {
            return None;
        }
        match cached::read(file).and_then(|a| {
            let at = a.cached_at;
            cached::resolved_commit(&a).map(|c| (at, c))
        }) {
            Ok((at, commit)) => Some((
                at.or_else(|| mtime(file)).unwrap_or(0),
                commit,
                file.display().to_string(),
            )),
            Err(e) => {
                self.skip(file, e.to_string());
                None
            }
        }
    }

    /// A cached repo-info answer: recorded for its commit; for a branch or tag, also a
    /// mapping.
    fn import_info(
        &mut self,
        repo: &Repo,
        rev: &Revision,
        file: &Path,
        infos_done: &mut BTreeSet<String>,
    ) -> Option<Mapping> {
        let shown = file.display().to_string();
        let answer = match cached::read(file) {
            Ok(answer) => answer,
            Err(e) => {
                self.skip(file, e.to_string());
                return None;
            }
        };
        let info = match cached::repo_info(&answer) {
            Ok(info) => info,
            Err(e) => {
                self.skip(file, e.to_string());
                return None;
            }
        };
        if let Some(id) = info
            .id
            .as_ref()
            .filter(|id| !id.eq_ignore_ascii_case(repo.id.as_str()))
        {
            self.report.notes.push(format!(
                "{shown}: the answer names repo {id:?} (renamed?); recorded for {repo}"
            ));
        }
        let sha = info.summary.sha.clone();
        if rev.is_commit() && rev.as_str() != sha {
            self.skip(file, format!("the answer is for commit {sha}, not {rev}"));
            return None;
        }
        if infos_done.insert(sha.clone()) {
            match self.meta.import_repo_info(repo, &sha, &info.body) {
                Ok(()) => {
                    self.report.repo_infos += 1;
                    self.visibility.insert(
                        repo.clone(),
                        (info.summary.private, info.summary.gated.is_gated()),
                    );
                }
                Err(e) => self.skip(file, e.to_string()),
            }
        }
        (!rev.is_commit()).then(|| {
            (
                answer.cached_at.or_else(|| mtime(file)).unwrap_or(0),
                sha,
                shown,
            )
        })
    }

    /// Notes for repos whose files were imported but which cannot be served offline to
    /// everyone: visibility unknown, or private or gated.
    pub(super) fn visibility_notes(&mut self) {
        let with_files: BTreeSet<&str> = self
            .report
            .files
            .iter()
            .filter(|f| {
                matches!(
                    f.outcome,
                    FileOutcome::Imported { .. } | FileOutcome::Partial { .. }
                )
            })
            .map(|f| f.repo.as_str())
            .collect();
        let by_name: BTreeMap<String, (bool, bool)> = self
            .visibility
            .iter()
            .map(|(r, v)| (r.to_string(), *v))
            .collect();
        let mut notes = Vec::new();
        for repo in with_files {
            match by_name.get(repo) {
                None => notes.push(format!(
                    "{repo}: no cached repo info, so its visibility is unknown: its files are \
                     served once an upstream confirms access (not while offline). Fetch its \
                     repo info through the old mirror before importing (e.g. \
                     `huggingface_hub.HfApi().repo_info(...)`), or run hubcache online once"
                )),
                Some((private, gated)) if *private || *gated => notes.push(format!(
                    "{repo} is {}: its files are served only to tokens an upstream authorises \
                     (no grants are imported)",
                    if *private { "private" } else { "gated" }
                )),
                Some(_) => {}
            }
        }
        self.report.notes.extend(notes);
    }
}
