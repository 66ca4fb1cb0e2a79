//! The composition root: builds the upstream chain, store, metadata service and fill engine
//! from a [`Config`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::admin::Metrics;
use crate::config::{self, Config};
use crate::fetch::{FillEngine, FillMode, FillSettings};
use crate::meta::{Meta, MetaSettings};
use crate::store::{Durability, Store};
use crate::upstream::UpstreamChain;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cache root {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("upstreams: {0}")]
    Upstream(String),
    #[error("{0}")]
    Metrics(String),
}

/// Everything a request handler needs, shared by all requests.
pub struct App {
    pub config: Config,
    pub upstream: Arc<UpstreamChain>,
    pub store: Arc<Store>,
    pub meta: Meta,
    pub fill: FillEngine,
    pub metrics: Metrics,
}

fn durability(d: config::Durability) -> Durability {
    match d {
        config::Durability::Fsync => Durability::Fsync,
        config::Durability::Os => Durability::Os,
    }
}

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let upstream = Arc::new(
            UpstreamChain::new(&config.upstreams, config.offline)
                .map_err(|e| StartError::Upstream(e.to_string()))?,
        );
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
        let meta = Meta::new(
            &config.cache_roots(),
            Arc::clone(&upstream),
            MetaSettings {
                offline: config.offline,
                revision_ttl: config.revision_ttl,
                auth_ttl: config.auth_ttl,
                durability,
            },
        );
        let fill = FillEngine::new(
            Arc::clone(&store),
            Arc::clone(&upstream),
            FillSettings {
                mode: match config.fill.mode {
                    config::FillMode::Complete => FillMode::Complete,
                    config::FillMode::OnDemand => FillMode::OnDemand,
                },
                segment: config.fill.segment,
                connections_per_file: config.fill.connections_per_file,
                connections_total: config.fill.connections_total,
                read_ahead: config.fill.read_ahead,
                background_fills: config.fill.background_fills,
                block_size: config.cache.block_size,
                offline: config.offline,
            },
        );
        let metrics = Metrics::new(fill.clone(), Arc::clone(&store), Arc::clone(&upstream))
            .map_err(|e| StartError::Metrics(e.to_string()))?;
        Ok(Arc::new(Self {
            config,
            upstream,
            store,
            meta,
            fill,
            metrics,
        }))
    }
}
