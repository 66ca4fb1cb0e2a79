//! Asking a repo's owner node a metadata question (`HEAD|GET` of the metadata route, signed,
//! on behalf of the client's token): its answer comes back as a [`HubResponse`], tagged with
//! the trust the owner's upstream chain has, so the metadata layer handles it as it handles
//! an upstream's.

use std::time::Duration;

use super::members::{Cluster, Node};
use sha2::{Digest, Sha256};

use super::route::{HEADER_META_TRUST, META_BODY_PARAM, META_PREFIX};
use crate::config::Trust;
use crate::upstream::{HubRequest, HubResponse, UpstreamId};

/// How long an owner has to answer a metadata question (headers and body) before this node
/// marks it failed and asks its upstream chain.
pub const META_TIMEOUT: Duration = Duration::from_secs(10);

/// How an owner answered a metadata question.
#[derive(Debug)]
pub enum MetaReply {
    /// The owner's answer (a success or the hub's error answer, e.g. 404, 401, 403, 429).
    Answer(Box<HubResponse>),
    /// The owner answered but none of its upstreams could (a tagged 5xx): it is alive, and
    /// this node asks its own chain.
    Unanswered(u16),
    /// The node declined the question without an owner's answer (an untagged 4xx: a refused
    /// signature, a node without the route): it is alive, and this node asks its own chain.
    Declined(u16),
}

/// The trust an owner's answer carries: `origin` only when it says so.
pub fn trust_of(tag: Option<&str>) -> Trust {
    match tag {
        Some("origin") => Trust::Origin,
        _ => Trust::Mirror,
    }
}

impl Cluster {
    /// Ask `node` the metadata question `request` (GET, HEAD, or a POST with its body, whose
    /// digest the signed query carries).
    /// `Err` when the node failed: no answer in [`META_TIMEOUT`], an untagged 5xx, or a body
    /// that broke off.
    pub async fn ask_meta(&self, node: &Node, request: &HubRequest) -> Result<MetaReply, String> {
        let path_and_query = meta_path_and_query(request);
        let mut builder = self
            .signed(
                &request.method,
                node,
                &path_and_query,
                None,
                request.auth.as_deref(),
            )
            .ok_or_else(|| "no cluster.secret to sign with".to_string())?;
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, &body.content_type)
                .body(body.bytes.clone());
        }
        let url = node
            .url()
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|e| format!("{}: {e}", node.origin()))?;
        let response = builder
            .timeout(META_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{}: {}", node.origin(), e.without_url()))?;
        let status = response.status().as_u16();
        let Some(tag) = response
            .headers()
            .get(HEADER_META_TRUST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            if status >= 500 {
                return Err(format!("{} answered {status}", node.origin()));
            }
            return Ok(MetaReply::Declined(status));
        };
        if status >= 500 {
            return Ok(MetaReply::Unanswered(status));
        }
        let headers = response.headers().clone();
        let body = read_bounded(response, request.max_body)
            .await
            .map_err(|e| format!("{}: {e}", node.origin()))?;
        Ok(MetaReply::Answer(Box::new(HubResponse {
            status,
            headers,
            body,
            upstream: UpstreamId::SIBLING,
            trust: trust_of(Some(&tag)),
            token_sent: request.auth.is_some(),
            url,
        })))
    }
}

/// The metadata route's path and query for `request`: the hub's, under [`META_PREFIX`], with
/// the body's digest when it has one.
pub fn meta_path_and_query(request: &HubRequest) -> String {
    let mut out = format!("{META_PREFIX}{}", request.path_and_query);
    if let Some(body) = &request.body {
        let sep = if out.contains('?') { '&' } else { '?' };
        let digest = hex::encode(Sha256::digest(&body.bytes));
        out.push_str(&format!("{sep}{META_BODY_PARAM}={digest}"));
    }
    out
}

async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, String> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, ClusterSecret};
    use crate::upstream::chain_tests::Fake;
    use url::Url;

    fn cluster_with(peer: &str) -> Cluster {
        let config = ClusterConfig {
            self_url: Url::parse("http://127.0.0.1:1/").unwrap(),
            peers: vec![Url::parse(peer).unwrap()],
            secret: Some(ClusterSecret::new("0123456789abcdef".into())),
        };
        Cluster::new(&config, None).unwrap()
    }

    async fn ask(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
    ) -> (Result<MetaReply, String>, Fake) {
        let fake = Fake::start(status, headers).await;
        let cluster = cluster_with(fake.url());
        let request = HubRequest::get(
            "/api/models/a/b/revision/main".into(),
            Some("Bearer hf_x".into()),
        );
        let reply = cluster.ask_meta(&cluster.peers()[0], &request).await;
        (reply, fake)
    }

    #[tokio::test]
    async fn an_owners_tagged_answer_is_the_answer_with_its_trust_and_the_token_signed_along() {
        let (reply, fake) = ask(404, &[(HEADER_META_TRUST, "origin")]).await;
        let Ok(MetaReply::Answer(response)) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(response.status, 404);
        assert_eq!(response.trust, Trust::Origin);
        assert!(response.token_sent);
        assert_eq!(response.upstream, UpstreamId::SIBLING);
        let seen = fake.seen();
        assert_eq!(
            seen[0].path,
            "/_hubcache/sibling/meta/api/models/a/b/revision/main"
        );
        assert_eq!(seen[0].auth.as_deref(), Some("Bearer hf_x"));
        let (reply, _) = ask(200, &[(HEADER_META_TRUST, "mirror")]).await;
        assert!(matches!(reply, Ok(MetaReply::Answer(r)) if r.trust == Trust::Mirror));
    }

    #[tokio::test]
    async fn untagged_or_server_error_answers_are_not_the_hubs() {
        let (reply, _) = ask(502, &[(HEADER_META_TRUST, "origin")]).await;
        assert!(matches!(reply, Ok(MetaReply::Unanswered(502))), "{reply:?}");
        let (reply, _) = ask(403, &[]).await;
        assert!(matches!(reply, Ok(MetaReply::Declined(403))), "{reply:?}");
        let (reply, _) = ask(500, &[]).await;
        assert!(reply.is_err(), "{reply:?}");
        // Nobody listening: the node failed.
        let cluster = cluster_with("http://127.0.0.1:9/");
        let request = HubRequest::head("/a/b/resolve/main/x".into(), None);
        assert!(cluster
            .ask_meta(&cluster.peers()[0], &request)
            .await
            .is_err());
    }

    #[test]
    fn a_question_with_a_body_signs_the_bodys_digest_in_its_query() {
        let get = HubRequest::get("/api/models/a/b/tree/main?recursive=1".into(), None);
        assert_eq!(
            meta_path_and_query(&get),
            "/_hubcache/sibling/meta/api/models/a/b/tree/main?recursive=1"
        );
        let body = crate::upstream::Body {
            content_type: "application/x-www-form-urlencoded".into(),
            bytes: bytes::Bytes::from_static(b"paths=a"),
        };
        let post = HubRequest::post("/api/models/a/b/paths-info/c".into(), None, body);
        let digest = hex::encode(Sha256::digest(b"paths=a"));
        assert_eq!(
            meta_path_and_query(&post),
            format!(
                "/_hubcache/sibling/meta/api/models/a/b/paths-info/c?{META_BODY_PARAM}={digest}"
            )
        );
    }

    #[test]
    fn only_an_answer_tagged_origin_counts_as_the_hubs() {
        assert_eq!(trust_of(Some("origin")), Trust::Origin);
        assert_eq!(trust_of(Some("mirror")), Trust::Mirror);
        assert_eq!(trust_of(Some("Origin ")), Trust::Mirror);
        assert_eq!(trust_of(None), Trust::Mirror);
    }
}
