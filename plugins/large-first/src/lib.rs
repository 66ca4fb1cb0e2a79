//! `large_first`: the blob that takes the most disk goes first.
//!
//! Size is what the blob *occupies* (allocated bytes, all replicas), so a 40 GB file of which
//! only 1 GB was ever fetched ranks as 1 GB: evicting it frees 1 GB. This frees space in the
//! fewest deletions, at the price of the byte hit ratio (popular multi-GB shards go first); use
//! it for emergencies or parity with other mirrors, `lru` or `lfuda` otherwise. Ties (same
//! size) go least recently read first.

use std::sync::Arc;

use hubcache_plugin_api::{BlobStats, EvictionPolicy, PolicyPlugin, Priority, Registry};

pub const KIND: &str = "large_first";

/// Largest on disk first.
#[derive(Debug, Default, Clone, Copy)]
pub struct LargeFirst;

impl EvictionPolicy for LargeFirst {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn priority(&self, stats: &BlobStats) -> Priority {
        Priority::new(u64::MAX - stats.allocated, stats.last_read)
    }
}

/// Adds the `large_first` policy.
pub fn register(registry: &mut Registry) {
    registry.add_policy(PolicyPlugin {
        kind: KIND,
        about: "largest on disk (allocated bytes) first",
        build: |_| Ok(Arc::new(LargeFirst)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcache_plugin_api::rank;

    fn blob(size: u64, allocated: u64, last_read: u64) -> BlobStats {
        BlobStats {
            size,
            allocated,
            first_fill: 1_000,
            last_read,
            hits: 1,
            policy_key: 0,
        }
    }

    fn order(items: &[(&'static str, BlobStats)]) -> Vec<&'static str> {
        let mut items = items.to_vec();
        rank(&LargeFirst, &mut items);
        items.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn largest_on_disk_goes_first() {
        let items = [
            ("small", blob(10, 10, 1_000)),
            ("large", blob(1_000, 1_000, 9_000)),
            ("medium", blob(100, 100, 5_000)),
        ];
        assert_eq!(order(&items), ["large", "medium", "small"]);
    }

    #[test]
    fn a_sparse_blob_ranks_by_what_it_holds_not_its_length() {
        let items = [
            ("huge-but-mostly-empty", blob(40_000, 500, 1_000)),
            ("fully-filled", blob(2_000, 2_000, 1_000)),
        ];
        assert_eq!(order(&items), ["fully-filled", "huge-but-mostly-empty"]);
    }

    #[test]
    fn ties_on_size_go_least_recently_read_first_then_by_id() {
        let items = [
            ("b", blob(100, 100, 5_000)),
            ("c", blob(100, 100, 2_000)),
            ("a", blob(100, 100, 5_000)),
        ];
        assert_eq!(order(&items), ["c", "a", "b"]);
    }

    #[test]
    fn registers_under_its_kind() {
        let registry = Registry::of(register);
        assert_eq!(registry.policy_kinds(), ["large_first"]);
    }
}
