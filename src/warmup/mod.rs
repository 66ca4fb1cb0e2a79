//! Warm-up jobs: fetch a whole repo (or the files of it a filter takes) into the cache ahead of
//! its clients, with progress, through the admin API (`docs/admin.md`) and `hubcache warm`.
//!
//! A job resolves its revision, lists the files (the recursive tree listing huggingface_hub's
//! `snapshot_download` asks for, so those answers are cached too) and fills each file whole
//! through the fill engine exactly as a client's download does (so the upstream chain, and the
//! owner node in a cluster, decide where the bytes come from), several files at once, with an
//! optional byte-rate cap. Files already complete are skipped. Jobs are saved under the first
//! cache root (`warmup/jobs/`) and resumed when the node starts again.
//!
//! - `job`: the spec, its validation, the path filter and the persisted record;
//! - `run`: one job's run (listing, then the files);
//! - `persist`: the records on disk; `routes`: the admin API; `metrics`: `/metrics`;
//! - `client`: the `hubcache warm` command, an HTTP client of the admin API.

pub mod client;
pub mod job;
mod metrics;
mod persist;
pub mod pin_cli;
pub mod pins;
pub mod routes;
mod run;
pub mod token;
mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{watch, Notify, Semaphore};

pub use job::{FailedFile, JobRecord, JobSpec, JobState, SpecError, Target};
pub use persist::{JobStore, JOBS_DIR};
pub use token::{HubToken, JobRequest};
pub use verify::SubmitError;

use crate::app::App;
use crate::fetch::FillEngine;
use crate::meta::Meta;
use metrics::WarmStats;

/// Jobs that run at once (others wait, `queued`).
pub const JOBS_AT_ONCE: usize = 2;
/// Files one job fills at once.
pub const FILES_AT_ONCE: usize = 4;
/// Finished jobs kept (in memory and on disk); older ones are forgotten.
pub const FINISHED_KEPT: usize = 50;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One job: its record and the live parts of its current run.
pub struct Job {
    pub id: String,
    target: Target,
    record: Mutex<JobRecord>,
    cancel: watch::Sender<bool>,
    clock: Mutex<RunClock>,
    /// The hub token it fetches with (memory only: never saved, never shown).
    token: Option<HubToken>,
}

#[derive(Default)]
struct RunClock {
    started: Option<Instant>,
    /// Bytes fetched (read from files that were not already complete) in this run.
    fetched: u64,
    /// When this run ended.
    ended: Option<Instant>,
    last_saved: Option<Instant>,
}

/// A job as the admin API shows it: its record, the mean rate of this run and the ETA.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub record: JobRecord,
    pub rate_bytes_per_sec: f64,
    pub eta_seconds: Option<f64>,
}

impl Job {
    fn new(record: JobRecord, target: Target, token: Option<HubToken>) -> Self {
        Self {
            id: record.id.clone(),
            target,
            record: Mutex::new(record),
            cancel: watch::channel(false).0,
            clock: Mutex::new(RunClock::default()),
            token,
        }
    }

    /// The `Authorization` the job's requests carry (its hub token), if any.
    fn auth(&self) -> Option<&str> {
        self.token.as_ref().map(HubToken::authorization)
    }

    pub fn state(&self) -> JobState {
        self.record.lock().state
    }

    pub fn view(&self) -> JobView {
        let record = self.record.lock().clone();
        let clock = self.clock.lock();
        let running = !record.state.is_finished();
        // The mean of this run: until now, or until it ended.
        let elapsed = clock.started.map(|s| {
            clock
                .ended
                .map_or_else(|| s.elapsed(), |e| e.saturating_duration_since(s))
                .as_secs_f64()
        });
        let rate = match elapsed {
            Some(secs) if secs > 0.0 => clock.fetched as f64 / secs,
            _ => 0.0,
        };
        let left = record.bytes_total.saturating_sub(record.bytes_done);
        let eta_seconds = if !running {
            None
        } else if left == 0 && record.state == JobState::Running {
            Some(0.0)
        } else if rate > 0.0 {
            Some(left as f64 / rate)
        } else {
            None
        };
        JobView {
            record,
            rate_bytes_per_sec: rate,
            eta_seconds,
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut JobRecord) -> T) -> T {
        f(&mut self.record.lock())
    }

    fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }
}

/// The warm-up jobs of this node. Cheap to share (`Arc`).
pub struct Warmup {
    meta: Meta,
    fill: FillEngine,
    store: JobStore,
    jobs: Mutex<Vec<Arc<Job>>>,
    runtime: OnceLock<tokio::runtime::Handle>,
    slots: Arc<Semaphore>,
    stats: Arc<WarmStats>,
    seq: AtomicU64,
    /// Pins added through the admin API (kept in `warmup/pins.json`).
    api_pins: Mutex<Vec<JobSpec>>,
    /// The hub tokens of API pins (by pin key; memory only).
    api_pin_tokens: Mutex<HashMap<String, HubToken>>,
    /// Per pin (its spec as JSON): the last commit and job started for it.
    pin_progress: Mutex<HashMap<String, pins::PinProgress>>,
    /// The manifests the last pin round read (`pins:`).
    manifests: Mutex<Vec<PathBuf>>,
    /// Wakes the pin loop (pins were added).
    pin_wake: Notify,
}

/// Where warm-up keeps its jobs and API pins: under the first cache root.
pub(crate) fn state_root(app: &App) -> std::path::PathBuf {
    app.store
        .root_paths()
        .into_iter()
        .next()
        .unwrap_or_default()
}

impl Warmup {
    /// The jobs of `app`'s cache (those saved are loaded, to resume in [`Background`]), its
    /// metrics registered, and `app.warmup` set (for the admin routes and the status page).
    pub fn start(app: &Arc<App>) -> Arc<Self> {
        let root = state_root(app);
        let warmup = Arc::new(Self::new(
            app.meta.clone(),
            app.fill.clone(),
            JobStore::new(&root),
        ));
        if let Err(e) = app
            .metrics
            .register(Box::new(metrics::WarmCollector::new(&warmup)))
        {
            log::warn!("warm-up job metrics: {e}");
        }
        let _ = app.warmup.set(Arc::clone(&warmup));
        warmup
    }

    /// Jobs over `meta` and `fill`, kept in `store` (loaded now).
    pub fn new(meta: Meta, fill: FillEngine, store: JobStore) -> Self {
        let jobs = store
            .load_all()
            .into_iter()
            .filter_map(|record| match record.spec.target() {
                Ok(target) => Some(Arc::new(Job::new(record, target, None))),
                Err(e) => {
                    log::warn!("warm-up job {}: {e}; ignored", record.id);
                    None
                }
            })
            .collect();
        let api_pins = Self::load_api_pins(&store.pins_file());
        Self {
            meta,
            fill,
            store,
            api_pins: Mutex::new(api_pins),
            api_pin_tokens: Mutex::new(HashMap::new()),
            pin_progress: Mutex::new(HashMap::new()),
            manifests: Mutex::new(Vec::new()),
            pin_wake: Notify::new(),
            jobs: Mutex::new(jobs),
            runtime: OnceLock::new(),
            slots: Arc::new(Semaphore::new(JOBS_AT_ONCE)),
            stats: Arc::new(WarmStats::default()),
            seq: AtomicU64::new(0),
        }
    }

    /// Start the jobs a previous run of the node left unfinished (on the current runtime,
    /// which later jobs also run on).
    pub fn resume(self: &Arc<Self>) {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let unfinished: Vec<Arc<Job>> = self
            .jobs
            .lock()
            .iter()
            .filter(|j| !j.state().is_finished())
            .cloned()
            .collect();
        for job in unfinished {
            if job.update(|r| r.needs_token) && job.token.is_none() {
                log::warn!(
                    "warm-up job {} ({}): not resumed: it {}",
                    job.id,
                    job.target.repo,
                    token::NEEDS_TOKEN
                );
                job.update(|r| {
                    r.state = JobState::Failed;
                    r.error = Some(format!("this job {}", token::NEEDS_TOKEN));
                    r.finished_ms = Some(now_ms());
                });
                self.save(&job);
                continue;
            }
            log::info!("warm-up job {} ({}): resumed", job.id, job.target.repo);
            job.update(|r| r.state = JobState::Queued);
            self.launch(job);
        }
    }

    /// Start a job without a hub token; `Err` when the spec is not valid.
    pub fn submit(self: &Arc<Self>, spec: JobSpec) -> Result<JobView, SpecError> {
        self.submit_with(spec, None)
    }

    /// Start a job that fetches with `token` (not checked here: see
    /// [`Warmup::submit_checked`]); `Err` when the spec is not valid.
    pub fn submit_with(
        self: &Arc<Self>,
        spec: JobSpec,
        token: Option<HubToken>,
    ) -> Result<JobView, SpecError> {
        let target = spec.target()?;
        let now = now_ms();
        let id = format!(
            "{now:x}{:02x}",
            self.seq.fetch_add(1, Ordering::Relaxed) % 256
        );
        let mut record = JobRecord::new(id, &target, spec, now);
        record.needs_token = token.is_some();
        let job = Arc::new(Job::new(record, target, token));
        log::info!(
            "warm-up job {}: {} at {}",
            job.id,
            job.target.repo,
            job.target.revision.as_str()
        );
        self.jobs.lock().push(Arc::clone(&job));
        self.prune();
        self.save(&job);
        let view = job.view();
        self.launch(job);
        Ok(view)
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobView> {
        self.jobs.lock().iter().map(|j| j.view()).collect()
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        self.find(id).map(|j| j.view())
    }

    /// Cancel job `id` (its running fills finish their block; nothing new starts).
    pub fn cancel(&self, id: &str) -> Option<JobView> {
        let job = self.find(id)?;
        let changed = job.update(|r| {
            if r.state.is_finished() {
                return false;
            }
            r.state = JobState::Cancelled;
            r.finished_ms = Some(now_ms());
            true
        });
        if changed {
            job.cancel.send_replace(true);
            log::info!("warm-up job {}: cancelled", job.id);
            self.save(&job);
        }
        Some(job.view())
    }

    fn find(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().iter().find(|j| j.id == id).cloned()
    }

    fn launch(self: &Arc<Self>, job: Arc<Job>) {
        let task = run::run(Arc::clone(self), job);
        match self.runtime.get() {
            Some(runtime) => {
                runtime.spawn(task);
            }
            None => {
                tokio::spawn(task);
            }
        }
    }

    /// Forget the oldest finished jobs beyond [`FINISHED_KEPT`].
    fn prune(&self) {
        let dropped: Vec<Arc<Job>> = {
            let mut jobs = self.jobs.lock();
            let finished = jobs.iter().filter(|j| j.state().is_finished()).count();
            let mut excess = finished.saturating_sub(FINISHED_KEPT);
            let mut dropped = Vec::new();
            jobs.retain(|j| {
                if excess > 0 && j.state().is_finished() {
                    excess -= 1;
                    dropped.push(Arc::clone(j));
                    false
                } else {
                    true
                }
            });
            dropped
        };
        for job in dropped {
            if let Err(e) = self.store.remove(&job.id) {
                log::warn!("warm-up job {}: {e}", job.id);
            }
        }
    }

    /// Write the job's record (small; done from the job's task).
    fn save(&self, job: &Job) {
        let record = job.record.lock().clone();
        job.clock.lock().last_saved = Some(Instant::now());
        if let Err(e) = self.store.save(&record) {
            log::warn!("warm-up job {}: cannot save it: {e}", job.id);
        }
    }

    /// Save every job (at shutdown: what runs resumes from the next start).
    pub fn save_all(&self) {
        let jobs: Vec<Arc<Job>> = self.jobs.lock().clone();
        for job in jobs {
            self.save(&job);
        }
    }

    /// Jobs by state (for metrics).
    fn count_by_state(&self) -> Vec<(JobState, u64)> {
        let jobs = self.jobs.lock();
        JobState::ALL
            .into_iter()
            .map(|s| (s, jobs.iter().filter(|j| j.state() == s).count() as u64))
            .collect()
    }

    /// The Pingora background service that resumes saved jobs, runs new ones and the pins
    /// of `app`'s config.
    pub fn background(self: &Arc<Self>, app: &Arc<App>) -> Background {
        Background(Arc::clone(self), Arc::clone(app))
    }
}

/// Runs the jobs: resumes the saved ones at start, runs the pin loop, saves every job at
/// shutdown.
pub struct Background(Arc<Warmup>, Arc<App>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Background {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        self.0.resume();
        let stop = async move {
            // Bounded: one wait per change of the shutdown flag, which changes once.
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        Arc::clone(&self.0)
            .pin_loop(Arc::clone(&self.1), stop)
            .await;
        self.0.save_all();
    }
}

#[cfg(test)]
mod tests;
