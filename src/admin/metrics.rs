//! Prometheus metrics: request counters recorded by the proxy, plus the fill engine's and
//! store's counters read at scrape time. Labels are low-cardinality (route, status class):
//! no repo names, no client addresses.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::fetch::{FillEngine, FillStats};

/// The values of `hubcache_config_reloads_total{result}` (shown from 0).
pub const RELOAD_RESULTS: [&str; 3] = ["ok", "invalid", "failed"];

/// The metrics of one hubcache instance.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    response_bytes: IntCounterVec,
    reloads: IntCounterVec,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new(fill: FillEngine) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "hubcache_requests_total",
                "Requests answered, by route and status class",
            ),
            &["route", "status"],
        )?;
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "hubcache_response_body_bytes_total",
                "Response body bytes sent to clients, by route",
            ),
            &["route"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "hubcache_config_reloads_total",
                "Config reload attempts, by result (ok, invalid, failed)",
            ),
            &["result"],
        )?;
        for result in RELOAD_RESULTS {
            reloads.with_label_values(&[result]);
        }
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(response_bytes.clone()))?;
        registry.register(Box::new(FillCollector::new(fill)?))?;
        registry.register(Box::new(crate::upstream::metrics_collector()))?;
        Ok(Self {
            registry,
            requests,
            response_bytes,
            reloads,
        })
    }

    /// Count one config reload attempt (`result`: one of [`RELOAD_RESULTS`]).
    pub fn record_reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Adds a collector read at every scrape (eviction, alert sinks, ...).
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), MetricsError> {
        Ok(self.registry.register(collector)?)
    }

    /// Count one answered request.
    pub fn record_request(&self, route: &str, status: u16, body_bytes: usize) {
        let class = match status {
            0 => "none",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[route, class]).inc();
        self.response_bytes
            .with_label_values(&[route])
            .inc_by(body_bytes as u64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Exposes the fill engine's atomic counters as Prometheus counters.
struct FillCollector {
    fill: FillEngine,
    descs: Vec<Desc>,
}

/// (name, help, reader) of each fill counter.
type FillCounter = (&'static str, &'static str, fn(&FillStats) -> u64);

const FILL_COUNTERS: &[FillCounter] = &[
    (
        "hubcache_upstream_fill_bytes_total",
        "Body bytes received from upstreams and written to the store",
        |s| FillStats::get(&s.upstream_bytes),
    ),
    (
        "hubcache_blocks_filled_total",
        "Blocks committed to the store",
        |s| FillStats::get(&s.blocks_filled),
    ),
    (
        "hubcache_upstream_rejected_responses_total",
        "Upstream responses rejected before writing (mismatched Content-Range, 200 to a range)",
        |s| FillStats::get(&s.rejected_responses),
    ),
    (
        "hubcache_upstream_resumes_total",
        "Upstream streams resumed after breaking off",
        |s| FillStats::get(&s.resumes),
    ),
    (
        "hubcache_corrupt_blocks_total",
        "Stored blocks that failed their checksum and were fetched again",
        |s| FillStats::get(&s.corrupt_blocks),
    ),
    (
        "hubcache_verify_failures_total",
        "Completed files whose content did not match their hash (discarded)",
        |s| FillStats::get(&s.verify_failures),
    ),
    (
        "hubcache_verified_files_total",
        "Completed files verified against their hash",
        |s| FillStats::get(&s.verified_files),
    ),
    (
        "hubcache_store_no_space_total",
        "Cache writes that failed for lack of space",
        |s| FillStats::get(&s.no_space),
    ),
    (
        "hubcache_uncached_streams_total",
        "Client ranges streamed from upstream without caching because the cache was full",
        |s| FillStats::get(&s.uncached_streams),
    ),
];

impl FillCollector {
    fn new(fill: FillEngine) -> Result<Self, prometheus::Error> {
        let descs = FILL_COUNTERS
            .iter()
            .map(|(name, help, _)| {
                IntCounter::new(*name, *help)
                    .map(|c| c.desc().into_iter().cloned().collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        Ok(Self { fill, descs })
    }
}

impl Collector for FillCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self.fill.stats();
        FILL_COUNTERS
            .iter()
            .filter_map(|(name, help, read)| {
                let counter = IntCounter::new(*name, *help).ok()?;
                counter.inc_by(read(stats));
                counter.collect().into_iter().next()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::{FillMode, FillSettings};
    use crate::store::{Durability, Store};
    use crate::upstream::UpstreamChain;
    use std::sync::Arc;

    fn engine(dir: &std::path::Path) -> FillEngine {
        let store = Arc::new(Store::open(dir, Durability::Os).unwrap());
        let upstream = Arc::new(UpstreamChain::new(&[], true).unwrap());
        FillEngine::new(
            store,
            upstream,
            FillSettings {
                mode: FillMode::Complete,
                segment: 32 << 20,
                connections_per_file: 2,
                connections_total: 4,
                read_ahead: 0,
                background_fills: 1,
                block_size: 1 << 20,
                offline: true,
            },
        )
    }

    #[test]
    fn rendered_metrics_include_requests_and_fill_counters() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(engine(dir.path())).unwrap();
        metrics.record_request("resolve", 206, 1000);
        metrics.record_request("resolve", 404, 10);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(r#"hubcache_requests_total{route="resolve",status="2xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"hubcache_requests_total{route="resolve",status="4xx"} 1"#));
        assert!(text.contains(r#"hubcache_response_body_bytes_total{route="resolve"} 1010"#));
        assert!(text.contains("hubcache_verify_failures_total 0"));
    }

    #[test]
    fn config_reloads_are_counted_by_result_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(engine(dir.path())).unwrap();
        metrics.record_reload("invalid");
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(r#"hubcache_config_reloads_total{result="invalid"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hubcache_config_reloads_total{result="ok"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hubcache_config_reloads_total{result="failed"} 0"#),
            "{text}"
        );
    }
}
