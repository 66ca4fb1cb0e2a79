//! Operating hubcache: the admin listener (its own port, never the public one) with
//! Prometheus metrics, a live status page, the status JSON it polls, and the admin API.
//!
//! - `metrics`: the Prometheus registry and every collector (`docs/metrics.md`);
//! - `activity`: the bounded top repos and recent errors;
//! - `router`, `auth`, `routes`, `service`: the admin HTTP API (`docs/admin.md`);
//! - `status`, `page`: the status JSON and the page that polls it.

pub mod activity;
pub mod auth;
pub mod metrics;
mod page;
pub mod router;
mod routes;
pub mod service;
pub mod status;

pub use metrics::Metrics;
pub use service::{service, AdminApp};
