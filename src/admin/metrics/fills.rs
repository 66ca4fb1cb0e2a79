//! Fill engine gauges read at scrape time: fills in flight, readers waiting, upstream
//! connections in use; and the bytes read after a checksum check.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge};

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
        if let Ok(counter) = IntCounter::new(VERIFIED_READ.0, VERIFIED_READ.1) {
            counter.inc_by(FillStats::get(&self.fill.stats().verified_read_bytes));
            families.extend(counter.collect());
        }
        families
    }
}
