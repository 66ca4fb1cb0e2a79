//! `hubcache_sibling_*` metrics, read from the process's [`STATS`] at scrape time (the
//! admin registry registers [`collector`]).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use super::stats::{SiblingStats, STATS};

/// The sibling metrics collector.
pub struct SiblingCollector {
    requests: IntCounterVec,
    meta: IntCounterVec,
    bytes: IntCounterVec,
}

/// A collector of the sibling counters.
pub fn collector() -> Result<SiblingCollector, prometheus::Error> {
    Ok(SiblingCollector {
        requests: IntCounterVec::new(
            Opts::new(
                "hubcache_sibling_requests_total",
                "Sibling block requests, by role (client: this node asked an owner; owner: a \
                 sibling asked this node) and outcome",
            ),
            &["role", "outcome"],
        )?,
        meta: IntCounterVec::new(
            Opts::new(
                "hubcache_sibling_meta_requests_total",
                "Metadata questions between sibling nodes, by role (client: this node asked a \
                 repo's owner; owner: a sibling asked this node) and outcome",
            ),
            &["role", "outcome"],
        )?,
        bytes: IntCounterVec::new(
            Opts::new(
                "hubcache_sibling_bytes_total",
                "Blob bytes exchanged with sibling nodes, by direction (received, served)",
            ),
            &["direction"],
        )?,
    })
}

impl Collector for SiblingCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.requests.desc();
        d.extend(self.meta.desc());
        d.extend(self.bytes.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let get = SiblingStats::get;
        for (role, outcome, n) in [
            ("client", "ok", get(&STATS.asked_ok)),
            ("client", "failed", get(&STATS.asked_failed)),
            ("client", "not_cached", get(&STATS.asked_not_cached)),
            ("owner", "served", get(&STATS.served)),
            ("owner", "refused", get(&STATS.refused)),
            ("owner", "busy", get(&STATS.busy)),
        ] {
            self.requests.with_label_values(&[role, outcome]).reset();
            self.requests.with_label_values(&[role, outcome]).inc_by(n);
        }
        for (role, outcome, n) in [
            ("client", "ok", get(&STATS.meta_asked_ok)),
            ("client", "fallback", get(&STATS.meta_fallback)),
            ("owner", "served", get(&STATS.meta_served)),
        ] {
            self.meta.with_label_values(&[role, outcome]).reset();
            self.meta.with_label_values(&[role, outcome]).inc_by(n);
        }
        for (direction, n) in [
            ("received", get(&STATS.received_bytes)),
            ("served", get(&STATS.served_bytes)),
        ] {
            self.bytes.with_label_values(&[direction]).reset();
            self.bytes.with_label_values(&[direction]).inc_by(n);
        }
        let mut out = self.requests.collect();
        out.extend(self.meta.collect());
        out.extend(self.bytes.collect());
        out
    }
}
