//! The ordered upstream chain and the out-of-band HTTP client (reqwest) used for metadata
//! calls and block fills.
//!
//! Failover rule: an upstream that cannot be reached, times out, or answers 5xx/429 is
//! skipped and the next one is tried; any other answer (2xx, 3xx, 4xx) is final, because a
//! 404 from huggingface.co is the truth, not an outage.
//!
//! Trust rule: a client's `Authorization` goes only to upstreams that receive tokens (an
//! `origin`, or a mirror with `forward_token`). An upstream the token was withheld from that
//! answers "authenticate" (401/403, or 404 RepoNotFound/GatedRepo) has not answered this
//! client: that counts as its failure. A request marked [`HubRequest::protected`] (a repo an
//! origin said is gated or private) is sent only to upstreams that receive tokens.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use url::Url;

use super::error::{classify, Attempt, AttemptFailure, UpstreamError, DEFAULT_TIMEOUT};
use super::health::Health;
use super::request::{asks_for_credentials, Follow, HubRequest, HubResponse, Location};
use crate::config::{Trust, UpstreamConfig};

/// Redirect hops followed before giving up.
const MAX_HOPS: usize = 10;
/// Per-read timeout for streamed bodies: a stalled CDN stream fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = concat!("hubcache/", env!("CARGO_PKG_VERSION"));

/// One configured upstream hub.
#[derive(Debug)]
pub struct Upstream {
    pub index: usize,
    base: Url,
    client: reqwest::Client,
    timeout: Duration,
    trust: Trust,
    receives_tokens: bool,
    health: Health,
}

impl Upstream {
    fn new(index: usize, cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .no_proxy();
        if let Some(proxy) = &cfg.proxy {
            let proxy = reqwest::Proxy::all(proxy.as_str())
                .map_err(|e| UpstreamError::Config(format!("proxy {proxy}: {e}")))?;
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| UpstreamError::Config(format!("HTTP client: {e}")))?;
        let mut base = cfg.url.clone();
        let trimmed = base.path().trim_end_matches('/').to_string();
        base.set_path(&trimmed);
        base.set_query(None);
        base.set_fragment(None);
        let timeout = if cfg.timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            cfg.timeout
        };
        Ok(Self {
            index,
            base,
            client,
            timeout,
            trust: cfg.trust,
            receives_tokens: cfg.receives_tokens(),
            health: Health::default(),
        })
    }

    pub fn trust(&self) -> Trust {
        self.trust
    }

    /// Whether a client's `Authorization` may be sent to this upstream.
    pub fn receives_tokens(&self) -> bool {
        self.receives_tokens
    }

    /// The client's `Authorization` as this upstream may see it: `None` unless it receives
    /// tokens.
    pub fn token_for<'a>(&self, auth: Option<&'a str>) -> Option<&'a str> {
        auth.filter(|_| self.receives_tokens)
    }

    /// The configured base URL (no trailing slash).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `scheme://host[:port]` of this upstream.
    pub fn origin(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    /// The path prefix of the base URL, `""` when it has none.
    pub fn base_path(&self) -> &str {
        let path = self.base.path();
        if path == "/" {
            ""
        } else {
            path
        }
    }

    pub fn host(&self) -> &str {
        self.base.host_str().unwrap_or("")
    }

    pub fn port(&self) -> u16 {
        self.base.port_or_known_default().unwrap_or(80)
    }

    pub fn is_tls(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// The value of the `Host` header for requests to this upstream.
    pub fn host_header(&self) -> String {
        match self.base.port() {
            Some(port) => format!("{}:{port}", self.host()),
            None => self.host().to_string(),
        }
    }

    pub fn is_available(&self) -> bool {
        self.health.is_available()
    }

    pub fn record_success(&self) {
        self.health.record_success();
    }

    pub fn record_failure(&self) {
        self.health.record_failure();
    }

    /// Absolute URL of `path_and_query` (which starts with `/`) on this upstream.
    pub fn url_for(&self, path_and_query: &str) -> Result<Url, UpstreamError> {
        let joined = format!(
            "{}{}",
            self.base.as_str().trim_end_matches('/'),
            path_and_query
        );
        Url::parse(&joined).map_err(|e| UpstreamError::Config(format!("URL {joined}: {e}")))
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }
}

/// How long a location learned from a HEAD is reused by a fill that starts right after it
/// (the metadata HEAD and the fill's first request are usually a moment apart).
const RECENT_LOCATION_TTL: Duration = Duration::from_secs(30);
/// Bound on remembered locations.
const RECENT_LOCATIONS: usize = 4096;

/// The ordered chain of upstreams.
#[derive(Debug)]
pub struct UpstreamChain {
    upstreams: Vec<Arc<Upstream>>,
    offline: bool,
    /// `(path, Authorization)` -> where its bytes were, learned from recent HEADs. In memory
    /// only, briefly: signed CDN URLs expire.
    recent: parking_lot::Mutex<std::collections::HashMap<String, (Location, std::time::Instant)>>,
    /// 429 answers received from any upstream (metadata, fills and pass-through).
    rate_limited: std::sync::atomic::AtomicU64,
}

enum Hop {
    Answer(HubResponse),
    Fail(AttemptFailure),
}

impl UpstreamChain {
    pub fn new(configs: &[UpstreamConfig], offline: bool) -> Result<Self, UpstreamError> {
        let upstreams = configs
            .iter()
            .enumerate()
            .map(|(i, cfg)| Upstream::new(i, cfg).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            upstreams,
            offline,
            recent: parking_lot::Mutex::new(std::collections::HashMap::new()),
            rate_limited: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Count an upstream answer's status (429s are counted as rate limits).
    pub fn note_status(&self, status: u16) {
        if status == StatusCode::TOO_MANY_REQUESTS.as_u16() {
            self.rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// 429 answers received from upstreams so far.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn recent_key(path_and_query: &str, auth: Option<&str>) -> String {
        format!("{path_and_query}\0{}", auth.unwrap_or(""))
    }

    /// Where the bytes of a resolve answer are: the answer's own URL (200) or the off-origin
    /// redirect target (the CDN; no Authorization there). The token goes with a hub URL only
    /// if it went with the request that found it.
    fn location_of(
        response: &HubResponse,
        auth: Option<&str>,
    ) -> Result<Option<Location>, UpstreamError> {
        let auth = auth.filter(|_| response.token_sent);
        if response.is_success() {
            return Ok(Some(Location {
                url: response.url.clone(),
                auth: auth.map(str::to_string),
                upstream: response.upstream,
            }));
        }
        if response.is_redirect() {
            if let Some(target) = redirect_target(&response.url, &response.headers)? {
                return Ok(Some(Location {
                    url: target,
                    auth: None,
                    upstream: response.upstream,
                }));
            }
        }
        Ok(None)
    }

    fn remember_location(&self, request: &HubRequest, response: &HubResponse) {
        if request.method != Method::HEAD {
            return;
        }
        if let Ok(Some(location)) = Self::location_of(response, request.auth.as_deref()) {
            let mut recent = self.recent.lock();
            if recent.len() >= RECENT_LOCATIONS {
                recent.retain(|_, (_, at)| at.elapsed() < RECENT_LOCATION_TTL);
                if recent.len() >= RECENT_LOCATIONS {
                    recent.clear();
                }
            }
            let key = Self::recent_key(&request.path_and_query, request.auth.as_deref());
            recent.insert(key, (location, std::time::Instant::now()));
        }
    }

    /// Stop reusing a location that failed.
    pub fn forget_location(&self, url: &Url) {
        self.recent
            .lock()
            .retain(|_, (location, _)| &location.url != url);
    }

    fn recent_location(&self, path_and_query: &str, auth: Option<&str>) -> Option<Location> {
        let key = Self::recent_key(path_and_query, auth);
        let recent = self.recent.lock();
        recent
            .get(&key)
            .filter(|(_, at)| at.elapsed() < RECENT_LOCATION_TTL)
            .map(|(location, _)| location.clone())
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(index)
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Upstreams in the order to try them: those whose circuit is closed, in config order,
    /// then those whose circuit is open (so a request is still tried when all look down).
    pub fn ordered(&self) -> Vec<Arc<Upstream>> {
        let (mut up, down): (Vec<_>, Vec<_>) = self
            .upstreams
            .iter()
            .cloned()
            .partition(|u| u.is_available());
        up.extend(down);
        up
    }

    /// Send a metadata request, failing over along the chain.
    pub async fn send(&self, request: &HubRequest) -> Result<HubResponse, UpstreamError> {
        self.send_avoiding(request, &[]).await
    }

    /// Like [`send`](Self::send), trying the upstreams in `avoid` only after all others.
    async fn send_avoiding(
        &self,
        request: &HubRequest,
        avoid: &[usize],
    ) -> Result<HubResponse, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline);
        }
        let mut attempts = Vec::new();
        let (mut order, avoided): (Vec<_>, Vec<_>) = self
            .ordered()
            .into_iter()
            .filter(|u| !request.protected || u.receives_tokens())
            .partition(|u| !avoid.contains(&u.index));
        order.extend(avoided);
        for upstream in order {
            match self.send_to(&upstream, request).await? {
                Hop::Answer(response) => {
                    upstream.record_success();
                    self.remember_location(request, &response);
                    return Ok(response);
                }
                Hop::Fail(failure) => {
                    log::warn!(
                        "upstream {} failed for {} {}: {:?}",
                        upstream.origin(),
                        request.method,
                        request.path_and_query,
                        failure
                    );
                    upstream.record_failure();
                    attempts.push(Attempt {
                        origin: upstream.origin(),
                        failure,
                    });
                }
            }
        }
        Err(UpstreamError::Unavailable { attempts })
    }

    async fn send_to(
        &self,
        upstream: &Upstream,
        request: &HubRequest,
    ) -> Result<Hop, UpstreamError> {
        let mut url = upstream.url_for(&request.path_and_query)?;
        let token = upstream.token_for(request.auth.as_deref());
        let withheld = request.auth.is_some() && token.is_none();
        for _ in 0..MAX_HOPS {
            let mut builder = upstream
                .client
                .request(request.method.clone(), url.clone())
                .timeout(upstream.timeout);
            if let Some(auth) = token {
                builder = builder.header(AUTHORIZATION, auth);
            }
            if let Some(body) = &request.body {
                builder = builder
                    .header(CONTENT_TYPE, &body.content_type)
                    .body(body.bytes.clone());
            }
            let response = match builder.send().await {
                Ok(response) => response,
                Err(e) => return Ok(Hop::Fail(classify(e))),
            };
            let status = response.status();
            self.note_status(status.as_u16());
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                return Ok(Hop::Fail(AttemptFailure::Status {
                    status: status.as_u16(),
                    retry_after,
                }));
            }
            let error_code = response
                .headers()
                .get(crate::hf::headers::X_ERROR_CODE)
                .and_then(|v| v.to_str().ok());
            if withheld && asks_for_credentials(status.as_u16(), error_code) {
                return Ok(Hop::Fail(AttemptFailure::Withheld {
                    status: status.as_u16(),
                }));
            }
            if status.is_redirection() {
                if let Some(target) = redirect_target(&url, response.headers())? {
                    if upstream.same_origin(&target) && request.follow == Follow::SameOrigin {
                        url = target;
                        continue;
                    }
                }
            }
            let headers = response.headers().clone();
            let body = match read_limited(response, request.max_body, upstream).await {
                Ok(body) => body,
                Err(ReadError::Transport(failure)) => return Ok(Hop::Fail(failure)),
                Err(ReadError::TooLarge(e)) => return Err(e),
            };
            return Ok(Hop::Answer(HubResponse {
                status: status.as_u16(),
                headers,
                body,
                upstream: upstream.index,
                trust: upstream.trust,
                token_sent: token.is_some(),
                url,
            }));
        }
        Err(UpstreamError::TooManyRedirects {
            origin: upstream.origin(),
        })
    }

    /// Find where the bytes of `path_and_query` (a resolve URL) live, without downloading
    /// them: follow the hub's same-origin redirects with a HEAD and stop at the first
    /// off-origin redirect (the CDN) or the first 200. A 4xx is returned as the response so
    /// the caller can report it.
    /// Upstreams in `avoid` (their bytes kept breaking off for this file) are asked last.
    pub async fn locate(
        &self,
        path_and_query: &str,
        auth: Option<&str>,
        avoid: &[usize],
    ) -> Result<Result<Location, HubResponse>, UpstreamError> {
        if let Some(location) = self.recent_location(path_and_query, auth) {
            if !avoid.contains(&location.upstream) {
                return Ok(Ok(location));
            }
        }
        let request = HubRequest::head(path_and_query.to_string(), auth.map(str::to_string));
        let response = self.send_avoiding(&request, avoid).await?;
        match Self::location_of(&response, auth)? {
            Some(location) => Ok(Ok(location)),
            None => Ok(Err(response)),
        }
    }

    /// Start a ranged GET of `[start, end]` (inclusive) at a located URL. Off-origin
    /// redirects from the CDN itself are followed without Authorization. The caller checks
    /// the status and `Content-Range`.
    pub async fn get_range(
        &self,
        location: &Location,
        start: u64,
        end_inclusive: u64,
    ) -> Result<reqwest::Response, AttemptFailure> {
        let upstream = self
            .upstreams
            .get(location.upstream)
            .ok_or_else(|| AttemptFailure::Connect("unknown upstream".into()))?;
        let mut url = location.url.clone();
        let mut auth = location.auth.clone().filter(|_| upstream.receives_tokens());
        for _ in 0..MAX_HOPS {
            let mut builder = upstream
                .client
                .get(url.clone())
                .header(RANGE, format!("bytes={start}-{end_inclusive}"));
            if let Some(auth) = &auth {
                builder = builder.header(AUTHORIZATION, auth);
            }
            let response = tokio::time::timeout(upstream.timeout, builder.send())
                .await
                .map_err(|_| AttemptFailure::Timeout)?
                .map_err(classify)?;
            if response.status().is_redirection() {
                let target = redirect_target(&url, response.headers())
                    .ok()
                    .flatten()
                    .ok_or_else(|| AttemptFailure::Connect("redirect without Location".into()))?;
                if target.origin() != url.origin() {
                    auth = None;
                }
                url = target;
                continue;
            }
            self.note_status(response.status().as_u16());
            return Ok(response);
        }
        Err(AttemptFailure::Connect(format!(
            "more than {MAX_HOPS} redirects from {}",
            url.origin().ascii_serialization()
        )))
    }
}

/// The absolute target of a redirect response, if it has a `Location`.
fn redirect_target(from: &Url, headers: &HeaderMap) -> Result<Option<Url>, UpstreamError> {
    let Some(location) = headers.get(LOCATION) else {
        return Ok(None);
    };
    let bad = || UpstreamError::BadRedirect {
        origin: from.origin().ascii_serialization(),
    };
    let location = location.to_str().map_err(|_| bad())?;
    from.join(location).map(Some).map_err(|_| bad())
}

enum ReadError {
    Transport(AttemptFailure),
    TooLarge(UpstreamError),
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    upstream: &Upstream,
) -> Result<Bytes, ReadError> {
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge(UpstreamError::BodyTooLarge {
                        origin: upstream.origin(),
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

    fn upstream(url: &str) -> Upstream {
        let cfg = UpstreamConfig {
            timeout: Duration::from_secs(5),
            ..UpstreamConfig::new(Url::parse(url).unwrap())
        };
        Upstream::new(0, &cfg).unwrap()
    }

    #[test]
    fn url_for_keeps_the_base_path_prefix() {
        let up = upstream("http://127.0.0.1:9000/hf/");
        let url = up.url_for("/api/models/a/b?x=1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/hf/api/models/a/b?x=1");
        assert_eq!(up.base_path(), "/hf");
        assert_eq!(up.host_header(), "127.0.0.1:9000");
    }

    #[test]
    fn host_header_omits_default_port() {
        let up = upstream("https://huggingface.co");
        assert_eq!(up.host_header(), "huggingface.co");
        assert_eq!(up.port(), 443);
        assert!(up.is_tls());
        assert_eq!(up.base_path(), "");
    }

    #[test]
    fn relative_redirect_resolves_against_the_request_url() {
        let from = Url::parse("http://hub:1/acme/old/resolve/main/a.txt").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, "/acme/new/resolve/main/a.txt".parse().unwrap());
        let target = redirect_target(&from, &headers).unwrap().unwrap();
        assert_eq!(target.as_str(), "http://hub:1/acme/new/resolve/main/a.txt");
    }

    #[tokio::test]
    async fn offline_chain_never_sends() {
        let chain = UpstreamChain::new(&[], true).unwrap();
        let err = chain
            .send(&HubRequest::get("/api/models/a".into(), None))
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Offline));
    }
}
