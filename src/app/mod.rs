//! The composition root: the long-lived state (store, fill engine, metadata service, metrics)
//! and the reloadable [`Settings`] they follow.
//!
//! The settings sit in one `ArcSwap`: a request takes one snapshot when it starts
//! ([`App::settings`]) and keeps it to its end; the metadata service and the fill engine read
//! the current one for each piece of work ([`Live`]). A reload ([`App::reload`]) builds the
//! next settings completely, then swaps them in with one `store()`.

mod activity;
pub mod diff;
mod prefetch;
mod reload;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

pub use activity::{Activity, InFlight};
pub use reload::{ReloadEvents, ReloadReport, ReloadResult};
pub use settings::{BuildError, Settings};

use crate::admin::Metrics;
use crate::config::{self, Config};
use crate::fetch::FillEngine;
use crate::live::Live;
use crate::meta::Meta;
use crate::store::{Durability, Store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cache root {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("{0}")]
    Settings(#[from] BuildError),
    #[error("{0}")]
    Metrics(String),
}

/// Everything a request handler needs, shared by all requests.
pub struct App {
    settings: Arc<ArcSwap<Settings>>,
    pub store: Arc<Store>,
    pub meta: Meta,
    pub fill: FillEngine,
    pub metrics: Metrics,
    /// Requests in flight and whether the process is stopping (for a draining shutdown).
    pub activity: Arc<Activity>,
    /// Reload attempts so far; held while a reload runs (reloads are serialised).
    reloads: Mutex<u64>,
    reload_hooks: RwLock<Vec<Arc<dyn ReloadEvents>>>,
    /// The cache service (eviction, events, alerts), once `serve` started it.
    pub cache_service: std::sync::OnceLock<crate::evict::CacheService>,
    /// The warm-up jobs, once `serve` started them.
    pub warmup: std::sync::OnceLock<Arc<crate::warmup::Warmup>>,
    /// The certificate the TLS listener serves (when `tls` is set), re-read on every reload.
    pub tls: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
}

fn durability(d: config::Durability) -> Durability {
    match d {
        config::Durability::Fsync => Durability::Fsync,
        config::Durability::Os => Durability::Os,
    }
}

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let roots = config.cache_roots();
        let durability = durability(config.cache.durability);
        let store = Arc::new(
            Store::open_roots(&roots, config.cache.replicas, durability).map_err(|e| {
                StartError::Store {
                    path: roots.first().cloned().unwrap_or_default(),
                    reason: e.to_string(),
                }
            })?,
        );
        let settings = Arc::new(ArcSwap::from_pointee(Settings::build(config, None)?));
        let current = {
            let settings = Arc::clone(&settings);
            Live::new(move || settings.load_full())
        };
        let upstream = current.map(|s| Arc::clone(&s.upstream));
        let meta = Meta::new(
            &roots,
            durability,
            upstream.clone(),
            current.map(|s| Arc::clone(&s.meta)),
        );
        let fill = FillEngine::live(
            Arc::clone(&store),
            upstream,
            current.map(|s| Arc::clone(&s.fill)),
        );
        fill.set_cluster(current.map(|s| s.cluster.clone()));
        meta.set_cluster(current.map(|s| s.cluster.clone()));
        meta.observe_listings(prefetch::Prefetcher::new(
            Arc::clone(&settings),
            meta.clone(),
            fill.clone(),
        ));
        let metrics = Metrics::new(fill.clone(), Arc::clone(&store))
            .map_err(|e| StartError::Metrics(e.to_string()))?;
        Ok(Arc::new(Self {
            settings,
            store,
            meta,
            fill,
            metrics,
            activity: Arc::new(Activity::default()),
            cache_service: std::sync::OnceLock::new(),
            warmup: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            reloads: Mutex::new(0),
            reload_hooks: RwLock::new(Vec::new()),
        }))
    }

    /// The settings in effect now. A request takes this once and keeps it to its end.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }
}

#[cfg(test)]
mod tests;
