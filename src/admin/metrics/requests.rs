//! Per-request metrics, recorded by the proxy's logging phase: requests by route and status
//! class, latency histograms, body bytes, cache outcomes, and the 429s hubcache answered.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Latency buckets (seconds): from a cached JSON answer to a multi-GB download.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// What one request was and how it went, as the metrics need it.
#[derive(Debug, Clone, Default)]
pub struct RequestSample<'a> {
    pub method: &'a str,
    pub route: &'a str,
    /// `models/org/name`, when the route names a repo.
    pub repo: Option<&'a str>,
    /// The request path (no query).
    pub path: &'a str,
    /// 0: no response was sent.
    pub status: u16,
    pub body_bytes: u64,
    pub duration: Duration,
    /// Until the response header was ready (when known).
    pub first_byte: Option<Duration>,
    /// `hit`, `partial` or `miss` for a GET of file bytes.
    pub outcome: Option<&'a str>,
    /// The upstream origin used, if any.
    pub upstream: Option<&'a str>,
    /// What went wrong (no URL queries in it), when something did on hubcache's or an
    /// upstream's side.
    pub error: Option<&'a str>,
}

/// The status class label of a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        0 => "none",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

pub(super) struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    first_byte: HistogramVec,
    response_bytes: IntCounterVec,
    outcomes: IntCounterVec,
    rate_limited_sent: IntCounterVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn histogram_vec(name: &str, help: &str) -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        &["route"],
    )
}

impl RequestMetrics {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = RequestMetrics {
            requests: counter_vec(
                "hubcache_requests_total",
                "Requests answered, by route and status class",
                &["route", "status"],
            )?,
            duration: histogram_vec(
                "hubcache_request_duration_seconds",
                "Time from request to the last byte of the answer, by route",
            )?,
            first_byte: histogram_vec(
                "hubcache_response_first_byte_seconds",
                "Time from request to the response header, by route",
            )?,
            response_bytes: counter_vec(
                "hubcache_response_body_bytes_total",
                "Response body bytes sent to clients, by route",
                &["route"],
            )?,
            outcomes: counter_vec(
                "hubcache_cache_requests_total",
                "File GETs by what was cached of the range they asked for when they arrived: \
                 hit (all blocks), partial (some), miss (none)",
                &["outcome"],
            )?,
            rate_limited_sent: counter_vec(
                "hubcache_rate_limited_total",
                "429 Too Many Requests answers, by side: client (hubcache answered a client \
                 with 429, its own or an upstream's) or upstream (an upstream answered \
                 hubcache with 429)",
                &["side"],
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.first_byte.clone()))?;
        registry.register(Box::new(metrics.response_bytes.clone()))?;
        registry.register(Box::new(metrics.outcomes.clone()))?;
        registry.register(Box::new(metrics.rate_limited_sent.clone()))?;
        // Every label value exists from the start, so a rate over it is never "no data".
        for outcome in ["hit", "partial", "miss"] {
            metrics.outcomes.with_label_values(&[outcome]);
        }
        for side in ["client", "upstream"] {
            metrics.rate_limited_sent.with_label_values(&[side]);
        }
        Ok(metrics)
    }

    pub(super) fn record(&self, sample: &RequestSample<'_>) {
        let route = sample.route;
        self.requests
            .with_label_values(&[route, status_class(sample.status)])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(sample.duration.as_secs_f64());
        if sample.status != 0 {
            let first = sample.first_byte.unwrap_or(sample.duration);
            self.first_byte
                .with_label_values(&[route])
                .observe(first.as_secs_f64());
        }
        self.response_bytes
            .with_label_values(&[route])
            .inc_by(sample.body_bytes);
        if let Some(outcome) = sample.outcome {
            self.outcomes.with_label_values(&[outcome]).inc();
        }
        if sample.status == 429 {
            self.rate_limited_sent.with_label_values(&["client"]).inc();
        }
    }

    /// Set the count of upstream 429s (kept by the upstream chain) before a scrape.
    pub(super) fn set_upstream_rate_limited(&self, total: u64) {
        let counter = self.rate_limited_sent.with_label_values(&["upstream"]);
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }

    /// Requests counted by outcome: (hit, partial, miss).
    pub(super) fn outcomes(&self) -> (u64, u64, u64) {
        let get = |o: &str| self.outcomes.with_label_values(&[o]).get();
        (get("hit"), get("partial"), get("miss"))
    }
}
