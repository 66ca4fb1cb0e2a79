//! The dispatcher end to end with fake sinks, on Tokio's paused clock (sleeps and timeouts
//! advance virtual time, so hours of reminders and backoff run in milliseconds).

use std::collections::VecDeque;
use std::sync::Mutex;

use hubcache_plugin_api::{
    async_trait, Delivery, Event, EventKind, Notification, Rate, SinkLimits,
};

use super::*;

/// What a fake sink does on its next delivery.
#[derive(Debug, Clone)]
enum Act {
    Answer(Delivery),
    Hang,
}

#[derive(Debug)]
struct FakeSink {
    limits: SinkLimits,
    script: Mutex<VecDeque<Act>>,
    /// Every delivery attempt: when, and the notification.
    seen: Mutex<Vec<(Instant, Notification)>>,
}

impl FakeSink {
    fn new(limits: SinkLimits, script: Vec<Act>) -> Arc<FakeSink> {
        Arc::new(FakeSink {
            limits,
            script: Mutex::new(script.into()),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn simple() -> Arc<FakeSink> {
        FakeSink::new(SinkLimits::default(), Vec::new())
    }

    fn attempts(&self) -> Vec<(Instant, Notification)> {
        self.seen.lock().unwrap().clone()
    }

    /// (event name, status) of every alert of every attempt.
    fn alerts(&self) -> Vec<(String, String)> {
        self.attempts()
            .iter()
            .flat_map(|(_, n)| n.alerts.clone())
            .map(|a| (a.name().to_string(), a.status.to_string()))
            .collect()
    }
}

#[async_trait]
impl AlertSink for FakeSink {
    fn limits(&self) -> SinkLimits {
        self.limits
    }

    async fn deliver(&self, notification: &Notification) -> Delivery {
        self.seen
            .lock()
            .unwrap()
            .push((Instant::now(), notification.clone()));
        let act = self.script.lock().unwrap().pop_front();
        match act {
            None => Delivery::Delivered,
            Some(Act::Answer(d)) => d,
            Some(Act::Hang) => std::future::pending().await,
        }
    }
}

fn spec(name: &str, sink: Arc<FakeSink>) -> SinkSpec {
    SinkSpec {
        kind: "fake".into(),
        route: Route {
            name: name.into(),
            events: None,
            repeat_every: Duration::from_secs(3600),
            send_resolved: true,
        },
        sink,
        queue: 100,
        timeout: Duration::from_secs(10),
    }
}

fn settings() -> DispatchSettings {
    DispatchSettings {
        node: "node-a".into(),
        retry: RetryPolicy {
            attempts: 4,
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        },
    }
}

/// Lets the dispatcher run until `done` holds, at most `limit` of virtual time.
async fn settle(limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_gives_one_alert_per_sink_and_one_recovery() {
    let bus = EventBus::new();
    let (a, b) = (FakeSink::simple(), FakeSink::simple());
    let dispatcher = Dispatcher::start(
        &bus,
        settings(),
        vec![spec("a", a.clone()), spec("b", b.clone())],
    );
    for _ in 0..20 {
        bus.publish(Event::new(
            EventKind::UpstreamDown,
            "https://huggingface.co",
        ));
    }
    settle(Duration::from_secs(60), || {
        a.attempts().len() == 1 && b.attempts().len() == 1
    })
    .await;
    bus.publish(Event::new(
        EventKind::UpstreamRecovered,
        "https://huggingface.co",
    ));
    settle(Duration::from_secs(60), || {
        a.attempts().len() == 2 && b.attempts().len() == 2
    })
    .await;
    for sink in [&a, &b] {
        assert_eq!(
            sink.alerts(),
            [
                ("upstream_down".to_string(), "firing".to_string()),
                ("upstream_recovered".to_string(), "resolved".to_string())
            ]
        );
        assert_eq!(sink.attempts()[0].1.alerts[0].node, "node-a");
    }
    let counts = dispatcher.counts();
    assert_eq!(counts[0].0, "a");
    assert_eq!(counts[0].1.sent, 2);
    assert_eq!(counts[0].1.suppressed, 19);
}

#[tokio::test(start_paused = true)]
async fn an_open_incident_is_repeated_every_repeat_every() {
    let bus = EventBus::new();
    let sink = FakeSink::simple();
    let _d = Dispatcher::start(&bus, settings(), vec![spec("a", sink.clone())]);
    let t0 = Instant::now();
    bus.publish(Event::new(EventKind::RootLost, "/data1"));
    settle(Duration::from_secs(3 * 3600 + 60), || {
        sink.attempts().len() == 4
    })
    .await;
    let attempts = sink.attempts();
    assert_eq!(attempts.len(), 4);
    let repeats: Vec<u32> = attempts.iter().map(|(_, n)| n.alerts[0].repeat).collect();
    assert_eq!(repeats, [0, 1, 2, 3]);
    let gap = attempts[1].0 - attempts[0].0;
    assert!(
        gap >= Duration::from_secs(3600) && gap < Duration::from_secs(3660),
        "{gap:?}"
    );
    assert!(attempts[0].0 - t0 < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_5xx_is_retried_with_growing_backoff_until_delivered() {
    let bus = EventBus::new();
    let retry = || Act::Answer(Delivery::retry("HTTP 500"));
    let sink = FakeSink::new(SinkLimits::default(), vec![retry(), retry(), retry()]);
    let d = Dispatcher::start(&bus, settings(), vec![spec("a", sink.clone())]);
    bus.publish(Event::new(EventKind::VerifyFailed, "ab"));
    settle(Duration::from_secs(600), || d.counts()[0].1.sent == 1).await;
    let attempts = sink.attempts();
    assert_eq!(attempts.len(), 4);
    let ids: Vec<&str> = attempts.iter().map(|(_, n)| n.id.as_str()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "same id on every retry: {ids:?}"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    // Backoff 2s, 4s, 8s with jitter in [half, full].
    for (gap, full) in gaps.iter().zip([2u64, 4, 8]) {
        let full = Duration::from_secs(full);
        assert!(
            *gap >= full / 2 && *gap <= full + Duration::from_millis(100),
            "{gaps:?}"
        );
    }
    let counts = d.counts()[0].1;
    assert_eq!((counts.sent, counts.retries, counts.failed), (1, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_retries_end() {
    let bus = EventBus::new();
    let slow_down = Act::Answer(Delivery::Retry {
        after: Some(Duration::from_secs(30)),
        reason: "HTTP 429".into(),
    });
    let fail = || Act::Answer(Delivery::retry("HTTP 503"));
    let sink = FakeSink::new(
        SinkLimits::default(),
        vec![slow_down, fail(), fail(), fail(), fail()],
    );
    let d = Dispatcher::start(&bus, settings(), vec![spec("a", sink.clone())]);
    bus.publish(Event::new(EventKind::VerifyFailed, "ab"));
    settle(Duration::from_secs(600), || d.counts()[0].1.failed == 1).await;
    let attempts = sink.attempts();
    assert_eq!(attempts.len(), 4, "settings allow 4 attempts");
    let gap = attempts[1].0 - attempts[0].0;
    assert!(
        gap >= Duration::from_secs(30) && gap < Duration::from_secs(31),
        "{gap:?}"
    );
    let counts = d.counts()[0].1;
    assert_eq!((counts.sent, counts.failed, counts.retries), (0, 1, 3));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_sink_blocks_neither_publishers_nor_other_sinks() {
    let bus = EventBus::new();
    let hanging = FakeSink::new(SinkLimits::default(), vec![Act::Hang; 1000]);
    let healthy = FakeSink::simple();
    let mut slow = spec("hanging", hanging.clone());
    slow.queue = 5;
    let d = Dispatcher::start(
        &bus,
        settings(),
        vec![slow, spec("healthy", healthy.clone())],
    );
    let before = Instant::now();
    for i in 0..50 {
        bus.publish(Event::new(EventKind::VerifyFailed, format!("blob{i}")));
    }
    assert_eq!(Instant::now(), before, "publishing took no (virtual) time");
    settle(Duration::from_secs(300), || healthy.attempts().len() == 50).await;
    assert_eq!(healthy.attempts().len(), 50);
    let counts = d.counts();
    assert_eq!(counts[1].1.sent, 50);
    let hung = counts[0].1;
    assert!(hung.dropped >= 40, "{hung:?}");
    assert_eq!(hung.sent, 0);
    // Each attempt was cut off after the 10 s timeout and retried.
    settle(Duration::from_secs(300), || hanging.attempts().len() >= 2).await;
    let attempts = hanging.attempts();
    assert!(attempts.len() >= 2);
    assert!(attempts[1].0 - attempts[0].0 >= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_sink_gets_digests_of_what_piled_up() {
    let bus = EventBus::new();
    let limits = SinkLimits {
        max_batch: 20,
        rate: Some(Rate {
            messages: 2,
            per: Duration::from_secs(60),
        }),
    };
    let sink = FakeSink::new(limits, Vec::new());
    let d = Dispatcher::start(&bus, settings(), vec![spec("a", sink.clone())]);
    for i in 0..30 {
        bus.publish(Event::new(EventKind::VerifyFailed, format!("blob{i}")));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settle(Duration::from_secs(600), || d.counts()[0].1.sent == 30).await;
    let attempts = sink.attempts();
    let sizes: Vec<usize> = attempts.iter().map(|(_, n)| n.alerts.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 30, "{sizes:?}");
    assert!(
        attempts.len() <= 4,
        "coalesced into few messages: {sizes:?}"
    );
    assert!(sizes.iter().all(|&s| s <= 20), "{sizes:?}");
    // Never more than 2 messages in any 60 s window after the burst of 2.
    for w in attempts.windows(3) {
        assert!(
            w[2].0 - w[0].0 >= Duration::from_secs(29),
            "{:?}",
            w[2].0 - w[0].0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_refusal_raises_sink_failed_on_the_other_sinks() {
    let bus = EventBus::new();
    let dead = FakeSink::new(
        SinkLimits::default(),
        vec![Act::Answer(Delivery::permanent("HTTP 404: no_service"))],
    );
    let other = FakeSink::simple();
    let d = Dispatcher::start(
        &bus,
        settings(),
        vec![spec("dead", dead.clone()), spec("other", other.clone())],
    );
    bus.publish(Event::new(EventKind::RootLost, "/d1"));
    settle(Duration::from_secs(60), || other.attempts().len() == 2).await;
    assert_eq!(
        dead.attempts().len(),
        1,
        "not retried, and no sink_failed about itself"
    );
    let names: Vec<String> = other.alerts().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["root_lost", "sink_failed"]);
    let failed = &other.attempts()[1].1.alerts[0].event;
    assert_eq!(failed.subject, "dead");
    assert_eq!(failed.details["reason"], "HTTP 404: no_service");
    assert_eq!(d.counts()[0].1.failed, 1);
}

#[test]
fn node_name_is_never_empty() {
    assert!(!node_name().is_empty());
}
