//! Upstream state changes, for whoever wants to hear about them (the alert plugins, through
//! the event bus). The upstream layer knows no bus: it calls the [`UpstreamEvents`] installed
//! with [`install`] (by default [`NoEvents`], which ignores everything).
//!
//! Each call is made once per change, from the request or probe that caused it, so a sink must
//! return quickly (queue the event, never deliver it inline).

use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;

/// Receives upstream state changes. `upstream` is the upstream's origin (`scheme://host[:port]`,
/// the same value as the `upstream` label of the metrics).
pub trait UpstreamEvents: Send + Sync {
    /// Its circuit opened: requests go to the next upstream (`upstream_down`).
    fn down(&self, upstream: &str, reason: &str) {
        let _ = (upstream, reason);
    }
    /// Its circuit closed after `recover_after` passing probes (`upstream_recovered`).
    fn recovered(&self, upstream: &str) {
        let _ = upstream;
    }
    /// Every upstream of the chain is down: only cached content is served.
    fn all_down(&self) {}
    /// At least one upstream is up again after [`all_down`](Self::all_down).
    fn all_recovered(&self) {}
    /// It answered 429 (its request budget is spent), to metadata calls, fills or the
    /// pass-through alike (`rate_limited`).
    fn rate_limited(&self, upstream: &str) {
        let _ = upstream;
    }
}

/// The default sink: ignores every event.
#[derive(Debug, Default)]
pub struct NoEvents;

impl UpstreamEvents for NoEvents {}

static SINK: LazyLock<RwLock<Arc<dyn UpstreamEvents>>> =
    LazyLock::new(|| RwLock::new(Arc::new(NoEvents)));

/// Send every upstream state change from now on to `sink` (process-wide; replaces the
/// previous sink).
pub fn install(sink: Arc<dyn UpstreamEvents>) {
    *SINK.write() = sink;
}

/// The sink installed now.
pub(crate) fn sink() -> Arc<dyn UpstreamEvents> {
    Arc::clone(&SINK.read())
}
