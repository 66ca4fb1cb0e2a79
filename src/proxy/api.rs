//! HF API routes answered from the metadata cache: repo info, tree, paths-info, refs, and
//! the Xet token endpoint.

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;

use super::respond::{respond, respond_failure, respond_hf};
use super::RequestCtx;
use crate::app::App;
use crate::hf::{self, HfError, Route};
use crate::meta::JsonAnswer;

/// Read a request body completely (paths-info forms are small), bounded.
pub(super) async fn read_body(session: &mut Session, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

async fn send_json(session: &mut Session, ctx: &RequestCtx, answer: &JsonAnswer) -> Result<()> {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(link) = &answer.link {
        let rewritten = hf::rewrite_link_header(link, &ctx.upstream_origins(), &ctx.public_base);
        headers.push(("link".to_string(), rewritten));
    }
    respond(session, 200, &headers, answer.body.clone()).await
}

/// Answer one of the cached API routes. Returns `Ok(true)` (always answered here).
pub async fn answer(
    app: &App,
    session: &mut Session,
    ctx: &RequestCtx,
    route: &Route,
) -> Result<bool> {
    let auth = ctx.auth.as_deref();
    let raw_query = session.req_header().uri.query().map(str::to_string);
    let query = raw_query.as_deref();
    let result = match route {
        Route::RepoInfo { repo, revision } => {
            app.meta
                .repo_info(repo, revision.as_ref(), query, auth)
                .await
        }
        Route::Tree {
            repo,
            revision,
            path,
        } => {
            app.meta
                .tree(repo, revision, path.as_ref(), query, auth)
                .await
        }
        Route::PathsInfo { repo, revision } => {
            let content_type = request_content_type(session);
            let limit = ctx.settings.config.server.body_timeout;
            let body = match tokio::time::timeout(limit, read_body(session, 4 << 20)).await {
                Ok(body) => body?,
                Err(_) => {
                    session.set_keepalive(None);
                    let error = HfError::new(
                        408,
                        None,
                        "the request body did not arrive within server.body_timeout",
                    );
                    respond_hf(session, &error).await?;
                    return Ok(true);
                }
            };
            let Some(body) = body else {
                session.set_keepalive(None);
                respond_hf(session, &HfError::bad_request("paths-info body too large")).await?;
                return Ok(true);
            };
            match hf::parse_paths_info_body(content_type.as_deref(), &body) {
                Ok(request) => app.meta.paths_info(repo, revision, &request, auth).await,
                Err(e) => {
                    respond_hf(session, &HfError::bad_request(e.to_string())).await?;
                    return Ok(true);
                }
            }
        }
        Route::Refs { repo } => app.meta.refs(repo, query, auth).await,
        Route::XetReadToken { .. } => {
            respond_hf(session, &xet_token_refusal()).await?;
            return Ok(true);
        }
        _ => {
            respond(session, 404, &[], Bytes::new()).await?;
            return Ok(true);
        }
    };
    match result {
        Ok(answer) => send_json(session, ctx, &answer).await?,
        Err(failure) => respond_failure(session, &failure).await?,
    }
    Ok(true)
}

/// hubcache serves files over plain HTTP only and strips every Xet hint, so no client it
/// served asks for a Xet token. One that does (its local tree cache came from a direct
/// huggingface.co session) gets a clear, immediate error instead of bytes that bypass the
/// mirror.
/// The request's `Content-Type`, passed on with a body the mirror forwards (paths-info).
pub(super) fn request_content_type(session: &Session) -> Option<String> {
    session
        .req_header()
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn xet_token_refusal() -> HfError {
    HfError::new(
        404,
        None,
        "hubcache serves files over HTTP, not Xet: set HF_HUB_DISABLE_XET=1, or clear the \
         client's cached tree listings (~/.cache/huggingface/hub/*/trees) and retry",
    )
}
