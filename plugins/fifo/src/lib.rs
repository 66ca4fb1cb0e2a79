//! `fifo`: the blob filled first goes first, however often it is read.
//!
//! "Filled" is when hubcache stored the blob's first block (recorded in the eviction index),
//! not the file's mtime, which every later block write moves. Ties (same first fill) go least
//! recently read first.

use std::sync::Arc;

use hubcache_plugin_api::{BlobStats, EvictionPolicy, PolicyPlugin, Priority, Registry};

pub const KIND: &str = "fifo";

/// First in, first out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fifo;

impl EvictionPolicy for Fifo {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn priority(&self, stats: &BlobStats) -> Priority {
        Priority::new(stats.first_fill, stats.last_read)
    }
}

/// Adds the `fifo` policy.
pub fn register(registry: &mut Registry) {
    registry.add_policy(PolicyPlugin {
        kind: KIND,
        about: "oldest first fill first",
        build: |_| Ok(Arc::new(Fifo)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcache_plugin_api::rank;

    fn blob(first_fill: u64, last_read: u64, hits: u64) -> BlobStats {
        BlobStats {
            size: 100,
            allocated: 100,
            first_fill,
            last_read,
            hits,
            policy_key: 0,
        }
    }

    fn order(items: &[(&'static str, BlobStats)]) -> Vec<&'static str> {
        let mut items = items.to_vec();
        rank(&Fifo, &mut items);
        items.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn first_filled_goes_first_even_if_just_read_and_popular() {
        let items = [
            ("new", blob(3_000, 3_000, 1)),
            ("old-but-hot", blob(1_000, 9_999, 500)),
            ("middle", blob(2_000, 2_500, 2)),
        ];
        assert_eq!(order(&items), ["old-but-hot", "middle", "new"]);
    }

    #[test]
    fn ties_on_first_fill_go_least_recently_read_first_then_by_id() {
        let items = [
            ("b", blob(1_000, 8_000, 1)),
            ("c", blob(1_000, 2_000, 1)),
            ("a", blob(1_000, 8_000, 1)),
        ];
        assert_eq!(order(&items), ["c", "a", "b"]);
    }

    #[test]
    fn registers_under_its_kind() {
        let registry = Registry::of(register);
        assert_eq!(registry.policy_kinds(), ["fifo"]);
    }
}
