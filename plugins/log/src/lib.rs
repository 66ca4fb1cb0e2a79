//! `log`: writes every alert to hubcache's log, under the target `hubcache::alert`.
//!
//! ```yaml
//! plugins:
//!   alerts:
//!     - kind: log
//!       level: warn      # level of firing alerts: error | warn (default) | info; resolved: info
//! ```
//!
//! Useful on its own (journald and log shippers pick it up) and as the smallest example of a
//! sink: see `docs/plugins.md`, which builds this crate step by step.

use std::sync::Arc;

use hubcache_plugin_api::{
    async_trait, AlertSink, AlertStatus, Delivery, Notification, OptionError, PluginConfig,
    Registry, SinkPlugin,
};

pub const KIND: &str = "log";

/// Kind-specific keys.
pub const OPTIONS: &[&str] = &["level"];

/// The log target alerts are written under.
pub const TARGET: &str = "hubcache::alert";

/// Writes alerts to the log.
#[derive(Debug)]
pub struct LogSink {
    /// Level of firing alerts (resolved ones are `Info`).
    firing: log::Level,
}

impl LogSink {
    pub fn new(firing: log::Level) -> LogSink {
        LogSink { firing }
    }

    fn from_config(config: &mut PluginConfig) -> Result<LogSink, OptionError> {
        let firing = match config.take_choice("level", &["error", "warn", "info"])? {
            Some("error") => log::Level::Error,
            Some("info") => log::Level::Info,
            _ => log::Level::Warn,
        };
        Ok(LogSink::new(firing))
    }
}

#[async_trait]
impl AlertSink for LogSink {
    async fn deliver(&self, notification: &Notification) -> Delivery {
        for alert in &notification.alerts {
            let level = match alert.status {
                AlertStatus::Firing => self.firing,
                AlertStatus::Resolved => log::Level::Info,
            };
            let details = alert.details_line();
            log::log!(
                target: TARGET,
                level,
                "[{}] {} ({}, node {}, fingerprint {}{}): {}{}",
                alert.status.as_str().to_uppercase(),
                alert.name(),
                alert.severity,
                alert.node,
                alert.fingerprint,
                if alert.repeat > 0 {
                    format!(", reminder {}", alert.repeat)
                } else {
                    String::new()
                },
                alert.summary(),
                if details.is_empty() {
                    String::new()
                } else {
                    format!(" [{details}]")
                },
            );
        }
        Delivery::Delivered
    }
}

/// Adds the `log` sink.
pub fn register(registry: &mut Registry) {
    registry.add_sink(SinkPlugin {
        kind: KIND,
        about: "write alerts to hubcache's log (target hubcache::alert)",
        options: OPTIONS,
        build: |config| Ok(Arc::new(LogSink::from_config(config)?)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcache_plugin_api::{Alert, Event, EventKind};
    use std::sync::{Mutex, OnceLock};

    /// Captures every record of the test process.
    struct Capture(Mutex<Vec<(log::Level, String, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            if let Ok(mut lines) = self.0.lock() {
                lines.push((
                    record.level(),
                    record.target().to_string(),
                    record.args().to_string(),
                ));
            }
        }
        fn flush(&self) {}
    }

    fn captured() -> &'static Capture {
        static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
        CAPTURE.get_or_init(|| {
            let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
            let _ = log::set_logger(capture);
            log::set_max_level(log::LevelFilter::Trace);
            capture
        })
    }

    /// Lines about `subject` (tests run in parallel and share the logger).
    fn lines_about(subject: &str) -> Vec<(log::Level, String, String)> {
        captured()
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, text)| text.contains(subject))
            .cloned()
            .collect()
    }

    fn alert(kind: EventKind, subject: &str, status: AlertStatus) -> Alert {
        let event = Event::new(kind, subject).with("status", 503);
        let starts_at = event.time;
        Alert::new(event, status, "node-a", starts_at, 0)
    }

    fn build(config: PluginConfig) -> Arc<dyn AlertSink> {
        Registry::of(register).build_sink(config).unwrap()
    }

    #[tokio::test]
    async fn writes_each_alert_of_a_digest_under_the_alert_target() {
        captured();
        let sink = build(PluginConfig::new("log"));
        let n = Notification {
            id: "1".into(),
            alerts: vec![
                alert(
                    EventKind::UpstreamDown,
                    "https://u1.test",
                    AlertStatus::Firing,
                ),
                alert(
                    EventKind::UpstreamRecovered,
                    "https://u1.test",
                    AlertStatus::Resolved,
                ),
            ],
        };
        assert_eq!(sink.deliver(&n).await, Delivery::Delivered);
        let lines = lines_about("https://u1.test");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].0, log::Level::Warn);
        assert_eq!(lines[0].1, TARGET);
        assert!(lines[0]
            .2
            .starts_with("[FIRING] upstream_down (warning, node node-a"));
        assert!(
            lines[0].2.ends_with("upstream is unreachable [status=503]"),
            "{}",
            lines[0].2
        );
        assert_eq!(lines[1].0, log::Level::Info);
        assert!(lines[1].2.starts_with("[RESOLVED] upstream_recovered"));
    }

    #[tokio::test]
    async fn level_option_sets_the_level_of_firing_alerts() {
        captured();
        let sink = build(PluginConfig::new("log").with("level", "error"));
        let n = Notification {
            id: "2".into(),
            alerts: vec![alert(EventKind::RootLost, "/data/u2", AlertStatus::Firing)],
        };
        sink.deliver(&n).await;
        let lines = lines_about("/data/u2");
        assert_eq!(lines[0].0, log::Level::Error);
    }

    #[test]
    fn unknown_level_is_rejected() {
        let registry = Registry::of(register);
        let err = registry
            .build_sink(PluginConfig::new("log").with("level", "debug"))
            .unwrap_err();
        assert_eq!(err.key(), "level");
        assert_eq!(err.reason(), "\"debug\" is not one of: error, warn, info");
    }
}
