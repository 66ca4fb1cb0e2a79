use std::time::Duration;

use hubcache_plugin_api::{Event, EventKind};
use hubcache_plugin_testkit::{Receiver, Reply};

use super::*;

fn alert(kind: EventKind, subject: &str) -> Alert {
    let event = Event::new(kind, subject).with("status", "503 <bad>");
    Alert::first(event, "node-a")
}

fn one(kind: EventKind) -> Notification {
    Notification {
        id: "1".into(),
        alerts: vec![alert(kind, "https://huggingface.co")],
    }
}

fn build(config: PluginConfig) -> Result<Arc<dyn AlertSink>, hubcache_plugin_api::PluginError> {
    Registry::of(register).build_sink(config)
}

#[tokio::test]
async fn posts_text_and_blocks() {
    let rx = Receiver::start().await;
    let sink = build(PluginConfig::new("slack").with("url", rx.url("/services/T0/B0/x"))).unwrap();
    assert_eq!(
        sink.limits(),
        SinkLimits {
            max_batch: 10,
            rate: Some(RATE)
        }
    );
    assert_eq!(
        sink.deliver(&one(EventKind::UpstreamDown)).await,
        Delivery::Delivered
    );
    let request = &rx.wait_for(1, Duration::from_secs(5)).await[0];
    assert_eq!(request.target, "/services/T0/B0/x");
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body["text"],
        "[FIRING] upstream_down: upstream https://huggingface.co: upstream is unreachable"
    );
    let section = body["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        section.starts_with(":red_circle: *FIRING* `upstream_down` (warning)"),
        "{section}"
    );
    assert!(section.contains("status=503 &lt;bad&gt;"), "{section}");
}

#[tokio::test]
async fn a_digest_has_a_header_and_one_section_per_alert() {
    let rx = Receiver::start().await;
    let sink = build(PluginConfig::new("slack").with("url", rx.url("/h"))).unwrap();
    let n = Notification {
        id: "2".into(),
        alerts: vec![
            alert(EventKind::UpstreamDown, "https://a"),
            alert(EventKind::UpstreamRecovered, "https://b"),
            alert(EventKind::RootLost, "/d1"),
        ],
    };
    assert_eq!(sink.deliver(&n).await, Delivery::Delivered);
    let request = &rx.wait_for(1, Duration::from_secs(5)).await[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["text"], "hubcache: 3 alerts (2 firing)");
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 4);
    assert_eq!(blocks[0]["text"]["text"], "*hubcache: 3 alerts*");
    assert!(blocks[2]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with(":large_green_circle: *RESOLVED* `upstream_recovered`"));
}

#[tokio::test]
async fn retry_after_on_429_and_dead_urls_are_permanent() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(429)
            .header("Retry-After", "3")
            .body("rate_limited"),
        Reply::status(500).body("rollup_error"),
        Reply::status(400).body("invalid_payload"),
        Reply::status(403).body("action_prohibited"),
        Reply::status(404).body("no_service"),
        Reply::status(410).body("channel_is_archived"),
    ]);
    let sink = build(PluginConfig::new("slack").with("url", rx.url("/h"))).unwrap();
    let n = one(EventKind::RootLost);
    assert_eq!(
        sink.deliver(&n).await,
        Delivery::Retry {
            after: Some(Duration::from_secs(3)),
            reason: "HTTP 429: rate_limited".into()
        }
    );
    assert!(matches!(
        sink.deliver(&n).await,
        Delivery::Retry { after: None, .. }
    ));
    for expected in [
        "HTTP 400: invalid_payload",
        "HTTP 403: action_prohibited",
        "HTTP 404: no_service",
        "HTTP 410: channel_is_archived",
    ] {
        assert_eq!(
            sink.deliver(&n).await,
            Delivery::Permanent {
                reason: expected.into()
            }
        );
    }
}

#[test]
fn the_url_never_shows_in_debug_or_errors() {
    let sink = SlackSink::new(Secret::new(
        "https://hooks.slack.com/services/T0/B0/SECRETPART",
    ))
    .unwrap();
    let text = format!("{sink:?}");
    assert_eq!(text, "SlackSink { url: \"https://hooks.slack.com/***\" }");
    let err =
        build(PluginConfig::new("slack").with("url", "hooks.slack.com/SECRETPART")).unwrap_err();
    assert_eq!(err.key(), "url");
    assert!(!err.to_string().contains("SECRET"), "{err}");
    let err = build(PluginConfig::new("slack")).unwrap_err();
    assert_eq!(err.to_string(), "url: is required for kind slack");
}
