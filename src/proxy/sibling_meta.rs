//! The sibling metadata route (`HEAD|GET /_hubcache/sibling/meta/<hub path and query>`),
//! after its signature was checked: the question a non-owner node would have sent upstream,
//! answered from this node's metadata layer (its caches first, its upstream chain on a miss,
//! cached as for its own clients) on behalf of the client token the request carries, and
//! never forwarded to another sibling. Every answer is tagged with
//! [`HEADER_META_TRUST`]; the routes it does not answer get an untagged 404.

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;

use super::respond::{failure_answer, respond};
use super::RequestCtx;
use crate::app::App;
use crate::config::Trust;
use crate::hf::{self, Route};
use crate::meta::{answering_sibling, Failure, FileMeta, JsonAnswer};
use crate::upstream::sibling::route::HEADER_META_TRUST;
use crate::upstream::sibling::SiblingStats;
use crate::upstream::UpstreamChain;

type Answer = (u16, Vec<(String, String)>, Bytes);

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
    let method = session.req_header().method.clone();
    let is_head = method == http::Method::HEAD;
    let route = match hf::parse_route(method.as_str(), hub_path) {
        Ok(route) if is_head || method == http::Method::GET => route,
        _ => Route::Other,
    };
    ctx.repo = route.repo().map(ToString::to_string);
    let auth = ctx.auth.as_deref();
    let query = (!query.is_empty()).then_some(query);
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
    let tag = trust_tag(&ctx.settings.upstream);
    headers.push((HEADER_META_TRUST.to_string(), tag.to_string()));
    if let Some(cluster) = &ctx.settings.cluster {
        SiblingStats::add(&cluster.stats().meta_served, 1);
    }
    respond(session, status, &headers, body).await?;
    Ok(true)
}
