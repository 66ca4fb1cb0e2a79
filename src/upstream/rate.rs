//! Telling the rest of hubcache that an upstream answered 429 (its request budget is spent):
//! one hook, set once by the service that publishes `rate_limited` events.

use std::sync::{Arc, OnceLock};

use super::UpstreamChain;

/// Called with the base URL (no credentials) of an upstream that answered 429.
pub type RateLimitHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Where the chain keeps its hook.
#[derive(Default)]
pub(super) struct RateLimitSlot(OnceLock<RateLimitHook>);

impl std::fmt::Debug for RateLimitSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "hook"
        } else {
            "none"
        })
    }
}

impl UpstreamChain {
    /// Sets the hook told about 429 answers (once; later calls return false).
    pub fn on_rate_limited(&self, hook: RateLimitHook) -> bool {
        self.rate_limited.0.set(hook).is_ok()
    }

    /// Upstream `index` answered 429 (metadata, fills and pass-through alike).
    pub fn note_rate_limited(&self, index: usize) {
        if let (Some(hook), Some(upstream)) = (self.rate_limited.0.get(), self.get(index)) {
            hook(upstream.base().as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    #[test]
    fn the_hook_hears_the_base_url_of_the_rate_limited_upstream() {
        let chain = UpstreamChain::new(
            &[UpstreamConfig::new(
                "http://127.0.0.1:9/prefix".parse().unwrap(),
            )],
            false,
        )
        .unwrap();
        chain.note_rate_limited(0); // no hook yet: nothing happens
        let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let h = Arc::clone(&heard);
        assert!(chain.on_rate_limited(Arc::new(move |url| h.lock().push(url.to_string()))));
        assert!(!chain.on_rate_limited(Arc::new(|_| {})));
        chain.note_rate_limited(0);
        chain.note_rate_limited(7);
        assert_eq!(*heard.lock(), ["http://127.0.0.1:9/prefix"]);
    }
}
