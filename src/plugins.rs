//! Builds the configured plugins from the binary's [`Registry`]: the eviction policy and the
//! alert sinks. The core names no plugin; `src/main.rs` fills the registry, in one place.
//!
//! `hubcache check-config` and `serve` both call [`build`], so an unknown `kind` or `policy`, or
//! a bad option of a kind, is reported like any other config error: with its key path.

use std::sync::Arc;

use hubcache_plugin_api::{EvictionPolicy, PluginError, Registry};

use crate::alerts::{Route, SinkSpec};
use crate::config::{ConfigError, PluginsConfig};

pub use hubcache_plugin_api as api;

/// The plugins a config asks for, built.
#[derive(Debug, Clone)]
pub struct Plugins {
    pub policy: Arc<dyn EvictionPolicy>,
    /// The alert sinks, in config order.
    pub sinks: Vec<SinkSpec>,
}

/// Maps a plugin error of the entry at `entry` (e.g. `plugins.alerts[0]`) to a config error.
/// `kind_key` is the key that names the kind in that entry (`kind`, or `policy`).
fn config_error(entry: &str, kind_key: &str, error: PluginError) -> ConfigError {
    let key = match &error {
        PluginError::UnknownKind { .. } => kind_key,
        other => other.key(),
    };
    ConfigError::invalid(format!("{entry}.{key}"), error.reason())
}

/// Builds every plugin of `config`. Does no I/O (also used by `check-config`).
pub fn build(config: &PluginsConfig, registry: &Registry) -> Result<Plugins, ConfigError> {
    let policy = registry
        .build_policy(config.eviction.policy_config())
        .map_err(|e| config_error("plugins.eviction", "policy", e))?;
    let mut sinks = Vec::with_capacity(config.alerts.len());
    for (index, alert) in config.alerts.iter().enumerate() {
        let sink = registry
            .build_sink(alert.options.clone())
            .map_err(|e| config_error(&format!("plugins.alerts[{index}]"), "kind", e))?;
        sinks.push(SinkSpec {
            kind: alert.kind.clone(),
            route: Route {
                name: alert.name.clone(),
                events: alert.events.clone(),
                repeat_every: alert.repeat_every,
                send_resolved: alert.send_resolved,
            },
            sink,
            queue: alert.queue,
            timeout: alert.timeout,
        });
    }
    Ok(Plugins { policy, sinks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The registry the binary builds (the test names plugins; the core does not).
    fn registry() -> Registry {
        let mut r = Registry::default();
        hubcache_plugin_lru::register(&mut r);
        hubcache_plugin_lfuda::register(&mut r);
        hubcache_plugin_webhook::register(&mut r);
        hubcache_plugin_wecom::register(&mut r);
        hubcache_plugin_log::register(&mut r);
        r
    }

    fn build_yaml(yaml: &str) -> Result<Plugins, ConfigError> {
        let config = Config::from_yaml_str(yaml).unwrap();
        build(&config.plugins, &registry())
    }

    #[test]
    fn builds_the_policy_and_sinks_of_a_config() {
        let plugins = build_yaml(
            "plugins:\n  eviction: {policy: lfuda}\n  alerts:\n    - {kind: webhook, url: 'http://127.0.0.1:9/h', events: [root_lost]}\n    - {kind: log, repeat_every: 5m}\n",
        )
        .unwrap();
        assert_eq!(plugins.policy.kind(), "lfuda");
        assert_eq!(plugins.sinks.len(), 2);
        assert_eq!(plugins.sinks[0].route.name, "webhook");
        assert_eq!(plugins.sinks[1].route.repeat_every.as_secs(), 300);
        let default = build(&Config::embedded_default().plugins, &registry()).unwrap();
        assert_eq!(default.policy.kind(), "lru");
        assert!(default.sinks.is_empty());
    }

    #[test]
    fn unknown_kinds_and_bad_options_name_their_key() {
        let err = build_yaml("plugins: {eviction: {policy: random}}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugins.eviction.policy: unknown kind \"random\" (known: lfuda, lru)"
        );
        let err = build_yaml("plugins: {alerts: [{kind: log}, {kind: pagerduty}]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugins.alerts[1].kind: unknown kind \"pagerduty\" (known: log, webhook, wecom)"
        );
        let err =
            build_yaml("plugins: {alerts: [{kind: wecom, url: k, msgtype: html}]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugins.alerts[0].msgtype: \"html\" is not one of: markdown, text"
        );
        let err = build_yaml("plugins: {alerts: [{kind: log, url: 'http://h'}]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugins.alerts[0].url: unknown key (expected one of: level)"
        );
        let err = build_yaml("plugins: {alerts: [{kind: webhook}]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugins.alerts[0].url: is required for kind webhook"
        );
    }

    #[test]
    fn errors_never_carry_a_secret() {
        let err = build_yaml(
            "plugins: {alerts: [{kind: webhook, url: 'http://h/SECRETPATH', secret: 'whsec_SECRET!!'}]}",
        )
        .unwrap_err();
        assert_eq!(err.key_path(), Some("plugins.alerts[0].secret"));
        assert!(!err.to_string().contains("SECRET"), "{err}");
        let plugins =
            build_yaml("plugins: {alerts: [{kind: wecom, url: 'https://q/send?key=SECRETKEY'}]}")
                .unwrap();
        assert!(!format!("{plugins:?}").contains("SECRETKEY"));
    }
}
