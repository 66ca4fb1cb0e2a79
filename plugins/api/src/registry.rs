//! Registration by kind: the binary lists its plugins once, the core builds them from config.
//!
//! ```text
//! let mut registry = Registry::default();
//! hubcache_plugin_lru::register(&mut registry);      // adds the `lru` policy
//! hubcache_plugin_webhook::register(&mut registry);  // adds the `webhook` sink
//! let sink = registry.build_sink(PluginConfig::new("webhook").with("url", "https://ops/hook"))?;
//! ```

use std::fmt;
use std::sync::Arc;

use crate::eviction::EvictionPolicy;
use crate::options::{OptionError, PluginConfig};
use crate::sink::AlertSink;

/// Builds a policy from its options (taking the keys it knows).
pub type PolicyBuilder = fn(&mut PluginConfig) -> Result<Arc<dyn EvictionPolicy>, OptionError>;

/// Builds a sink from its options (taking the keys it knows). Must not do I/O: it also runs
/// for `hubcache check-config`.
pub type SinkBuilder = fn(&mut PluginConfig) -> Result<Arc<dyn AlertSink>, OptionError>;

/// An eviction policy plugin.
#[derive(Clone, Copy)]
pub struct PolicyPlugin {
    /// The name in `plugins.eviction.policy`.
    pub kind: &'static str,
    /// One line for `--help`-style listings and error messages.
    pub about: &'static str,
    pub build: PolicyBuilder,
}

/// An alert sink plugin.
#[derive(Clone, Copy)]
pub struct SinkPlugin {
    /// The name in `plugins.alerts[].kind`.
    pub kind: &'static str,
    pub about: &'static str,
    /// The kind-specific keys it accepts (for the "unknown key" message).
    pub options: &'static [&'static str],
    pub build: SinkBuilder,
}

/// Why a plugin could not be built. Messages never contain option values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// No plugin of that kind is registered.
    UnknownKind {
        kind: String,
        known: Vec<&'static str>,
    },
    /// An option has a bad value (`key` is relative to the entry).
    Option(OptionError),
    /// The entry has keys the plugin does not know.
    UnknownKey {
        key: String,
        expected: Vec<&'static str>,
    },
}

impl PluginError {
    /// The offending key relative to the entry (`kind`, `format`, ...).
    pub fn key(&self) -> &str {
        match self {
            PluginError::UnknownKind { .. } => "kind",
            PluginError::Option(e) => &e.key,
            PluginError::UnknownKey { key, .. } => key,
        }
    }

    /// The reason without the key.
    pub fn reason(&self) -> String {
        match self {
            PluginError::UnknownKind { kind, known } => {
                format!("unknown kind \"{kind}\" (known: {})", known.join(", "))
            }
            PluginError::Option(e) => e.reason.clone(),
            PluginError::UnknownKey { expected, .. } if expected.is_empty() => {
                "unknown key (this kind takes no options)".to_string()
            }
            PluginError::UnknownKey { expected, .. } => {
                format!("unknown key (expected one of: {})", expected.join(", "))
            }
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key(), self.reason())
    }
}

impl std::error::Error for PluginError {}

impl From<OptionError> for PluginError {
    fn from(e: OptionError) -> Self {
        PluginError::Option(e)
    }
}

/// The plugins a binary ships, by kind.
#[derive(Default, Clone)]
pub struct Registry {
    policies: Vec<PolicyPlugin>,
    sinks: Vec<SinkPlugin>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("policies", &self.policy_kinds())
            .field("sinks", &self.sink_kinds())
            .finish()
    }
}

impl Registry {
    /// A registry holding what `register` adds: one plugin's `register` in its own tests, built
    /// the way the binary builds it.
    pub fn of(register: impl FnOnce(&mut Registry)) -> Registry {
        let mut registry = Registry::default();
        register(&mut registry);
        registry
    }

    /// Registers a policy.
    ///
    /// # Panics
    /// If a policy of that kind is already registered: two crates claiming one name is a
    /// wiring mistake in the binary, found by its first test run.
    pub fn add_policy(&mut self, plugin: PolicyPlugin) -> &mut Self {
        assert!(
            self.policy(plugin.kind).is_none(),
            "eviction policy kind \"{}\" registered twice",
            plugin.kind
        );
        self.policies.push(plugin);
        self
    }

    /// Registers a sink.
    ///
    /// # Panics
    /// If a sink of that kind is already registered (see [`add_policy`](Self::add_policy)).
    pub fn add_sink(&mut self, plugin: SinkPlugin) -> &mut Self {
        assert!(
            self.sink(plugin.kind).is_none(),
            "alert sink kind \"{}\" registered twice",
            plugin.kind
        );
        self.sinks.push(plugin);
        self
    }

    pub fn policy(&self, kind: &str) -> Option<&PolicyPlugin> {
        self.policies.iter().find(|p| p.kind == kind)
    }

    pub fn sink(&self, kind: &str) -> Option<&SinkPlugin> {
        self.sinks.iter().find(|p| p.kind == kind)
    }

    /// Registered policy kinds, sorted.
    pub fn policy_kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.policies.iter().map(|p| p.kind).collect();
        kinds.sort_unstable();
        kinds
    }

    /// Registered sink kinds, sorted.
    pub fn sink_kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.sinks.iter().map(|p| p.kind).collect();
        kinds.sort_unstable();
        kinds
    }

    /// Builds the policy named by `config.kind()`. Policies take no options today; any key
    /// left after the builder is an unknown key.
    pub fn build_policy(
        &self,
        mut config: PluginConfig,
    ) -> Result<Arc<dyn EvictionPolicy>, PluginError> {
        let plugin = self
            .policy(config.kind())
            .ok_or_else(|| PluginError::UnknownKind {
                kind: config.kind().to_string(),
                known: self.policy_kinds(),
            })?;
        let policy = (plugin.build)(&mut config)?;
        reject_rest(&config, &[])?;
        Ok(policy)
    }

    /// Builds the sink named by `config.kind()`.
    pub fn build_sink(&self, mut config: PluginConfig) -> Result<Arc<dyn AlertSink>, PluginError> {
        let plugin = self
            .sink(config.kind())
            .ok_or_else(|| PluginError::UnknownKind {
                kind: config.kind().to_string(),
                known: self.sink_kinds(),
            })?;
        let sink = (plugin.build)(&mut config)?;
        reject_rest(&config, plugin.options)?;
        Ok(sink)
    }
}

fn reject_rest(config: &PluginConfig, expected: &[&'static str]) -> Result<(), PluginError> {
    match config.remaining().next() {
        None => Ok(()),
        Some(key) => Err(PluginError::UnknownKey {
            key: key.to_string(),
            expected: expected.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::{BlobStats, Priority};
    use crate::sink::{Delivery, Notification};

    #[derive(Debug)]
    struct Fifo;
    impl EvictionPolicy for Fifo {
        fn kind(&self) -> &'static str {
            "fifo"
        }
        fn priority(&self, s: &BlobStats) -> Priority {
            Priority::new(s.first_fill, 0)
        }
    }

    #[derive(Debug)]
    struct Null;
    #[async_trait::async_trait]
    impl AlertSink for Null {
        async fn deliver(&self, _: &Notification) -> Delivery {
            Delivery::Delivered
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.add_policy(PolicyPlugin {
            kind: "fifo",
            about: "first in, first out",
            build: |_| Ok(Arc::new(Fifo)),
        });
        r.add_sink(SinkPlugin {
            kind: "null",
            about: "drops alerts",
            options: &["level"],
            build: |c| {
                c.take_choice("level", &["info", "warn"])?;
                Ok(Arc::new(Null))
            },
        });
        r
    }

    #[test]
    fn builds_by_kind() {
        let r = registry();
        assert_eq!(
            r.build_policy(PluginConfig::new("fifo")).unwrap().kind(),
            "fifo"
        );
        assert!(r
            .build_sink(PluginConfig::new("null").with("level", "warn"))
            .is_ok());
        assert_eq!(r.policy_kinds(), ["fifo"]);
        assert_eq!(r.sink_kinds(), ["null"]);
    }

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let err = registry()
            .build_sink(PluginConfig::new("pager"))
            .unwrap_err();
        assert_eq!(err.key(), "kind");
        assert_eq!(
            err.to_string(),
            "kind: unknown kind \"pager\" (known: null)"
        );
        let err = registry()
            .build_policy(PluginConfig::new("random"))
            .unwrap_err();
        assert_eq!(err.reason(), "unknown kind \"random\" (known: fifo)");
    }

    #[test]
    fn leftover_and_bad_options_name_their_key() {
        let err = registry()
            .build_sink(PluginConfig::new("null").with("levl", "x"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "levl: unknown key (expected one of: level)"
        );
        let err = registry()
            .build_sink(PluginConfig::new("null").with("level", "debug"))
            .unwrap_err();
        assert_eq!(err.key(), "level");
        let err = registry()
            .build_policy(PluginConfig::new("fifo").with("x", true))
            .unwrap_err();
        assert_eq!(err.reason(), "unknown key (this kind takes no options)");
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn registering_a_kind_twice_panics() {
        let mut r = registry();
        r.add_sink(SinkPlugin {
            kind: "null",
            about: "",
            options: &[],
            build: |_| Ok(Arc::new(Null)),
        });
    }
}
