//! A file asked for by branch or tag whose commit is not known fresh: one `HEAD` of the
//! resolve URL *with the branch* answers both questions (its `X-Repo-Commit` is the commit),
//! so a cold `hf_hub_download` costs the hub no more round trips than going direct (no
//! separate revision lookup before the file's `HEAD`).
//!
//! Only when every upstream is an origin (`trust: origin`): a mirror upstream's answer
//! cannot be trusted to say whether a repo is protected, which the usual path learns first.
//!
//! The commit learned is recorded like a revision answer, the file's metadata under that
//! commit, and where its bytes are under the commit's resolve URL, so the fill that follows
//! needs no `HEAD` of its own. When no upstream answers, or the answer names no commit, the
//! usual path (revision, then file) runs, with its stale fallbacks.

use std::sync::Arc;

use super::files::{file_meta_from_head, FileEntry, FileMeta};
use super::{caller, Failure, Meta, Scope, UpstreamAnswer};
use crate::config::Trust;
use crate::hf::{self, Repo, RepoPath, Revision};
use crate::upstream::{HubRequest, UpstreamId};

impl Meta {
    /// `Ok(None)`: not applicable here (a commit, a fresh or offline revision, an unreachable
    /// upstream, an answer without a commit); the caller takes the usual path.
    pub(super) async fn file_by_branch(
        &self,
        repo: &Repo,
        revision: &Revision,
        path: &RepoPath,
        auth: Option<&str>,
    ) -> Result<Option<FileMeta>, Failure> {
        let inner = &self.inner;
        let settings = inner.settings.get();
        if revision.is_commit() || settings.offline {
            return Ok(None);
        }
        let known = inner.revisions.lookup(repo, revision.as_str()).await;
        if known.is_some_and(|k| k.age < settings.revision_ttl) {
            return Ok(None);
        }
        if !inner
            .upstream
            .get()
            .all()
            .iter()
            .all(|u| u.trust() == Trust::Origin)
        {
            // A mirror upstream may serve a gated or private repo's files to anyone: only
            // the repo info (asked first on the usual path) tells whether the repo is
            // protected, so that its files are asked only where tokens go.
            return Ok(None);
        }
        let key = format!(
            "{repo}\0{}\0{}\0{}",
            revision.as_str(),
            path.as_str(),
            caller(auth)
        );
        let this = self.clone();
        let (repo, revision, path, auth) = (
            repo.clone(),
            revision.clone(),
            path.clone(),
            auth.map(str::to_string),
        );
        inner
            .branch_file_calls
            .run(key, move || async move {
                this.head_by_branch(&repo, &revision, &path, auth.as_deref())
                    .await
            })
            .await
    }

    /// The one `HEAD` by branch of [`file_by_branch`](Self::file_by_branch).
    async fn head_by_branch(
        &self,
        repo: &Repo,
        revision: &Revision,
        path: &RepoPath,
        auth: Option<&str>,
    ) -> Result<Option<FileMeta>, Failure> {
        let inner = &self.inner;
        let chain = inner.upstream.get();
        let protected = inner.access.is_protected(repo, Scope::Files).await;
        let url = hf::resolve_path(repo, revision, path);
        let request = HubRequest::head(url, auth.map(str::to_string)).protected(protected);
        let response = match self.ask_upstream(repo, &request).await {
            Ok(response) => response,
            Err(_) => return Ok(None),
        };
        let Some(commit) = response
            .header(hf::headers::X_REPO_COMMIT)
            .filter(|c| hf::is_commit_sha(c))
            .map(str::to_ascii_lowercase)
        else {
            return match response.status {
                200..=399 => Ok(None),
                _ => Err(Failure::Replay(UpstreamAnswer::from_response(&response))),
            };
        };
        let usable = response.is_success()
            || (response.is_redirect() && response.header("location").is_some());
        if !usable {
            let answer = UpstreamAnswer::from_response(&response);
            if response.status == 404 && answer.error_code() == Some("EntryNotFound") {
                inner
                    .revisions
                    .record(repo, revision.as_str(), &commit)
                    .await;
                let entry = Arc::new(FileEntry::Missing {
                    path: path.as_str().to_string(),
                    commit: commit.clone(),
                });
                self.remember_file(repo, &commit, path.as_str(), entry);
            }
            return Err(Failure::Replay(answer));
        }
        let meta = file_meta_from_head(&response, repo, &commit, path.as_str())?;
        inner
            .revisions
            .record(repo, revision.as_str(), &commit)
            .await;
        if response.decides_access() {
            inner.access.learn_success(repo, Scope::Files, auth).await;
        }
        let commit_rev = Revision::new(&commit).map_err(|e| Failure::BadGateway(e.to_string()))?;
        let at_commit = hf::resolve_path(repo, &commit_rev, path);
        if response.upstream != UpstreamId::SIBLING {
            // An owner node's answer names no place of this node's chain to fetch from.
            chain.remember_location_for(&at_commit, auth, &response);
        }
        let entry = Arc::new(FileEntry::Present(meta.clone()));
        self.remember_file(repo, &commit, path.as_str(), entry);
        Ok(Some(meta))
    }
}
