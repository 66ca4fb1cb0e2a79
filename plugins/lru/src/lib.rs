//! `lru`: the blob read longest ago goes first.
//!
//! "Read" is hubcache's own record of the last download that read the blob (persisted with
//! the eviction index), not the file's atime, which `noatime`/`relatime` mounts do not keep.
//! A blob nobody read since it was filled counts as read at its first fill. Ties (same last
//! read) go oldest fill first.

use std::sync::Arc;

use hubcache_plugin_api::{BlobStats, EvictionPolicy, PolicyPlugin, Priority, Registry};

pub const KIND: &str = "lru";

/// Least recently used.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lru;

impl EvictionPolicy for Lru {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn priority(&self, stats: &BlobStats) -> Priority {
        Priority::new(stats.last_read.max(stats.first_fill), stats.first_fill)
    }
}

/// Adds the `lru` policy.
pub fn register(registry: &mut Registry) {
    registry.add_policy(PolicyPlugin {
        kind: KIND,
        about: "least recently read first (hubcache's own read times, not atime)",
        build: |_| Ok(Arc::new(Lru)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcache_plugin_api::rank;

    fn blob(first_fill: u64, last_read: u64) -> BlobStats {
        BlobStats {
            size: 100,
            allocated: 100,
            first_fill,
            last_read,
            hits: 1,
            policy_key: 0,
        }
    }

    fn order(items: &[(&'static str, BlobStats)]) -> Vec<&'static str> {
        let mut items = items.to_vec();
        rank(&Lru, &mut items);
        items.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn least_recently_read_goes_first_whatever_the_fill_order() {
        let items = [
            ("filled-first-read-last", blob(1_000, 9_000)),
            ("filled-last-read-first", blob(5_000, 6_000)),
            ("middle", blob(2_000, 7_000)),
        ];
        assert_eq!(
            order(&items),
            ["filled-last-read-first", "middle", "filled-first-read-last"]
        );
    }

    #[test]
    fn ties_on_last_read_go_oldest_fill_first_then_by_id() {
        let items = [
            ("b", blob(2_000, 5_000)),
            ("a", blob(3_000, 5_000)),
            ("c", blob(2_000, 5_000)),
        ];
        assert_eq!(order(&items), ["b", "c", "a"]);
    }

    #[test]
    fn a_never_read_blob_counts_as_read_at_its_fill() {
        let items = [("read", blob(1_000, 4_000)), ("never-read", blob(3_000, 0))];
        assert_eq!(order(&items), ["never-read", "read"]);
        let items = [("read", blob(1_000, 2_000)), ("never-read", blob(3_000, 0))];
        assert_eq!(order(&items), ["read", "never-read"]);
    }

    #[test]
    fn registers_under_its_kind() {
        let registry = Registry::of(register);
        let policy = registry
            .build_policy(hubcache_plugin_api::PluginConfig::new("lru"))
            .unwrap();
        assert_eq!(policy.kind(), "lru");
    }
}
