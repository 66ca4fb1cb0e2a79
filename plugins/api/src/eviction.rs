//! Eviction policies: which cached blob goes first.
//!
//! The core keeps an index of every blob with its [`BlobStats`]. When it has to free space it
//! takes the blobs it *may* delete (it has already removed those being read or filled, pinned
//! ones and ones younger than `min_age`), asks the policy for each one's [`Priority`], and
//! deletes in ascending priority until enough is freed. The policy only ranks: it never sees a
//! path and never deletes anything.
//!
//! A policy may keep one number per blob ([`BlobStats::policy_key`], stored and persisted by
//! the core, updated through [`EvictionPolicy::key_on_access`]) and one number for itself
//! ([`EvictionPolicy::state`], persisted with the index). That is enough for LRU, FIFO,
//! largest-first and LFU with dynamic aging.

use std::fmt;

/// What the core knows about one cached blob. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlobStats {
    /// The file's length in bytes.
    pub size: u64,
    /// Bytes it occupies on disk, all replicas together (a partly filled blob counts only what
    /// it holds).
    pub allocated: u64,
    /// When its first block was stored.
    pub first_fill: u64,
    /// When it was last read by a client, as recorded by hubcache (not the file's atime).
    pub last_read: u64,
    /// Downloads that read it (one per download, however many range requests it made).
    pub hits: u64,
    /// The policy's own number for this blob (see [`EvictionPolicy::key_on_access`]); 0 until
    /// the policy sets one.
    pub policy_key: u64,
}

/// A blob's place in the eviction order: lower goes first. Compared by `primary`, then by
/// `secondary`; the core breaks remaining ties by blob id, so the order is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority {
    pub primary: u64,
    pub secondary: u64,
}

impl Priority {
    pub fn new(primary: u64, secondary: u64) -> Priority {
        Priority { primary, secondary }
    }
}

/// Ranks blobs for eviction. Called under the index lock: keep every method cheap and free of
/// I/O. Implementations use interior mutability for their state (e.g. an atomic).
pub trait EvictionPolicy: Send + Sync + fmt::Debug {
    /// The policy's kind, as in `plugins.eviction.policy`.
    fn kind(&self) -> &'static str;

    /// The blob's place in the eviction order (lower = evicted first).
    fn priority(&self, stats: &BlobStats) -> Priority;

    /// The new [`BlobStats::policy_key`] after the core inserted the blob or counted a hit
    /// (`stats` already has the new `hits` and `last_read`). The default keeps the old one.
    fn key_on_access(&self, stats: &BlobStats) -> u64 {
        stats.policy_key
    }

    /// Told after the core evicted a blob chosen by this order.
    fn on_evicted(&self, _stats: &BlobStats) {}

    /// The policy's own state, persisted by the core with the index (e.g. LFUDA's cache age).
    fn state(&self) -> u64 {
        0
    }

    /// Restores what [`state`](Self::state) returned before a restart.
    fn restore_state(&self, _state: u64) {}
}

/// Sorts `items` into eviction order: ascending [`EvictionPolicy::priority`], ties broken by
/// the key `K` (the core uses the blob id). This is the order the core evicts in.
pub fn rank<K: Ord>(policy: &dyn EvictionPolicy, items: &mut [(K, BlobStats)]) {
    items.sort_by(|(ka, a), (kb, b)| {
        policy
            .priority(a)
            .cmp(&policy.priority(b))
            .then_with(|| ka.cmp(kb))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct BySize;

    impl EvictionPolicy for BySize {
        fn kind(&self) -> &'static str {
            "by_size"
        }
        fn priority(&self, stats: &BlobStats) -> Priority {
            Priority::new(stats.size, 0)
        }
    }

    #[test]
    fn rank_orders_by_priority_then_key() {
        let stats = |size| BlobStats {
            size,
            ..BlobStats::default()
        };
        let mut items = vec![("c", stats(2)), ("b", stats(1)), ("a", stats(2))];
        rank(&BySize, &mut items);
        let order: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn priority_compares_primary_before_secondary() {
        assert!(Priority::new(1, 9) < Priority::new(2, 0));
        assert!(Priority::new(1, 1) < Priority::new(1, 2));
    }

    #[test]
    fn default_hooks_keep_the_key_and_have_no_state() {
        let stats = BlobStats {
            policy_key: 7,
            ..BlobStats::default()
        };
        assert_eq!(BySize.key_on_access(&stats), 7);
        assert_eq!(BySize.state(), 0);
    }
}
