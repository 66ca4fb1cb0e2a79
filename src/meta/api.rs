//! Cached HF API JSON: repo info, tree pages, paths-info (bound to a commit, kept forever)
//! and refs listings (mutable, trusted for `revision_ttl`). Xet hints are stripped before
//! anything is stored; pagination links are stored as the upstream sent them and rewritten
//! to the mirror's public URL when served.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::table::unix_now;
use super::{caller, Failure, Meta, Scope, UpstreamAnswer};
use crate::hf::{self, HfError, PathsInfoRequest, Repo, RepoPath, Revision};
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

fn with_query(path: String, raw_query: Option<&str>) -> String {
    match raw_query.filter(|q| !q.is_empty()) {
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
}

impl Meta {
    pub(super) fn store_api_answer(
        &self,
        repo: &Repo,
        commit: &str,
        key: &str,
        answer: &JsonAnswer,
    ) {
        let path = self.inner.dir.api_entry(repo, commit, key);
        if let Err(e) = self.inner.dir.save(&path, answer) {
            log::warn!("cannot cache API answer {key} of {repo}@{commit}: {e}");
        }
    }

    /// Ask the upstream for a JSON answer: the upstream's error is replayed, a success is
    /// sanitised (Xet stripped) and grants the caller the repo.
    async fn fetch_json(
        &self,
        repo: &Repo,
        request: &HubRequest,
        auth: Option<&str>,
    ) -> Result<JsonAnswer, Failure> {
        let response = self.inner.upstream.send(request).await?;
        if !response.is_success() {
            return Err(Failure::Replay(UpstreamAnswer::from_response(&response)));
        }
        self.inner.access.learn_success(repo, Scope::Api, auth);
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
        let inner = &self.inner;
        let file = inner.dir.api_entry(repo, commit, &question.key);
        let cached = inner.dir.load::<JsonAnswer>(&file).ok().flatten();
        if let Some(answer) = &cached {
            if inner.access.may_serve_cached(repo, Scope::Api, auth) {
                return Ok(answer.clone());
            }
        }
        if inner.settings.offline {
            return Err(Failure::Hf(match cached {
                Some(_) => inner.access.denial(repo, auth),
                None => question.offline_miss,
            }));
        }
        let flight_key = format!("{repo}\0{commit}\0{}\0{}", question.key, caller(auth));
        let this = self.clone();
        let (repo_c, commit_c, auth_c) =
            (repo.clone(), commit.to_string(), auth.map(str::to_string));
        let result = inner
            .api_calls
            .run(flight_key, move || async move {
                let answer = this
                    .fetch_json(&repo_c, &question.request, auth_c.as_deref())
                    .await?;
                this.store_api_answer(&repo_c, &commit_c, &question.key, &answer);
                Ok(answer)
            })
            .await;
        self.deny_if_unreachable(repo, auth, result)
    }

    /// An upstream outage on a protected repo is answered as huggingface.co would deny.
    fn deny_if_unreachable(
        &self,
        repo: &Repo,
        auth: Option<&str>,
        result: Result<JsonAnswer, Failure>,
    ) -> Result<JsonAnswer, Failure> {
        match result {
            Err(Failure::Upstream(e)) => Err(self
                .inner
                .access
                .denial_without_upstream(repo, Scope::Api, auth)
                .map(Failure::Hf)
                .unwrap_or(Failure::Upstream(e))),
            other => other,
        }
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
        let canonical = hf::canonical_query(raw_query);
        let commit_rev = Revision::new(&commit).map_err(|e| Failure::BadGateway(e.to_string()))?;
        let path = format!(
            "{}/revision/{}",
            hf::api_repo_path(repo),
            hf::encode_revision(&commit_rev)
        );
        let question = ApiQuestion {
            key: info_key(Some(&canonical)),
            request: HubRequest::get(with_query(path, raw_query), auth.map(str::to_string)),
            offline_miss: HfError::revision_not_found(
                revision.map(|r| r.as_str()).unwrap_or("main"),
            ),
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
        let canonical = hf::canonical_query(raw_query);
        let question = ApiQuestion {
            key: format!(
                "tree/{}?{canonical}",
                path.map(|p| p.as_str()).unwrap_or("")
            ),
            request: HubRequest::get(with_query(url, raw_query), auth.map(str::to_string)),
            offline_miss: HfError::entry_not_found(Some(&commit)),
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
        let key = format!("refs?{}", hf::canonical_query(raw_query));
        let file = inner.dir.live_entry(repo, &key);
        let cached = inner.dir.load::<JsonAnswer>(&file).ok().flatten();
        let servable = inner.access.may_serve_cached(repo, Scope::Api, auth);
        if let Some(answer) = &cached {
            let fresh = inner.settings.offline || answer.age() < inner.settings.revision_ttl;
            if fresh && servable {
                return Ok(answer.clone());
            }
        }
        if inner.settings.offline {
            return Err(Failure::Hf(match cached {
                Some(_) => inner.access.denial(repo, auth),
                None => HfError::repo_not_found(),
            }));
        }
        let url = with_query(format!("{}/refs", hf::api_repo_path(repo)), raw_query);
        let flight_key = format!("{repo}\0{key}\0{}", caller(auth));
        let this = self.clone();
        let (repo_c, auth_c) = (repo.clone(), auth.map(str::to_string));
        let result = inner
            .api_calls
            .run(flight_key, move || async move {
                let request = HubRequest::get(url, auth_c.clone());
                let answer = this
                    .fetch_json(&repo_c, &request, auth_c.as_deref())
                    .await?;
                let file = this.inner.dir.live_entry(&repo_c, &key);
                if let Err(e) = this.inner.dir.save(&file, &answer) {
                    log::warn!("cannot cache refs of {repo_c}: {e}");
                }
                Ok(answer)
            })
            .await;
        match (result, cached) {
            (Err(Failure::Upstream(e)), Some(stale)) if servable => {
                log::warn!("serving stale refs of {repo}: {e}");
                Ok(stale)
            }
            (result, _) => self.deny_if_unreachable(repo, auth, result),
        }
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
