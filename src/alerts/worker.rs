//! One task per sink: takes alerts from the sink's bounded queue, keeps to the sink's rate
//! (coalescing what piles up into digests), delivers with a timeout and retries transient
//! failures with exponential backoff and jitter (or the receiver's `Retry-After`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use hubcache_plugin_api::{Alert, AlertSink, Delivery, Event, EventKind, Notification, Rate};

use super::SinkStats;
use crate::events::EventBus;

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per notification, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub base: Duration,
    /// Longest wait between attempts (a `Retry-After` may ask for more, up to an hour).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// "Full jitter, at least half": a wait between `wait / 2` and `wait`, so retries of many
/// nodes hitting one receiver spread out.
pub fn jitter(wait: Duration, random: u64) -> Duration {
    let half = wait / 2;
    let span = (wait - half).as_millis() as u64;
    half + Duration::from_millis(if span == 0 { 0 } else { random % (span + 1) })
}

/// A cheap pseudo-random number (splitmix64 over a counter and the clock): enough to spread
/// retries, not for anything secret.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut z = COUNTER
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(nanos);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A token bucket: `messages` tokens, refilled continuously over `per`.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_token: Duration,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        let messages = rate.messages.max(1);
        TokenBucket {
            capacity: f64::from(messages),
            per_token: rate.per / messages,
            tokens: f64::from(messages),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if self.per_token.is_zero() {
            self.tokens = self.capacity;
            return;
        }
        let gained = elapsed.as_secs_f64() / self.per_token.as_secs_f64();
        self.tokens = (self.tokens + gained).min(self.capacity);
    }

    /// How long until a token is available (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            self.per_token.mul_f64(1.0 - self.tokens)
        }
    }

    /// Takes a token (call when [`wait`](Self::wait) is zero).
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// Everything a sink's task needs.
pub(super) struct Worker {
    pub name: String,
    pub kind: String,
    pub sink: Arc<dyn AlertSink>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub stats: Arc<SinkStats>,
    pub bus: EventBus,
    /// Prefix of notification ids (node and start time).
    pub id_prefix: String,
}

impl Worker {
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Alert>) {
        let limits = self.sink.limits();
        let max_batch = limits.max_batch.max(1);
        let mut bucket = limits
            .rate
            .map(|rate| TokenBucket::new(rate, Instant::now()));
        let mut pending: VecDeque<Alert> = VecDeque::new();
        let mut sequence: u64 = 0;
        loop {
            if pending.is_empty() {
                match queue.recv().await {
                    Some(alert) => pending.push_back(alert),
                    None => return,
                }
            }
            if let Some(bucket) = &mut bucket {
                let wait = bucket.wait(Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                bucket.take(Instant::now());
            }
            while pending.len() < max_batch {
                match queue.try_recv() {
                    Ok(alert) => pending.push_back(alert),
                    Err(_) => break,
                }
            }
            let take = pending.len().min(max_batch);
            sequence += 1;
            let notification = Notification {
                id: format!("{}-{sequence}", self.id_prefix),
                alerts: pending.drain(..take).collect(),
            };
            self.deliver(&notification).await;
        }
    }

    /// Delivers one notification, retrying transient failures.
    async fn deliver(&self, notification: &Notification) {
        let count = notification.alerts.len() as u64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome =
                match tokio::time::timeout(self.timeout, self.sink.deliver(notification)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Delivery::retry(format!(
                        "no answer within {}",
                        crate::config::units::format_duration(self.timeout)
                    )),
                };
            match outcome {
                Delivery::Delivered => {
                    self.stats.sent.fetch_add(count, Ordering::Relaxed);
                    self.stats.notifications.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Delivery::Permanent { reason } => {
                    self.stats.failed.fetch_add(count, Ordering::Relaxed);
                    log::warn!(
                        "alert sink {} ({}) refused {count} alert(s) for good: {reason}",
                        self.name,
                        self.kind
                    );
                    self.bus.publish(
                        Event::new(EventKind::SinkFailed, self.name.clone())
                            .with("kind", &self.kind)
                            .with("reason", reason),
                    );
                    return;
                }
                Delivery::Retry { after, reason } => {
                    if attempt >= self.retry.attempts {
                        self.stats.failed.fetch_add(count, Ordering::Relaxed);
                        log::warn!(
                            "alert sink {} ({}) gave up on {count} alert(s) after {attempt} \
                             attempts: {reason}",
                            self.name,
                            self.kind
                        );
                        return;
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait =
                        after.unwrap_or_else(|| jitter(self.retry.backoff(attempt), random()));
                    log::debug!(
                        "alert sink {} ({}): attempt {attempt} failed ({reason}); retrying in {:?}",
                        self.name,
                        self.kind,
                        wait
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_secs(2),
            max: Duration::from_secs(30),
        };
        let waits: Vec<u64> = (1..=6).map(|r| p.backoff(r).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        assert_eq!(p.backoff(200), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_wait() {
        let wait = Duration::from_secs(10);
        for r in [0, 1, 4999, 5000, 5001, u64::MAX] {
            let j = jitter(wait, r);
            assert!(j >= Duration::from_secs(5) && j <= wait, "{j:?}");
        }
        assert_eq!(jitter(Duration::ZERO, 7), Duration::ZERO);
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| jitter(wait, random())).collect();
        assert!(spread.len() > 10, "random() does not vary: {spread:?}");
    }

    #[test]
    fn token_bucket_allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Rate {
                messages: 20,
                per: Duration::from_secs(60),
            },
            t0,
        );
        for _ in 0..20 {
            assert_eq!(b.wait(t0), Duration::ZERO);
            b.take(t0);
        }
        assert_eq!(b.wait(t0), Duration::from_secs(3));
        assert_eq!(b.wait(t0 + Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(b.wait(t0 + Duration::from_secs(3)), Duration::ZERO);
        b.take(t0 + Duration::from_secs(3));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert_eq!(b.wait(later), Duration::ZERO);
            b.take(later);
        }
        assert!(b.wait(later) > Duration::ZERO);
    }
}
