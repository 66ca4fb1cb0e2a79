//! Draining instead of sleeping: Pingora's graceful shutdown waits the whole
//! `grace_period`, even when idle. Once the listeners are closed (the grace period starts),
//! this exits the process as soon as no request is in flight and no fill is live (segment
//! fetches finish; no new background completion starts), and has stayed so for as long as a
//! connection accepted just before the close may take to send its request. The grace period stays
//! the upper bound: Pingora ends the process then. A SIGINT during the drain exits at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::server::ExecutionPhase;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

use super::Lifecycle;
use crate::app::App;

/// How often the drain looks.
const TICK: Duration = Duration::from_millis(50);
/// Nothing in flight for this long counts as drained: as long as the service gives
/// connections accepted before the shutdown to send their request.
const QUIET: Duration = super::service::FIRST_READ_GRACE;
/// How often a long drain says what it waits for.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Wait for the grace period to start, then exit once drained.
pub(super) async fn drain(
    app: Arc<App>,
    life: Arc<Lifecycle>,
    mut phases: broadcast::Receiver<ExecutionPhase>,
) {
    loop {
        match phases.recv().await {
            Ok(ExecutionPhase::ShutdownGracePeriod) => break,
            Ok(ExecutionPhase::ShutdownRuntimes | ExecutionPhase::Terminated) => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
    app.fill.drain();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut reported = Instant::now();
    loop {
        let requests = app.activity.requests();
        let fills = app.fill.live_fills();
        if requests == 0 && fills == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                break;
            }
        } else {
            quiet_since = None;
            if reported.elapsed() >= REPORT_EVERY {
                reported = Instant::now();
                log::info!(
                    "draining for {}s: {requests} requests and {fills} fills in flight",
                    started.elapsed().as_secs()
                );
            }
        }
        let sigint = async {
            match interrupt.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = sigint => {
                log::info!("SIGINT during the drain: stopping now");
                break;
            }
        }
    }
    log::info!(
        "drained after {:.1}s: nothing in flight; exiting",
        started.elapsed().as_secs_f64()
    );
    let flushing = Arc::clone(&app);
    let _ = tokio::task::spawn_blocking(move || flushing.meta.flush()).await;
    life.finish();
    std::process::exit(0);
}
