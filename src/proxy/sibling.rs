//! The sibling routes on the public listener (`/_hubcache/sibling/...`): answered only to
//! requests signed with the cluster secret (anything else is 403). The metadata route is
//! `sibling_meta`. The blob route serves a
//! range of a blob this node owns: blocks on disk, blocks still in flight (waiting on this
//! node's fill), and what is missing filled from this node's upstream chain; that fill never
//! asks a sibling in turn. At most [`MAX_SERVED_STREAMS`] are served at once (503 beyond).

use std::sync::Arc;
use std::time::Duration;

use pingora::proxy::Session;
use pingora::Result;

use super::files::{requested_range, FileAnswer};
use super::respond::respond;
use super::RequestCtx;
use crate::app::App;
use crate::cache::ServedBlob;
use crate::fetch::BlobSource;
use crate::hf::{self, Repo, RepoPath};
use crate::meta::FileMeta;
use crate::store::BlobId;
use crate::upstream::sibling::route::{BlobQuery, BLOB_PREFIX, META_PREFIX, PING, PREFIX};
use crate::upstream::sibling::{
    unix_now, SiblingStats, Signed, HEADER_SIGNATURE, HEADER_TIME, MAX_SERVED_STREAMS,
};

/// How long a sibling request waits for a stream slot before it is answered 503.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// What a served sibling request holds until it is logged.
pub struct SiblingServe {
    _permit: tokio::sync::OwnedSemaphorePermit,
    stats: &'static SiblingStats,
}

/// Whether `path` is a sibling route.
pub fn is_sibling_path(path: &str) -> bool {
    path.starts_with(PREFIX)
}

async fn plain(session: &mut Session, status: u16, message: &str) -> Result<bool> {
    let headers = vec![(
        "content-type".to_string(),
        "text/plain; charset=utf-8".to_string(),
    )];
    respond(
        session,
        status,
        &headers,
        bytes::Bytes::from(format!("{message}\n")),
    )
    .await?;
    Ok(true)
}

/// Answer a sibling route. `Ok(true)` when answered here; `Ok(false)` when the blob storage
/// serves the bytes.
pub async fn answer(app: &App, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    ctx.route = "sibling";
    let Some(cluster) = ctx.settings.cluster.clone() else {
        return plain(session, 403, "this node is not in a cluster").await;
    };
    let stats = cluster.stats();
    let verified = {
        let req = session.req_header();
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let path_and_query = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        match cluster.signer() {
            None => Err("this node has no cluster.secret".to_string()),
            Some(signer) => signer
                .verify(
                    &Signed {
                        method: req.method.as_str(),
                        path_and_query,
                        range: header("range"),
                        auth: ctx.auth.as_deref(),
                    },
                    header(HEADER_TIME),
                    header(HEADER_SIGNATURE),
                    unix_now(),
                )
                .map_err(|e| e.to_string()),
        }
    };
    if let Err(reason) = verified {
        SiblingStats::add(&stats.refused, 1);
        log::info!("sibling request refused: {reason}");
        return plain(session, 403, "forbidden: not a signed sibling request").await;
    }
    let (path, query) = {
        let uri = &session.req_header().uri;
        (
            uri.path().to_string(),
            uri.query().unwrap_or("").to_string(),
        )
    };
    if path == PING {
        return plain(session, 200, "ok").await;
    }
    if let Some(hub_path) = path.strip_prefix(META_PREFIX) {
        return super::sibling_meta::answer(app, session, ctx, hub_path, &query).await;
    }
    let Some(id) = path.strip_prefix(BLOB_PREFIX) else {
        return plain(session, 404, "no such sibling route").await;
    };
    let (id, source, cached_only) = match parse_blob(id, &query, ctx.auth.clone()) {
        Ok(parsed) => parsed,
        Err(reason) => return plain(session, 400, &reason).await,
    };
    ctx.repo = Some(source.repo.to_string());
    // Gated and private repos: only on behalf of a client token the asking node verified.
    if source.auth.is_none() && app.meta.files_protected(&source.repo).await {
        SiblingStats::add(&stats.refused, 1);
        return plain(
            session,
            403,
            "forbidden: this repo needs a verified client token",
        )
        .await;
    }
    if ctx.settings.config.offline {
        return plain(session, 503, "this node is offline").await;
    }
    let Some(permit) = cluster.serve_permit(SLOT_WAIT).await else {
        SiblingStats::add(&stats.busy, 1);
        let message = format!("busy: {MAX_SERVED_STREAMS} sibling streams served already");
        return plain(session, 503, &message).await;
    };
    serve(app, session, ctx, id, source, cached_only).await?;
    if ctx.file.is_some() {
        SiblingStats::add(&stats.served, 1);
        ctx.sibling = Some(SiblingServe {
            _permit: permit,
            stats,
        });
        return Ok(false);
    }
    Ok(true)
}

fn parse_blob(
    id: &str,
    query: &str,
    auth: Option<String>,
) -> Result<(BlobId, BlobSource, bool), String> {
    let id = BlobId::parse(id).map_err(|e| format!("blob id: {e}"))?;
    let query = BlobQuery::parse(query)?;
    let repo = Repo::parse(&query.repo).map_err(|e| format!("repo: {e}"))?;
    let path = RepoPath::new(&query.path).map_err(|e| format!("path: {e}"))?;
    if !hf::is_commit_sha(&query.commit) {
        return Err("commit: not a commit sha".to_string());
    }
    let source = BlobSource {
        repo,
        commit: query.commit,
        path,
        auth,
        size: query.size,
        verifiable: query.verifiable,
    };
    Ok((id, source, query.cached_only))
}

/// Open the blob's fill for a sibling and hand it to the blob storage (which answers the
/// Range); an error is answered here. `cached_only`: serve the range only if every block of
/// it is on disk (404 otherwise), and fetch nothing.
async fn serve(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    id: BlobId,
    source: BlobSource,
    cached_only: bool,
) -> Result<()> {
    let size = source.size;
    let is_head = session.req_header().method == http::Method::HEAD;
    let wanted = if is_head {
        None
    } else {
        requested_range(session, size)
    };
    let mut fill = None;
    let mut outcome = None;
    if cached_only {
        let cached = match (&wanted, app.fill.open_cached(&id).await) {
            (Some(range), Ok(Some(opened))) => {
                let whole = opened.cached_share(range.start, range.end).outcome() == "hit";
                whole.then_some(opened)
            }
            _ => None,
        };
        let Some(opened) = cached else {
            plain(session, 404, "not cached here").await?;
            return Ok(());
        };
        fill = Some(opened);
        outcome = Some("hit");
    } else if let Some(range) = &wanted {
        let opened = match app.fill.open_for_sibling(&id, source.clone()).await {
            Ok(opened) => opened,
            Err(e) => {
                log::warn!("{id}: cannot serve a sibling: {e}");
                plain(session, e.gateway_status(), "cannot open the blob").await?;
                return Ok(());
            }
        };
        outcome = Some(opened.cached_share(range.start, range.end).outcome());
        if let Err(e) = opened.wait_readable(range.start).await {
            log::warn!("{id}: cannot serve a sibling: {e}");
            plain(session, e.gateway_status(), "cannot fill the blob").await?;
            return Ok(());
        }
        opened.want_completion();
        fill = Some(opened);
    }
    let meta = FileMeta {
        path: source.path.as_str().to_string(),
        commit: source.commit.clone(),
        size,
        etag: id.as_str().to_string(),
        lfs: false,
        blob: id.as_str().to_string(),
        verifiable: source.verifiable,
    };
    let served = ServedBlob {
        etag: id.as_str().to_string(),
        id,
        size,
        engine: app.fill.clone(),
        // A cached-only answer never fetches.
        source: (!cached_only).then_some(source),
        fill,
        download: None,
        tally: Default::default(),
        cached_at_open: None,
    };
    ctx.file = Some(FileAnswer {
        meta,
        served: Arc::new(served),
        outcome,
    });
    Ok(())
}

/// The logging phase of a sibling request: count the bytes it served.
pub fn logged(session: &Session, ctx: &RequestCtx) {
    if let Some(serve) = &ctx.sibling {
        SiblingStats::add(&serve.stats.served_bytes, session.body_bytes_sent() as u64);
    }
}
