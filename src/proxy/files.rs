//! Resolve requests: settle the file's metadata, then hand the bytes to the blob storage
//! (see `cache`), which Pingora serves with its own Range/HEAD/conditional logic.

use std::ops::Range;
use std::sync::Arc;

use pingora::proxy::Session;
use pingora::Result;

use super::respond::{respond_failure, respond_hf};
use super::RequestCtx;
use crate::app::App;
use crate::cache::ServedBlob;
use crate::evict::DownloadId;
use crate::fetch::{BlobFill, BlobSource, CacheShare, FetchError};
use crate::hf::{self, HfError, RangeRequest, Repo, RepoPath, Revision};
use crate::meta::FileMeta;
use crate::store::BlobId;

/// The per-request state of a file answer, used to add HF headers to the response.
pub struct FileAnswer {
    pub meta: FileMeta,
    pub served: Arc<ServedBlob>,
    /// `hit`, `partial` or `miss`: how much of what a GET asked for was cached when it
    /// arrived; `None` for a HEAD or an empty answer.
    pub outcome: Option<&'static str>,
}

/// The bytes a GET needs: its range, or the whole file; `None` for nothing (an empty file,
/// an unsatisfiable range).
pub(super) fn requested_range(session: &Session, size: u64) -> Option<Range<u64>> {
    if size == 0 {
        return None;
    }
    let range = session
        .req_header()
        .headers
        .get("range")
        .and_then(|v| v.to_str().ok());
    match range.map(|r| hf::parse_single_range(r, size)) {
        Some(RangeRequest::Satisfiable(r)) => Some(r),
        Some(RangeRequest::Unsatisfiable) => None,
        Some(RangeRequest::Ignore) | None => Some(0..size),
    }
}

/// Who is downloading, for counting one read per download however many range requests it
/// makes: the client's address (the first `X-Forwarded-For` hop behind a proxy), its user
/// agent and its credentials, hashed (nothing of it is stored).
fn download_id(session: &Session) -> u64 {
    let headers = &session.req_header().headers;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let forwarded = header("x-forwarded-for")
        .split(',')
        .next()
        .unwrap_or("")
        .trim();
    let address = match forwarded {
        "" => session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        hop => hop.to_string(),
    };
    DownloadId::of(&[&address, header("user-agent"), header("authorization")]).0
}

/// Handle `HEAD|GET` of a file. Returns `Ok(true)` when the answer was written here (an
/// error, or a warm download sent with `sendfile`); `Ok(false)` when the blob storage will
/// serve it.
pub async fn resolve(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    repo: &Repo,
    revision: &Revision,
    path: &RepoPath,
) -> Result<bool> {
    let auth = ctx.auth.clone();
    let meta = match app
        .meta
        .resolve_file(repo, revision, path, auth.as_deref())
        .await
    {
        Ok(meta) => meta,
        Err(failure) => {
            respond_failure(session, &failure).await?;
            return Ok(true);
        }
    };
    let id = match BlobId::parse(&meta.blob) {
        Ok(id) => id,
        Err(e) => {
            respond_hf(session, &HfError::upstream_unavailable(&e.to_string())).await?;
            return Ok(true);
        }
    };
    let is_head = session.req_header().method == http::Method::HEAD;
    let download = Some(download_id(session));
    let wanted = if is_head {
        None
    } else {
        requested_range(session, meta.size)
    };
    let mut outcome = None;
    let served = if ctx.settings.config.offline {
        match offline_blob(app, &id, &meta).await {
            Some(fill) => ServedBlob {
                id,
                size: meta.size,
                etag: meta.etag.clone(),
                engine: app.fill.clone(),
                source: None,
                fill,
                download,
                tally: Default::default(),
                cached_at_open: None,
            },
            None => {
                let error = HfError::entry_not_found(Some(&meta.commit));
                respond_hf(session, &error).await?;
                return Ok(true);
            }
        }
    } else {
        // Public files are fetched without the client's token: a bad or expired token must
        // not break a download anyone may make.
        let fill_auth = if app.meta.files_public(repo).await {
            None
        } else {
            auth
        };
        let source = BlobSource {
            repo: repo.clone(),
            commit: meta.commit.clone(),
            path: path.clone(),
            auth: fill_auth,
            size: meta.size,
            verifiable: meta.verifiable,
        };
        let mut fill = None;
        let mut cached_at_open = None;
        if let Some(range) = &wanted {
            match open_and_wait(app, &id, source.clone(), range).await {
                Ok((opened, share)) => {
                    fill = opened;
                    outcome = Some(share.outcome());
                    cached_at_open = Some(Arc::new(share.cached));
                }
                Err(error) => {
                    respond_hf(session, &error).await?;
                    return Ok(true);
                }
            }
        }
        ServedBlob {
            id,
            size: meta.size,
            etag: meta.etag.clone(),
            engine: app.fill.clone(),
            source: Some(source),
            fill,
            download,
            tally: Default::default(),
            cached_at_open,
        }
    };
    if ctx.settings.config.offline && wanted.is_some() {
        // Offline, only complete files are served.
        outcome = Some("hit");
    }
    ctx.file = Some(FileAnswer {
        meta,
        served: Arc::new(served),
        outcome,
    });
    // A warm plain-HTTP/1 GET may be answered right here; anything else by the blob storage.
    super::sendfile::try_serve(app, session, ctx).await
}

/// Offline, only complete cached files are served. `Some(None)` for an empty file (nothing
/// to read), `Some(Some(fill))` for a complete blob, `None` otherwise.
async fn offline_blob(app: &App, id: &BlobId, meta: &FileMeta) -> Option<Option<Arc<BlobFill>>> {
    if meta.size == 0 {
        return Some(None);
    }
    match app.fill.open_cached(id).await {
        Ok(Some(fill)) if fill.is_complete() => Some(Some(fill)),
        Ok(_) => None,
        Err(e) => {
            log::warn!("offline read of {id}: {e}");
            None
        }
    }
}

/// What a client is told about a failed fill: its kind, never an upstream URL or reason
/// (those may be signed CDN URLs fetched for another client's token).
fn fetch_failure(e: &FetchError) -> HfError {
    let status = e.gateway_status();
    let message = match e {
        FetchError::Refused { .. } => "the upstream hub refused the file",
        FetchError::NotCached { .. } => "hubcache is offline and the file is not cached",
        FetchError::Stalled { .. } => "the upstream hub stopped sending the file",
        FetchError::Store(_) | FetchError::NoSpace(_) | FetchError::OutOfRange { .. } => {
            "hubcache could not store the file"
        }
        FetchError::Corrupt { .. } => "the upstream hub sent content that does not match its hash",
        FetchError::Upstream(u) => u.client_message(),
        FetchError::GaveUp { .. } => "the upstream hub kept failing to send the file",
        FetchError::BadSource(_) | FetchError::Internal(_) => "hubcache failed to serve the file",
    };
    HfError::new(status, None, format!("hubcache: {message}"))
}

/// Open the blob's fill, note how much of `range` is cached, and wait until its first byte is
/// readable, so an upstream that cannot deliver gets a clean 5xx instead of a 200 that breaks
/// off. The fill is `None` when the cache is full: the bytes are then streamed without
/// caching (a miss).
async fn open_and_wait(
    app: &App,
    id: &BlobId,
    source: BlobSource,
    range: &Range<u64>,
) -> Result<(Option<Arc<BlobFill>>, CacheShare), HfError> {
    let gateway = |e: FetchError| {
        log::warn!("{id}: cannot serve: {e}");
        fetch_failure(&e)
    };
    let fill = match app.fill.open(id, source).await {
        Ok(fill) => fill,
        Err(FetchError::NoSpace(reason)) => {
            log::warn!("{id}: cache full ({reason}); serving without caching");
            // Nothing is read from the cache: a miss.
            let nothing = CacheShare {
                total: 1,
                ..CacheShare::default()
            };
            return Ok((None, nothing));
        }
        Err(e) => return Err(gateway(e)),
    };
    let share = fill.cached_share(range.start, range.end);
    match fill.wait_readable(range.start).await {
        Ok(()) | Err(FetchError::NoSpace(_)) => {}
        Err(e) => return Err(gateway(e)),
    }
    fill.want_completion();
    Ok((Some(fill), share))
}
