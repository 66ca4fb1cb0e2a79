//! [`Settings`]: the validated config in effect plus the objects built from it. One value is
//! current at a time (an `ArcSwap` in the [`App`](super::App)); a request keeps the one it
//! started with, background work reads the current one.

use std::sync::Arc;

use crate::config::{self, Config};
use crate::fetch::{FillMode, FillSettings};
use crate::meta::MetaSettings;
use crate::upstream::sibling::Cluster;
use crate::upstream::{UpstreamChain, UpstreamError};

/// The config in effect and what was built from it.
///
/// Plugin settings and cluster peers go here too once they exist: built in [`Settings::build`]
/// (reusing the previous object when their section is unchanged) and swapped with the rest.
#[derive(Debug)]
pub struct Settings {
    /// The config in effect: the file as last (re)loaded, except keys that need an upgrade,
    /// which keep the values the process started with.
    pub config: Config,
    /// Bumped by every applied reload (0 at start).
    pub generation: u64,
    pub upstream: Arc<UpstreamChain>,
    pub fill: Arc<FillSettings>,
    pub meta: Arc<MetaSettings>,
    /// The sibling nodes (`cluster:`), `None` for a single node.
    pub cluster: Option<Arc<Cluster>>,
}

/// Why settings could not be built from a valid config (nothing is applied then).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstreams: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("cluster: {0}")]
    Cluster(String),
}

impl Settings {
    /// Build everything `config` needs, reusing from `previous` every object whose own
    /// section did not change (the upstream chain keeps unchanged upstreams with their
    /// clients and health). Fails without side effects.
    pub fn build(config: Config, previous: Option<&Settings>) -> Result<Settings, BuildError> {
        let upstream = match previous {
            Some(p)
                if p.config.upstreams == config.upstreams && p.config.offline == config.offline =>
            {
                Arc::clone(&p.upstream)
            }
            _ => Arc::new(UpstreamChain::rebuild(
                &config.upstreams,
                config.offline,
                previous.map(|p| p.upstream.as_ref()),
            )?),
        };
        let fill = reuse_or(previous.map(|p| &p.fill), fill_settings(&config));
        let meta = reuse_or(previous.map(|p| &p.meta), meta_settings(&config));
        let cluster = match (&config.cluster, previous) {
            (None, _) => None,
            (Some(c), Some(p)) if p.config.cluster.as_ref() == Some(c) => p.cluster.clone(),
            (Some(c), p) => {
                let before = p.and_then(|p| p.cluster.as_deref());
                Some(Arc::new(
                    Cluster::new(c, before).map_err(BuildError::Cluster)?,
                ))
            }
        };
        Ok(Settings {
            generation: previous.map_or(0, |p| p.generation + 1),
            config,
            upstream,
            fill,
            meta,
            cluster,
        })
    }
}

/// The previous object if it equals `new`, else `new`.
fn reuse_or<T: PartialEq>(previous: Option<&Arc<T>>, new: T) -> Arc<T> {
    match previous {
        Some(p) if **p == new => Arc::clone(p),
        _ => Arc::new(new),
    }
}

pub(super) fn fill_settings(config: &Config) -> FillSettings {
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
    }
}

pub(super) fn meta_settings(config: &Config) -> MetaSettings {
    MetaSettings {
        offline: config.offline,
        revision_ttl: config.revision_ttl,
        auth_ttl: config.auth_ttl,
    }
}
