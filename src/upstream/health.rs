//! A small circuit breaker per upstream: after a few consecutive failures the upstream is
//! skipped for a while, so requests go straight to the next one in the chain.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Consecutive failures after which the circuit opens.
const FAILURES_TO_OPEN: u32 = 3;
/// How long an open circuit skips the upstream.
const OPEN_FOR: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct Health {
    consecutive_failures: AtomicU32,
    open_until_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Health {
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    pub fn record_failure(&self) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_TO_OPEN {
            let until = now_ms() + OPEN_FOR.as_millis() as u64;
            self.open_until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// False while the circuit is open.
    pub fn is_available(&self) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) <= now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_opens_after_consecutive_failures_and_closes_on_success() {
        let health = Health::default();
        health.record_failure();
        health.record_failure();
        assert!(health.is_available());
        health.record_failure();
        assert!(!health.is_available());
        health.record_success();
        assert!(health.is_available());
    }
}
