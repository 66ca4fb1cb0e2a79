//! The requests the chain sends for metadata and the answers it returns.

use std::fmt;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::Method;
use url::Url;

use super::error::{classify, AttemptFailure, UpstreamError};
use super::id::UpstreamId;
use crate::config::Trust;

/// A request body for a metadata call.
#[derive(Debug, Clone)]
pub struct Body {
    pub content_type: String,
    pub bytes: Bytes,
}

/// Which redirects the chain follows for a metadata call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Follow redirects that stay on the upstream's origin (renamed repos, resolve-cache);
    /// return an off-origin redirect (a CDN) as the response.
    SameOrigin,
}

/// A metadata request to the hub, relative to each upstream's base URL.
#[derive(Clone)]
pub struct HubRequest {
    pub method: Method,
    /// Starts with `/`, already percent-encoded.
    pub path_and_query: String,
    /// The client's `Authorization` header value, sent only to the upstream's own origin.
    pub auth: Option<String>,
    pub body: Option<Body>,
    pub follow: Follow,
    /// Largest body read into memory.
    pub max_body: usize,
    /// The repo is gated or private (as an origin said): only upstreams that receive the
    /// client's token may be asked, so no other upstream makes the access decision.
    pub protected: bool,
}

impl HubRequest {
    pub fn get(path_and_query: String, auth: Option<String>) -> Self {
        Self {
            method: Method::GET,
            path_and_query,
            auth,
            body: None,
            follow: Follow::SameOrigin,
            max_body: 256 << 20,
            protected: false,
        }
    }

    /// Mark the request as about a gated or private repo (see [`HubRequest::protected`]).
    pub fn protected(mut self, protected: bool) -> Self {
        self.protected = protected;
        self
    }

    pub fn head(path_and_query: String, auth: Option<String>) -> Self {
        Self {
            method: Method::HEAD,
            ..Self::get(path_and_query, auth)
        }
    }

    pub fn post(path_and_query: String, auth: Option<String>, body: Body) -> Self {
        Self {
            method: Method::POST,
            body: Some(body),
            ..Self::get(path_and_query, auth)
        }
    }
}

/// A final answer from one upstream.
#[derive(Clone)]
pub struct HubResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The upstream that answered.
    pub upstream: UpstreamId,
    /// What that upstream is trusted with.
    pub trust: Trust,
    /// Whether the client's `Authorization` was sent with the request that produced it.
    pub token_sent: bool,
    /// The URL that produced this answer (after same-origin redirects).
    pub url: Url,
}

impl HubResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.status)
    }

    /// Whether this answer may teach visibility and grants (it came from an origin).
    pub fn decides_access(&self) -> bool {
        self.trust.decides_access()
    }
}

/// Whether an answer given without the client's token only says "authenticate" (401, 403, or
/// 404 RepoNotFound/GatedRepo, which the Hub gives anonymous callers of private repos): then
/// it is not this client's answer.
pub fn asks_for_credentials(status: u16, error_code: Option<&str>) -> bool {
    match status {
        401 | 403 => true,
        404 => matches!(error_code, Some("RepoNotFound" | "GatedRepo")),
        _ => false,
    }
}

/// Where the bytes of a file can be fetched: the hub itself, or the CDN it redirected to.
/// Signed CDN URLs expire; a `Location` lives only in memory for the duration of a fill.
#[derive(Clone)]
pub struct Location {
    pub url: Url,
    /// Whether the client's Authorization may be sent to `url` (only on the hub's origin).
    pub auth: Option<String>,
    /// The upstream it was found on.
    pub upstream: UpstreamId,
}

// Debug by hand: a token or a signed URL must not reach a log through `{:?}`.

impl fmt::Debug for HubRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubRequest")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("protected", &self.protected)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for HubResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubResponse")
            .field("status", &self.status)
            .field("upstream", &self.upstream)
            .field("trust", &self.trust)
            .field("token_sent", &self.token_sent)
            .field("url", &self.url.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location")
            .field("origin", &self.url.origin().ascii_serialization())
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("upstream", &self.upstream)
            .finish()
    }
}

/// The absolute target of a redirect response, if it has a `Location`.
pub(super) fn redirect_target(
    from: &Url,
    headers: &HeaderMap,
) -> Result<Option<Url>, UpstreamError> {
    let Some(location) = headers.get(LOCATION) else {
        return Ok(None);
    };
    let bad = || UpstreamError::BadRedirect {
        origin: from.origin().ascii_serialization(),
    };
    let location = location.to_str().map_err(|_| bad())?;
    from.join(location).map(Some).map_err(|_| bad())
}

/// Why a metadata body could not be read.
pub(super) enum ReadError {
    Transport(AttemptFailure),
    TooLarge(UpstreamError),
}

/// Read a metadata body of at most `limit` bytes.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    origin: &str,
) -> Result<Bytes, ReadError> {
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge(UpstreamError::BodyTooLarge {
                        origin: origin.to_string(),
                        limit,
                    }));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err(ReadError::Transport(classify(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_neither_token_nor_signed_url() {
        let location = Location {
            url: Url::parse("http://cdn:1/repos/ab?Expires=1&Signature=s3cr3t").unwrap(),
            auth: Some("Bearer hf_secret".into()),
            upstream: UpstreamId::from_raw(0),
        };
        let request = HubRequest::get("/api/models/a/b".into(), Some("Bearer hf_secret".into()));
        let text = format!("{location:?} {request:?}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("hf_secret"),
            "{text}"
        );
    }
}
