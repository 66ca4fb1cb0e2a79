//! Metadata: revision resolution, per-file metadata, cached API JSON, and who may read it.
//!
//! Everything cached here is keyed by commit sha, except the branch/tag -> sha mappings
//! (trusted for `revision_ttl`) and refs listings. When no upstream answers, what is cached
//! keeps serving; when nothing is cached, the caller gets [`Failure::Upstream`] (a 5xx).

mod access;
mod api;
mod disk;
mod files;
mod revisions;
mod singleflight;
mod table;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

pub use access::Scope;
pub use api::JsonAnswer;
pub use files::FileMeta;

use access::AccessBook;
use disk::{hashed_name, MetaDir};
use files::FileEntry;
use revisions::Revisions;
use singleflight::SingleFlight;

use crate::hf::{self, HfError, Repo, Revision};
use crate::store::Durability;
use crate::upstream::{HubRequest, HubResponse, UpstreamChain, UpstreamError};

/// Tunables of the metadata layer.
#[derive(Debug, Clone)]
pub struct MetaSettings {
    pub offline: bool,
    pub revision_ttl: Duration,
    pub auth_ttl: Duration,
    pub durability: Durability,
}

/// An upstream's error answer, replayed to the client as it came (status, HF error headers,
/// body), so clients raise the same exceptions they would against huggingface.co.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Headers of an upstream error answer that reach the client.
const REPLAYED_HEADERS: &[&str] = &[
    "x-error-code",
    "x-error-message",
    "x-repo-commit",
    "content-type",
    "retry-after",
    "www-authenticate",
    "x-request-id",
];

impl UpstreamAnswer {
    fn from_response(response: &HubResponse) -> Self {
        let headers = REPLAYED_HEADERS
            .iter()
            .filter_map(|name| {
                response
                    .header(name)
                    .map(|value| (name.to_string(), value.to_string()))
            })
            .collect();
        Self {
            status: response.status,
            headers,
            body: response.body.clone(),
        }
    }

    /// A replayed header's value (names are stored lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn error_code(&self) -> Option<&str> {
        self.header("x-error-code")
    }
}

/// Why a metadata question has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// An HF protocol error decided by hubcache (offline misses, denials).
    #[error("{} {}", .0.status, .0.message)]
    Hf(HfError),
    /// The upstream's own error answer.
    #[error("upstream answered {}", .0.status)]
    Replay(UpstreamAnswer),
    /// No upstream could be asked.
    #[error(transparent)]
    Upstream(Arc<UpstreamError>),
    /// The upstream answered something unusable, or the disk failed.
    #[error("{0}")]
    BadGateway(String),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Upstream(Arc::new(e))
    }
}

/// The metadata service. Cheap to clone.
#[derive(Clone)]
pub struct Meta {
    inner: Arc<Inner>,
}

struct Inner {
    dir: MetaDir,
    upstream: Arc<UpstreamChain>,
    settings: MetaSettings,
    revisions: Revisions,
    access: AccessBook,
    files: Mutex<lru::LruCache<String, Arc<FileEntry>>>,
    revision_calls: SingleFlight<String, Result<String, Failure>>,
    file_calls: SingleFlight<String, Result<Arc<FileEntry>, Failure>>,
    api_calls: SingleFlight<String, Result<JsonAnswer, Failure>>,
}

/// In-memory file metadata entries kept hot.
const FILE_CACHE_ENTRIES: usize = 100_000;

/// A stable, non-reversible id of the caller's credentials for coalescing keys.
fn caller(auth: Option<&str>) -> String {
    auth.map(hashed_name).unwrap_or_default()
}

impl Meta {
    /// Metadata kept under every one of `cache_roots`.
    pub fn new(
        cache_roots: &[std::path::PathBuf],
        upstream: Arc<UpstreamChain>,
        settings: MetaSettings,
    ) -> Self {
        let dir = MetaDir::with_roots(cache_roots, settings.durability);
        let capacity =
            std::num::NonZeroUsize::new(FILE_CACHE_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            inner: Arc::new(Inner {
                revisions: Revisions::new(dir.clone()),
                access: AccessBook::new(dir.clone(), settings.auth_ttl),
                dir,
                upstream,
                settings,
                files: Mutex::new(lru::LruCache::new(capacity)),
                revision_calls: SingleFlight::default(),
                file_calls: SingleFlight::default(),
                api_calls: SingleFlight::default(),
            }),
        }
    }

    pub fn is_offline(&self) -> bool {
        self.inner.settings.offline
    }

    /// Resolve `revision` (`None` = the default branch) to a commit sha.
    pub async fn commit_for(
        &self,
        repo: &Repo,
        revision: Option<&Revision>,
        auth: Option<&str>,
    ) -> Result<String, Failure> {
        if let Some(rev) = revision.filter(|r| r.is_commit()) {
            return Ok(rev.as_str().to_string());
        }
        let name = revision.map(|r| r.as_str()).unwrap_or("");
        let inner = &self.inner;
        let known = inner.revisions.lookup(repo, name);
        // For the default branch ("" = no revision given), the last known `main` is the best
        // stale answer when the upstream cannot be asked.
        let fallback = known.clone().or_else(|| {
            name.is_empty()
                .then(|| inner.revisions.lookup(repo, "main"))
                .flatten()
        });
        if let Some(known) = &known {
            let fresh = inner.settings.offline || known.age < inner.settings.revision_ttl;
            if fresh && inner.access.may_serve_cached(repo, Scope::Api, auth) {
                return Ok(known.commit.clone());
            }
        }
        if inner.settings.offline {
            if let Some(stale) = fallback.filter(|_| known.is_none()) {
                if inner.access.may_serve_cached(repo, Scope::Api, auth) {
                    return Ok(stale.commit);
                }
            }
            return Err(self.offline_revision_miss(repo, revision, auth, known.is_some()));
        }
        let key = format!("{repo}\0{name}\0{}", caller(auth));
        let this = self.clone();
        let (repo_c, name_c, auth_c) = (repo.clone(), name.to_string(), auth.map(str::to_string));
        let result = inner
            .revision_calls
            .run(key, move || async move {
                this.fetch_revision(&repo_c, &name_c, auth_c.as_deref())
                    .await
            })
            .await;
        match (result, fallback) {
            (Err(Failure::Upstream(e)), Some(known))
                if inner.access.may_serve_cached(repo, Scope::Api, auth) =>
            {
                log::warn!(
                    "serving stale {repo}@{name} -> {} ({e}; mapping is {}s old)",
                    known.commit,
                    known.age.as_secs()
                );
                Ok(known.commit)
            }
            (Err(Failure::Upstream(e)), _) => Err(inner
                .access
                .denial_without_upstream(repo, Scope::Api, auth)
                .map(Failure::Hf)
                .unwrap_or(Failure::Upstream(e))),
            (result, _) => result,
        }
    }

    fn offline_revision_miss(
        &self,
        repo: &Repo,
        revision: Option<&Revision>,
        auth: Option<&str>,
        known: bool,
    ) -> Failure {
        if known {
            return Failure::Hf(self.inner.access.denial(repo, auth));
        }
        if self.inner.revisions.knows_repo(repo) {
            let rev = revision.map(|r| r.as_str()).unwrap_or("main");
            Failure::Hf(HfError::revision_not_found(rev))
        } else {
            Failure::Hf(HfError::repo_not_found())
        }
    }

    /// Ask the upstream which commit `name` is, and keep the repo-info answer for it.
    async fn fetch_revision(
        &self,
        repo: &Repo,
        name: &str,
        auth: Option<&str>,
    ) -> Result<String, Failure> {
        let inner = &self.inner;
        let mut path = hf::api_repo_path(repo);
        if !name.is_empty() {
            let rev = Revision::new(name).map_err(|e| Failure::BadGateway(e.to_string()))?;
            path.push_str("/revision/");
            path.push_str(&hf::encode_revision(&rev));
        }
        let response = inner
            .upstream
            .send(&HubRequest::get(path, auth.map(str::to_string)))
            .await?;
        if !response.is_success() {
            return Err(Failure::Replay(UpstreamAnswer::from_response(&response)));
        }
        let mut json: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo} is not JSON: {e}")))?;
        let summary = hf::RepoInfoSummary::from_json(&json)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo}: {e}")))?;
        let gated = summary.gated.is_gated();
        inner.access.learn_visibility(repo, summary.private, gated);
        inner.access.learn_success(repo, Scope::Api, auth);
        inner.revisions.record(repo, name, &summary.sha);
        hf::strip_xet_json(&mut json);
        let body = serde_json::to_vec(&json)
            .map(Bytes::from)
            .unwrap_or_else(|_| response.body.clone());
        self.store_api_answer(
            repo,
            &summary.sha,
            &api::info_key(None),
            &JsonAnswer::new(body, None),
        );
        Ok(summary.sha)
    }
}

/// Recording metadata that did not come from an upstream answer (cache import).
impl Meta {
    /// Remember that `name` (a branch or tag; "" = default branch) pointed at `commit` as of
    /// `learned_at` (unix seconds), unless hubcache learned a newer mapping itself. Returns
    /// whether it was recorded.
    pub fn import_revision(&self, repo: &Repo, name: &str, commit: &str, learned_at: u64) -> bool {
        self.inner
            .revisions
            .record_if_newer(repo, name, commit, learned_at)
    }

    /// Record a file's metadata at its commit (the per-revision path index).
    pub fn import_file(&self, repo: &Repo, meta: FileMeta) {
        let (commit, path) = (meta.commit.clone(), meta.path.clone());
        self.remember_file(
            repo,
            &commit,
            &path,
            Arc::new(files::FileEntry::Present(meta)),
        );
    }

    /// Record a repo-info JSON answer for `commit` (learning the repo's visibility from it).
    pub fn import_repo_info(&self, repo: &Repo, commit: &str, body: &[u8]) -> Result<(), Failure> {
        let mut json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo} is not JSON: {e}")))?;
        let summary = hf::RepoInfoSummary::from_json(&json)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo}: {e}")))?;
        self.inner
            .access
            .learn_visibility(repo, summary.private, summary.gated.is_gated());
        hf::strip_xet_json(&mut json);
        let body = serde_json::to_vec(&json)
            .map(Bytes::from)
            .map_err(|e| Failure::BadGateway(e.to_string()))?;
        self.store_api_answer(
            repo,
            commit,
            &api::info_key(None),
            &JsonAnswer::new(body, None),
        );
        Ok(())
    }
}
