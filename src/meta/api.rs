//! Cached HF API JSON: repo info, tree pages, paths-info (bound to a commit, kept forever)
//! and refs listings (mutable, trusted for `revision_ttl`). Xet hints are stripped before
//! anything is stored; pagination links are stored as the upstream sent them and rewritten
//! to the mirror's public URL when served.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::listing::Listing;
use super::policy::{Asker, Cached};
use super::table::unix_now;
use super::{caller, Failure, Meta, Scope, UpstreamAnswer};
use crate::hf::{self, ApiQuery, HfError, PathsInfoRequest, Repo, RepoPath, Revision};
use crate::upstream::{Body, HubRequest, HubResponse};

/// A JSON answer ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonAnswer {
    #[serde(with = "body_as_string")]
    pub body: Bytes,
    /// The upstream's `Link` header (Xet rels removed), to be rewritten to our public URL.
    pub link: Option<String>,
    /// When it was fetched (unix seconds); used for mutable answers only.
    #[serde(default)]
    pub fetched_at: u64,
}

mod body_as_string {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(body))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        String::deserialize(d).map(Bytes::from)
    }
}

impl JsonAnswer {
    pub fn new(body: Bytes, link: Option<String>) -> Self {
        Self {
            body,
            link,
            fetched_at: unix_now(),
        }
    }

    fn age(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.fetched_at))
    }
}

/// Cache key of a repo-info answer for one commit.
pub(super) fn info_key(canonical_query: Option<&str>) -> String {
    format!("info?{}", canonical_query.unwrap_or(""))
}

/// Turn a successful upstream JSON answer into what we store and serve.
fn sanitize(response: &HubResponse) -> JsonAnswer {
    let body = match serde_json::from_slice::<serde_json::Value>(&response.body) {
        Ok(mut json) => {
            if hf::strip_xet_json(&mut json) > 0 {
                serde_json::to_vec(&json)
                    .map(Bytes::from)
                    .unwrap_or_else(|_| response.body.clone())
            } else {
                response.body.clone()
            }
        }
        Err(_) => response.body.clone(),
    };
    let link = response
        .header(hf::headers::LINK)
        .and_then(hf::strip_xet_links);
    JsonAnswer::new(body, link)
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// What a commit-bound API question is.
struct ApiQuestion {
    key: String,
    request: HubRequest,
    /// The answer when offline and nothing is cached.
    offline_miss: HfError,
    /// Whether (and how) the answer lists files whose metadata it gives.
    listing: Option<Listing>,
}

impl Meta {
    /// Queue an API answer for the disk (the caller does not wait).
    pub(super) fn store_api_answer(
        &self,
        repo: &Repo,
        commit: &str,
        key: &str,
        answer: &JsonAnswer,
    ) {
        let store = &self.inner.store;
        store.save(store.dir().api_entry(repo, commit, key), answer);
    }

    /// Ask the upstream for a JSON answer: the upstream's error is replayed, a success is
    /// sanitised (Xet stripped) and, from an origin, grants the caller the repo's API.
    async fn fetch_json(
        &self,
        repo: &Repo,
        request: HubRequest,
        auth: Option<&str>,
    ) -> Result<JsonAnswer, Failure> {
        let protected = self.inner.access.is_protected(repo, Scope::Api).await;
        let response = self
            .ask_upstream(repo, &request.protected(protected))
            .await?;
        if !response.is_success() {
            return Err(Failure::Replay(UpstreamAnswer::from_response(&response)));
        }
        if response.decides_access() {
            self.inner
                .access
                .learn_success(repo, Scope::Api, auth)
                .await;
        }
        Ok(sanitize(&response))
    }

    /// Answer a commit-bound API question from the cache, or from upstream and cache it.
    async fn commit_bound(
        &self,
        repo: &Repo,
        commit: &str,
        auth: Option<&str>,
        question: ApiQuestion,
    ) -> Result<JsonAnswer, Failure> {
        let store = &self.inner.store;
        let file = store.dir().api_entry(repo, commit, &question.key);
        let cached = store.load::<JsonAnswer>(file).await.map(Cached::fresh);
        let asker = Asker {
            repo,
            scope: Scope::Api,
            auth,
        };
        let flight_key = format!("{repo}\0{commit}\0{}\0{}", question.key, caller(auth));
        let ApiQuestion {
            key,
            request,
            offline_miss,
            listing,
        } = question;
        let fetch = || {
            let this = self.clone();
            let (repo, commit, auth) = (repo.clone(), commit.to_string(), auth.map(str::to_string));
            self.inner.api_calls.run(flight_key, move || async move {
                let answer = this.fetch_json(&repo, request, auth.as_deref()).await?;
                this.store_api_answer(&repo, &commit, &key, &answer);
                if let Some(kind) = listing {
                    this.learn_listing(&repo, &commit, kind, &answer.body, auth.as_deref());
                }
                Ok(answer)
            })
        };
        self.cached_or_fetch(
            asker,
            "API answer",
            cached,
            || async { offline_miss },
            fetch,
        )
        .await
    }

    /// `GET /api/{type}s/{repo}[/revision/{rev}]`.
    pub async fn repo_info(
        &self,
        repo: &Repo,
        revision: Option<&Revision>,
        raw_query: Option<&str>,
        auth: Option<&str>,
    ) -> Result<JsonAnswer, Failure> {
        let commit = self.commit_for(repo, revision, auth).await?;
        let query = hf::hub_query(ApiQuery::RepoInfo, raw_query);
        let commit_rev = Revision::new(&commit).map_err(|e| Failure::BadGateway(e.to_string()))?;
        let path = format!(
            "{}/revision/{}",
            hf::api_repo_path(repo),
            hf::encode_revision(&commit_rev)
        );
        let question = ApiQuestion {
            key: info_key(Some(&query.key)),
            request: HubRequest::get(
                with_query(path, query.upstream.as_deref()),
                auth.map(str::to_string),
            ),
            offline_miss: HfError::revision_not_found(
                revision.map(|r| r.as_str()).unwrap_or("main"),
            ),
            listing: Some(Listing::Siblings),
        };
        self.commit_bound(repo, &commit, auth, question).await
    }

    /// `GET /api/{type}s/{repo}/tree/{rev}[/{path}]`.
    pub async fn tree(
        &self,
        repo: &Repo,
        revision: &Revision,
        path: Option<&RepoPath>,
        raw_query: Option<&str>,
        auth: Option<&str>,
    ) -> Result<JsonAnswer, Failure> {
        let commit = self.commit_for(repo, Some(revision), auth).await?;
        let commit_rev = Revision::new(&commit).map_err(|e| Failure::BadGateway(e.to_string()))?;
        let mut url = format!(
            "{}/tree/{}",
            hf::api_repo_path(repo),
            hf::encode_revision(&commit_rev)
        );
        if let Some(path) = path {
            url.push('/');
            url.push_str(&hf::encode_path_segment(path.as_str()));
        }
        let query = hf::hub_query(ApiQuery::Tree, raw_query);
        let question = ApiQuestion {
            key: format!(
                "tree/{}?{}",
                path.map(|p| p.as_str()).unwrap_or(""),
                query.key
            ),
            request: HubRequest::get(
                with_query(url, query.upstream.as_deref()),
                auth.map(str::to_string),
            ),
            offline_miss: HfError::entry_not_found(Some(&commit)),
            listing: Some(Listing::Entries),
        };
        self.commit_bound(repo, &commit, auth, question).await
    }

    /// `POST /api/{type}s/{repo}/paths-info/{rev}`.
    pub async fn paths_info(
        &self,
        repo: &Repo,
        revision: &Revision,
        request: &PathsInfoRequest,
        auth: Option<&str>,
    ) -> Result<JsonAnswer, Failure> {
        let commit = self.commit_for(repo, Some(revision), auth).await?;
        let commit_rev = Revision::new(&commit).map_err(|e| Failure::BadGateway(e.to_string()))?;
        let url = format!(
            "{}/paths-info/{}",
            hf::api_repo_path(repo),
            hf::encode_revision(&commit_rev)
        );
        let body = Body {
            content_type: "application/x-www-form-urlencoded".to_string(),
            bytes: Bytes::from(hf::encode_paths_info_form(request)),
        };
        let question = ApiQuestion {
            key: format!("paths-info?{}", hf::canonical_paths_info_key(request)),
            request: HubRequest::post(url, auth.map(str::to_string), body),
            offline_miss: HfError::entry_not_found(Some(&commit)),
            listing: Some(Listing::Entries),
        };
        self.commit_bound(repo, &commit, auth, question).await
    }

    /// `GET /api/{type}s/{repo}/refs`: mutable, trusted for `revision_ttl`, stale if the
    /// upstream is down.
    pub async fn refs(
        &self,
        repo: &Repo,
        raw_query: Option<&str>,
        auth: Option<&str>,
    ) -> Result<JsonAnswer, Failure> {
        let inner = &self.inner;
        let query = hf::hub_query(ApiQuery::Refs, raw_query);
        let key = format!("refs?{}", query.key);
        let file = inner.store.dir().live_entry(repo, &key);
        let cached = inner
            .store
            .load::<JsonAnswer>(file.clone())
            .await
            .map(|answer| Cached {
                fresh: answer.age() < inner.settings.get().revision_ttl,
                value: answer,
            });
        let asker = Asker {
            repo,
            scope: Scope::Api,
            auth,
        };
        let url = with_query(
            format!("{}/refs", hf::api_repo_path(repo)),
            query.upstream.as_deref(),
        );
        let flight_key = format!("{repo}\0{key}\0{}", caller(auth));
        let fetch = || {
            let this = self.clone();
            let (repo, auth) = (repo.clone(), auth.map(str::to_string));
            inner.api_calls.run(flight_key, move || async move {
                let request = HubRequest::get(url, auth.clone());
                let answer = this.fetch_json(&repo, request, auth.as_deref()).await?;
                this.inner.store.save(file, &answer);
                Ok(answer)
            })
        };
        let offline_miss = || async { HfError::repo_not_found() };
        self.cached_or_fetch(asker, "refs", cached, offline_miss, fetch)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answer_round_trips_through_disk_format() {
        let answer = JsonAnswer::new(
            Bytes::from_static(br#"[{"path":"a"}]"#),
            Some("<http://up/x?cursor=1>; rel=\"next\"".into()),
        );
        let text = serde_json::to_string(&answer).unwrap();
        let back: JsonAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(back, answer);
    }

    #[test]
    fn with_query_appends_only_non_empty_queries() {
        assert_eq!(with_query("/a".into(), None), "/a");
        assert_eq!(with_query("/a".into(), Some("")), "/a");
        assert_eq!(with_query("/a".into(), Some("x=1")), "/a?x=1");
    }
}
