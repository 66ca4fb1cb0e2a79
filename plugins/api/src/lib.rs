//! The plugin contract of hubcache.
//!
//! hubcache's core publishes [`Event`]s (an upstream went down, a disk is over its watermark,
//! a file failed verification, ...), turns them into [`Alert`]s (one per incident, repeated at
//! most every `repeat_every`, resolved when the condition clears) and hands those to
//! [`AlertSink`]s. When the cache must shrink, it asks an [`EvictionPolicy`] to rank the blobs
//! it may delete; the core keeps the accounting, the in-use and pin protection and the
//! deleting itself, so a policy cannot break the store.
//!
//! Plugins depend on this crate only (and on external crates), never on hubcache's internals.
//! Each plugin crate exports `register(&mut Registry)`; the `hubcache` binary calls those in
//! one place, and the core builds plugins from the config by their `kind`
//! ([`Registry::build_sink`], [`Registry::build_policy`]). `docs/plugins.md` walks through
//! adding one.
//!
//! The crate is deliberately small: no I/O, no runtime, a handful of types. New event kinds
//! can be added without breaking plugins ([`EventKind`] is `#[non_exhaustive]`).

pub mod event;
pub mod eviction;
pub mod http;
#[cfg(feature = "http-client")]
pub mod http_client;
pub mod options;
pub mod registry;
pub mod secret;
pub mod sink;
pub mod text;

pub use event::{Event, EventKind, Fingerprint, Lifecycle, Severity};
pub use eviction::{rank, BlobStats, EvictionPolicy, Priority};
pub use options::{OptionError, OptionValue, PluginConfig};
pub use registry::{PluginError, PolicyPlugin, Registry, SinkPlugin};
pub use secret::{redact_url, Secret};
pub use sink::{Alert, AlertSink, AlertStatus, Delivery, Notification, Rate, SinkLimits};

/// Re-exported so plugin crates implement [`AlertSink`] with the same macro version.
pub use async_trait::async_trait;
