//! Active health checks: while an upstream's circuit is open it is probed every
//! `health.probe_every` with a `HEAD` of `health.probe_path` (default `/`, which any
//! HF-compatible hub, a private mirror, or a plain web server answers without a token or a
//! known repo). Any answer but 5xx/429 within `slow_threshold` passes; `recover_after` passes
//! in a row close the circuit.
//!
//! The probe loop looks at the *current* chain on every tick, so after a config reload it
//! probes the new chain's upstreams (an upstream object kept across the reload keeps its
//! state and its probes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::chain::{Upstream, UpstreamChain};
use super::error::classify;

/// How often the loop looks for due probes (each upstream keeps its own `probe_every`).
const TICK: Duration = Duration::from_millis(100);

/// One probe: `Ok(latency)` when it passes, otherwise why not.
pub(super) async fn probe(upstream: &Upstream) -> Result<Duration, String> {
    let config = upstream.health().config();
    let url = upstream
        .url_for(&config.probe_path)
        .map_err(|e| e.to_string())?;
    let limit = config.slow_threshold.min(upstream.timeout());
    let started = Instant::now();
    let response = tokio::time::timeout(limit, upstream.client().head(url).send())
        .await
        .map_err(|_| format!("no answer within {} ms", limit.as_millis()))?
        .map_err(|e| format!("{:?}", classify(e)))?;
    let status = response.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(format!("answered {}", status.as_u16()));
    }
    Ok(started.elapsed())
}

impl UpstreamChain {
    /// Start the probes that are due, each in a task of its own (one at a time per upstream).
    pub fn start_due_probes(self: &Arc<Self>) {
        if self.is_offline() {
            return;
        }
        let now = Instant::now();
        for upstream in self.all() {
            if !upstream.health().start_probe(now) {
                continue;
            }
            let chain = Arc::clone(self);
            let upstream = Arc::clone(upstream);
            tokio::spawn(async move {
                let result = probe(&upstream).await;
                chain.probe_done(&upstream, result);
            });
        }
    }
}

/// The probe loop as a Pingora background service. `current` returns the chain in use now.
pub struct ProbeService<F> {
    current: F,
}

impl<F> ProbeService<F>
where
    F: Fn() -> Arc<UpstreamChain> + Send + Sync + 'static,
{
    pub fn new(current: F) -> Self {
        Self { current }
    }

    /// Probe until `stop` says so.
    pub async fn run(&self, mut stop: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => (self.current)().start_due_probes(),
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[async_trait]
impl<F> BackgroundService for ProbeService<F>
where
    F: Fn() -> Arc<UpstreamChain> + Send + Sync + 'static,
{
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}
