//! The in-process event bus: the core publishes [`Event`]s (an upstream went down, a root was
//! lost, a file failed verification), subscribers (the alert dispatcher, later the status page)
//! receive them.
//!
//! Publishing never blocks and never fails: it works from async and blocking code alike, with
//! or without a runtime, and costs a clone and a short lock. The bus keeps the last
//! [`EventBus::CAPACITY`] events per subscriber; one that falls further behind loses the oldest
//! and the loss is counted ([`EventBus::lost`]). Events are rare (state changes, not requests),
//! so that only happens under a storm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

pub use hubcache_plugin_api::{Event, EventKind};

/// The bus. Cheap to clone; all clones publish to the same subscribers.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    sender: broadcast::Sender<Event>,
    published: AtomicU64,
    /// Shared with subscriptions (which must not hold the sender, or the bus never closes).
    lost: Arc<AtomicU64>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("published", &self.published())
            .field("lost", &self.lost())
            .field("subscribers", &self.inner.sender.receiver_count())
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    /// Events buffered per subscriber.
    pub const CAPACITY: usize = 1024;

    pub fn new() -> EventBus {
        let (sender, _) = broadcast::channel(Self::CAPACITY);
        EventBus {
            inner: Arc::new(Inner {
                sender,
                published: AtomicU64::new(0),
                lost: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// Publishes an event to every current subscriber. Never blocks; without subscribers the
    /// event goes nowhere.
    pub fn publish(&self, event: Event) {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.inner.sender.send(event);
    }

    /// A new subscriber, receiving events published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            receiver: self.inner.sender.subscribe(),
            lost: Arc::clone(&self.inner.lost),
        }
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// Events subscribers lost because they fell more than [`Self::CAPACITY`] behind.
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }
}

/// One subscriber's stream of events.
pub struct Subscription {
    receiver: broadcast::Receiver<Event>,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event; `None` once every [`EventBus`] clone is dropped. Skips (and counts)
    /// events lost to falling behind.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lost.fetch_add(n, Ordering::Relaxed);
                    log::warn!("event bus: a subscriber fell behind and lost {n} events");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_receives_what_is_published_after_it_subscribed() {
        let bus = EventBus::new();
        bus.publish(Event::new(EventKind::RootLost, "/before"));
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.publish(Event::new(EventKind::RootLost, "/d1"));
        bus.clone()
            .publish(Event::new(EventKind::RootRecovered, "/d1"));
        for sub in [&mut a, &mut b] {
            assert_eq!(sub.recv().await.unwrap().kind, EventKind::RootLost);
            assert_eq!(sub.recv().await.unwrap().kind, EventKind::RootRecovered);
        }
        assert_eq!(bus.published(), 3);
    }

    #[test]
    fn publish_without_runtime_or_subscribers_does_not_block_or_panic() {
        let bus = EventBus::new();
        for _ in 0..10 * EventBus::CAPACITY {
            bus.publish(Event::new(EventKind::VerifyFailed, "x"));
        }
        assert_eq!(bus.published(), 10 * EventBus::CAPACITY as u64);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_loses_the_oldest_and_counts_them() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe();
        let total = EventBus::CAPACITY + 10;
        for i in 0..total {
            bus.publish(Event::new(EventKind::VerifyFailed, i.to_string()));
        }
        let first = sub.recv().await.unwrap();
        assert_eq!(first.subject, "10", "the 10 oldest were lost");
        assert_eq!(bus.lost(), 10);
    }

    #[tokio::test]
    async fn recv_ends_when_the_bus_is_gone() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe();
        drop(bus);
        assert!(sub.recv().await.is_none());
    }
}
