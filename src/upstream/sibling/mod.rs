//! Sibling hubcache nodes (`cluster:`): who owns each blob (rendezvous hashing over the live
//! nodes), the health of the peers (passive failure marking plus a probe), the signed
//! requests nodes send each other, and their counters. The fill engine asks an owner for
//! blocks through [`Cluster::get_range`]; the proxy serves the sibling routes
//! ([`route`]) after [`Signer::verify`].

mod client;
mod members;
mod meta_client;
pub mod route;
mod sibling_metrics;
mod sign;
mod stats;

pub use members::{Cluster, Node, Owner, DOWN_FOR, MAX_SERVED_STREAMS};
pub use meta_client::{trust_of, MetaReply, META_TIMEOUT};
pub use sibling_metrics::{collector as metrics_collector, SiblingCollector};
pub use sign::{unix_now, SignatureError, Signed, Signer, HEADER_SIGNATURE, HEADER_TIME, MAX_SKEW};
pub use stats::{SiblingStats, STATS};
