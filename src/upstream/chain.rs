//! The ordered upstream chain and the out-of-band HTTP client (reqwest) used for metadata
//! calls and block fills.
//!
//! Failover rule: an upstream that cannot be reached, times out, or answers 5xx/429 is
//! skipped and the next one is tried; any other answer (2xx, 3xx, 4xx) is final, because a
//! 404 from huggingface.co is the truth, not an outage. The order comes from each upstream's
//! health (`select`, `health`): every request is bracketed by `begin`/`finish`.
//!
//! Trust rule: a client's `Authorization` goes only to upstreams that receive tokens (an
//! `origin`, or a mirror with `forward_token`). An upstream the token was withheld from that
//! answers "authenticate" (401/403, or 404 RepoNotFound/GatedRepo) has not answered this
//! client: that counts as its failure. A request marked [`HubRequest::protected`] (a repo an
//! origin said is gated or private) is sent only to upstreams that receive tokens.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RANGE, RETRY_AFTER};
use reqwest::Method;
use url::Url;

use super::error::{classify, Attempt, AttemptFailure, UpstreamError, DEFAULT_TIMEOUT};
use super::events::UpstreamEvents;
use super::health::{FailureKind, Health};
use super::id::UpstreamId;
use super::metrics::Meters;
use super::outbound::Outbound;
use super::request::{
    asks_for_credentials, read_limited, redirect_target, Follow, HubRequest, HubResponse, Location,
    ReadError,
};
use super::select::{InFlight, Outcome};
use crate::config::{Trust, UpstreamConfig};

/// Redirect hops followed before giving up.
const MAX_HOPS: usize = 10;

/// One configured upstream hub.
#[derive(Debug)]
pub struct Upstream {
    pub id: UpstreamId,
    /// The config it was built from (an unchanged entry is reused across reloads).
    config: UpstreamConfig,
    base: Url,
    client: reqwest::Client,
    outbound: Outbound,
    timeout: Duration,
    trust: Trust,
    receives_tokens: bool,
    health: Arc<Health>,
    meters: Meters,
}

impl Upstream {
    fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let outbound = Outbound::new(cfg.proxy.as_ref());
        let client = outbound.http_client(cfg)?;
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
        let health = Arc::new(Health::new(cfg.health.clone()));
        let meters = Meters::new(&base.origin().ascii_serialization(), &health);
        Ok(Self {
            id: UpstreamId::of(cfg),
            config: cfg.clone(),
            base,
            client,
            outbound,
            timeout,
            trust: cfg.trust,
            receives_tokens: cfg.receives_tokens(),
            health,
            meters,
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

    /// Its circuit breaker and probe state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub(super) fn meters(&self) -> &Meters {
        &self.meters
    }

    /// How requests reach it (directly or through which proxy).
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// The time allowed to connect and receive response headers (and for a body to move).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
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
    /// Whether every upstream was down at the last circuit change.
    all_down: AtomicBool,
    /// Where state changes go instead of the installed sink (tests).
    events: EventsOverride,
}

#[derive(Default)]
struct EventsOverride(Option<Arc<dyn UpstreamEvents>>);

impl std::fmt::Debug for EventsOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

enum Hop {
    Answer(HubResponse),
    Fail(AttemptFailure),
}

impl UpstreamChain {
    pub fn new(configs: &[UpstreamConfig], offline: bool) -> Result<Self, UpstreamError> {
        Self::rebuild(configs, offline, None)
    }

    /// A chain for `configs` that reuses the upstreams of `previous` whose config is
    /// unchanged (same object: same HTTP client, connection pool and health); the others are
    /// built new. Nothing is shared if building any of them fails.
    pub fn rebuild(
        configs: &[UpstreamConfig],
        offline: bool,
        previous: Option<&UpstreamChain>,
    ) -> Result<Self, UpstreamError> {
        let reuse = |cfg: &UpstreamConfig| {
            previous?
                .upstreams
                .iter()
                .find(|u| u.id == UpstreamId::of(cfg) && &u.config == cfg)
                .cloned()
        };
        let upstreams = configs
            .iter()
            .map(|cfg| match reuse(cfg) {
                Some(kept) => Ok(kept),
                None => Upstream::new(cfg).map(Arc::new),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            upstreams,
            offline,
            recent: parking_lot::Mutex::new(std::collections::HashMap::new()),
            all_down: AtomicBool::new(false),
            events: EventsOverride::default(),
        })
    }

    /// Send this chain's state changes to `events` instead of the installed sink.
    #[cfg(test)]
    pub(crate) fn with_events(mut self, events: Arc<dyn UpstreamEvents>) -> Self {
        self.events = EventsOverride(Some(events));
        self
    }

    pub(super) fn events_override(&self) -> Option<Arc<dyn UpstreamEvents>> {
        self.events.0.clone()
    }

    pub(super) fn all_down_flag(&self) -> &AtomicBool {
        &self.all_down
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
        self.remember_location_for(&request.path_and_query, request.auth.as_deref(), response);
    }

    /// Remember where the bytes of a resolve `HEAD` answer are, for fetching
    /// `path_and_query` with `auth` (the same file at its commit, when the `HEAD` named a
    /// branch): a fill starting soon after needs no `HEAD` of its own.
    pub fn remember_location_for(
        &self,
        path_and_query: &str,
        auth: Option<&str>,
        response: &HubResponse,
    ) {
        if let Ok(Some(location)) = Self::location_of(response, auth) {
            let mut recent = self.recent.lock();
            if recent.len() >= RECENT_LOCATIONS {
                recent.retain(|_, (_, at)| at.elapsed() < RECENT_LOCATION_TTL);
                if recent.len() >= RECENT_LOCATIONS {
                    recent.clear();
                }
            }
            let key = Self::recent_key(path_and_query, auth);
            recent.insert(key, (location, std::time::Instant::now()));
        }
    }

    /// Where to GET a small file without a `HEAD` first: a location a recent `HEAD` found,
    /// else the resolve URL itself on the first upstream in order (not in `avoid`), whose
    /// redirects [`get_range`](Self::get_range) follows (to resolve-cache with the token, to
    /// the CDN without). One round trip less per cold file; the caller falls back to
    /// [`locate`](Self::locate) if that GET fails.
    pub fn locate_without_head(
        &self,
        path_and_query: &str,
        auth: Option<&str>,
        avoid: &[UpstreamId],
    ) -> Option<Location> {
        if self.offline {
            return None;
        }
        if let Some(location) = self.recent_location(path_and_query, auth) {
            if !avoid.contains(&location.upstream) {
                return Some(location);
            }
        }
        let plan = self.plan(std::time::Instant::now());
        let upstream = plan.order.into_iter().find(|u| !avoid.contains(&u.id))?;
        Some(Location {
            url: upstream.url_for(path_and_query).ok()?,
            auth: upstream.token_for(auth).map(str::to_string),
            upstream: upstream.id,
        })
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
            .filter(|(location, at)| {
                at.elapsed() < RECENT_LOCATION_TTL && self.is_ready(location.upstream)
            })
            .map(|(location, _)| location.clone())
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The upstream with this id, if it is (still) in the chain.
    pub fn get(&self, id: UpstreamId) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.id == id)
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Send a metadata request, failing over along the chain.
    pub async fn send(&self, request: &HubRequest) -> Result<HubResponse, UpstreamError> {
        self.send_avoiding(request, &[]).await
    }

    /// Like [`send`](Self::send), trying the upstreams in `avoid` only after all others.
    async fn send_avoiding(
        &self,
        request: &HubRequest,
        avoid: &[UpstreamId],
    ) -> Result<HubResponse, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline);
        }
        let mut attempts = Vec::new();
        let eligible = |u: &Arc<Upstream>| !request.protected || u.receives_tokens();
        let plan = self.plan(std::time::Instant::now());
        let (mut order, avoided): (Vec<_>, Vec<_>) = plan
            .order
            .into_iter()
            .filter(eligible)
            .partition(|u| !avoid.contains(&u.id));
        order.extend(avoided);
        for upstream in order {
            match self.send_to(&upstream, request).await? {
                Hop::Answer(response) => {
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
                    attempts.push(Attempt {
                        origin: upstream.origin(),
                        failure,
                    });
                }
            }
        }
        // Upstreams that asked to wait count as having said so again.
        for (upstream, wait) in plan.throttled.iter().filter(|(u, _)| eligible(u)) {
            attempts.push(Attempt {
                origin: upstream.origin(),
                failure: AttemptFailure::Status {
                    status: 429,
                    retry_after: Some(wait.as_secs().max(1).to_string()),
                },
            });
        }
        Err(UpstreamError::Unavailable { attempts })
    }

    async fn send_to(
        &self,
        upstream: &Arc<Upstream>,
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
            let in_flight = self.begin(upstream);
            let response = match builder.send().await {
                Ok(response) => response,
                Err(e) => {
                    let failure = classify(e);
                    self.finish(in_flight, Outcome::of_failure(&failure));
                    return Ok(Hop::Fail(failure));
                }
            };
            let status = response.status();
            if let Some(failure) = self.judge(in_flight, &response) {
                return Ok(Hop::Fail(failure));
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
            let body = match read_limited(response, request.max_body, &upstream.origin()).await {
                Ok(body) => body,
                Err(ReadError::Transport(failure)) => {
                    let kind = match failure {
                        AttemptFailure::Timeout => FailureKind::Timeout,
                        _ => FailureKind::Stream,
                    };
                    self.record_failure(upstream, kind);
                    return Ok(Hop::Fail(failure));
                }
                Err(ReadError::TooLarge(e)) => return Err(e),
            };
            upstream.meters().bytes(body.len() as u64);
            return Ok(Hop::Answer(HubResponse {
                status: status.as_u16(),
                headers,
                body,
                upstream: upstream.id,
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
        avoid: &[UpstreamId],
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

    /// Finish `in_flight` by its response headers: the failure when they say "try elsewhere"
    /// (5xx, 429), `None` when they are an answer.
    fn judge(&self, in_flight: InFlight, response: &reqwest::Response) -> Option<AttemptFailure> {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let outcome = Outcome::of_status(status, retry_after.as_deref());
        self.finish(in_flight, outcome);
        (outcome != Outcome::Answered).then_some(AttemptFailure::Status {
            status,
            retry_after,
        })
    }

    /// Start a ranged GET of `[start, end]` (inclusive) at a located URL. Off-origin
    /// redirects from the CDN itself are followed without Authorization. The caller checks
    /// the status and `Content-Range` (a 5xx or 429 is returned too, already counted against
    /// the upstream's health).
    pub async fn get_range(
        &self,
        location: &Location,
        start: u64,
        end_inclusive: u64,
    ) -> Result<reqwest::Response, AttemptFailure> {
        // A location found before a reload that removed its upstream fails here, and the
        // fill locates the file again on the current chain.
        let upstream = self
            .get(location.upstream)
            .ok_or_else(|| AttemptFailure::Connect("upstream no longer configured".into()))?;
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
            let in_flight = self.begin(upstream);
            let response = match tokio::time::timeout(upstream.timeout, builder.send()).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    let failure = classify(e);
                    self.finish(in_flight, Outcome::of_failure(&failure));
                    return Err(failure);
                }
                Err(_) => {
                    self.finish(in_flight, Outcome::Failed(FailureKind::Timeout));
                    return Err(AttemptFailure::Timeout);
                }
            };
            let _ = self.judge(in_flight, &response);
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
            return Ok(response);
        }
        Err(AttemptFailure::Connect(format!(
            "more than {MAX_HOPS} redirects from {}",
            url.origin().ascii_serialization()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, LOCATION};

    fn upstream(url: &str) -> Upstream {
        let cfg = UpstreamConfig {
            timeout: Duration::from_secs(5),
            ..UpstreamConfig::new(Url::parse(url).unwrap())
        };
        Upstream::new(&cfg).unwrap()
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
