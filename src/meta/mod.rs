//! Metadata: revision resolution, per-file metadata, cached API JSON, and who may read it.
//!
//! Everything cached here is keyed by commit sha, except the branch/tag -> sha mappings
//! (trusted for `revision_ttl`) and refs listings. When no upstream answers, what is cached
//! keeps serving; when nothing is cached, the caller gets [`Failure::Upstream`] (a 5xx).
//! Every question follows one rule (`policy`). Disk reads run on the blocking pool and writes
//! are written behind (`store`): no request waits for a metadata write or holds a lock across
//! a read. Visibility and grants are learned from `origin` upstreams only (`access`).

mod access;
mod api;
mod by_branch;
mod disk;
mod files;
mod gc;
mod legacy;
mod listing;
mod policy;
mod revisions;
mod siblings;
mod singleflight;
mod store;
mod table;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

pub use access::Scope;
pub use api::JsonAnswer;
pub use files::FileMeta;
pub use gc::{CatalogEntry, GcReport};
pub use listing::ListingObserver;
pub use siblings::{answering_sibling, is_answering_sibling, owner_key};

use access::AccessBook;
use disk::{hashed_name, MetaDir};
use files::FileEntry;
use policy::{Asker, Cached};
use revisions::Revisions;
use singleflight::SingleFlight;
use store::MetaStore;

use crate::hf::{self, HfError, Repo, Revision};
use crate::live::Live;
use crate::store::Durability;
use crate::upstream::{
    Attempt, AttemptFailure, HubRequest, HubResponse, UpstreamChain, UpstreamError,
};

/// Tunables of the metadata layer (all follow a config reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaSettings {
    pub offline: bool,
    pub revision_ttl: Duration,
    pub auth_ttl: Duration,
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
    store: MetaStore,
    /// The upstream chain and settings as configured now (read for each question).
    upstream: Live<Arc<UpstreamChain>>,
    settings: Live<Arc<MetaSettings>>,
    revisions: Revisions,
    access: AccessBook,
    /// Present files, by `repo\0commit\0path`.
    files: Mutex<lru::LruCache<String, Arc<FileEntry>>>,
    /// "No such file at this commit" answers and when they were learned (memory only).
    missing: Mutex<lru::LruCache<String, std::time::Instant>>,
    revision_calls: SingleFlight<String, Result<String, Failure>>,
    file_calls: SingleFlight<String, Result<Arc<FileEntry>, Failure>>,
    /// Resolve `HEAD`s by branch (`by_branch`), so concurrent askers (siblings included) of
    /// one file at one branch make one upstream call.
    branch_file_calls: SingleFlight<String, Result<Option<FileMeta>, Failure>>,
    api_calls: SingleFlight<String, Result<JsonAnswer, Failure>>,
    /// Told about every file listing learned from the hub (the prefetcher).
    listing_observer: Mutex<Option<Arc<dyn ListingObserver>>>,
    /// The sibling nodes, whose repo owner is asked first (`siblings`).
    cluster: std::sync::OnceLock<Live<Option<Arc<crate::upstream::sibling::Cluster>>>>,
}

/// In-memory file metadata entries kept hot.
const FILE_CACHE_ENTRIES: usize = 100_000;
/// "No such file" answers remembered (in memory only).
const MISSING_ENTRIES: usize = 50_000;

fn lru<V>(entries: usize) -> lru::LruCache<String, V> {
    crate::bounded::lru(entries)
}

/// A stable, non-reversible id of the caller's credentials for coalescing keys.
fn caller(auth: Option<&str>) -> String {
    auth.map(hashed_name).unwrap_or_default()
}

impl Meta {
    /// Metadata kept under every one of `cache_roots`, written with `durability`.
    pub fn new(
        cache_roots: &[std::path::PathBuf],
        durability: Durability,
        upstream: Live<Arc<UpstreamChain>>,
        settings: Live<Arc<MetaSettings>>,
    ) -> Self {
        let dir = MetaDir::with_roots(cache_roots, durability);
        for root in dir.roots() {
            legacy::migrate_once(root);
        }
        let store = MetaStore::new(dir);
        Self {
            inner: Arc::new(Inner {
                revisions: Revisions::new(store.clone()),
                access: AccessBook::new(store.clone(), settings.map(|s| s.auth_ttl)),
                store,
                upstream,
                settings,
                files: Mutex::new(lru(FILE_CACHE_ENTRIES)),
                missing: Mutex::new(lru(MISSING_ENTRIES)),
                revision_calls: SingleFlight::default(),
                file_calls: SingleFlight::default(),
                branch_file_calls: SingleFlight::default(),
                api_calls: SingleFlight::default(),
                listing_observer: Mutex::new(None),
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn is_offline(&self) -> bool {
        self.inner.settings.get().offline
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
        let cached = match inner.revisions.lookup(repo, name).await {
            Some(known) => Some(Cached {
                fresh: known.age < inner.settings.get().revision_ttl,
                value: known.commit,
            }),
            // For the default branch ("" = no revision given), the last known `main` is the
            // best stale answer when the upstream cannot be asked.
            None if name.is_empty() => inner
                .revisions
                .lookup(repo, "main")
                .await
                .map(|main| Cached::stale(main.commit)),
            None => None,
        };
        let asker = Asker {
            repo,
            scope: Scope::Api,
            auth,
        };
        let key = format!("{repo}\0{name}\0{}", caller(auth));
        let fetch = || {
            let this = self.clone();
            let (repo, name, auth) = (repo.clone(), name.to_string(), auth.map(str::to_string));
            inner.revision_calls.run(key, move || async move {
                this.fetch_revision(&repo, &name, auth.as_deref()).await
            })
        };
        let offline_miss = || async {
            if inner.revisions.knows_repo(repo).await {
                HfError::revision_not_found(revision.map(|r| r.as_str()).unwrap_or("main"))
            } else {
                HfError::repo_not_found()
            }
        };
        self.cached_or_fetch(asker, "revision", cached, offline_miss, fetch)
            .await
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
        let protected = inner.access.is_protected(repo, Scope::Api).await;
        let request = HubRequest::get(path, auth.map(str::to_string)).protected(protected);
        let response = self.ask_upstream(repo, &request).await?;
        if !response.is_success() {
            return Err(Failure::Replay(UpstreamAnswer::from_response(&response)));
        }
        let mut json: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo} is not JSON: {e}")))?;
        let summary = hf::RepoInfoSummary::from_json(&json)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo}: {e}")))?;
        let gated = summary.gated.is_gated();
        if response.decides_access() {
            inner
                .access
                .learn_visibility(repo, summary.private, gated)
                .await;
            inner.access.learn_success(repo, Scope::Api, auth).await;
        } else {
            inner
                .access
                .claim_protection(repo, summary.private, gated)
                .await;
            if summary.private && !response.token_sent {
                // A private repo described by a mirror that never saw this client's token.
                return Err(self.not_for_this_client(&response));
            }
        }
        inner.revisions.record(repo, name, &summary.sha).await;
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

    /// An answer an untrusted upstream gave without the client's token, about something that
    /// needs one: treated as that upstream not answering.
    fn not_for_this_client(&self, response: &HubResponse) -> Failure {
        let origin = self
            .inner
            .upstream
            .get()
            .get(response.upstream)
            .map(|u| u.origin())
            .unwrap_or_default();
        Failure::from(UpstreamError::Unavailable {
            attempts: vec![Attempt {
                origin,
                failure: AttemptFailure::Withheld {
                    status: response.status,
                },
            }],
        })
    }
}

/// Recording metadata that did not come from an upstream answer (cache import).
impl Meta {
    /// Remember that `name` (a branch or tag; "" = default branch) pointed at `commit` as of
    /// `learned_at` (unix seconds), unless hubcache learned a newer mapping itself. Returns
    /// whether it was recorded. Blocking: call it from a blocking thread, as the importer does.
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

    /// Record a repo-info JSON answer for `commit` (learning the repo's visibility from it:
    /// the operator chose to import it). Blocking, like [`import_revision`](Self::import_revision).
    pub fn import_repo_info(&self, repo: &Repo, commit: &str, body: &[u8]) -> Result<(), Failure> {
        let mut json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo} is not JSON: {e}")))?;
        let summary = hf::RepoInfoSummary::from_json(&json)
            .map_err(|e| Failure::BadGateway(format!("repo info of {repo}: {e}")))?;
        self.inner.access.learn_visibility_blocking(
            repo,
            summary.private,
            summary.gated.is_gated(),
        );
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

    /// Treat `repo` as public unless its visibility is already known (a huggingface_hub cache
    /// import: the operator vouches for files that record no visibility). Returns whether it
    /// was marked. Blocking, like [`import_revision`](Self::import_revision).
    pub fn import_assume_public(&self, repo: &Repo) -> bool {
        self.inner.access.assume_public_blocking(repo)
    }

    /// Wait until every metadata write queued so far is on disk (blocking). Only for the end
    /// of a cache import and tests; requests never wait for metadata writes.
    pub fn flush(&self) {
        self.inner.store.flush();
    }

    /// See [`MetaStore::stall_writer_for`](store::MetaStore::stall_writer_for).
    #[cfg(test)]
    pub fn stall_writer_for(&self, duration: std::time::Duration) {
        self.inner.store.stall_writer_for(duration);
    }

    /// Metadata files queued and not yet written.
    #[cfg(test)]
    pub fn queued_writes(&self) -> usize {
        self.inner.store.queued_count()
    }
}
