//! The cache service of a running mirror: keeps the eviction index current from the fill
//! engine's notifications, evicts (on a fill that crosses the budget or a watermark, on a
//! full disk, on a timer for idle files), publishes the core's events and runs the alert
//! dispatcher. `serve` starts it with [`CacheService::start`] and runs
//! [`CacheService::background`] as a Pingora background service; the loop itself is in
//! `background.rs`.
//!
//! ```text
//! fill engine ──(FillObserver: opened, stored, read, released, make_room)──► CacheService
//!     index (in memory; snapshot on every root: {root}/evict/index.snap)
//!     passes (paced, off the request path) ──► FillEngine::evict_blocking ──► Store
//!     events (disk_high, root_lost, verify_failed, rate_limited, ...) ──► EventBus ──► Dispatcher
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};

use super::alarm::{Alarms, RootHealth};
use super::metrics::{EvictCollector, EvictStats};
use super::pass::Limits;
use super::{now_millis, DownloadId, EvictionIndex, RootId};
use crate::alerts::{AlertCollector, DispatchSettings, Dispatcher};
use crate::app::App;
use crate::config::EvictionConfig;
use crate::events::{Event, EventBus, EventKind};
use crate::fetch::{FillEngine, FillObserver, Room};
use crate::hf::Repo;
use crate::meta::Meta;
use crate::plugins::Plugins;
use crate::store::{BlobFile, BlobId, Store};

/// Where the index is saved, under every root.
pub const SNAPSHOT: &str = "evict/index.snap";

/// Watermarks are checked on a stored block at most this often.
const WATERMARK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// `rate_limited` is published at most this often per upstream.
const RATE_LIMITED_EVERY: Duration = Duration::from_secs(10);
/// Requests for room waiting for the service at most.
const ROOM_QUEUE: usize = 256;

/// A blob needs room: free it, then answer whether anything was freed.
pub(super) struct RoomRequest {
    pub room: Room,
    pub reply: oneshot::Sender<bool>,
}

/// The state the service shares with the fill engine (as its observer) and its loop.
pub(super) struct Shared {
    pub index: Arc<EvictionIndex>,
    pub engine: FillEngine,
    pub store: Arc<Store>,
    pub meta: Meta,
    pub bus: EventBus,
    /// The limits of `plugins.eviction` (replaced by [`CacheService::reconfigure`]).
    pub limits: ArcSwap<Limits>,
    pub snapshots: Vec<PathBuf>,
    /// Wakes the loop for a pass (a fill crossed a limit, a fill ended after a short pass).
    pub wake: Notify,
    pub rooms: mpsc::Sender<RoomRequest>,
    pub room_queue: Mutex<Option<mpsc::Receiver<RoomRequest>>>,
    /// The index has been loaded and reconciled: eviction may run.
    pub ready: AtomicBool,
    /// The last pass fell short of a goal (a fill ending may let the next one reach it).
    pub short: AtomicBool,
    pub stats: Arc<EvictStats>,
    pub alarms: Mutex<Alarms>,
    pub health: Mutex<RootHealth>,
    pub dispatcher: Mutex<Option<Dispatcher>>,
    /// Index version last saved.
    pub saved: AtomicU64,
    /// When watermarks were last checked on a stored block (ms).
    watermark_checked: AtomicU64,
}

/// The running cache service. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct CacheService {
    shared: Arc<Shared>,
}

/// What the service is doing, for a status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The index is loaded (eviction runs).
    pub ready: bool,
    pub policy: &'static str,
    pub blobs: usize,
    /// Bytes the cache occupies (all replicas).
    pub allocated: u64,
    pub budget: Option<u64>,
    /// Bytes fills in progress will still add.
    pub pending: u64,
    pub evicted_blobs: u64,
    pub evicted_bytes: u64,
    pub passes: u64,
    /// Subjects with a `disk_high` raised ("" = the budget, else a root's path).
    pub disk_high: Vec<String>,
    /// Bytes of the cache per root path.
    pub roots: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("the cache service is already running for this app")]
    AlreadyStarted,
}

impl CacheService {
    /// Builds the service for `app` with the configured `plugins`: the index (empty until the
    /// background loop loads it), the alert dispatcher (its tasks start with the loop), the
    /// metrics, and the hooks into the fill engine and the upstream chain. Records itself in
    /// `app.cache_service`.
    pub fn start(app: &Arc<App>, plugins: Plugins) -> Result<CacheService, ServiceError> {
        let config = &app.settings().config.plugins.eviction;
        let bus = EventBus::new();
        let index = Arc::new(EvictionIndex::new(plugins.policy, &config.pin));
        index.set_demoted(owned_by_peer(app));
        let dispatcher = Dispatcher::new(&bus, DispatchSettings::default(), plugins.sinks);
        let stats = Arc::new(EvictStats::default());
        let metric = |e: prometheus::Error| ServiceError::Metrics(e.to_string());
        let alerts = AlertCollector::new(dispatcher.stats()).map_err(metric)?;
        let evict = EvictCollector::new(
            Arc::clone(&index),
            Arc::clone(&app.store),
            Arc::clone(&stats),
            config.max_size,
        )
        .map_err(metric)?;
        for collector in [
            Box::new(alerts) as Box<dyn prometheus::core::Collector>,
            Box::new(evict),
        ] {
            app.metrics
                .register(collector)
                .map_err(|e| ServiceError::Metrics(e.to_string()))?;
        }
        let (rooms, room_queue) = mpsc::channel(ROOM_QUEUE);
        let shared = Arc::new(Shared {
            index,
            engine: app.fill.clone(),
            store: Arc::clone(&app.store),
            meta: app.meta.clone(),
            bus: bus.clone(),
            limits: ArcSwap::from_pointee(Limits::of(config)),
            snapshots: snapshot_paths(&app.store),
            wake: Notify::new(),
            rooms,
            room_queue: Mutex::new(Some(room_queue)),
            ready: AtomicBool::new(false),
            short: AtomicBool::new(false),
            stats,
            alarms: Mutex::new(Alarms::default()),
            health: Mutex::new(RootHealth::default()),
            dispatcher: Mutex::new(Some(dispatcher)),
            saved: AtomicU64::new(u64::MAX),
            watermark_checked: AtomicU64::new(0),
        });
        let service = CacheService { shared };
        if app.cache_service.set(service.clone()).is_err() {
            return Err(ServiceError::AlreadyStarted);
        }
        app.fill
            .set_observer(Arc::clone(&service.shared) as Arc<dyn FillObserver>);
        app.on_reload(Arc::new(ReloadAlerts { bus: bus.clone() }));
        crate::upstream::events::install(Arc::new(UpstreamAlerts::new(bus)));
        Ok(service)
    }

    /// The Pingora background service running the loop (load, passes, alerts, saves).
    pub fn background(&self) -> Background {
        Background(Arc::clone(&self.shared))
    }

    /// The event bus the core publishes on.
    pub fn events(&self) -> &EventBus {
        &self.shared.bus
    }

    /// The eviction index.
    pub fn index(&self) -> &Arc<EvictionIndex> {
        &self.shared.index
    }

    /// Whether the index is loaded and eviction runs.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// A read-only summary for the status page.
    pub fn summary(&self) -> Summary {
        let s = &self.shared;
        let usage = s.index.usage();
        let (evicted_blobs, evicted_bytes) = s.stats.evicted();
        let paths = s.store.root_paths();
        Summary {
            ready: self.is_ready(),
            policy: s.index.policy_kind(),
            blobs: usage.blobs,
            allocated: usage.allocated,
            budget: s.limits.load().max_size,
            pending: s.engine.pending().iter().map(|(_, b)| b).sum(),
            evicted_blobs,
            evicted_bytes,
            passes: s.stats.passes(),
            disk_high: s.alarms.lock().raised(),
            roots: paths
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let used = usage.per_root.get(&(i as RootId)).copied().unwrap_or(0);
                    (p.display().to_string(), used)
                })
                .collect(),
        }
    }

    /// Applies new `plugins.eviction` limits and pins (a config reload); the next pass uses
    /// them. The policy is fixed for the life of the index (a new one needs a restart).
    pub fn reconfigure(&self, config: &EvictionConfig) {
        self.shared.limits.store(Arc::new(Limits::of(config)));
        self.shared.index.set_pins(&config.pin);
        self.shared.wake.notify_one();
    }

    /// Saves the index (blocking), e.g. after the server stopped. Nothing before it loaded.
    pub fn shutdown(&self) {
        self.shared.save_now();
    }
}

/// "Another cluster node owns this blob", following config reloads (always false without a
/// `cluster`). Holds the app weakly: the app holds the service.
fn owned_by_peer(app: &Arc<App>) -> super::index::Demoted {
    let app = Arc::downgrade(app);
    Arc::new(move |id: &BlobId| {
        app.upgrade()
            .and_then(|app| app.settings().cluster.clone())
            .is_some_and(|cluster| cluster.owned_by_peer(id.as_str()))
    })
}

/// The snapshot's path under every root.
pub fn snapshot_paths(store: &Store) -> Vec<PathBuf> {
    store
        .root_paths()
        .into_iter()
        .map(|root| root.join(SNAPSHOT))
        .collect()
}

/// A refused config reload, published on the bus as `config_reload_failed` (subject: the
/// file; details: why, which names the key path).
struct ReloadAlerts {
    bus: EventBus,
}

impl crate::app::ReloadEvents for ReloadAlerts {
    fn config_reloaded(&self, report: &crate::app::ReloadReport) {
        if report.result == crate::app::ReloadResult::Ok {
            return;
        }
        let file = report.file.as_ref().map_or_else(
            || "(embedded default)".to_string(),
            |f| f.display().to_string(),
        );
        self.bus.publish(
            Event::new(EventKind::ConfigReloadFailed, file)
                .with("result", report.result.as_str())
                .with("reason", &report.message),
        );
    }
}

/// Upstream state changes and 429 answers, published on the bus: `upstream_down` /
/// `upstream_recovered` per upstream, `all_upstreams_down` / `all_upstreams_recovered`, and
/// `rate_limited` at most once per [`RATE_LIMITED_EVERY`] per upstream. Installed process-wide
/// (`upstream::events::install`), so a chain rebuilt by a config reload reports here too.
struct UpstreamAlerts {
    bus: EventBus,
    last_rate_limited: Mutex<HashMap<String, Instant>>,
}

/// The subject of the whole-chain events (the node as a whole).
const ALL_UPSTREAMS: &str = "";

impl UpstreamAlerts {
    fn new(bus: EventBus) -> Self {
        Self {
            bus,
            last_rate_limited: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a `rate_limited` event for `upstream` is due (not sent within the interval).
    fn rate_limited_due(&self, upstream: &str, now: Instant) -> bool {
        let mut last = self.last_rate_limited.lock();
        if last
            .get(upstream)
            .is_some_and(|at| now.duration_since(*at) < RATE_LIMITED_EVERY)
        {
            return false;
        }
        if last.len() > 64 {
            last.clear();
        }
        last.insert(upstream.to_string(), now);
        true
    }
}

impl crate::upstream::UpstreamEvents for UpstreamAlerts {
    fn down(&self, upstream: &str, reason: &str) {
        self.bus
            .publish(Event::new(EventKind::UpstreamDown, upstream).with("reason", reason));
    }

    fn recovered(&self, upstream: &str) {
        self.bus
            .publish(Event::new(EventKind::UpstreamRecovered, upstream));
    }

    fn all_down(&self) {
        self.bus
            .publish(Event::new(EventKind::AllUpstreamsDown, ALL_UPSTREAMS));
    }

    fn all_recovered(&self) {
        self.bus
            .publish(Event::new(EventKind::AllUpstreamsRecovered, ALL_UPSTREAMS));
    }

    fn rate_limited(&self, upstream: &str) {
        if self.rate_limited_due(upstream, Instant::now()) {
            self.bus
                .publish(Event::new(EventKind::RateLimited, upstream).with("status", 429));
        }
    }
}

impl Shared {
    /// Saves the index to every root if it changed since the last save (blocking).
    pub(super) fn save_now(&self) {
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        let version = self.index.version();
        if self.saved.load(Ordering::Relaxed) == version {
            return;
        }
        match self.index.save_all(&self.snapshots) {
            Ok(()) => self.saved.store(version, Ordering::Relaxed),
            Err(e) => log::warn!("eviction index: cannot save the snapshot: {e}"),
        }
    }

    /// Wakes the loop if the index is over the budget (with what live fills will add).
    fn check_budget(&self, with_pending: bool) {
        let Some(max) = self.limits.load().max_size else {
            return;
        };
        let mut used = self.index.allocated();
        if with_pending && used <= max {
            used += self.engine.pending().iter().map(|(_, b)| b).sum::<u64>();
        }
        if used > max {
            self.wake.notify_one();
        }
    }

    /// Wakes the loop if `root` is over its high watermark (checked at most once a second).
    fn check_watermark(&self, root: usize) {
        let Some((high, _)) = self.limits.load().watermarks else {
            return;
        };
        let now = now_millis();
        let last = self.watermark_checked.load(Ordering::Relaxed);
        if now.saturating_sub(last) < WATERMARK_CHECK_EVERY.as_millis() as u64
            || self
                .watermark_checked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Some(space) = self.store.root_space(root) {
            if high.is_exceeded_by(space.total.saturating_sub(space.free), space.total) {
                self.wake.notify_one();
            }
        }
    }

    fn record(&self, id: &BlobId, copy: &BlobFile) {
        self.index.record_fill(
            id,
            copy.size(),
            copy.root_index() as RootId,
            copy.allocated_estimate(),
            now_millis(),
        );
    }
}

impl FillObserver for Shared {
    fn opened(&self, id: &BlobId, repo: Option<&Repo>, copy: &BlobFile) {
        self.record(id, copy);
        if let Some(repo) = repo {
            self.index.add_repo(id, &repo.to_string());
        }
        self.check_budget(true);
    }

    fn stored(&self, id: &BlobId, copy: &BlobFile) {
        self.record(id, copy);
        self.check_budget(false);
        self.check_watermark(copy.root_index());
    }

    fn read(&self, id: &BlobId, download: u64) {
        self.index
            .record_read(id, DownloadId(download), now_millis());
    }

    fn released(&self, _id: &BlobId) {
        if self.short.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    fn copies(&self, id: &BlobId, size: u64, copies: &[(usize, u64)]) {
        let copies: Vec<(RootId, u64)> = copies
            .iter()
            .map(|&(root, bytes)| (root as RootId, bytes))
            .collect();
        self.index.set_copies(id, size, &copies, now_millis());
    }

    fn verify_failed(&self, id: &BlobId, actual: &str) {
        self.bus.publish(
            Event::new(EventKind::VerifyFailed, id.as_str())
                .with("actual", actual)
                .with("action", "discarded; fetched again on the next request"),
        );
    }

    fn make_room(&self, _id: &BlobId, room: Room) -> BoxFuture<'static, bool> {
        if !self.ready.load(Ordering::Acquire) {
            return Box::pin(async { false });
        }
        let (reply, answer) = oneshot::channel();
        if self.rooms.try_send(RoomRequest { room, reply }).is_err() {
            return Box::pin(async { false });
        }
        Box::pin(async move { answer.await.unwrap_or(false) })
    }
}

/// The service's loop as a Pingora background service.
pub struct Background(pub(super) Arc<Shared>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Background {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        Arc::clone(&self.0).run(shutdown).await;
    }
}
