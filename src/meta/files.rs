//! Per-file metadata (size, etag, blob id) for `(repo, commit, path)`: the per-revision path
//! index. Learned from an upstream `HEAD` of the resolve URL (same-origin redirects followed,
//! the CDN redirect not), kept in memory and on disk, immutable because keyed by commit.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{caller, Failure, Meta, Scope, UpstreamAnswer};
use crate::hf::{self, HfError, Repo, RepoPath, Revision};
use crate::upstream::{HubRequest, HubResponse};

/// What hubcache knows about one file at one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub path: String,
    pub commit: String,
    pub size: u64,
    /// Normalised (unquoted) ETag: the sha256 for LFS files, the git blob sha1 otherwise.
    pub etag: String,
    pub lfs: bool,
    /// The id of the blob holding the bytes: the etag when it is a 40/64-hex content hash.
    pub blob: String,
    /// Whether `blob` is the content hash (so a completed download can be verified).
    pub verifiable: bool,
}

/// A cached answer for one path: the file, or "no such file at this commit".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum FileEntry {
    Present(FileMeta),
    Missing { path: String, commit: String },
}

impl FileEntry {
    fn into_result(self: Arc<Self>) -> Result<FileMeta, Failure> {
        match &*self {
            FileEntry::Present(meta) => Ok(meta.clone()),
            FileEntry::Missing { commit, .. } => {
                Err(Failure::Hf(HfError::entry_not_found(Some(commit))))
            }
        }
    }
}

fn is_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Read file metadata from the final upstream answer to a resolve HEAD: a 200 (regular file,
/// or a hub that serves LFS itself) or the off-origin redirect to the CDN.
fn file_meta_from_head(
    response: &HubResponse,
    repo: &Repo,
    commit: &str,
    path: &str,
) -> Result<FileMeta, Failure> {
    let linked_etag = response.header(hf::headers::X_LINKED_ETAG);
    let raw_etag = linked_etag
        .or_else(|| response.header(hf::headers::ETAG))
        .ok_or_else(|| Failure::BadGateway(format!("upstream sent no ETag for {repo}/{path}")))?;
    let etag = hf::normalize_etag(raw_etag).to_ascii_lowercase();
    let size = response
        .header(hf::headers::X_LINKED_SIZE)
        .or_else(|| {
            (!response.is_redirect())
                .then(|| response.header("content-length"))
                .flatten()
        })
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| Failure::BadGateway(format!("upstream sent no size for {repo}/{path}")))?;
    if let Some(upstream_commit) = response.header(hf::headers::X_REPO_COMMIT) {
        if upstream_commit != commit {
            log::warn!("upstream says {repo}/{path} is at {upstream_commit}, asked for {commit}");
        }
    }
    let verifiable = is_hex_id(&etag);
    let blob = if verifiable {
        etag.clone()
    } else {
        // No content hash: a private id that is never verified against the content.
        hex::encode(Sha256::digest(
            format!("hubcache-unverified\0{repo}\0{commit}\0{path}").as_bytes(),
        ))
    };
    Ok(FileMeta {
        path: path.to_string(),
        commit: commit.to_string(),
        size,
        lfs: linked_etag.is_some() || etag.len() == 64,
        etag,
        blob,
        verifiable,
    })
}

impl Meta {
    /// Metadata of `path` at `revision`, resolving the revision first.
    pub async fn resolve_file(
        &self,
        repo: &Repo,
        revision: &Revision,
        path: &RepoPath,
        auth: Option<&str>,
    ) -> Result<FileMeta, Failure> {
        let commit = self.commit_for(repo, Some(revision), auth).await?;
        self.file_at(repo, &commit, path, auth).await
    }

    fn cached_file(&self, repo: &Repo, commit: &str, path: &str) -> Option<Arc<FileEntry>> {
        let key = format!("{repo}\0{commit}\0{path}");
        if let Some(entry) = self.inner.files.lock().get(&key) {
            return Some(entry.clone());
        }
        let file = self.inner.dir.file_entry(repo, commit, path);
        let entry = Arc::new(self.inner.dir.load::<FileEntry>(&file).ok().flatten()?);
        self.inner.files.lock().put(key, entry.clone());
        Some(entry)
    }

    pub(super) fn remember_file(
        &self,
        repo: &Repo,
        commit: &str,
        path: &str,
        entry: Arc<FileEntry>,
    ) {
        let file = self.inner.dir.file_entry(repo, commit, path);
        if let Err(e) = self.inner.dir.save(&file, &*entry) {
            log::warn!("cannot persist metadata of {repo}/{path}@{commit}: {e}");
        }
        self.inner
            .files
            .lock()
            .put(format!("{repo}\0{commit}\0{path}"), entry);
    }

    /// Metadata of `path` at a commit.
    pub async fn file_at(
        &self,
        repo: &Repo,
        commit: &str,
        path: &RepoPath,
        auth: Option<&str>,
    ) -> Result<FileMeta, Failure> {
        let inner = &self.inner;
        let cached = self.cached_file(repo, commit, path.as_str());
        let servable = inner.access.may_serve_cached(repo, Scope::Files, auth);
        if let Some(entry) = &cached {
            if servable {
                return entry.clone().into_result();
            }
        }
        if inner.settings.offline {
            return Err(Failure::Hf(match cached {
                Some(_) => inner.access.denial(repo, auth),
                None if inner.dir.knows_commit(repo, commit) => {
                    HfError::entry_not_found(Some(commit))
                }
                None if inner.revisions.knows_repo(repo) => HfError::revision_not_found(commit),
                None => HfError::repo_not_found(),
            }));
        }
        let key = format!("{repo}\0{commit}\0{path}\0{}", caller(auth));
        let this = self.clone();
        let (repo_c, commit_c, path_c, auth_c) = (
            repo.clone(),
            commit.to_string(),
            path.clone(),
            auth.map(str::to_string),
        );
        let fetched = inner
            .file_calls
            .run(key, move || async move {
                this.fetch_file(&repo_c, &commit_c, &path_c, auth_c.as_deref())
                    .await
            })
            .await;
        match fetched {
            Ok(entry) => entry.into_result(),
            Err(Failure::Upstream(e)) => Err(inner
                .access
                .denial_without_upstream(repo, Scope::Files, auth)
                .map(Failure::Hf)
                .unwrap_or(Failure::Upstream(e))),
            Err(other) => Err(other),
        }
    }

    /// Whether the repo's files are known to be public (fills need no token).
    pub fn files_public(&self, repo: &Repo) -> bool {
        self.inner.access.files_public(repo)
    }

    async fn fetch_file(
        &self,
        repo: &Repo,
        commit: &str,
        path: &RepoPath,
        auth: Option<&str>,
    ) -> Result<Arc<FileEntry>, Failure> {
        let commit_rev = Revision::new(commit).map_err(|e| Failure::BadGateway(e.to_string()))?;
        let url = hf::resolve_path(repo, &commit_rev, path);
        let response = self
            .inner
            .upstream
            .send(&HubRequest::head(url, auth.map(str::to_string)))
            .await?;
        let usable = response.is_success()
            || (response.is_redirect() && response.header("location").is_some());
        if !usable {
            let answer = UpstreamAnswer::from_response(&response);
            if response.status == 404 && answer.error_code() == Some("EntryNotFound") {
                let entry = Arc::new(FileEntry::Missing {
                    path: path.as_str().to_string(),
                    commit: commit.to_string(),
                });
                self.remember_file(repo, commit, path.as_str(), entry);
                self.inner.access.learn_success(repo, Scope::Api, auth);
            }
            return Err(Failure::Replay(answer));
        }
        let meta = file_meta_from_head(&response, repo, commit, path.as_str())?;
        self.inner.access.learn_success(repo, Scope::Files, auth);
        let entry = Arc::new(FileEntry::Present(meta));
        self.remember_file(repo, commit, path.as_str(), entry.clone());
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{RepoId, RepoType};
    use reqwest::header::{HeaderMap, HeaderValue};

    fn repo() -> Repo {
        Repo {
            kind: RepoType::Model,
            id: RepoId::new("acme/tiny").unwrap(),
        }
    }

    fn response(status: u16, headers: &[(&'static str, &str)]) -> HubResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        HubResponse {
            status,
            headers: map,
            body: bytes::Bytes::new(),
            upstream: 0,
            url: url::Url::parse("http://hub/x").unwrap(),
        }
    }

    #[test]
    fn lfs_redirect_gives_sha256_blob_and_linked_size() {
        let sha256 = "ab".repeat(32);
        let resp = response(
            302,
            &[
                ("location", "http://cdn/x"),
                ("x-linked-etag", &format!("\"{sha256}\"")),
                ("x-linked-size", "5242880"),
                ("etag", "\"0123456789012345678901234567890123456789\""),
                ("content-length", "100"),
            ],
        );
        let meta = file_meta_from_head(&resp, &repo(), &"c".repeat(40), "model.bin").unwrap();
        assert_eq!(meta.size, 5_242_880);
        assert_eq!(meta.etag, sha256);
        assert_eq!(meta.blob, sha256);
        assert!(meta.lfs && meta.verifiable);
    }

    #[test]
    fn regular_file_uses_git_oid_and_content_length() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let resp = response(
            200,
            &[("etag", &format!("W/\"{oid}\"")), ("content-length", "42")],
        );
        let meta = file_meta_from_head(&resp, &repo(), &"c".repeat(40), "config.json").unwrap();
        assert_eq!(meta.size, 42);
        assert_eq!(meta.blob, oid);
        assert!(!meta.lfs);
    }

    #[test]
    fn redirect_without_linked_size_is_rejected_not_guessed_from_its_body() {
        let resp = response(
            302,
            &[
                ("location", "http://cdn/x"),
                ("etag", "\"abc\""),
                ("content-length", "12"),
            ],
        );
        assert!(file_meta_from_head(&resp, &repo(), &"c".repeat(40), "f").is_err());
    }

    #[test]
    fn non_hash_etag_gets_a_private_unverifiable_blob_id() {
        let resp = response(200, &[("etag", "\"weird-etag\""), ("content-length", "3")]);
        let meta = file_meta_from_head(&resp, &repo(), &"c".repeat(40), "f").unwrap();
        assert!(!meta.verifiable);
        assert_eq!(meta.blob.len(), 64);
        assert_ne!(meta.blob, meta.etag);
    }
}
