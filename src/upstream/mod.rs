//! Upstream hubs: the ordered chain of origins from the config, their health, DNS, and the
//! outbound HTTP client used for metadata calls and block fills.
//!
//! Pass-through requests are proxied by Pingora itself (see `proxy::passthrough`); they use
//! [`UpstreamChain::ordered`] and [`dns::resolve`] from here to pick and reach a peer.

mod chain;
pub mod dns;
mod error;
mod health;
mod rate;
mod request;

pub use chain::{Upstream, UpstreamChain};
pub use error::{Attempt, AttemptFailure, UpstreamError};
pub use rate::RateLimitHook;
pub use request::{asks_for_credentials, Body, Follow, HubRequest, HubResponse, Location};

#[cfg(test)]
mod chain_tests;
