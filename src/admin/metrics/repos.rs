//! The most requested repos as labelled counters: only the top [`EXPORTED_REPOS`] of the
//! bounded table, so the number of series stays small whatever clients ask for.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use crate::admin::activity::Activity;

/// Repos exported as labels.
pub const EXPORTED_REPOS: usize = 10;

const REQUESTS: (&str, &str) = (
    "hubcache_repo_requests_total",
    "Successful requests naming the repo, for the most requested repos only",
);
const BYTES: (&str, &str) = (
    "hubcache_repo_response_bytes_total",
    "Response body bytes sent for the repo, for the most requested repos only",
);

pub(super) struct RepoCollector {
    activity: Arc<Activity>,
    descs: Vec<Desc>,
}

fn vec((name, help): (&str, &str)) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), &["repo"])
}

impl RepoCollector {
    pub(super) fn new(activity: Arc<Activity>) -> prometheus::Result<Self> {
        let mut descs = Vec::new();
        for metric in [REQUESTS, BYTES] {
            descs.extend(vec(metric)?.desc().into_iter().cloned());
        }
        Ok(Self { activity, descs })
    }
}

impl Collector for RepoCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (Ok(requests), Ok(bytes)) = (vec(REQUESTS), vec(BYTES)) else {
            return Vec::new();
        };
        for repo in self.activity.top_repos(EXPORTED_REPOS) {
            requests
                .with_label_values(&[repo.repo.as_str()])
                .inc_by(repo.requests);
            bytes
                .with_label_values(&[repo.repo.as_str()])
                .inc_by(repo.bytes);
        }
        let mut families = requests.collect();
        families.extend(bytes.collect());
        families
    }
}
