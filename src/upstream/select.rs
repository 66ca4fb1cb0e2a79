//! Which upstream a request goes to, and what every exchange teaches the chain about its
//! upstreams: each request is bracketed by [`UpstreamChain::begin`] and
//! [`UpstreamChain::finish`], which feed the upstream's [`Health`](super::health::Health), its
//! metrics, the log, and the [`UpstreamEvents`](super::events::UpstreamEvents) sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;

use super::chain::{Upstream, UpstreamChain};
use super::error::AttemptFailure;
use super::events::{self, UpstreamEvents};
use super::health::{FailureKind, Standing, Transition};
use super::id::UpstreamId;

/// The longest `Retry-After` honoured (a longer one is cut to this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// 429 answers from any upstream since the process started (metadata, fills and
/// pass-through; process-wide, so a chain rebuilt by a reload keeps counting).
static RATE_LIMITED: AtomicU64 = AtomicU64::new(0);

/// 429 answers received from upstreams since the process started.
pub fn rate_limited_total() -> u64 {
    RATE_LIMITED.load(Ordering::Relaxed)
}

/// How one request to an upstream ended, as far as its health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived with a status that is an answer (not 5xx or 429).
    Answered,
    Failed(FailureKind),
    /// 429 with `Retry-After`: do not ask again for this long.
    Throttled(Duration),
}

impl Outcome {
    /// The outcome of response headers with `status`.
    pub fn of_status(status: u16, retry_after: Option<&str>) -> Outcome {
        if status == StatusCode::TOO_MANY_REQUESTS.as_u16() {
            return match retry_after.and_then(parse_retry_after) {
                Some(wait) => Outcome::Throttled(wait),
                None => Outcome::Failed(FailureKind::TooManyRequests),
            };
        }
        if (500..600).contains(&status) {
            return Outcome::Failed(FailureKind::ServerError);
        }
        Outcome::Answered
    }

    /// The outcome of a request that got no answer.
    pub fn of_failure(failure: &AttemptFailure) -> Outcome {
        match failure {
            AttemptFailure::Timeout => Outcome::Failed(FailureKind::Timeout),
            AttemptFailure::Connect(_) => Outcome::Failed(FailureKind::Connect),
            AttemptFailure::Status {
                status,
                retry_after,
            } => Outcome::of_status(*status, retry_after.as_deref()),
            AttemptFailure::Withheld { .. } => Outcome::Answered,
        }
    }
}

/// `Retry-After`: seconds, or an HTTP date. `None` when unusable or not in the future.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .ok()?,
    };
    (!wait.is_zero()).then_some(wait.min(MAX_RETRY_AFTER))
}

/// A request to one upstream, from sending it to its response headers. Dropped without
/// [`UpstreamChain::finish`] (the caller gave up), it counts as neither answer nor failure.
pub struct InFlight {
    upstream: Arc<Upstream>,
    started: Instant,
    done: bool,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("upstream", &self.upstream.origin())
            .field("started", &self.started)
            .finish()
    }
}

impl InFlight {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.upstream.health().end(false, Instant::now());
        }
    }
}

/// The upstreams to try for one request.
pub(super) struct Plan {
    /// In order: ready, then suspect, then down.
    pub(super) order: Vec<Arc<Upstream>>,
    /// Left out: they asked not to be asked before the given time.
    pub(super) throttled: Vec<(Arc<Upstream>, Duration)>,
}

impl UpstreamChain {
    /// Upstreams in the order to try them: those ready, in config order; then those with a
    /// request owed for `slow_threshold`; then those whose circuit is open (so a request is
    /// still tried when all look down). An upstream throttled by `Retry-After` is left out.
    pub fn ordered(&self) -> Vec<Arc<Upstream>> {
        self.plan(Instant::now()).order
    }

    pub(super) fn plan(&self, now: Instant) -> Plan {
        let mut ranked: Vec<(u8, usize, Arc<Upstream>)> = Vec::new();
        let mut throttled = Vec::new();
        for (position, upstream) in self.all().iter().enumerate() {
            match upstream.health().standing(now) {
                Standing::Throttled(until) => {
                    throttled.push((Arc::clone(upstream), until.saturating_duration_since(now)))
                }
                standing => ranked.push((standing.rank(), position, Arc::clone(upstream))),
            }
        }
        ranked.sort_by_key(|(rank, position, _)| (*rank, *position));
        Plan {
            order: ranked.into_iter().map(|(_, _, u)| u).collect(),
            throttled,
        }
    }

    /// Whether `id` is an upstream requests go to first now (ready: circuit closed,
    /// nothing owed, not throttled). A location learned from an upstream that is not is
    /// looked up again rather than reused.
    pub fn is_ready(&self, id: UpstreamId) -> bool {
        self.get(id)
            .is_some_and(|u| u.health().standing(Instant::now()) == Standing::Ready)
    }

    /// A request to `upstream` is being sent now.
    pub fn begin(&self, upstream: &Arc<Upstream>) -> InFlight {
        let now = Instant::now();
        upstream.health().begin(now);
        upstream.meters().request();
        InFlight {
            upstream: Arc::clone(upstream),
            started: now,
            done: false,
        }
    }

    /// The request ended with `outcome`.
    pub fn finish(&self, mut request: InFlight, outcome: Outcome) {
        request.done = true;
        let now = Instant::now();
        let upstream = &request.upstream;
        let latency = now.saturating_duration_since(request.started);
        let health = upstream.health();
        health.end(true, now);
        if matches!(
            outcome,
            Outcome::Throttled(_) | Outcome::Failed(FailureKind::TooManyRequests)
        ) {
            RATE_LIMITED.fetch_add(1, Ordering::Relaxed);
            self.events().rate_limited(&upstream.origin());
        }
        let meters = upstream.meters();
        let transition = match outcome {
            Outcome::Answered => {
                meters.latency(latency.as_secs_f64());
                health.answered(latency, now)
            }
            Outcome::Failed(kind) => {
                meters.error(kind);
                if !matches!(kind, FailureKind::Connect | FailureKind::Timeout) {
                    meters.latency(latency.as_secs_f64());
                }
                health.failed(kind, now)
            }
            Outcome::Throttled(wait) => {
                meters.latency(latency.as_secs_f64());
                meters.error(FailureKind::TooManyRequests);
                log::warn!(
                    "upstream {} answered 429: not asked again for {} s (Retry-After)",
                    upstream.origin(),
                    wait.as_secs()
                );
                health.throttle(now + wait);
                None
            }
        };
        self.apply(upstream, transition);
    }

    /// A failure after the response headers (a body that broke off or stalled), or of a
    /// request that was not bracketed by [`begin`](Self::begin).
    pub fn record_failure(&self, upstream: &Upstream, kind: FailureKind) {
        upstream.meters().error(kind);
        let transition = upstream.health().failed(kind, Instant::now());
        self.apply(upstream, transition);
    }

    /// Body bytes received from `id` (or a CDN it redirected to).
    pub fn count_bytes(&self, id: UpstreamId, n: u64) {
        if let Some(upstream) = self.get(id) {
            upstream.meters().bytes(n);
        }
    }

    /// A probe of `upstream` ended: `Ok(latency)` or why it failed.
    pub(super) fn probe_done(&self, upstream: &Upstream, result: Result<Duration, String>) {
        upstream.meters().probe(result.is_ok());
        match &result {
            Ok(latency) => log::info!(
                "upstream {}: probe answered in {} ms",
                upstream.origin(),
                latency.as_millis()
            ),
            Err(reason) => log::info!("upstream {}: probe failed: {reason}", upstream.origin()),
        }
        let transition = upstream.health().probe_done(result.is_ok());
        self.apply(upstream, transition);
    }

    fn events(&self) -> Arc<dyn UpstreamEvents> {
        self.events_override().unwrap_or_else(events::sink)
    }

    /// Report a circuit change: log, metric, event; then whether the whole chain went down
    /// or came back.
    fn apply(&self, upstream: &Upstream, transition: Option<Transition>) {
        let Some(transition) = transition else {
            return;
        };
        let origin = upstream.origin();
        let events = self.events();
        match &transition {
            Transition::Down(reason) => {
                log::warn!(
                    "upstream {origin} is down ({reason}): requests go to the next upstream \
                     until it passes {} probes in a row",
                    upstream.health().config().recover_after
                );
                upstream.meters().state_change("down");
                events.down(&origin, reason);
            }
            Transition::Recovered => {
                log::warn!("upstream {origin} recovered: requests go to it again");
                upstream.meters().state_change("recovered");
                events.recovered(&origin);
            }
        }
        let all_down = !self.all().is_empty() && self.all().iter().all(|u| !u.health().is_up());
        if self.all_down_flag().swap(all_down, Ordering::AcqRel) != all_down {
            if all_down {
                log::error!("every upstream is down: only cached content is served");
                events.all_down();
            } else {
                log::warn!("an upstream is up again after all were down");
                events.all_recovered();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_is_capped() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        let later = SystemTime::now() + Duration::from_secs(120);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        let past = SystemTime::now() - Duration::from_secs(120);
        assert_eq!(parse_retry_after(&httpdate::fmt_http_date(past)), None);
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(Outcome::of_status(200, None), Outcome::Answered);
        assert_eq!(Outcome::of_status(404, None), Outcome::Answered);
        assert_eq!(
            Outcome::of_status(503, Some("5")),
            Outcome::Failed(FailureKind::ServerError)
        );
        assert_eq!(
            Outcome::of_status(429, Some("5")),
            Outcome::Throttled(Duration::from_secs(5))
        );
        assert_eq!(
            Outcome::of_status(429, None),
            Outcome::Failed(FailureKind::TooManyRequests)
        );
    }
}
