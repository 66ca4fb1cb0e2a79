//! Plain pass-through of every other route to the upstream chain, by Pingora: peer choice
//! with failover, redirects to other hosts followed server-side (without Authorization),
//! same-origin redirects and pagination links rewritten to the mirror, Xet hints stripped.
//! The client's `Authorization` goes only to upstreams that receive tokens; a 401/403 from
//! one it was withheld from counts as that upstream's failure (see `upstream`).

use std::time::Duration;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use url::Url;

use super::RequestCtx;
use crate::app::App;
use crate::hf::{self, LocationKind};
use crate::upstream::{asks_for_credentials, dns};

/// Off-host redirects followed per request.
const MAX_REDIRECTS: u8 = 5;

/// Where the pass-through currently sends the request.
#[derive(Debug, Default)]
pub struct PassThrough {
    /// Upstreams that failed for this request.
    pub tried: Vec<usize>,
    /// The upstream of the current attempt.
    pub current: Option<usize>,
    /// The client sent a token that the current upstream was not given.
    pub token_withheld: bool,
    /// An off-host redirect target being followed.
    pub redirect: Option<Url>,
    pub hops: u8,
}

fn peer(addr: std::net::SocketAddr, tls: bool, host: &str) -> Box<HttpPeer> {
    let mut peer = HttpPeer::new(addr, tls, host.to_string());
    let options = &mut peer.options;
    options.connection_timeout = Some(Duration::from_secs(10));
    options.total_connection_timeout = Some(Duration::from_secs(15));
    options.read_timeout = Some(Duration::from_secs(60));
    options.write_timeout = Some(Duration::from_secs(60));
    options.idle_timeout = Some(Duration::from_secs(60));
    Box::new(peer)
}

fn retry_error(reason: String) -> Box<Error> {
    let mut e = Error::explain(ErrorType::Custom("upstream-retry"), reason);
    e.set_retry(true);
    e
}

fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Choose the peer: the redirect target being followed, else the next untried upstream.
pub async fn upstream_peer(app: &App, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    if let Some(target) = &ctx.pass.redirect {
        let host = target.host_str().unwrap_or("").to_string();
        let port = target.port_or_known_default().unwrap_or(80);
        let addr = dns::resolve(&host, port)
            .await
            .map_err(|e| Error::explain(ErrorType::ConnectNoRoute, e.to_string()))?;
        return Ok(peer(addr, target.scheme() == "https", &host));
    }
    for upstream in app.upstream.ordered() {
        if ctx.pass.tried.contains(&upstream.index) {
            continue;
        }
        match dns::resolve(upstream.host(), upstream.port()).await {
            Ok(addr) => {
                ctx.pass.current = Some(upstream.index);
                return Ok(peer(addr, upstream.is_tls(), upstream.host()));
            }
            Err(e) => {
                log::warn!("{e}");
                upstream.record_failure();
                ctx.pass.tried.push(upstream.index);
            }
        }
    }
    Err(Error::explain(
        ErrorType::HTTPStatus(502),
        "no upstream hub could be reached",
    ))
}

/// Point the request at the chosen upstream (its path prefix and Host) or redirect target.
pub fn upstream_request(
    app: &App,
    session: &Session,
    req: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    ctx.pass.token_withheld = false;
    let (path_and_query, host) = if let Some(target) = &ctx.pass.redirect {
        req.remove_header("authorization");
        let mut pq = target.path().to_string();
        if let Some(q) = target.query() {
            pq.push('?');
            pq.push_str(q);
        }
        (pq, host_header(target))
    } else {
        let upstream = ctx
            .pass
            .current
            .and_then(|i| app.upstream.get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
        if !upstream.receives_tokens() {
            ctx.pass.token_withheld = req.remove_header("authorization").is_some();
        }
        let original = session
            .req_header()
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        (
            format!("{}{}", upstream.base_path(), original),
            upstream.host_header(),
        )
    };
    let uri = path_and_query
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "upstream URI", e))?;
    req.set_uri(uri);
    req.insert_header("host", host)?;
    Ok(())
}

/// Inspect the upstream's answer: fail over on 5xx/429, follow off-host redirects, rewrite
/// same-origin ones and Link headers, strip Xet hints.
pub fn upstream_response(
    app: &App,
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let status = resp.status.as_u16();
    app.upstream.note_status(status);
    let idempotent = session.req_header().method.is_idempotent();
    let current = ctx.pass.current.and_then(|i| app.upstream.get(i)).cloned();
    if ctx.pass.redirect.is_none() {
        if let Some(upstream) = &current {
            let error_code = resp
                .headers
                .get(hf::headers::X_ERROR_CODE)
                .and_then(|v| v.to_str().ok());
            let not_for_client =
                ctx.pass.token_withheld && asks_for_credentials(status, error_code);
            if not_for_client {
                // Not this client's answer: the upstream never saw its token.
                ctx.pass.tried.push(upstream.index);
                let others_left = app
                    .upstream
                    .all()
                    .iter()
                    .any(|u| !ctx.pass.tried.contains(&u.index));
                if idempotent && others_left {
                    return Err(retry_error(format!(
                        "{} answered {status} without the client's token, trying the next upstream",
                        upstream.origin()
                    )));
                }
                return Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "no upstream trusted with the client's token answered",
                ));
            }
            if status >= 500 || status == 429 {
                upstream.record_failure();
                ctx.pass.tried.push(upstream.index);
                let others_left = app
                    .upstream
                    .all()
                    .iter()
                    .any(|u| !ctx.pass.tried.contains(&u.index));
                if idempotent && others_left {
                    return Err(retry_error(format!(
                        "{} answered {status}, trying the next upstream",
                        upstream.origin()
                    )));
                }
            } else {
                upstream.record_success();
            }
        }
    }
    if (300..400).contains(&status) {
        if let Some(location) = resp
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        {
            let mut bases: Vec<String> = Vec::new();
            if let Some(target) = &ctx.pass.redirect {
                bases.push(target.as_str().to_string());
            } else if let Some(upstream) = &current {
                bases.push(upstream.base().as_str().to_string());
            }
            bases.extend(ctx.upstream_origins(app));
            match hf::rewrite_location(&location, &bases, &ctx.public_base) {
                LocationKind::SameOrigin {
                    public_relative,
                    public_absolute,
                    ..
                } => {
                    let relative = location.starts_with('/');
                    let value = if relative {
                        public_relative
                    } else {
                        public_absolute
                    };
                    resp.insert_header("location", value)?;
                }
                LocationKind::OffHost(url) if idempotent && ctx.pass.hops < MAX_REDIRECTS => {
                    let target = Url::parse(&url).map_err(|e| {
                        Error::because(ErrorType::InternalError, "redirect target", e)
                    })?;
                    let host = target.host_str().unwrap_or("").to_string();
                    ctx.pass.redirect = Some(target);
                    ctx.pass.hops += 1;
                    return Err(retry_error(format!("following a redirect to {host}")));
                }
                _ => {}
            }
        }
    }
    strip_and_rewrite_headers(app, resp, ctx)
}

/// Remove Xet headers and links; point pagination links at the mirror.
pub fn strip_and_rewrite_headers(
    app: &App,
    resp: &mut ResponseHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    let xet: Vec<String> = resp
        .headers
        .keys()
        .filter(|name| hf::is_xet_header(name.as_str()))
        .map(|name| name.as_str().to_string())
        .collect();
    for name in xet {
        resp.remove_header(&name);
    }
    let links: Vec<String> = resp
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if !links.is_empty() {
        resp.remove_header("link");
        for link in links {
            if let Some(kept) = hf::strip_xet_links(&link) {
                let rewritten =
                    hf::rewrite_link_header(&kept, &ctx.upstream_origins(app), &ctx.public_base);
                resp.append_header("link", rewritten)?;
            }
        }
    }
    Ok(())
}
