//! The dispatcher's counters as Prometheus metrics, labelled by sink name (never by URL):
//! register [`AlertCollector`] with the metrics registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use super::SinkStats;

/// (name, help, reader) of one exported counter.
type Counter = (&'static str, &'static str, fn(&SinkStats) -> u64);

const COUNTERS: &[Counter] = &[
    (
        "hubcache_alerts_sent_total",
        "Alerts delivered, by sink",
        |s| s.sent.load(Ordering::Relaxed),
    ),
    (
        "hubcache_alert_notifications_total",
        "Messages delivered (a digest is one), by sink",
        |s| s.notifications.load(Ordering::Relaxed),
    ),
    (
        "hubcache_alerts_failed_total",
        "Alerts given up on (refused for good, or failing after every retry), by sink",
        |s| s.failed.load(Ordering::Relaxed),
    ),
    (
        "hubcache_alerts_dropped_total",
        "Alerts dropped because the sink's queue was full, by sink",
        |s| s.dropped.load(Ordering::Relaxed),
    ),
    (
        "hubcache_alerts_suppressed_total",
        "Events folded into an alert already sent (duplicates within repeat_every), by sink",
        |s| s.suppressed.load(Ordering::Relaxed),
    ),
    (
        "hubcache_alert_retries_total",
        "Delivery attempts retried, by sink",
        |s| s.retries.load(Ordering::Relaxed),
    ),
];

/// Exposes every sink's counters, read at scrape time.
pub struct AlertCollector {
    sinks: Vec<(String, Arc<SinkStats>)>,
    descs: Vec<Desc>,
}

fn vec(name: &str, help: &str) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), &["sink"])
}

impl AlertCollector {
    /// A collector over `sinks` (from [`Dispatcher::stats`](super::Dispatcher::stats)).
    pub fn new(sinks: &[(String, Arc<SinkStats>)]) -> Result<AlertCollector, prometheus::Error> {
        let mut descs = Vec::new();
        for (name, help, _) in COUNTERS {
            descs.extend(vec(name, help)?.desc().into_iter().cloned());
        }
        Ok(AlertCollector {
            sinks: sinks.to_vec(),
            descs,
        })
    }
}

impl Collector for AlertCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        COUNTERS
            .iter()
            .filter_map(|(name, help, read)| {
                let counters = vec(name, help).ok()?;
                for (sink, stats) in &self.sinks {
                    counters
                        .with_label_values(&[sink.as_str()])
                        .inc_by(read(stats));
                }
                counters.collect().into_iter().next()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    #[test]
    fn counters_are_exported_per_sink_name() {
        let a = Arc::new(SinkStats::default());
        a.sent.store(3, Ordering::Relaxed);
        a.dropped.store(2, Ordering::Relaxed);
        let b = Arc::new(SinkStats::default());
        b.failed.store(1, Ordering::Relaxed);
        let registry = Registry::new();
        let collector =
            AlertCollector::new(&[("ops".to_string(), a), ("wecom".to_string(), b)]).unwrap();
        registry.register(Box::new(collector)).unwrap();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#"hubcache_alerts_sent_total{sink="ops"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"hubcache_alerts_dropped_total{sink="ops"} 2"#));
        assert!(text.contains(r#"hubcache_alerts_failed_total{sink="wecom"} 1"#));
        assert!(text.contains(r#"hubcache_alert_retries_total{sink="wecom"} 0"#));
    }
}
