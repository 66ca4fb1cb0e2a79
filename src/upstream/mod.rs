//! Upstream hubs: the ordered chain of origins from the config, their health (circuit
//! breaker, probes, throttling), metrics and state-change events, DNS, outbound proxies, and
//! the outbound HTTP client used for metadata calls and block fills.
//!
//! Pass-through requests are proxied by Pingora itself (see `proxy::passthrough`); they use
//! [`UpstreamChain::ordered`], [`UpstreamChain::begin`] / [`UpstreamChain::finish`],
//! [`Outbound::proxy_for`] and [`dns::resolve`] from here to pick, reach and judge a peer.

mod chain;
pub mod dns;
mod error;
pub mod events;
mod health;
mod id;
mod metrics;
mod outbound;
mod probe;
mod request;
mod select;
pub mod sibling;

pub use chain::{Upstream, UpstreamChain};
pub use error::{Attempt, AttemptFailure, UpstreamError};
pub use events::{NoEvents, UpstreamEvents};
pub use health::{FailureKind, Health, Standing};
pub use id::UpstreamId;
pub use metrics::{collector as metrics_collector, UpstreamCollector};
pub use outbound::{Outbound, ProxyHop};
pub use probe::ProbeService;
pub use request::{asks_for_credentials, Body, Follow, HubRequest, HubResponse, Location};
pub use select::{parse_retry_after, rate_limited_total, InFlight, Outcome};

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod rebuild_tests;
#[cfg(test)]
mod select_tests;
