//! The logging phase: one access-log line and the metrics of every request, whatever
//! answered it (a local answer, the blob storage, or the pass-through proxy).

use pingora::proxy::Session;
use pingora::{Error, ErrorSource};

use super::RequestCtx;
use crate::admin::metrics::RequestSample;
use crate::app::App;
use crate::logging::{self, redact_queries, AccessRecord};

/// `hit`/`partial`/`miss` for file bytes, `pass` for a proxied answer, `-` otherwise.
fn cache_outcome(ctx: &RequestCtx) -> &'static str {
    match &ctx.file {
        Some(file) => file.outcome.unwrap_or("-"),
        None if ctx.pass.current.is_some() => "pass",
        None => "-",
    }
}

/// The upstream that answered (pass-through) or filled the bytes this request waited for.
fn upstream_used(app: &App, ctx: &RequestCtx, fetched: bool) -> Option<String> {
    let id = match &ctx.file {
        Some(file) if fetched => app.fill.upstream_of(&file.served.id),
        Some(_) => None,
        None => ctx.pass.current,
    }?;
    ctx.settings.upstream.get(id).map(|u| u.origin())
}

pub(super) fn log_request(app: &App, session: &Session, error: Option<&Error>, ctx: &RequestCtx) {
    let req = session.req_header();
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    let body_bytes = session.body_bytes_sent() as u64 + ctx.sent_directly;
    let duration = ctx.started.elapsed();
    let outcome = cache_outcome(ctx);
    let served = ctx
        .file
        .as_ref()
        .filter(|f| f.outcome.is_some())
        .map(|f| f.served.tally.get());
    let fetched =
        served.is_some_and(|(_, upstream)| upstream > 0) || matches!(outcome, "miss" | "partial");
    let upstream = upstream_used(app, ctx, fetched);
    let error_text = error.map(|e| redact_queries(&e.to_string()));
    // A client that went away is not hubcache's error.
    let own_error = error
        .filter(|e| e.esource() != &ErrorSource::Downstream)
        .and(error_text.as_deref());
    let method = req.method.as_str();
    let path = req.uri.path();
    let repo = ctx.repo.as_deref();
    app.metrics.record(&RequestSample {
        method,
        route: ctx.route,
        repo,
        path,
        status,
        body_bytes,
        duration,
        first_byte: ctx.header_at.map(|at| at.duration_since(ctx.started)),
        outcome: ctx.file.as_ref().and_then(|f| f.outcome),
        upstream: upstream.as_deref(),
        error: own_error,
    });
    logging::access(&AccessRecord {
        method,
        route: ctx.route,
        repo,
        path,
        query: req.uri.query(),
        status,
        bytes: body_bytes,
        duration,
        cache: outcome,
        upstream: upstream.as_deref(),
        error: error_text.as_deref(),
    });
}
