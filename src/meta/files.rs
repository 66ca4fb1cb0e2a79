//! Per-file metadata (size, etag, blob id) for `(repo, commit, path)`: the per-revision path
//! index. Learned from an upstream `HEAD` of the resolve URL (same-origin redirects followed,
//! the CDN redirect not), kept in memory and on disk, immutable because keyed by commit.
//! "No such file" answers are kept in memory only, for a while (`MISSING_TTL`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::policy::{Asker, Cached};
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

impl FileMeta {
    /// The headers of a resolve `HEAD` answer that [`file_meta_from_head`] reads back into
    /// this same metadata (a node answering a sibling's question about a file): the commit,
    /// the size as `X-Linked-Size`, the etag, and for LFS files the content hash as
    /// `X-Linked-Etag`.
    pub fn head_headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            (hf::headers::ETAG.to_string(), hf::quote_etag(&self.etag)),
            (hf::headers::X_REPO_COMMIT.to_string(), self.commit.clone()),
            (
                hf::headers::X_LINKED_SIZE.to_string(),
                self.size.to_string(),
            ),
        ];
        if self.lfs {
            headers.push((
                hf::headers::X_LINKED_ETAG.to_string(),
                hf::quote_etag(&self.etag),
            ));
        }
        headers
    }
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
pub(super) fn file_meta_from_head(
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

/// How long a "no such file at this commit" answer is trusted online. It is kept in memory
/// only (bounded), so asking for random paths leaves nothing on disk.
const MISSING_TTL: Duration = Duration::from_secs(600);

pub(super) fn file_key(repo: &Repo, commit: &str, path: &str) -> String {
    format!("{repo}\0{commit}\0{path}")
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
        if let Some(meta) = self.file_by_branch(repo, revision, path, auth).await? {
            return Ok(meta);
        }
        let commit = self.commit_for(repo, Some(revision), auth).await?;
        self.file_at(repo, &commit, path, auth).await
    }

    async fn cached_file(
        &self,
        repo: &Repo,
        commit: &str,
        path: &str,
    ) -> Option<Cached<Arc<FileEntry>>> {
        let key = file_key(repo, commit, path);
        if let Some(entry) = self.inner.files.lock().get(&key) {
            return Some(Cached::fresh(entry.clone()));
        }
        if let Some(at) = self.inner.missing.lock().get(&key) {
            let entry = Arc::new(FileEntry::Missing {
                path: path.to_string(),
                commit: commit.to_string(),
            });
            return Some(Cached {
                value: entry,
                fresh: at.elapsed() < MISSING_TTL,
            });
        }
        let file = self.inner.store.dir().file_entry(repo, commit, path);
        match self.inner.store.load::<FileEntry>(file.clone()).await? {
            entry @ FileEntry::Present(_) => {
                let entry = Arc::new(entry);
                self.inner.files.lock().put(key, entry.clone());
                Some(Cached::fresh(entry))
            }
            FileEntry::Missing { .. } => {
                // Written by an older version, which kept these on disk for ever.
                self.inner.store.remove(file);
                None
            }
        }
    }

    /// Remember what the upstream said about a path: a present file in memory and on disk, a
    /// missing one in memory only.
    pub(super) fn remember_file(
        &self,
        repo: &Repo,
        commit: &str,
        path: &str,
        entry: Arc<FileEntry>,
    ) {
        let key = file_key(repo, commit, path);
        match &*entry {
            FileEntry::Present(_) => {
                let file = self.inner.store.dir().file_entry(repo, commit, path);
                self.inner.store.save(file, &*entry);
                self.inner.missing.lock().pop(&key);
                self.inner.files.lock().put(key, entry);
            }
            FileEntry::Missing { .. } => {
                self.inner.missing.lock().put(key, Instant::now());
            }
        }
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
        let cached = self.cached_file(repo, commit, path.as_str()).await;
        let asker = Asker {
            repo,
            scope: Scope::Files,
            auth,
        };
        let offline_miss = || async {
            let dir = inner.store.dir().commit_dir(repo, commit);
            if inner.store.has_dir(dir).await {
                HfError::entry_not_found(Some(commit))
            } else if inner.revisions.knows_repo(repo).await {
                HfError::revision_not_found(commit)
            } else {
                HfError::repo_not_found()
            }
        };
        let key = format!("{repo}\0{commit}\0{path}\0{}", caller(auth));
        let fetch = || {
            let this = self.clone();
            let (repo, commit, path, auth) = (
                repo.clone(),
                commit.to_string(),
                path.clone(),
                auth.map(str::to_string),
            );
            inner.file_calls.run(key, move || async move {
                this.fetch_file(&repo, &commit, &path, auth.as_deref())
                    .await
            })
        };
        self.cached_or_fetch(asker, "file metadata", cached, offline_miss, fetch)
            .await?
            .into_result()
    }

    /// Every file whose metadata is cached for `repo` at `commit` (the per-revision path
    /// index on disk, primary root only), sorted by path. Blocking: for `hubcache export`
    /// offline, when no repo-info answer lists the files.
    pub fn cached_files_blocking(&self, repo: &Repo, commit: &str) -> Vec<FileMeta> {
        let inner = &self.inner;
        inner.store.flush();
        let dir = inner.store.dir().commit_dir(repo, commit).join("files");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<FileMeta> = entries
            .flatten()
            .filter_map(|e| inner.store.load_blocking::<FileEntry>(&e.path()))
            .filter_map(|entry| match entry {
                FileEntry::Present(meta) if meta.commit == commit => Some(meta),
                _ => None,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// Whether the repo's files are known to be public (fills need no token).
    pub async fn files_public(&self, repo: &Repo) -> bool {
        self.inner.access.files_public(repo).await
    }

    /// Whether an origin said the repo's files are gated or private.
    pub async fn files_protected(&self, repo: &Repo) -> bool {
        self.inner.access.is_protected(repo, Scope::Files).await
    }

    async fn fetch_file(
        &self,
        repo: &Repo,
        commit: &str,
        path: &RepoPath,
        auth: Option<&str>,
    ) -> Result<Arc<FileEntry>, Failure> {
        let inner = &self.inner;
        let commit_rev = Revision::new(commit).map_err(|e| Failure::BadGateway(e.to_string()))?;
        let url = hf::resolve_path(repo, &commit_rev, path);
        let protected = inner.access.is_protected(repo, Scope::Files).await;
        let request = HubRequest::head(url, auth.map(str::to_string)).protected(protected);
        let response = self.ask_upstream(repo, &request).await?;
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
                if response.decides_access() {
                    inner.access.learn_success(repo, Scope::Api, auth).await;
                }
            }
            return Err(Failure::Replay(answer));
        }
        let meta = file_meta_from_head(&response, repo, commit, path.as_str())?;
        if response.decides_access() {
            inner.access.learn_success(repo, Scope::Files, auth).await;
        }
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
            upstream: crate::upstream::UpstreamId::from_raw(0),
            trust: crate::config::Trust::Origin,
            token_sent: false,
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
    fn a_listed_file_is_recorded_exactly_as_its_head_would_be() {
        let (commit, oid, sha) = (
            "c".repeat(40),
            "0123456789abcdef0123456789abcdef01234567",
            "ab".repeat(32),
        );
        let regular = response(
            200,
            &[("etag", &format!("\"{oid}\"")), ("content-length", "42")],
        );
        let lfs = response(
            302,
            &[
                ("location", "http://cdn/x"),
                ("x-linked-etag", &format!("\"{sha}\"")),
                ("x-linked-size", "9"),
                ("etag", &format!("\"{oid}\"")),
            ],
        );
        let cases = [
            (
                regular,
                "config.json",
                r#"{"type":"file","oid":"OID","size":42,"path":"config.json"}"#,
            ),
            (
                lfs,
                "w.bin",
                r#"{"type":"file","oid":"OID","size":9,"path":"w.bin","lfs":{"oid":"SHA","size":9,"pointerSize":130}}"#,
            ),
        ];
        for (head, path, entry) in cases {
            let listing = format!("[{}]", entry.replace("OID", oid).replace("SHA", &sha));
            let json: serde_json::Value = serde_json::from_str(&listing).unwrap();
            let listed = hf::listed_in_tree(&json);
            let from_listing = super::super::listing::file_meta_from_listing(&commit, &listed[0]);
            let from_head = file_meta_from_head(&head, &repo(), &commit, path).unwrap();
            assert_eq!(from_listing, from_head, "{path}");
        }
    }

    #[test]
    fn head_headers_read_back_into_the_same_metadata() {
        let commit = "c".repeat(40);
        let sha = "ab".repeat(32);
        let lfs = FileMeta {
            path: "w.bin".into(),
            commit: commit.clone(),
            size: 5_242_880,
            etag: sha.clone(),
            lfs: true,
            blob: sha,
            verifiable: true,
        };
        let oid = "0123456789abcdef0123456789abcdef01234567".to_string();
        let regular = FileMeta {
            path: "config.json".into(),
            commit: commit.clone(),
            size: 42,
            etag: oid.clone(),
            lfs: false,
            blob: oid,
            verifiable: true,
        };
        let weird = file_meta_from_head(
            &response(200, &[("etag", "\"weird-etag\""), ("content-length", "3")]),
            &repo(),
            &commit,
            "odd",
        )
        .unwrap();
        for meta in [lfs, regular, weird] {
            let headers: Vec<(&'static str, String)> = meta
                .head_headers()
                .into_iter()
                .map(|(n, v)| (&*n.to_ascii_lowercase().leak(), v))
                .collect();
            let pairs: Vec<(&'static str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let back = file_meta_from_head(&response(200, &pairs), &repo(), &commit, &meta.path);
            assert_eq!(back.unwrap(), meta);
        }
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
