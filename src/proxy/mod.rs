//! The Pingora `ProxyHttp` module: classify the request, answer it from the metadata cache
//! and block store, or pass it through. The HF knowledge lives in `hf`, the decisions in
//! `meta` and `fetch`; this module only wires them into Pingora's phases.

mod access;
mod api;
mod files;
mod passthrough;
mod respond;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::cache::key::CacheKey;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::app::App;
use crate::cache::BLOB_STORAGE;
use crate::hf::{self, HfError, Route};

pub use files::FileAnswer;
use passthrough::PassThrough;
use respond::respond_hf;

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
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
}

impl RequestCtx {
    /// Base URLs of all upstreams (links pointing at any of them are rewritten to us).
    fn upstream_origins(&self, app: &App) -> Vec<String> {
        app.upstream
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

/// The hubcache proxy.
pub struct HubProxy {
    app: Arc<App>,
}

impl HubProxy {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn public_base(&self, session: &Session) -> String {
        if let Some(url) = &self.app.config.public_url {
            return url.as_str().trim_end_matches('/').to_string();
        }
        let headers = &session.req_header().headers;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let host = header("host")
            .map(str::to_string)
            .unwrap_or_else(|| self.app.config.listen.to_string());
        // Behind a TLS-terminating proxy, clients reach us over https.
        let scheme = match header("x-forwarded-proto") {
            Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        format!("{scheme}://{host}")
    }
}

#[async_trait]
impl ProxyHttp for HubProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            header_at: None,
            route: "unparsed",
            repo: None,
            auth: None,
            public_base: String::new(),
            file: None,
            pass: PassThrough::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.public_base = self.public_base(session);
        ctx.auth = session
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
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
                if app.config.offline {
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
        passthrough::upstream_peer(&self.app, ctx).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.pass.redirect.is_none() {
            if let Some(index) = ctx.pass.current {
                if let Some(upstream) = self.app.upstream.get(index) {
                    upstream.record_failure();
                }
                ctx.pass.tried.push(index);
            }
            let others_left = self
                .app
                .upstream
                .all()
                .iter()
                .any(|u| !ctx.pass.tried.contains(&u.index));
            if others_left {
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        passthrough::upstream_request(&self.app, session, upstream_request, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        passthrough::upstream_response(&self.app, session, upstream_response, ctx)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
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

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        matches!(error.etype(), ErrorType::Custom("upstream-retry"))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
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
        access::log_request(&self.app, session, error, ctx);
    }
}
