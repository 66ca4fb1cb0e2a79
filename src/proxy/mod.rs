//! The Pingora `ProxyHttp` module: classify the request, answer it from the metadata cache
//! and block store, or pass it through. The HF knowledge lives in `hf`, the decisions in
//! `meta` and `fetch`; this module only wires them into Pingora's phases.

mod access;
mod api;
mod checks;
pub mod conn;
mod files;
mod home;
mod origin;
mod passthrough;
mod respond;
mod sendfile;
mod sibling;
mod sibling_meta;
mod tunnel;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::cache::key::CacheKey;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::app::{App, InFlight, Settings};
use crate::cache::BLOB_STORAGE;
use crate::hf::{self, HfError, Route};
use crate::upstream::FailureKind;

use checks::Check;
pub use files::FileAnswer;
use passthrough::PassThrough;
use respond::respond_hf;

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    /// The settings this request started with, kept to its end (a reload meanwhile applies
    /// to the next requests).
    settings: Arc<Settings>,
    /// Counts the request as in flight (a shutdown drains until none is left).
    _in_flight: InFlight,
    /// When the response header was ready (proxied and cached answers).
    header_at: Option<Instant>,
    /// Route label for logs.
    route: &'static str,
    /// `models/org/name` when the route names a repo (for logs and metrics).
    repo: Option<String>,
    /// The client's Authorization header.
    auth: Option<String>,
    /// Absolute base URL clients use to reach us (for Link and Location rewriting).
    public_base: String,
    /// Set when a file answer is served by the blob storage.
    file: Option<FileAnswer>,
    pass: PassThrough,
    /// Set by the early checks: answer the home page.
    home: bool,
    /// Set by the early checks: the error (and extra headers) the request is refused with.
    refusal: Option<(HfError, Vec<(String, String)>)>,
    /// Set when a sibling's request is served (holds its stream slot).
    sibling: Option<sibling::SiblingServe>,
    /// Body bytes written straight to the client's socket (`sendfile`), which Pingora's
    /// count of body bytes does not see.
    sent_directly: u64,
}

impl RequestCtx {
    /// Base URLs of all upstreams (links pointing at any of them are rewritten to us).
    fn upstream_origins(&self) -> Vec<String> {
        self.settings
            .upstream
            .all()
            .iter()
            .map(|u| u.base().as_str().to_string())
            .collect()
    }
}

/// What a client is told when proxying fails: the kind of failure only.
fn client_message(code: u16) -> &'static str {
    match code {
        400..=499 => "hubcache could not read the request",
        502..=504 => "hubcache could not get an answer from an upstream hub",
        _ => "hubcache could not complete the request",
    }
}

/// The last touches on a response header before it is written (Pingora's `response_filter`,
/// and the `sendfile` path, which writes its header itself): the HF headers of a file answer,
/// and `Connection: close` while the process stops.
fn finish_response_header(
    app: &App,
    session: &mut Session,
    response: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if app.activity.is_stopping() || session.is_process_shutting_down() {
        // This process hands over to a new one or stops: tell a keep-alive client to
        // reconnect after this answer instead of cutting its idle connection later.
        session.set_keepalive(None);
    }
    ctx.header_at = Some(Instant::now());
    if let Some(file) = &ctx.file {
        let meta = &file.meta;
        response.remove_header("age");
        response.insert_header(hf::headers::X_REPO_COMMIT, meta.commit.as_str())?;
        response.insert_header(hf::headers::X_LINKED_SIZE, meta.size.to_string())?;
        if meta.lfs {
            response.insert_header(hf::headers::X_LINKED_ETAG, hf::quote_etag(&meta.etag))?;
        }
        response.insert_header(
            hf::headers::ACCESS_CONTROL_EXPOSE_HEADERS,
            hf::headers::EXPOSE_HEADERS_VALUE,
        )?;
    }
    Ok(())
}

/// The hubcache proxy.
pub struct HubProxy {
    app: Arc<App>,
}

impl HubProxy {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[async_trait]
impl ProxyHttp for HubProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            settings: self.app.settings(),
            _in_flight: self.app.activity.begin(),
            header_at: None,
            route: "unparsed",
            repo: None,
            auth: None,
            public_base: String::new(),
            file: None,
            pass: PassThrough::default(),
            home: false,
            refusal: None,
            sibling: None,
            sent_directly: 0,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Per read of a request body (Pingora's default is 60 s); the whole body is bounded by
        // the same time where it is read (paths-info).
        session.set_read_timeout(Some(ctx.settings.config.server.body_timeout));
        match checks::check_request(session.req_header()) {
            Check::Pass => Ok(()),
            Check::Home => {
                ctx.home = true;
                Ok(())
            }
            Check::Refuse(error, headers) => {
                ctx.route = "refused";
                let status = error.status;
                let message = error.message.clone();
                ctx.refusal = Some((error, headers));
                Err(Error::explain(ErrorType::HTTPStatus(status), message))
            }
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.public_base = origin::session_base(session, ctx.settings.config.public_url.as_ref());
        if ctx.home {
            ctx.route = "home";
            let headers: Vec<(String, String)> = home::HEADERS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let body = bytes::Bytes::from(home::page(&ctx.public_base));
            respond::respond(session, 200, &headers, body).await?;
            return Ok(true);
        }
        ctx.auth = session
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if sibling::is_sibling_path(session.req_header().uri.path()) {
            return sibling::answer(&self.app, session, ctx).await;
        }
        let route = {
            let req = session.req_header();
            hf::parse_route(req.method.as_str(), req.uri.path())
        };
        let route = match route {
            Ok(route) => route,
            Err(e) => {
                ctx.route = "invalid";
                respond_hf(session, &HfError::bad_request(e.to_string())).await?;
                return Ok(true);
            }
        };
        ctx.route = route.name();
        ctx.repo = route.repo().map(ToString::to_string);
        let app = Arc::clone(&self.app);
        match &route {
            Route::Resolve {
                repo,
                revision,
                path,
            } => files::resolve(&app, session, ctx, repo, revision, path).await,
            Route::ResolveCache { repo, commit, path } => {
                files::resolve(&app, session, ctx, repo, commit, path).await
            }
            Route::Other => {
                if ctx.settings.config.offline {
                    let error = HfError::new(
                        404,
                        None,
                        "hubcache is offline and does not cache this route",
                    );
                    respond_hf(session, &error).await?;
                    return Ok(true);
                }
                Ok(false)
            }
            _ => api::answer(&app, session, ctx, &route).await,
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.file.is_some() {
            session.cache.enable(&BLOB_STORAGE, None, None, None, None);
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let file = ctx.file.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "cache enabled without a file")
        })?;
        let mut key = CacheKey::new(file.served.id.as_str(), "");
        key.extensions.insert(Arc::clone(&file.served));
        Ok(key)
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        if ctx.file.is_some() {
            // The blob storage answers every lookup; a miss here is a bug, never a reason to
            // send the resolve request upstream through Pingora's cache-miss path.
            log::error!("blob lookup missed for {}", session.req_header().uri);
            let error = HfError::new(500, None, "internal error: blob lookup missed");
            respond_hf(session, &error).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        passthrough::upstream_peer(ctx).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout => FailureKind::Timeout,
            _ => FailureKind::Connect,
        };
        if passthrough::attempt_failed(ctx, kind) {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !replayable {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        // Our own "try the next upstream" errors were counted where they were raised.
        let ours = matches!(e.etype(), ErrorType::Custom("upstream-retry"));
        if ours || e.esource() != &pingora::ErrorSource::Upstream {
            return e;
        }
        // The upstream failed after the connection was made (no answer in time, reset): a
        // request that can be replayed goes to the next upstream.
        let kind = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => FailureKind::Timeout,
            _ if ctx.pass.in_flight.is_some() => FailureKind::Connect,
            _ => FailureKind::Stream,
        };
        let before_answer = ctx.pass.in_flight.is_some();
        if passthrough::attempt_failed(ctx, kind)
            && replayable
            && before_answer
            && session.response_written().is_none()
        {
            e.set_retry(true);
        }
        e
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(body), Some(id)) = (body.as_ref(), ctx.pass.current) {
            ctx.settings.upstream.count_bytes(id, body.len() as u64);
        }
        Ok(None)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        passthrough::upstream_request(session, upstream_request, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        passthrough::upstream_response(session, upstream_response, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        finish_response_header(&self.app, session, response, ctx)
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        matches!(error.etype(), ErrorType::Custom("upstream-retry"))
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // Refused requests are expected, and so are clients leaving a `sendfile` download;
        // `logging` still writes their one line.
        ctx.refusal.is_some() || sendfile::client_left(ctx, error)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some((error, headers)) = &ctx.refusal {
            session.set_keepalive(None);
            if session.response_written().is_none() {
                let mut all = respond::error_headers(error);
                all.extend(headers.iter().cloned());
                let body = bytes::Bytes::from(error.body_json());
                if let Err(write_error) = respond::respond(session, error.status, &all, body).await
                {
                    log::debug!("could not send the refusal: {write_error}");
                }
            }
            return FailToProxy {
                error_code: error.status,
                can_reuse_downstream: false,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            // The client's request body stalled past `server.body_timeout` (Pingora's per-read
            // timeout can fire before the whole-body deadline that answers 408 itself).
            ErrorType::ReadTimedout if e.esource() != &pingora::ErrorSource::Upstream => 408,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => 502,
                pingora::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            // The details (which may name hosts) go to the log line, not to the client.
            let error = HfError::new(code, None, client_message(code));
            if let Err(write_error) = respond_hf(session, &error).await {
                log::debug!("could not send the error answer: {write_error}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        sibling::logged(session, ctx);
        access::log_request(&self.app, session, error, ctx);
    }
}
