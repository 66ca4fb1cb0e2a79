//! Fill engine metrics read at scrape time: fills in flight, readers waiting, upstream
//! connections in use; file bytes served by source (counted as they are read, so a long
//! download moves them all along); bytes read after a checksum check.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::fetch::{FillEngine, FillStats};

/// (name, help, reader) of each gauge.
type Gauge = (&'static str, &'static str, fn(&FillEngine) -> i64);

const GAUGES: &[Gauge] = &[
    (
        "hubcache_fills_in_flight",
        "Files being fetched now (segments running, or readers waiting for blocks)",
        |fill| fill.active_fills().len() as i64,
    ),
    (
        "hubcache_fill_readers_waiting",
        "Client reads waiting for a block to arrive from upstream",
        |fill| FillStats::get(&fill.stats().readers_waiting) as i64,
    ),
    (
        "hubcache_fill_connections_in_use",
        "Upstream connections fills use now (at most fill.connections_total)",
        |fill| fill.connections_in_use() as i64,
    ),
];

const VERIFIED_READ: (&str, &str) = (
    "hubcache_verified_read_bytes_total",
    "Bytes read from committed blocks after their page checksums were checked",
);

const SERVED: (&str, &str) = (
    "hubcache_served_bytes_total",
    "File bytes served to clients, by source: cache (blocks on disk when the request arrived) \
     or upstream (blocks fetched while the client waited, or streamed uncached)",
);

const SENDFILE: (&str, &str) = (
    "hubcache_sendfile_bytes_total",
    "File bytes the kernel sent to clients straight from verified blob files (sendfile); \
     also counted in hubcache_served_bytes_total{source=\"cache\"}",
);

fn served_vec() -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(SERVED.0, SERVED.1), &["source"])
}

pub(super) struct FillGauges {
    fill: FillEngine,
    descs: Vec<Desc>,
}

impl FillGauges {
    pub(super) fn new(fill: FillEngine) -> prometheus::Result<Self> {
        let mut descs = Vec::new();
        for (name, help, _) in GAUGES {
            descs.extend(IntGauge::new(*name, *help)?.desc().into_iter().cloned());
        }
        let counter = IntCounter::new(VERIFIED_READ.0, VERIFIED_READ.1)?;
        descs.extend(counter.desc().into_iter().cloned());
        let counter = IntCounter::new(SENDFILE.0, SENDFILE.1)?;
        descs.extend(counter.desc().into_iter().cloned());
        descs.extend(served_vec()?.desc().into_iter().cloned());
        Ok(Self { fill, descs })
    }
}

impl Collector for FillGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = GAUGES
            .iter()
            .filter_map(|(name, help, read)| {
                let gauge = IntGauge::new(*name, *help).ok()?;
                gauge.set(read(&self.fill));
                gauge.collect().into_iter().next()
            })
            .collect();
        let stats = self.fill.stats();
        if let Ok(counter) = IntCounter::new(VERIFIED_READ.0, VERIFIED_READ.1) {
            counter.inc_by(FillStats::get(&stats.verified_read_bytes));
            families.extend(counter.collect());
        }
        if let Ok(counter) = IntCounter::new(SENDFILE.0, SENDFILE.1) {
            counter.inc_by(FillStats::get(&stats.sendfile_bytes));
            families.extend(counter.collect());
        }
        if let Ok(served) = served_vec() {
            for (source, counter) in [
                ("cache", &stats.served_cache_bytes),
                ("upstream", &stats.served_upstream_bytes),
            ] {
                served
                    .with_label_values(&[source])
                    .inc_by(FillStats::get(counter));
            }
            families.extend(served.collect());
        }
        families
    }
}
