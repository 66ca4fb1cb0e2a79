//! Bounded in-memory maps that grow with use.

use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;

/// An LRU map holding at most `cap` entries (at least one) whose memory grows with the entries
/// it holds: `LruCache::new` would allocate room for all `cap` entries up front (megabytes for
/// the large bounds, paid by every node whether it ever sees that many keys or not).
pub fn lru<K: Hash + Eq, V>(cap: usize) -> LruCache<K, V> {
    let mut cache = LruCache::unbounded();
    cache.resize(NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN));
    cache
}

#[cfg(test)]
mod tests {
    #[test]
    fn lru_is_bounded_but_allocates_nothing_up_front() {
        let mut cache = super::lru::<u32, u32>(100_000);
        assert_eq!(cache.cap().get(), 100_000);
        assert!(cache.is_empty());
        let mut small = super::lru::<u32, u32>(2);
        for i in 0..5 {
            small.put(i, i);
        }
        assert_eq!(small.len(), 2);
        assert!(small.contains(&4) && small.contains(&3) && !small.contains(&0));
        cache.put(1, 1);
        assert_eq!(cache.len(), 1);
    }
}
