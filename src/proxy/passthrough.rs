//! Plain pass-through of every other route to the upstream chain, by Pingora: peer choice
//! with failover, redirects to other hosts followed server-side (without Authorization),
//! same-origin redirects and pagination links rewritten to the mirror, Xet hints stripped.
//! The client's `Authorization` goes only to upstreams that receive tokens; a 401/403 from
//! one it was withheld from counts as that upstream's failure (see `upstream`).
//! Each attempt is bracketed by the chain's `begin`/`finish`, so pass-through traffic feeds
//! the upstreams' health like metadata calls and fills do; the upstream's outbound proxy is
//! used (a `CONNECT` tunnel for HTTPS, the absolute form for HTTP, see `tunnel`).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use url::Url;

use super::tunnel::ConnectTunnel;
use super::RequestCtx;
use crate::hf::{self, LocationKind};
use crate::upstream::{
    asks_for_credentials, dns, FailureKind, InFlight, Outbound, Outcome, UpstreamChain, UpstreamId,
};

/// Off-host redirects followed per request.
const MAX_REDIRECTS: u8 = 5;

/// Where the pass-through currently sends the request.
#[derive(Debug, Default)]
pub struct PassThrough {
    /// Upstreams that failed for this request.
    pub tried: Vec<UpstreamId>,
    /// The upstream of the current attempt.
    pub current: Option<UpstreamId>,
    /// The client sent a token that the current upstream was not given.
    pub token_withheld: bool,
    /// An off-host redirect target being followed.
    pub redirect: Option<Url>,
    pub hops: u8,
    /// The attempt at the current upstream, until its response headers arrive.
    pub in_flight: Option<InFlight>,
    /// The request goes to a plain-HTTP proxy in absolute form, with this
    /// `Proxy-Authorization` (if any).
    pub via_proxy: Option<Option<HeaderValue>>,
}

/// Connection timeouts: connecting is bounded by 10 s and by the upstream's `timeout`;
/// waiting for the answer and every read and write by the `timeout`.
fn peer(addr: std::net::SocketAddr, tls: bool, host: &str, timeout: Duration) -> Box<HttpPeer> {
    let mut peer = HttpPeer::new(addr, tls, host.to_string());
    let options = &mut peer.options;
    options.connection_timeout = Some(Duration::from_secs(10).min(timeout));
    options.total_connection_timeout = Some(timeout);
    options.read_timeout = Some(timeout);
    options.write_timeout = Some(timeout);
    options.idle_timeout = Some(Duration::from_secs(60));
    Box::new(peer)
}

/// The peer for `url`: the destination itself, or the proxy `outbound` names for it.
/// Returns the peer and, for a plain-HTTP destination behind a proxy, the proxy credentials
/// (the request then goes in absolute form).
async fn peer_for(
    url: &Url,
    outbound: &Outbound,
    timeout: Duration,
) -> std::result::Result<(Box<HttpPeer>, Option<Option<HeaderValue>>), String> {
    let host = url.host_str().unwrap_or("").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let tls = url.scheme() == "https";
    let hop = outbound.proxy_for(url).map_err(|e| e.to_string())?;
    let Some(hop) = hop else {
        let addr = dns::resolve(&host, port).await.map_err(|e| e.to_string())?;
        return Ok((peer(addr, tls, &host, timeout), None));
    };
    let proxy_addr = dns::resolve(&hop.host, hop.port)
        .await
        .map_err(|e| e.to_string())?;
    let mut peer = peer(proxy_addr, tls, &host, timeout);
    if !tls {
        return Ok((peer, Some(hop.authorization)));
    }
    let tunnel = ConnectTunnel::new(hop, &host, port, timeout);
    peer.group_key = tunnel.group_key();
    peer.options.custom_l4 = Some(Arc::new(tunnel));
    Ok((peer, None))
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

/// Choose the peer: the redirect target being followed (through the proxy of the upstream
/// that redirected), else the next untried upstream in the chain's order.
pub async fn upstream_peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let chain = Arc::clone(&ctx.settings.upstream);
    ctx.pass.in_flight = None;
    ctx.pass.via_proxy = None;
    if let Some(target) = &ctx.pass.redirect {
        let upstream = ctx
            .pass
            .current
            .and_then(|i| chain.get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
        let (peer, via) = peer_for(target, upstream.outbound(), upstream.timeout())
            .await
            .map_err(|e| Error::explain(ErrorType::ConnectNoRoute, e))?;
        ctx.pass.via_proxy = via;
        return Ok(peer);
    }
    for upstream in chain.ordered() {
        if ctx.pass.tried.contains(&upstream.id) {
            continue;
        }
        match peer_for(upstream.base(), upstream.outbound(), upstream.timeout()).await {
            Ok((peer, via)) => {
                ctx.pass.current = Some(upstream.id);
                ctx.pass.via_proxy = via;
                ctx.pass.in_flight = Some(chain.begin(&upstream));
                return Ok(peer);
            }
            Err(e) => {
                log::warn!("upstream {}: {e}", upstream.origin());
                chain.record_failure(&upstream, FailureKind::Connect);
                ctx.pass.tried.push(upstream.id);
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
    session: &Session,
    req: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let chain = Arc::clone(&ctx.settings.upstream);
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
            .and_then(|i| chain.get(i))
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
    // Never pass a client's proxy credentials on; send ours to a proxy that gets the request.
    req.remove_header("proxy-authorization");
    match &ctx.pass.via_proxy {
        Some(auth) => {
            req.set_raw_path(format!("http://{host}{path_and_query}").as_bytes())?;
            if let Some(auth) = auth {
                req.insert_header("proxy-authorization", auth.clone())?;
            }
        }
        None => {
            let uri = path_and_query
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "upstream URI", e))?;
            req.set_uri(uri);
        }
    }
    req.insert_header("host", host)?;
    Ok(())
}

/// Whether an upstream this request has not tried yet is left.
fn others_left(chain: &UpstreamChain, ctx: &RequestCtx) -> bool {
    chain.all().iter().any(|u| !ctx.pass.tried.contains(&u.id))
}

/// The attempt at the current upstream failed before its answer: count it, and say whether
/// the request may go to the next upstream.
pub fn attempt_failed(ctx: &mut RequestCtx, kind: FailureKind) -> bool {
    let chain = Arc::clone(&ctx.settings.upstream);
    if ctx.pass.redirect.is_some() {
        return false;
    }
    let Some(index) = ctx.pass.current else {
        return false;
    };
    match ctx.pass.in_flight.take() {
        Some(in_flight) => chain.finish(in_flight, Outcome::Failed(kind)),
        None => {
            if let Some(upstream) = chain.get(index) {
                chain.record_failure(upstream, kind);
            }
        }
    }
    if !ctx.pass.tried.contains(&index) {
        ctx.pass.tried.push(index);
    }
    others_left(&chain, ctx)
}

/// Inspect the upstream's answer: fail over on 5xx/429, follow off-host redirects, rewrite
/// same-origin ones and Link headers, strip Xet hints.
pub fn upstream_response(
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let chain = Arc::clone(&ctx.settings.upstream);
    let status = resp.status.as_u16();
    let idempotent = session.req_header().method.is_idempotent();
    let current = ctx.pass.current.and_then(|i| chain.get(i)).cloned();
    if ctx.pass.redirect.is_none() {
        if let Some(in_flight) = ctx.pass.in_flight.take() {
            let retry_after = resp
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            chain.finish(in_flight, Outcome::of_status(status, retry_after));
        }
        if let Some(upstream) = &current {
            let error_code = resp
                .headers
                .get(hf::headers::X_ERROR_CODE)
                .and_then(|v| v.to_str().ok());
            let not_for_client =
                ctx.pass.token_withheld && asks_for_credentials(status, error_code);
            if not_for_client {
                // Not this client's answer: the upstream never saw its token.
                ctx.pass.tried.push(upstream.id);
                if idempotent && others_left(&chain, ctx) {
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
                ctx.pass.tried.push(upstream.id);
                if idempotent && others_left(&chain, ctx) {
                    return Err(retry_error(format!(
                        "{} answered {status}, trying the next upstream",
                        upstream.origin()
                    )));
                }
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
            bases.extend(ctx.upstream_origins());
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
    strip_and_rewrite_headers(resp, ctx)
}

/// Remove Xet headers and links; point pagination links at the mirror.
pub fn strip_and_rewrite_headers(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
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
                    hf::rewrite_link_header(&kept, &ctx.upstream_origins(), &ctx.public_base);
                resp.append_header("link", rewritten)?;
            }
        }
    }
    Ok(())
}
