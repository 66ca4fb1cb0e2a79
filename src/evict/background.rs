//! The cache service's loop: load the index in the background (requests are served
//! meanwhile), then evict when woken by a fill, when a write needs room, and on a timer;
//! watch the roots' health; raise and clear alarms; save the index; reconcile it with the
//! disk and collect the metadata of evicted files now and then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::alarm::Signal;
use super::pass::{goals, run_goal, Goal, Outcome, Pace, Reason, Remover, RootSpace};
use super::service::{RoomRequest, Shared};
use super::{disk_blobs, now_millis, Blocked, PlanRequest, RootId};
use crate::events::{Event, EventKind};
use crate::fetch::{FillEngine, Room};
use crate::store::{BlobId, Removal, StoreError};

/// How often the loop looks at the roots, the limits and idle files without being woken.
const TICK: Duration = Duration::from_secs(5);
/// How often the index is saved (when it changed): `cache ls` and `cache gc` read it.
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// How often the index is reconciled with the disk.
const RECONCILE_EVERY: Duration = Duration::from_secs(3600);
/// How often the metadata of evicted files is collected.
const META_GC_EVERY: Duration = Duration::from_secs(6 * 3600);
/// Metadata entries of files no longer cached are kept this long.
const META_GC_AGE: Duration = Duration::from_secs(24 * 3600);

/// Deletes through the fill engine: never a blob with a live fill, never one open elsewhere.
struct EngineRemover<'a>(&'a FillEngine);

impl Remover for EngineRemover<'_> {
    fn in_use(&self, id: &BlobId) -> bool {
        self.0.is_live(id)
    }

    fn remove(&self, id: &BlobId) -> Result<Removal, StoreError> {
        self.0.evict_blocking(id)
    }
}

/// When the loop last did its periodic chores.
struct Timers {
    saved: Instant,
    reconciled: Instant,
    collected: Instant,
    idle: Instant,
}

impl Shared {
    /// The loop; returns when `shutdown` fires (after saving the index).
    pub(super) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Some(dispatcher) = self.dispatcher.lock().as_mut() {
            dispatcher.run();
        }
        let Some(mut rooms) = self.room_queue.lock().take() else {
            log::error!("cache service: started twice");
            return;
        };
        tokio::spawn(Arc::clone(&self).load());
        let busy = Arc::new(AtomicBool::new(false));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let now = Instant::now();
        let mut timers = Timers {
            saved: now,
            reconciled: now,
            collected: now,
            idle: now - self.idle_every(),
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(request) = rooms.recv() => self.make_room_now(request).await,
                _ = self.wake.notified() => self.pass(false).await,
                _ = tick.tick() => self.on_tick(&mut timers, &busy).await,
            }
        }
        let this = Arc::clone(&self);
        let _ = tokio::task::spawn_blocking(move || this.save_now()).await;
    }

    /// Loads the snapshot, reconciles it with the disk, names the repos of blobs the
    /// snapshot did not know (from the metadata), then lets eviction run.
    async fn load(self: Arc<Self>) {
        let this = Arc::clone(&self);
        let loaded = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let report = this.index.load(&this.snapshots);
            let listed_at = now_millis();
            match this.store.list_allocated() {
                Ok((listed, _)) => {
                    let reconciled = this.index.reconcile(disk_blobs(listed), listed_at);
                    log::info!(
                        "eviction index: {} blobs ({:?} snapshot, {:?}), {} MB, in {:?}",
                        this.index.usage().blobs,
                        report.snapshot,
                        reconciled,
                        this.index.allocated() >> 20,
                        started.elapsed()
                    );
                }
                Err(e) => log::warn!("eviction index: cannot list the cache: {e}"),
            }
            this.ready.store(true, Ordering::Release);
            this.name_repos();
            this.save_now();
        })
        .await;
        if let Err(e) = loaded {
            log::error!("eviction index: loading failed: {e}");
            self.ready.store(true, Ordering::Release);
        }
        self.wake.notify_one();
    }

    /// Records which repos reference each cached blob, from the metadata (for pins).
    fn name_repos(&self) {
        for entry in self.meta.catalog() {
            if let Ok(id) = BlobId::parse(&entry.blob) {
                self.index.add_repo(&id, &entry.repo);
            }
        }
    }

    fn idle_every(&self) -> Duration {
        self.limits
            .load()
            .max_idle
            .map_or(Duration::from_secs(60), |idle| idle / 10)
            .clamp(TICK, Duration::from_secs(60))
    }

    async fn on_tick(self: &Arc<Self>, timers: &mut Timers, busy: &Arc<AtomicBool>) {
        self.check_roots().await;
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        let idle =
            self.limits.load().max_idle.is_some() && timers.idle.elapsed() >= self.idle_every();
        if idle {
            timers.idle = Instant::now();
        }
        self.pass(idle).await;
        if timers.saved.elapsed() >= SAVE_EVERY {
            timers.saved = Instant::now();
            let this = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || this.save_now()).await;
        }
        let reconcile = timers.reconciled.elapsed() >= RECONCILE_EVERY;
        let collect = timers.collected.elapsed() >= META_GC_EVERY;
        if (reconcile || collect) && !busy.swap(true, Ordering::AcqRel) {
            if reconcile {
                timers.reconciled = Instant::now();
            }
            if collect {
                timers.collected = Instant::now();
            }
            let (this, busy) = (Arc::clone(self), Arc::clone(busy));
            tokio::task::spawn_blocking(move || {
                if reconcile {
                    this.reconcile();
                }
                if collect {
                    this.collect_metadata();
                }
                busy.store(false, Ordering::Release);
            });
        }
    }

    fn reconcile(&self) {
        let listed_at = now_millis();
        match self.store.list_allocated() {
            Ok((listed, _)) => {
                let report = self.index.reconcile(disk_blobs(listed), listed_at);
                log::debug!("eviction index reconciled with the disk: {report:?}");
            }
            Err(e) => log::warn!("eviction index: cannot list the cache: {e}"),
        }
    }

    fn collect_metadata(&self) {
        let index = &self.index;
        let engine = &self.engine;
        let cached = |blob: &str| {
            BlobId::parse(blob).is_ok_and(|id| index.contains(&id) || engine.is_live(&id))
        };
        let report = self
            .meta
            .collect_garbage(&cached, META_GC_AGE, SystemTime::now());
        if report.files > 0 {
            log::info!("metadata of evicted files collected: {report:?}");
        }
    }

    /// Publishes `root_lost` / `root_recovered` when a root's health changed.
    async fn check_roots(&self) {
        let store = Arc::clone(&self.store);
        let checked = tokio::task::spawn_blocking(move || {
            store.check_roots();
            store.roots()
        });
        let Ok(roots) = checked.await else {
            return;
        };
        let mut health = self.health.lock();
        for root in roots {
            let subject = root.path.display().to_string();
            match health.update(root.index, root.healthy) {
                Some(false) => self.bus.publish(
                    Event::new(EventKind::RootLost, subject)
                        .with("problem", root.problem.unwrap_or_default()),
                ),
                Some(true) => self
                    .bus
                    .publish(Event::new(EventKind::RootRecovered, subject)),
                None => {}
            }
        }
    }

    /// The roots' space, with what fills in progress will add to each.
    fn root_spaces(&self) -> Vec<RootSpace> {
        RootSpace::of_store(&self.store, &self.engine.pending())
    }

    /// One pass over every goal due now (`idle`: expire idle files too), then the alarms.
    async fn pass(self: &Arc<Self>, idle: bool) {
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        let this = Arc::clone(self);
        let Ok((outcomes, roots)) = tokio::task::spawn_blocking(move || {
            let roots = this.root_spaces();
            let pending = this.engine.pending().iter().map(|(_, b)| b).sum();
            let goals = goals(
                &this.limits.load(),
                this.index.allocated(),
                pending,
                &roots,
                idle,
                now_millis(),
            );
            let outcomes = this.run_goals(&goals, Pace::BACKGROUND);
            (outcomes, this.root_spaces())
        })
        .await
        else {
            return;
        };
        let short = outcomes.iter().any(|o| !o.reached());
        self.short.store(short, Ordering::Relaxed);
        self.alarms_after(&outcomes, &roots);
    }

    fn run_goals(&self, goals: &[Goal], pace: Pace) -> Vec<Outcome> {
        let remover = EngineRemover(&self.engine);
        goals
            .iter()
            .map(|goal| {
                let outcome = run_goal(&self.index, &remover, goal, pace, false);
                self.stats.record(&outcome);
                if !outcome.evicted.is_empty() {
                    log::info!(
                        "eviction ({}, {}): {} files, {} bytes{}",
                        goal.reason.as_str(),
                        self.index.policy_kind(),
                        outcome.evicted.len(),
                        outcome.evicted.iter().map(|e| e.freed).sum::<u64>(),
                        if outcome.reached() {
                            ""
                        } else {
                            "; short of the goal"
                        }
                    );
                }
                outcome
            })
            .collect()
    }

    /// A blob needs room on a root: evict there at once (no pauses) until it fits above the
    /// store's reserve; answer whether any space was freed. Nothing is evicted when that
    /// could not help: a new file that would still not fit, or a write that would still find
    /// less room than it needs.
    async fn make_room_now(self: &Arc<Self>, request: RoomRequest) {
        let this = Arc::clone(self);
        let RoomRequest { room, reply } = request;
        let made = tokio::task::spawn_blocking(move || this.make_room_blocking(room))
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
        let _ = reply.send(made);
    }

    fn make_room_blocking(&self, room: Room) -> Option<bool> {
        let need = self.store.room_needed(room.root, room.bytes)?;
        if need == 0 {
            return Some(true);
        }
        let free = self.store.root_space(room.root)?.free;
        let bare = room.bytes.saturating_sub(free);
        let request = PlanRequest::free_on(room.root as RootId, need, now_millis())
            .with_min_age(self.limits.load().min_age);
        let subject = self
            .store
            .root_paths()
            .get(room.root)?
            .display()
            .to_string();
        let possible = self.index.plan(&request, &|id| self.engine.is_live(id));
        if possible.freed < bare || (room.new_file && possible.freed < need) {
            log::warn!(
                "no room for {} more bytes on {subject}: eviction could free only {} ({:?})",
                room.bytes,
                possible.freed,
                possible.blocked
            );
            if possible.blocked.any() {
                self.publish_blocked(&subject, &possible.blocked);
            }
            return Some(false);
        }
        let goal = Goal {
            reason: Reason::Enospc,
            subject,
            request,
        };
        let outcome = self.run_goals(&[goal], Pace::URGENT).pop()?;
        Some(!outcome.evicted.is_empty())
    }

    /// Raises `disk_high` for goals that ended over their limit, clears the alarms of
    /// subjects back under theirs.
    fn alarms_after(&self, outcomes: &[Outcome], roots: &[RootSpace]) {
        let now = Instant::now();
        let allocated = self.index.allocated();
        let limits = self.limits.load();
        let mut subjects: Vec<(String, bool, bool, String)> = Vec::new();
        if let Some(max) = limits.max_size {
            subjects.push((
                String::new(),
                allocated > max,
                allocated <= max,
                format!("{allocated} bytes of a {max}-byte budget"),
            ));
        }
        if let Some((high, low)) = limits.watermarks {
            for root in roots {
                subjects.push((
                    root.path.clone(),
                    high.is_exceeded_by(root.used, root.total),
                    !low.is_exceeded_by(root.used, root.total),
                    format!(
                        "{} of {} bytes used (high watermark {high})",
                        root.used, root.total
                    ),
                ));
            }
        }
        let mut alarms = self.alarms.lock();
        for (subject, over, recovered, used) in subjects {
            let outcome = outcomes.iter().find(|o| {
                o.goal.subject == subject
                    && matches!(o.goal.reason, Reason::Budget | Reason::Watermark)
            });
            let signal = match outcome {
                Some(outcome) => {
                    alarms.after_pass(&subject, over, recovered, &outcome.blocked, now)
                }
                None => alarms.check(&subject, recovered),
            };
            match signal {
                Some(Signal::Raise) => {
                    let blocked = outcome.map(|o| o.blocked).unwrap_or_default();
                    self.bus.publish(
                        Event::new(EventKind::DiskHigh, subject.as_str())
                            .with("used", &used)
                            .with("blocked", describe(&blocked)),
                    );
                    if blocked.any() {
                        self.publish_blocked(&subject, &blocked);
                    }
                }
                Some(Signal::Clear) => self
                    .bus
                    .publish(Event::new(EventKind::DiskOk, subject).with("used", used)),
                None => {}
            }
        }
    }

    fn publish_blocked(&self, subject: &str, blocked: &Blocked) {
        self.bus.publish(
            Event::new(EventKind::EvictionBlocked, subject)
                .with("in_use", blocked.in_use.0)
                .with("pinned", blocked.pinned.0)
                .with("too_young", blocked.too_young.0),
        );
    }
}

/// "2 in use (3 MB), 1 pinned (1 MB)" or "nothing left to evict".
fn describe(blocked: &Blocked) -> String {
    let parts: Vec<String> = [
        ("in use", blocked.in_use),
        ("pinned", blocked.pinned),
        ("too young", blocked.too_young),
    ]
    .into_iter()
    .filter(|(_, (n, _))| *n > 0)
    .map(|(what, (n, bytes))| format!("{n} {what} ({bytes} bytes)"))
    .collect();
    if parts.is_empty() {
        "nothing left to evict".to_string()
    } else {
        parts.join(", ")
    }
}
