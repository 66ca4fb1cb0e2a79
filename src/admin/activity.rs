//! What the status page shows beyond counters: the most requested repos (a bounded top-N,
//! the space-saving algorithm: a fixed number of counters, the least counted replaced by a
//! newcomer) and the recent errors (a bounded ring).

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

/// Repos tracked by the top-N table.
pub const TRACKED_REPOS: usize = 200;
/// Errors remembered.
pub const RECENT_ERRORS: usize = 50;

/// One repo's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoCount {
    pub repo: String,
    pub requests: u64,
    /// File body bytes sent for it.
    pub bytes: u64,
}

/// The space-saving top-N: counts are exact for repos that never left the table, and at
/// most over-estimated by the count of the entry a newcomer replaced.
#[derive(Debug)]
pub struct TopRepos {
    capacity: usize,
    counts: HashMap<String, (u64, u64)>,
}

impl TopRepos {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            counts: HashMap::new(),
        }
    }

    pub fn record(&mut self, repo: &str, bytes: u64) {
        if let Some((requests, b)) = self.counts.get_mut(repo) {
            *requests += 1;
            *b += bytes;
            return;
        }
        let mut requests = 1;
        if self.counts.len() >= self.capacity {
            let least = self
                .counts
                .iter()
                .min_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| b.0.cmp(a.0)))
                .map(|(k, v)| (k.clone(), v.0));
            if let Some((key, count)) = least {
                self.counts.remove(&key);
                requests = count + 1;
            }
        }
        self.counts.insert(repo.to_string(), (requests, bytes));
    }

    /// The `n` most requested, most first (ties by name).
    pub fn top(&self, n: usize) -> Vec<RepoCount> {
        let mut all: Vec<RepoCount> = self
            .counts
            .iter()
            .map(|(repo, (requests, bytes))| RepoCount {
                repo: repo.clone(),
                requests: *requests,
                bytes: *bytes,
            })
            .collect();
        all.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.repo.cmp(&b.repo))
        });
        all.truncate(n);
        all
    }
}

/// One failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentError {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub method: String,
    pub route: String,
    pub repo: Option<String>,
    pub path: String,
    pub status: u16,
    pub error: Option<String>,
    pub upstream: Option<String>,
}

/// The activity the status page shows.
pub struct Activity {
    top: Mutex<TopRepos>,
    errors: Mutex<VecDeque<RecentError>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            top: Mutex::new(TopRepos::new(TRACKED_REPOS)),
            errors: Mutex::new(VecDeque::with_capacity(RECENT_ERRORS)),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Activity {
    pub fn record_repo(&self, repo: &str, bytes: u64) {
        self.top.lock().record(repo, bytes);
    }

    pub fn record_error(&self, error: RecentError) {
        let mut errors = self.errors.lock();
        if errors.len() >= RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    pub fn top_repos(&self, n: usize) -> Vec<RepoCount> {
        self.top.lock().top(n)
    }

    /// The remembered errors, newest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.errors.lock().iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_repos_are_exact_below_capacity_and_ordered() {
        let mut top = TopRepos::new(10);
        for _ in 0..3 {
            top.record("models/a/x", 10);
        }
        top.record("models/b/y", 5);
        top.record("datasets/c/z", 1);
        top.record("models/b/y", 5);
        let got = top.top(2);
        assert_eq!(
            got,
            [
                RepoCount {
                    repo: "models/a/x".into(),
                    requests: 3,
                    bytes: 30
                },
                RepoCount {
                    repo: "models/b/y".into(),
                    requests: 2,
                    bytes: 10
                },
            ]
        );
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_heavy_hitters() {
        let mut top = TopRepos::new(5);
        for round in 0..1000 {
            top.record("models/hot/one", 1);
            top.record(&format!("models/noise/{round}"), 1);
        }
        assert!(top.counts.len() <= 5);
        assert_eq!(top.top(1)[0].repo, "models/hot/one");
        assert_eq!(top.top(1)[0].requests, 1000);
    }

    #[test]
    fn the_error_ring_keeps_the_newest() {
        let activity = Activity::default();
        for i in 0..(RECENT_ERRORS + 7) {
            activity.record_error(RecentError {
                at_ms: i as u64,
                method: "GET".into(),
                route: "resolve".into(),
                repo: None,
                path: "/x".into(),
                status: 502,
                error: None,
                upstream: None,
            });
        }
        let errors = activity.recent_errors();
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0].at_ms, (RECENT_ERRORS + 6) as u64);
    }
}
