//! The alert path end to end in one process: event bus → dispatcher → the real `webhook` sink
//! → a loopback HTTP receiver (no network beyond 127.0.0.1).

use std::time::Duration;

use hubcache::alerts::{DispatchSettings, Dispatcher, RetryPolicy};
use hubcache::config::Config;
use hubcache::events::{Event, EventBus, EventKind};
use hubcache::plugins::api::Registry;
use hubcache_plugin_testkit::{Receiver, Reply};

fn registry() -> Registry {
    let mut registry = Registry::default();
    hubcache_plugin_lru::register(&mut registry);
    hubcache_plugin_webhook::register(&mut registry);
    registry
}

fn settings() -> DispatchSettings {
    DispatchSettings {
        node: "node-a".into(),
        retry: RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
    }
}

fn start(bus: &EventBus, yaml: &str) -> Dispatcher {
    let config = Config::from_yaml_str(yaml).unwrap();
    let plugins = hubcache::plugins::build(&config.plugins, &registry()).unwrap();
    Dispatcher::start(bus, settings(), plugins.sinks)
}

fn body(request: &hubcache_plugin_testkit::Request) -> serde_json::Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn an_outage_reaches_the_webhook_once_through_a_500_and_then_resolves() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(500).body("try later")]);
    let bus = EventBus::new();
    let dispatcher = start(
        &bus,
        &format!(
            "plugins:\n  alerts:\n    - {{kind: webhook, url: '{}', secret: s3cret}}\n",
            rx.url("/hook")
        ),
    );
    for _ in 0..5 {
        bus.publish(Event::new(
            EventKind::UpstreamDown,
            "https://huggingface.co",
        ));
    }
    let requests = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 2, "one 500, one retry");
    bus.publish(Event::new(
        EventKind::UpstreamRecovered,
        "https://huggingface.co",
    ));
    let requests = rx.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 3);
    // The retry is the same message: same id, same body.
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(body(&requests[0])["event"], "upstream_down");
    assert_eq!(body(&requests[0])["node"], "node-a");
    let recovered = body(&requests[2]);
    assert_eq!(recovered["event"], "upstream_recovered");
    assert_eq!(recovered["status"], "resolved");
    assert_ne!(
        requests[2].header("webhook-id"),
        requests[0].header("webhook-id")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 3, "no duplicates of the incident");
    let counts = dispatcher.counts()[0].1;
    assert_eq!((counts.sent, counts.retries, counts.suppressed), (2, 1, 4));
}

#[tokio::test]
async fn a_hanging_webhook_does_not_hold_up_another() {
    let hanging = Receiver::start().await;
    hanging.set_default(Reply::hang());
    let healthy = Receiver::start().await;
    let bus = EventBus::new();
    let dispatcher = start(
        &bus,
        &format!(
            "plugins:\n  alerts:\n    - {{kind: webhook, name: stuck, url: '{}', timeout: 30s}}\n    - {{kind: webhook, name: ok, url: '{}'}}\n",
            hanging.url("/h"),
            healthy.url("/h")
        ),
    );
    for i in 0..3 {
        bus.publish(Event::new(EventKind::VerifyFailed, format!("blob{i}")));
    }
    let delivered = healthy.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(delivered.len(), 3);
    assert_eq!(
        hanging.requests().len(),
        1,
        "still waiting on its first answer"
    );
    // The receiver records a request before it answers: wait for the answers to be counted.
    for _ in 0..100 {
        if dispatcher.counts()[1].1.sent == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = dispatcher.counts();
    assert_eq!(counts[0].0, "stuck");
    assert_eq!(counts[0].1.sent, 0);
    assert_eq!(counts[1].1.sent, 3);
}
