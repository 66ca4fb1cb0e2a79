//! The alert dispatcher: events from the [`EventBus`](crate::events::EventBus) in, one alert
//! per incident out to every sink, off the request path.
//!
//! ```text
//! bus ──► dispatcher task (AlertState: dedup, reminders, resolutions)
//!            │ try_send (a full queue drops and counts)
//!            ├──► queue ──► sink task (rate, digests, timeout, retries) ──► webhook
//!            └──► queue ──► sink task ──► wecom
//! ```
//!
//! Publishing an event never waits for a sink; a sink that hangs only fills its own queue
//! (each attempt is cut off after the sink's `timeout`); a sink that refuses for good raises
//! `sink_failed`, which the other sinks receive.

mod dedup;
mod metrics;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use hubcache_plugin_api::{Alert, AlertSink};

use crate::events::EventBus;

pub use dedup::{AlertState, Outgoing, Route, Step};
pub use metrics::AlertCollector;
pub use worker::{jitter, RetryPolicy, TokenBucket};

/// One configured sink, built.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub kind: String,
    pub route: Route,
    pub sink: Arc<dyn AlertSink>,
    /// Alerts waiting at most.
    pub queue: usize,
    /// Time allowed for one delivery attempt.
    pub timeout: Duration,
}

/// Counters of one sink (alerts, not messages, except `notifications`).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Alerts delivered.
    pub sent: AtomicU64,
    /// Messages delivered (a digest is one message).
    pub notifications: AtomicU64,
    /// Alerts given up on: refused for good, or still failing after every retry.
    pub failed: AtomicU64,
    /// Alerts dropped because the sink's queue was full.
    pub dropped: AtomicU64,
    /// Events folded into an alert already sent (duplicates within `repeat_every`).
    pub suppressed: AtomicU64,
    /// Delivery attempts retried.
    pub retries: AtomicU64,
}

/// A snapshot of [`SinkStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkCounts {
    pub sent: u64,
    pub notifications: u64,
    pub failed: u64,
    pub dropped: u64,
    pub suppressed: u64,
    pub retries: u64,
}

impl SinkStats {
    pub fn counts(&self) -> SinkCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkCounts {
            sent: get(&self.sent),
            notifications: get(&self.notifications),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
            suppressed: get(&self.suppressed),
            retries: get(&self.retries),
        }
    }
}

/// Dispatcher-wide settings.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// The node name put into every alert.
    pub node: String,
    pub retry: RetryPolicy,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            node: node_name(),
            retry: RetryPolicy::default(),
        }
    }
}

/// This host's name (for alerts' `node`), or `hubcache` if it has none.
pub fn node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "hubcache".to_string(),
    }
}

/// The dispatcher. Built anywhere ([`new`](Self::new)), it runs once [`run`](Self::run) has
/// started its tasks on a Tokio runtime; events published in between are kept (up to the
/// bus's capacity). Dropping it stops its tasks (alerts still queued are lost).
pub struct Dispatcher {
    sinks: Vec<(String, Arc<SinkStats>)>,
    /// The dispatcher's and the sinks' tasks, until `run` spawns them.
    pending: Vec<futures::future::BoxFuture<'static, ()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Dispatcher {
    /// Subscribes to `bus` and starts one task for the dispatcher and one per sink on the
    /// current Tokio runtime.
    pub fn start(bus: &EventBus, settings: DispatchSettings, sinks: Vec<SinkSpec>) -> Dispatcher {
        let mut dispatcher = Dispatcher::new(bus, settings, sinks);
        dispatcher.run();
        dispatcher
    }

    /// Subscribes to `bus` and prepares the tasks (no runtime needed; see [`run`](Self::run)).
    pub fn new(bus: &EventBus, settings: DispatchSettings, sinks: Vec<SinkSpec>) -> Dispatcher {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut queues = Vec::with_capacity(sinks.len());
        let mut stats = Vec::with_capacity(sinks.len());
        let mut pending: Vec<futures::future::BoxFuture<'static, ()>> =
            Vec::with_capacity(sinks.len() + 1);
        let mut routes = Vec::with_capacity(sinks.len());
        for spec in sinks {
            let sink_stats = Arc::new(SinkStats::default());
            let (sender, receiver) = mpsc::channel(spec.queue.max(1));
            let worker = worker::Worker {
                name: spec.route.name.clone(),
                kind: spec.kind,
                sink: spec.sink,
                timeout: spec.timeout,
                retry: settings.retry,
                stats: Arc::clone(&sink_stats),
                bus: bus.clone(),
                id_prefix: format!("{}-{started:x}-{}", settings.node, spec.route.name),
            };
            pending.push(Box::pin(worker.run(receiver)));
            stats.push((spec.route.name.clone(), sink_stats));
            queues.push(sender);
            routes.push(spec.route);
        }
        let state = AlertState::new(settings.node, routes);
        let subscription = bus.subscribe();
        let counters: Vec<Arc<SinkStats>> = stats.iter().map(|(_, s)| Arc::clone(s)).collect();
        pending.push(Box::pin(dispatch(subscription, state, queues, counters)));
        Dispatcher {
            sinks: stats,
            pending,
            tasks: Vec::new(),
        }
    }

    /// Starts the tasks on the current Tokio runtime (once; later calls do nothing).
    pub fn run(&mut self) {
        for task in self.pending.drain(..) {
            self.tasks.push(tokio::spawn(task));
        }
    }

    /// Each sink's name and counters.
    pub fn counts(&self) -> Vec<(String, SinkCounts)> {
        self.sinks
            .iter()
            .map(|(name, stats)| (name.clone(), stats.counts()))
            .collect()
    }

    /// Each sink's name and live counters (for a metrics collector).
    pub fn stats(&self) -> &[(String, Arc<SinkStats>)] {
        &self.sinks
    }
}

/// The dispatcher task: folds events into alerts and hands them to the sinks' queues.
async fn dispatch(
    mut events: crate::events::Subscription,
    mut state: AlertState,
    queues: Vec<mpsc::Sender<Alert>>,
    stats: Vec<Arc<SinkStats>>,
) {
    let route = |step: Step| {
        for sink in step.suppressed {
            stats[sink].suppressed.fetch_add(1, Ordering::Relaxed);
        }
        for Outgoing { sink, alert } in step.outgoing {
            if let Err(mpsc::error::TrySendError::Full(alert)) = queues[sink].try_send(alert) {
                stats[sink].dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "alert queue full: dropped {} for {} (the sink is slow or down)",
                    alert.name(),
                    alert.event.subject
                );
            }
        }
    };
    loop {
        let next = state.next_due();
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => route(state.on_event(event, Instant::now())),
                None => return,
            },
            _ = sleep_until_due(next) => route(state.on_tick(Instant::now())),
        }
    }
}

async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
