//! `lfuda`: least frequently used with dynamic aging (Arlitt et al., HP Labs HPL-98-173; Squid's
//! `heap LFUDA`).
//!
//! Each blob's key is `hits + L`, computed when it is filled or read, where `L` is the cache
//! age: the key of the last blob evicted. The lowest key goes first. Without `L`, a blob that
//! was popular long ago would keep its high count forever (cache pollution); with it, every
//! new access is worth as much as the whole count of what was just evicted, so an idle blob's
//! old frequency stops protecting it once enough evictions have raised `L` past its key.
//!
//! The key ignores size, which is why LFUDA keeps the *byte* hit ratio high when a few huge
//! files (base models) are popular: it is the policy to choose for a model mirror. Hits are
//! downloads, not range requests (hubcache counts one per download). Ties (same key) go least
//! recently read first. `L` is persisted with the eviction index.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hubcache_plugin_api::{BlobStats, EvictionPolicy, PolicyPlugin, Priority, Registry};

pub const KIND: &str = "lfuda";

/// LFU with dynamic aging.
#[derive(Debug, Default)]
pub struct Lfuda {
    /// The cache age `L`: the key of the last evicted blob (never decreases).
    age: AtomicU64,
}

impl Lfuda {
    pub fn new() -> Lfuda {
        Lfuda::default()
    }

    /// The cache age `L`.
    pub fn age(&self) -> u64 {
        self.age.load(Ordering::Relaxed)
    }
}

impl EvictionPolicy for Lfuda {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn priority(&self, stats: &BlobStats) -> Priority {
        Priority::new(stats.policy_key, stats.last_read.max(stats.first_fill))
    }

    fn key_on_access(&self, stats: &BlobStats) -> u64 {
        stats.hits.saturating_add(self.age())
    }

    fn on_evicted(&self, stats: &BlobStats) {
        self.age.fetch_max(stats.policy_key, Ordering::Relaxed);
    }

    fn state(&self) -> u64 {
        self.age()
    }

    fn restore_state(&self, state: u64) {
        self.age.store(state, Ordering::Relaxed);
    }
}

/// Adds the `lfuda` policy.
pub fn register(registry: &mut Registry) {
    registry.add_policy(PolicyPlugin {
        kind: KIND,
        about: "least frequently downloaded first, with dynamic aging (best byte hit ratio)",
        build: |_| Ok(Arc::new(Lfuda::new())),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcache_plugin_api::rank;

    /// A tiny cache driven the way hubcache's index drives a policy.
    struct Cache {
        policy: Lfuda,
        blobs: Vec<(&'static str, BlobStats)>,
        clock: u64,
    }

    impl Cache {
        fn new() -> Cache {
            Cache {
                policy: Lfuda::new(),
                blobs: Vec::new(),
                clock: 0,
            }
        }

        fn fill(&mut self, id: &'static str, size: u64) {
            self.clock += 1;
            let mut stats = BlobStats {
                size,
                allocated: size,
                first_fill: self.clock,
                last_read: self.clock,
                hits: 0,
                policy_key: 0,
            };
            stats.policy_key = self.policy.key_on_access(&stats);
            self.blobs.push((id, stats));
        }

        fn read(&mut self, id: &str, times: u64) {
            for _ in 0..times {
                self.clock += 1;
                let (_, stats) = self.blobs.iter_mut().find(|(i, _)| *i == id).unwrap();
                stats.hits += 1;
                stats.last_read = self.clock;
                stats.policy_key = self.policy.key_on_access(stats);
            }
        }

        fn order(&self) -> Vec<&'static str> {
            let mut items = self.blobs.clone();
            rank(&self.policy, &mut items);
            items.into_iter().map(|(id, _)| id).collect()
        }

        fn evict_one(&mut self) -> &'static str {
            let victim = self.order()[0];
            let pos = self.blobs.iter().position(|(i, _)| *i == victim).unwrap();
            let (_, stats) = self.blobs.remove(pos);
            self.policy.on_evicted(&stats);
            victim
        }
    }

    #[test]
    fn least_frequently_downloaded_goes_first_whatever_its_size() {
        let mut c = Cache::new();
        c.fill("huge-popular", 40 << 30);
        c.fill("small-rare", 1 << 10);
        c.fill("medium", 1 << 20);
        c.read("huge-popular", 5);
        c.read("small-rare", 1);
        c.read("medium", 3);
        assert_eq!(c.order(), ["small-rare", "medium", "huge-popular"]);
    }

    #[test]
    fn eviction_raises_the_cache_age_to_the_victims_key() {
        let mut c = Cache::new();
        c.fill("a", 1);
        c.fill("b", 1);
        c.read("a", 4);
        c.read("b", 2);
        assert_eq!(c.policy.age(), 0);
        assert_eq!(c.evict_one(), "b");
        assert_eq!(
            c.policy.age(),
            2,
            "L = key of the evicted blob (2 hits + 0)"
        );
        c.fill("c", 1);
        c.read("c", 1);
        let key_c = c
            .blobs
            .iter()
            .find(|(i, _)| *i == "c")
            .unwrap()
            .1
            .policy_key;
        assert_eq!(key_c, 3, "one hit on top of L = 2");
    }

    #[test]
    fn aging_lets_new_blobs_overtake_a_formerly_popular_idle_one() {
        let mut c = Cache::new();
        c.fill("old-favourite", 1);
        c.read("old-favourite", 6); // key 6 at L = 0, then never read again
                                    // A stream of new blobs, each read twice, each evicted in turn raises L.
        let names = ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"];
        let mut evicted = Vec::new();
        for name in names {
            c.fill(name, 1);
            c.read(name, 2);
            c.fill("filler", 1); // a one-off download, evicted first
            evicted.push(c.evict_one());
            evicted.push(c.evict_one());
        }
        // Without aging the favourite (6 hits) would outlive every 2-hit blob forever; with it,
        // once L passes 6 a fresh 2-hit blob's key beats the favourite's stale one.
        assert!(
            evicted.contains(&"old-favourite"),
            "never evicted: {evicted:?}, L = {}",
            c.policy.age()
        );
        let position = evicted.iter().position(|v| *v == "old-favourite").unwrap();
        assert!(position > 2, "evicted too early: {evicted:?}");
    }

    #[test]
    fn ties_on_key_go_least_recently_read_first_then_by_id() {
        let mut c = Cache::new();
        c.fill("x", 1);
        c.fill("y", 1);
        c.fill("w", 1);
        c.read("y", 1);
        c.read("x", 1);
        c.read("w", 1);
        assert_eq!(c.order(), ["y", "x", "w"]);
        let same = BlobStats {
            policy_key: 1,
            last_read: 5,
            ..BlobStats::default()
        };
        let mut items = vec![("b", same), ("a", same)];
        rank(&c.policy, &mut items);
        assert_eq!(items[0].0, "a");
    }

    #[test]
    fn cache_age_survives_a_restart_through_state() {
        let before = Lfuda::new();
        before.on_evicted(&BlobStats {
            policy_key: 42,
            ..BlobStats::default()
        });
        let after = Lfuda::new();
        after.restore_state(before.state());
        assert_eq!(after.age(), 42);
        let stats = BlobStats {
            hits: 1,
            ..BlobStats::default()
        };
        assert_eq!(after.key_on_access(&stats), 43);
    }

    #[test]
    fn cache_age_never_decreases() {
        let p = Lfuda::new();
        p.on_evicted(&BlobStats {
            policy_key: 10,
            ..BlobStats::default()
        });
        p.on_evicted(&BlobStats {
            policy_key: 3,
            ..BlobStats::default()
        });
        assert_eq!(p.age(), 10);
    }

    #[test]
    fn registers_under_its_kind() {
        let registry = Registry::of(register);
        assert_eq!(registry.policy_kinds(), ["lfuda"]);
    }
}
