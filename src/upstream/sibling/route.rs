//! The sibling routes on the public listener, as both sides see them:
//! `GET /_hubcache/sibling/blob/<id>?repo=&commit=&path=&size=&verifiable=[&cached=1]` (ranged) and
//! `HEAD|GET|POST /_hubcache/sibling/meta/<hub path and query>` and `GET /_hubcache/sibling/ping`.

use std::borrow::Cow;

/// Every sibling route starts with this.
pub const PREFIX: &str = "/_hubcache/sibling/";
/// The blob route, followed by the blob id.
pub const BLOB_PREFIX: &str = "/_hubcache/sibling/blob/";
/// The metadata route, followed by the hub path and query the question would go to
/// (`HEAD|GET /_hubcache/sibling/meta/api/models/org/name/revision/main`).
pub const META_PREFIX: &str = "/_hubcache/sibling/meta";
/// Header on every answer of the metadata route: `origin` when the answering node's upstream
/// chain is all `trust: origin` (its answer counts as the hub's), `mirror` otherwise. An
/// answer without it is not the owner's answer (a refusal, an unknown route).
pub const HEADER_META_TRUST: &str = "x-hubcache-sibling-trust";
/// Query parameter of a metadata question with a body (paths-info, a `POST`): the sha256
/// (hex) of the body, so the signature over the path and query covers the body too.
pub const META_BODY_PARAM: &str = "hubcache_body_sha256";
/// The liveness probe.
pub const PING: &str = "/_hubcache/sibling/ping";

/// How the owner can fetch a blob it lacks: one file that has this content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobQuery {
    /// `models/org/name`, `datasets/...`, `spaces/...`.
    pub repo: String,
    pub commit: String,
    pub path: String,
    pub size: u64,
    pub verifiable: bool,
    /// Answer only from blocks already on disk (404 otherwise): never fetch for this request.
    pub cached_only: bool,
}

impl BlobQuery {
    /// The path and query of the blob route for blob `id`.
    pub fn path_and_query(&self, id: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("repo", &self.repo)
            .append_pair("commit", &self.commit)
            .append_pair("path", &self.path)
            .append_pair("size", &self.size.to_string())
            .append_pair("verifiable", if self.verifiable { "1" } else { "0" })
            .append_pair("cached", if self.cached_only { "1" } else { "0" })
            .finish();
        format!("{BLOB_PREFIX}{id}?{query}")
    }

    /// Parses the query of a blob route; the error names what is wrong.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut repo = None;
        let mut commit = None;
        let mut path = None;
        let mut size = None;
        let mut verifiable = None;
        let mut cached = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "repo" => &mut repo,
                "commit" => &mut commit,
                "path" => &mut path,
                "size" => &mut size,
                "verifiable" => &mut verifiable,
                "cached" => &mut cached,
                other => return Err(format!("unknown parameter {other:?}")),
            };
            *slot = Some(value);
        }
        let need = |v: Option<Cow<'_, str>>, name: &str| {
            v.map(Cow::into_owned)
                .ok_or_else(|| format!("missing parameter {name:?}"))
        };
        let size = need(size, "size")?;
        Ok(Self {
            repo: need(repo, "repo")?,
            commit: need(commit, "commit")?,
            path: need(path, "path")?,
            size: size.parse().map_err(|_| format!("bad size {size:?}"))?,
            verifiable: need(verifiable, "verifiable")? == "1",
            cached_only: cached.is_some_and(|c| c == "1"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_query_survives_the_round_trip() {
        let q = BlobQuery {
            repo: "models/acme/x y".into(),
            commit: "a".repeat(40),
            path: "dir/f&g=1.bin".into(),
            size: 123,
            verifiable: true,
            cached_only: true,
        };
        let pq = q.path_and_query("abc");
        let (path, query) = pq.split_once('?').unwrap();
        assert_eq!(path, "/_hubcache/sibling/blob/abc");
        assert_eq!(BlobQuery::parse(query), Ok(q));
    }

    #[test]
    fn a_blob_query_missing_a_parameter_is_refused() {
        assert!(BlobQuery::parse("repo=a&commit=b&path=c&verifiable=1")
            .unwrap_err()
            .contains("size"));
        assert!(BlobQuery::parse("repo=a&commit=b&path=c&size=x&verifiable=1").is_err());
        assert!(BlobQuery::parse("repo=a&commit=b&path=c&size=1&verifiable=1&hop=2").is_err());
    }
}
