//! `GET /api/status`: what the status page shows, as JSON (its shape is documented in
//! `docs/admin.md`): upstreams, storage roots, fills in flight, warm-up jobs, the most
//! requested repos, recent errors and totals.

use serde::Serialize;
use serde_json::{json, Value};

use super::activity::{now_ms, RecentError, RepoCount};
use super::metrics::Totals;
use crate::app::App;
use crate::fetch::FillProgress;
use crate::upstream::{Standing, UpstreamId};

/// Repos listed on the status page.
pub const STATUS_TOP_REPOS: usize = 20;
/// Fills listed (the largest first).
pub const STATUS_FILLS: usize = 50;

#[derive(Debug, Serialize)]
struct UpstreamStatus {
    /// Position in the chain (1 = asked first when all are ready).
    index: usize,
    url: String,
    trust: &'static str,
    /// `ready`, `suspect` (a request waits without an answer), `down` (circuit open) or
    /// `throttled` (429 with Retry-After).
    state: &'static str,
    /// Whether requests go to it in config order now (ready).
    available: bool,
}

#[derive(Debug, Serialize)]
struct RootStatusJson {
    path: String,
    healthy: bool,
    problem: Option<String>,
    capacity_bytes: Option<u64>,
    free_bytes: Option<u64>,
    reserve_bytes: Option<u64>,
    /// The cache's own allocated bytes (a directory walk, every 2 s to 5 min).
    used_bytes: Option<u64>,
    blobs: Option<u64>,
    accepts_new_blobs: bool,
}

#[derive(Debug, Serialize)]
struct FillStatus {
    blob: String,
    repo: Option<String>,
    path: Option<String>,
    size: u64,
    /// Committed plus in-flight bytes on disk.
    present_bytes: u64,
    rate_bytes_per_sec: f64,
    segments: usize,
    readers_waiting: usize,
    age_seconds: f64,
    upstream: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status<'a> {
    version: &'static str,
    now_ms: u64,
    started_ms: u64,
    listen: String,
    offline: bool,
    upstreams: Vec<UpstreamStatus>,
    roots: Vec<RootStatusJson>,
    fills: Vec<FillStatus>,
    /// Warm-up jobs (filled in by the warm-up feature).
    jobs: Vec<Value>,
    top_repos: Vec<RepoCount>,
    recent_errors: Vec<RecentError>,
    totals: Totals,
    log_level: &'a str,
}

fn standing_name(standing: Standing) -> &'static str {
    match standing {
        Standing::Ready => "ready",
        Standing::Suspect => "suspect",
        Standing::Down => "down",
        Standing::Throttled(_) => "throttled",
    }
}

/// The origin of upstream `id` in the current chain, for display.
pub fn upstream_origin(app: &App, id: UpstreamId) -> Option<String> {
    app.settings().upstream.get(id).map(|u| u.origin())
}

fn fill_status(app: &App, fill: FillProgress) -> FillStatus {
    let rate = fill.rate();
    FillStatus {
        blob: fill.blob.to_string(),
        repo: fill.repo,
        path: fill.path,
        size: fill.size,
        present_bytes: (fill.present_bytes + fill.in_flight_bytes).min(fill.size),
        rate_bytes_per_sec: (rate * 10.0).round() / 10.0,
        segments: fill.segments,
        readers_waiting: fill.readers_waiting,
        age_seconds: (fill.age.as_secs_f64() * 10.0).round() / 10.0,
        upstream: fill.upstream.and_then(|i| upstream_origin(app, i)),
    }
}

/// The status now (the store usage as last walked: call `metrics.refresh()` first).
pub fn collect(app: &App) -> Value {
    let metrics = &app.metrics;
    let settings = app.settings();
    let upstreams = settings
        .upstream
        .all()
        .iter()
        .enumerate()
        .map(|(position, u)| UpstreamStatus {
            index: position + 1,
            url: u.base().as_str().trim_end_matches('/').to_string(),
            trust: u.trust().as_str(),
            state: standing_name(u.health().standing(std::time::Instant::now())),
            available: u.health().standing(std::time::Instant::now()) == Standing::Ready,
        })
        .collect();
    let roots = metrics
        .roots()
        .into_iter()
        .map(|r| RootStatusJson {
            path: r.status.path.display().to_string(),
            healthy: r.status.healthy,
            problem: r.status.problem,
            capacity_bytes: r.status.total_bytes,
            free_bytes: r.status.free_bytes,
            reserve_bytes: r.status.reserve_bytes,
            used_bytes: r.usage.map(|u| u.allocated_bytes),
            blobs: r.usage.map(|u| u.blobs),
            accepts_new_blobs: r.status.accepts_new_blobs,
        })
        .collect();
    let fills = app
        .fill
        .active_fills()
        .into_iter()
        .take(STATUS_FILLS)
        .map(|f| fill_status(app, f))
        .collect();
    let level = crate::logging::level();
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        now_ms: now_ms(),
        started_ms: metrics.started_ms(),
        listen: settings.config.listen_summary(),
        offline: settings.config.offline,
        upstreams,
        roots,
        fills,
        jobs: app
            .warmup
            .get()
            .map(|w| {
                w.list()
                    .iter()
                    .filter_map(|j| serde_json::to_value(j).ok())
                    .collect()
            })
            .unwrap_or_default(),
        top_repos: metrics.activity().top_repos(STATUS_TOP_REPOS),
        recent_errors: metrics.activity().recent_errors(),
        totals: metrics.totals(app.fill.stats()),
        log_level: level.as_str(),
    };
    serde_json::to_value(status).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}
