//! Operating hubcache: metrics (and, later, the admin API).

pub mod metrics;

pub use metrics::Metrics;
