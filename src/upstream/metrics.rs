//! Per-upstream Prometheus metrics. The `upstream` label is the configured URL's origin
//! (`scheme://host[:port]`), so there is one series per configured upstream.
//!
//! Counters live in process-wide vectors (an upstream removed by a reload keeps its counts, as
//! Prometheus expects of counters); `hubcache_upstream_up` is computed at scrape time from the
//! upstreams that exist then, so a removed upstream's series disappears. The admin registry
//! registers [`collector`].

use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};

use super::health::{FailureKind, Health};

const UP_NAME: &str = "hubcache_upstream_up";
const UP_HELP: &str =
    "1 while the upstream's circuit is closed (it is used in chain order), 0 while open";

/// Seconds to the response headers of one upstream request.
const LATENCY_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

struct Vectors {
    requests: IntCounterVec,
    errors: IntCounterVec,
    bytes: IntCounterVec,
    latency: HistogramVec,
    state_changes: IntCounterVec,
    probes: IntCounterVec,
    up_desc: Vec<Desc>,
}

fn vectors() -> Result<Vectors, prometheus::Error> {
    let up = IntGaugeVec::new(Opts::new(UP_NAME, UP_HELP), &["upstream"])?;
    Ok(Vectors {
        requests: IntCounterVec::new(
            Opts::new(
                "hubcache_upstream_requests_total",
                "Requests sent to the upstream (each redirect hop and retry counts; probes do not)",
            ),
            &["upstream"],
        )?,
        errors: IntCounterVec::new(
            Opts::new(
                "hubcache_upstream_errors_total",
                "Failed upstream exchanges, by kind (connect, timeout, 5xx, 429, stream)",
            ),
            &["upstream", "kind"],
        )?,
        bytes: IntCounterVec::new(
            Opts::new(
                "hubcache_upstream_bytes_total",
                "Body bytes received from the upstream (and the CDNs it redirects to)",
            ),
            &["upstream"],
        )?,
        latency: HistogramVec::new(
            HistogramOpts::new(
                "hubcache_upstream_latency_seconds",
                "Time from sending a request to the upstream to its response headers",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?,
        state_changes: IntCounterVec::new(
            Opts::new(
                "hubcache_upstream_state_changes_total",
                "Circuit changes of the upstream: state=down (opened) or recovered (closed)",
            ),
            &["upstream", "state"],
        )?,
        probes: IntCounterVec::new(
            Opts::new(
                "hubcache_upstream_probes_total",
                "Probes of an upstream whose circuit is open, by result (pass, fail)",
            ),
            &["upstream", "result"],
        )?,
        up_desc: up.desc().into_iter().cloned().collect(),
    })
}

static VECTORS: LazyLock<Option<Vectors>> = LazyLock::new(|| match vectors() {
    Ok(v) => Some(v),
    Err(e) => {
        log::error!("upstream metrics disabled: {e}");
        None
    }
});

/// An upstream's label and health, weakly (it is alive while the upgrade succeeds).
type LiveUpstream = (String, Weak<Health>);

/// Upstreams alive now, newest last.
static LIVE: LazyLock<Mutex<Vec<LiveUpstream>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The meters of one upstream (handles into the vectors, resolved once).
#[derive(Debug, Clone)]
pub(crate) struct Meters {
    label: String,
    requests: Option<IntCounter>,
    bytes: Option<IntCounter>,
    latency: Option<Histogram>,
}

impl Meters {
    /// The meters of the upstream `label`, whose health is reported as `up` while it lives.
    pub(crate) fn new(label: &str, health: &Arc<Health>) -> Self {
        {
            let mut live = LIVE.lock();
            live.retain(|(_, h)| h.strong_count() > 0);
            live.push((label.to_string(), Arc::downgrade(health)));
        }
        let v = VECTORS.as_ref();
        Self {
            label: label.to_string(),
            requests: v.map(|v| v.requests.with_label_values(&[label])),
            bytes: v.map(|v| v.bytes.with_label_values(&[label])),
            latency: v.map(|v| v.latency.with_label_values(&[label])),
        }
    }

    pub(crate) fn request(&self) {
        if let Some(c) = &self.requests {
            c.inc();
        }
    }

    pub(crate) fn latency(&self, seconds: f64) {
        if let Some(h) = &self.latency {
            h.observe(seconds);
        }
    }

    pub(crate) fn bytes(&self, n: u64) {
        if let Some(c) = &self.bytes {
            c.inc_by(n);
        }
    }

    pub(crate) fn error(&self, kind: FailureKind) {
        if let Some(v) = VECTORS.as_ref() {
            v.errors
                .with_label_values(&[&self.label, kind.label()])
                .inc();
        }
    }

    pub(crate) fn state_change(&self, state: &str) {
        if let Some(v) = VECTORS.as_ref() {
            v.state_changes
                .with_label_values(&[&self.label, state])
                .inc();
        }
    }

    pub(crate) fn probe(&self, passed: bool) {
        if let Some(v) = VECTORS.as_ref() {
            let result = if passed { "pass" } else { "fail" };
            v.probes.with_label_values(&[&self.label, result]).inc();
        }
    }
}

/// The collector of every upstream metric, for the admin registry.
pub struct UpstreamCollector {
    descs: Vec<Desc>,
}

/// A collector of the upstream metrics (register one per registry).
pub fn collector() -> UpstreamCollector {
    let descs = VECTORS.as_ref().map_or_else(Vec::new, |v| {
        let mut descs: Vec<Desc> = Vec::new();
        for c in [
            &v.requests,
            &v.errors,
            &v.bytes,
            &v.state_changes,
            &v.probes,
        ] {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(v.latency.desc().into_iter().cloned());
        descs.extend(v.up_desc.iter().cloned());
        descs
    });
    UpstreamCollector { descs }
}

/// `(label, up)` of every live upstream; the newest object wins for a label two live ones
/// share (an old chain still finishing requests after a reload).
fn live_states() -> Vec<(String, bool)> {
    let mut live = LIVE.lock();
    live.retain(|(_, h)| h.strong_count() > 0);
    let mut out: Vec<(String, bool)> = Vec::new();
    for (label, health) in live.iter().rev() {
        let Some(health) = health.upgrade() else {
            continue;
        };
        if !out.iter().any(|(l, _)| l == label) {
            out.push((label.clone(), health.is_up()));
        }
    }
    out
}

impl Collector for UpstreamCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(v) = VECTORS.as_ref() else {
            return Vec::new();
        };
        let mut families = Vec::new();
        for c in [
            &v.requests,
            &v.errors,
            &v.bytes,
            &v.state_changes,
            &v.probes,
        ] {
            families.extend(c.collect());
        }
        families.extend(v.latency.collect());
        if let Ok(up) = IntGaugeVec::new(Opts::new(UP_NAME, UP_HELP), &["upstream"]) {
            for (label, is_up) in live_states() {
                up.with_label_values(&[&label]).set(i64::from(is_up));
            }
            families.extend(up.collect());
        }
        families
    }
}
