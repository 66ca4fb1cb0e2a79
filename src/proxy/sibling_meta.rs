//! The sibling metadata route (`HEAD|GET|POST /_hubcache/sibling/meta/<hub path and query>`),
//! after its signature was checked: the question a non-owner node would have sent upstream,
//! answered from this node's metadata layer (its caches first, its upstream chain on a miss,
//! cached as for its own clients) on behalf of the client token the request carries, and
//! never forwarded to another sibling. Every answer is tagged with
//! [`HEADER_META_TRUST`]; the routes it does not answer get an untagged 404. A paths-info
//! question (a `POST`) carries its body's sha256 in the signed query ([`META_BODY_PARAM`]);
//! a body that does not match is refused (untagged 403).

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;
use sha2::{Digest, Sha256};

use super::api::request_content_type;
use super::respond::{failure_answer, respond};
use super::RequestCtx;
use crate::app::App;
use crate::config::Trust;
use crate::hf::{self, Route};
use crate::meta::{answering_sibling, Failure, FileMeta, JsonAnswer};
use crate::upstream::sibling::route::{HEADER_META_TRUST, META_BODY_PARAM};
use crate::upstream::sibling::SiblingStats;
use crate::upstream::UpstreamChain;

type Answer = (u16, Vec<(String, String)>, Bytes);

/// Largest paths-info body read (as for clients).
const MAX_BODY: usize = 4 << 20;

/// The body digest a question was signed with, and the hub's own query.
fn split_query(query: &str) -> (Option<String>, String) {
    let mut digest = None;
    let mut rest = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        match part
            .strip_prefix(META_BODY_PARAM)
            .and_then(|v| v.strip_prefix('='))
        {
            Some(value) => digest = Some(value.to_ascii_lowercase()),
            None => rest.push(part),
        }
    }
    (digest, rest.join("&"))
}

/// The paths-info body of a `POST`, if it arrived whole and matches the signed digest.
async fn signed_body(
    session: &mut Session,
    ctx: &RequestCtx,
    digest: Option<&str>,
) -> Result<Option<Vec<u8>>> {
    let Some(digest) = digest else {
        return Ok(None);
    };
    let limit = ctx.settings.config.server.body_timeout;
    let body = match tokio::time::timeout(limit, super::api::read_body(session, MAX_BODY)).await {
        Ok(body) => body?,
        Err(_) => None,
    };
    Ok(body.filter(|b| hex::encode(Sha256::digest(b)) == digest))
}

/// `origin` when every upstream of this node is an origin (whatever it answers, cached or
/// asked, was decided by origins), `mirror` otherwise.
fn trust_tag(chain: &UpstreamChain) -> &'static str {
    if chain.all().iter().all(|u| u.trust() == Trust::Origin) {
        "origin"
    } else {
        "mirror"
    }
}

fn file_answer(result: Result<FileMeta, Failure>) -> Answer {
    match result {
        Ok(meta) => (200, meta.head_headers(), Bytes::new()),
        Err(failure) => failure_answer(&failure),
    }
}

fn json_answer(result: Result<JsonAnswer, Failure>) -> Answer {
    match result {
        // The Link is the upstream's own (the asking node rewrites it for its clients).
        Ok(answer) => {
            let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
            if let Some(link) = answer.link {
                headers.push(("link".to_string(), link));
            }
            (200, headers, answer.body)
        }
        Err(failure) => failure_answer(&failure),
    }
}

/// Answer a sibling's metadata question about `hub_path` (with `query`). Always answered
/// here (`Ok(true)`).
pub async fn answer(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    hub_path: &str,
    query: &str,
) -> Result<bool> {
    let tag = trust_tag(&ctx.settings.upstream);
    if ctx.settings.config.offline {
        // Not the hub's answer: the asking node asks its own chain (and keeps this node live).
        let headers = vec![(HEADER_META_TRUST.to_string(), tag.to_string())];
        let body = Bytes::from_static(b"this node is offline\n");
        respond(session, 503, &headers, body).await?;
        return Ok(true);
    }
    let method = session.req_header().method.clone();
    let is_head = method == http::Method::HEAD;
    let route = hf::parse_route(method.as_str(), hub_path).unwrap_or(Route::Other);
    ctx.repo = route.repo().map(ToString::to_string);
    let (digest, query) = split_query(query);
    let paths_info = match &route {
        Route::PathsInfo { .. } => {
            let content_type = request_content_type(session);
            let Some(body) = signed_body(session, ctx, digest.as_deref()).await? else {
                session.set_keepalive(None);
                if let Some(cluster) = &ctx.settings.cluster {
                    SiblingStats::add(&cluster.stats().refused, 1);
                }
                let body = Bytes::from_static(b"forbidden: the body is not the one signed\n");
                respond(session, 403, &[], body).await?;
                return Ok(true);
            };
            Some(hf::parse_paths_info_body(content_type.as_deref(), &body))
        }
        _ => None,
    };
    let auth = ctx.auth.as_deref();
    let query = (!query.is_empty()).then_some(query.as_str());
    let meta = &app.meta;
    let answer = answering_sibling(async {
        Some(match &route {
            Route::Resolve {
                repo,
                revision,
                path,
            } if is_head => file_answer(meta.resolve_file(repo, revision, path, auth).await),
            Route::ResolveCache { repo, commit, path } if is_head => {
                file_answer(meta.resolve_file(repo, commit, path, auth).await)
            }
            Route::RepoInfo { repo, revision } => {
                json_answer(meta.repo_info(repo, revision.as_ref(), query, auth).await)
            }
            Route::Tree {
                repo,
                revision,
                path,
            } => json_answer(meta.tree(repo, revision, path.as_ref(), query, auth).await),
            Route::Refs { repo } => json_answer(meta.refs(repo, query, auth).await),
            Route::PathsInfo { repo, revision } => match paths_info {
                Some(Ok(request)) => {
                    json_answer(meta.paths_info(repo, revision, &request, auth).await)
                }
                _ => return None,
            },
            _ => return None,
        })
    })
    .await;
    let Some((status, mut headers, body)) = answer else {
        let headers = vec![("content-type".to_string(), "text/plain".to_string())];
        let body = Bytes::from_static(b"not a metadata question siblings ask\n");
        respond(session, 404, &headers, body).await?;
        return Ok(true);
    };
    headers.push((HEADER_META_TRUST.to_string(), tag.to_string()));
    if let Some(cluster) = &ctx.settings.cluster {
        SiblingStats::add(&cluster.stats().meta_served, 1);
    }
    respond(session, status, &headers, body).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_digest_is_taken_out_of_the_hubs_query() {
        let (digest, rest) = split_query(&format!("a=1&{META_BODY_PARAM}=ABC&b=2"));
        assert_eq!(digest.as_deref(), Some("abc"));
        assert_eq!(rest, "a=1&b=2");
        let (digest, rest) = split_query("recursive=1");
        assert_eq!((digest, rest.as_str()), (None, "recursive=1"));
        assert_eq!(split_query(""), (None, String::new()));
    }
}
