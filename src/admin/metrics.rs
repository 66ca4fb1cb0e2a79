//! Prometheus metrics, exported on the admin listener's `/metrics`: request metrics recorded
//! by the proxy, and collectors that read the fill engine, the store, the upstream chain and
//! the process at scrape time. Labels are low-cardinality (route, status class, outcome,
//! storage root; repo names only for the bounded top 10): never a client address.
//!
//! Other parts add their own collectors with [`Metrics::register`]. Every metric is listed in
//! `docs/metrics.md`.

mod fills;
mod process;
mod repos;
mod requests;
mod store;

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use super::activity::{now_ms, Activity, RecentError};
use crate::fetch::{FillEngine, FillStats};
use crate::store::Store;

pub use repos::EXPORTED_REPOS;
pub use requests::{status_class, RequestSample};
pub use store::{usage_max_age, RootReport, StoreUsage};

/// The values of `hubcache_config_reloads_total{result}` (shown from 0).
pub const RELOAD_RESULTS: [&str; 3] = ["ok", "invalid", "failed"];

/// The metrics and recent activity of one hubcache instance.
pub struct Metrics {
    registry: Registry,
    requests: requests::RequestMetrics,
    reloads: IntCounterVec,
    activity: Arc<Activity>,
    store_usage: Arc<StoreUsage>,
    started_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Totals the status page shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub served_cache_bytes: u64,
    pub served_upstream_bytes: u64,
    pub upstream_fill_bytes: u64,
    pub hits: u64,
    pub partial_hits: u64,
    pub misses: u64,
    pub upstream_rate_limited: u64,
}

impl Metrics {
    pub fn new(fill: FillEngine, store: Arc<Store>) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = requests::RequestMetrics::new(&registry)?;
        let activity = Arc::new(Activity::default());
        let store_usage = Arc::new(StoreUsage::new(store));
        registry.register(Box::new(FillCollector::new(fill.clone())?))?;
        registry.register(Box::new(fills::FillGauges::new(fill)?))?;
        registry.register(Box::new(store::StoreCollector::new(Arc::clone(
            &store_usage,
        ))?))?;
        registry.register(Box::new(repos::RepoCollector::new(Arc::clone(&activity))?))?;
        registry.register(Box::new(process::ProcessCollector::new()?))?;
        registry.register(Box::new(crate::upstream::metrics_collector()))?;
        registry.register(Box::new(crate::upstream::sibling::metrics_collector()?))?;
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
        let build = IntGauge::with_opts(
            Opts::new(
                "hubcache_build_info",
                "Always 1; the version label says which hubcache runs",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build.set(1);
        registry.register(Box::new(build))?;
        Ok(Self {
            registry,
            requests,
            reloads,
            activity,
            store_usage,
            started_ms: now_ms(),
        })
    }

    /// Count one config reload attempt (`result`: one of [`RELOAD_RESULTS`]).
    pub fn record_reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Add a collector (another part's metrics) to what `/metrics` exports.
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), MetricsError> {
        Ok(self.registry.register(collector)?)
    }

    /// Count one answered request, its repo and, if it failed on hubcache's or an upstream's
    /// side, remember it among the recent errors.
    pub fn record(&self, sample: &RequestSample<'_>) {
        self.requests.record(sample);
        if let Some(repo) = sample.repo {
            if (200..400).contains(&sample.status) {
                self.activity.record_repo(repo, sample.body_bytes);
            }
        }
        if sample.status >= 500 || sample.status == 429 || sample.error.is_some() {
            self.activity.record_error(RecentError {
                at_ms: now_ms(),
                method: sample.method.to_string(),
                route: sample.route.to_string(),
                repo: sample.repo.map(str::to_string),
                path: sample.path.to_string(),
                status: sample.status,
                error: sample.error.map(str::to_string),
                upstream: sample.upstream.map(str::to_string),
            });
        }
    }

    /// Count one answered request (route, status and body bytes only).
    pub fn record_request(&self, route: &str, status: u16, body_bytes: usize) {
        self.record(&RequestSample {
            route,
            status,
            body_bytes: body_bytes as u64,
            ..RequestSample::default()
        });
    }

    /// Walk the storage roots again if the last walk is stale (see [`usage_max_age`]).
    pub async fn refresh(&self) {
        self.store_usage.refresh().await;
    }

    /// The Prometheus text exposition of every metric (store usage as last walked).
    pub fn render(&self) -> Vec<u8> {
        self.requests
            .set_upstream_rate_limited(crate::upstream::rate_limited_total());
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("cannot encode metrics: {e}");
        }
        out
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Health, space and usage of every storage root.
    pub fn roots(&self) -> Vec<RootReport> {
        self.store_usage.report()
    }

    /// When this instance started (ms since the Unix epoch).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    pub fn totals(&self, fill: &FillStats) -> Totals {
        let (hits, partial_hits, misses) = self.requests.outcomes();
        Totals {
            served_cache_bytes: FillStats::get(&fill.served_cache_bytes),
            served_upstream_bytes: FillStats::get(&fill.served_upstream_bytes),
            upstream_fill_bytes: FillStats::get(&fill.upstream_bytes),
            hits,
            partial_hits,
            misses,
            upstream_rate_limited: crate::upstream::rate_limited_total(),
        }
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
    (
        "hubcache_prefetched_bytes_total",
        "Bytes of listed small regular files fetched before any client asked (fill.prefetch)",
        |s| FillStats::get(&s.prefetched_bytes),
    ),
    (
        "hubcache_prefetched_files_total",
        "Listed small regular files fetched before any client asked (fill.prefetch)",
        |s| FillStats::get(&s.prefetched_files),
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
    use crate::store::Durability;

    fn engine(dir: &std::path::Path) -> FillEngine {
        let store = Arc::new(Store::open(dir, Durability::Os).unwrap());
        let upstream = Arc::new(crate::upstream::UpstreamChain::new(&[], true).unwrap());
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

    fn metrics(dir: &std::path::Path) -> Metrics {
        let store = Arc::new(Store::open(dir, Durability::Os).unwrap());
        Metrics::new(engine(dir), store).unwrap()
    }

    #[test]
    fn rendered_metrics_include_requests_and_fill_counters() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = metrics(dir.path());
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
        assert!(text
            .contains(r#"hubcache_request_duration_seconds_bucket{route="resolve",le="0.001"} 2"#));
        assert!(text.contains("hubcache_fills_in_flight 0"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains(r#"hubcache_build_info{version=""#));
    }

    #[test]
    fn samples_move_served_bytes_outcomes_repos_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = metrics(dir.path());
        let sample = RequestSample {
            method: "GET",
            route: "resolve",
            repo: Some("models/acme/x"),
            path: "/acme/x/resolve/main/a.bin",
            status: 200,
            body_bytes: 300,
            outcome: Some("partial"),
            ..RequestSample::default()
        };
        metrics.record(&sample);
        metrics.record(&RequestSample {
            status: 502,
            error: Some("upstream gave up"),
            ..sample.clone()
        });
        metrics.record(&RequestSample {
            status: 429,
            ..sample.clone()
        });
        let text = String::from_utf8(metrics.render()).unwrap();
        for line in [
            r#"hubcache_served_bytes_total{source="cache"} 0"#,
            r#"hubcache_cache_requests_total{outcome="partial"} 3"#,
            r#"hubcache_cache_requests_total{outcome="hit"} 0"#,
            r#"hubcache_repo_requests_total{repo="models/acme/x"} 1"#,
            r#"hubcache_rate_limited_total{side="client"} 1"#,
            r#"hubcache_rate_limited_total{side="upstream"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        let errors = metrics.activity().recent_errors();
        assert_eq!(
            errors.iter().map(|e| e.status).collect::<Vec<_>>(),
            [429, 502]
        );
        assert_eq!(errors[1].error.as_deref(), Some("upstream gave up"));
    }

    #[test]
    fn store_usage_appears_per_root_after_a_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = metrics(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(metrics.refresh());
        let text = String::from_utf8(metrics.render()).unwrap();
        let root = dir.path().display().to_string();
        assert!(
            text.contains(&format!(r#"hubcache_store_used_bytes{{root="{root}"}} 0"#)),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"hubcache_store_root_healthy{{root="{root}"}} 1"#
        )));
        assert!(text.contains(&format!(
            r#"hubcache_store_capacity_bytes{{root="{root}"}} "#
        )));
    }

    #[test]
    fn docs_list_every_exported_metric() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = metrics(dir.path());
        metrics.record_request("resolve", 200, 1);
        metrics.activity().record_repo("models/a/b", 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(metrics.refresh());
        let text = String::from_utf8(metrics.render()).unwrap();
        let docs = include_str!("../../docs/metrics.md");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(names.len() >= 30, "{names:?}");
        for name in names {
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "docs/metrics.md does not list {name}"
            );
        }
    }

    #[test]
    fn other_parts_can_register_collectors() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = metrics(dir.path());
        let extra = IntCounter::new("hubcache_test_extra_total", "test").unwrap();
        extra.inc_by(3);
        metrics.register(Box::new(extra)).unwrap();
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains("hubcache_test_extra_total 3"), "{text}");
    }
}
