use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubcache_plugin_api::{Alert, Event, EventKind};
use hubcache_plugin_testkit::{Receiver, Reply};

use super::*;

fn alert(kind: EventKind, subject: &str) -> Alert {
    let event = Event::new(kind, subject).with("error", "connect timeout");
    Alert::first(event, "node-a")
}

fn one(kind: EventKind) -> Notification {
    Notification {
        id: "msg_1".into(),
        alerts: vec![alert(kind, "https://huggingface.co")],
    }
}

fn build(config: PluginConfig) -> Result<Arc<dyn AlertSink>, hubcache_plugin_api::PluginError> {
    Registry::of(register).build_sink(config)
}

#[tokio::test]
async fn posts_the_event_json_to_the_url() {
    let rx = Receiver::start().await;
    let sink = build(PluginConfig::new("webhook").with("url", rx.url("/hook"))).unwrap();
    assert_eq!(
        sink.deliver(&one(EventKind::UpstreamDown)).await,
        Delivery::Delivered
    );
    let requests = rx.wait_for(1, Duration::from_secs(5)).await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/hook");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(request.header("webhook-signature").is_none());
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["event"], "upstream_down");
    assert_eq!(body["severity"], "warning");
    assert_eq!(body["node"], "node-a");
    assert_eq!(body["subject"], "https://huggingface.co");
    assert_eq!(body["details"]["error"], "connect timeout");
    assert!(body["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn signs_with_standard_webhooks_headers_when_a_secret_is_set() {
    let rx = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sink = build(
        PluginConfig::new("webhook")
            .with("url", rx.url("/hook"))
            .with("secret", secret),
    )
    .unwrap();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        sink.deliver(&one(EventKind::RootLost)).await,
        Delivery::Delivered
    );
    let request = &rx.wait_for(1, Duration::from_secs(5)).await[0];
    assert_eq!(request.header("webhook-id"), Some("msg_1"));
    let ts: u64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ts >= before && ts <= before + 60, "{ts}");
    let expected = Signer::new(&Secret::new(secret))
        .unwrap()
        .sign("msg_1", ts, &request.body);
    assert_eq!(request.header("webhook-signature"), Some(expected.as_str()));
    assert!(expected.starts_with("v1,"));
}

#[tokio::test]
async fn alertmanager_format_posts_the_v4_payload_with_digests() {
    let rx = Receiver::start().await;
    let sink = build(
        PluginConfig::new("webhook")
            .with("url", rx.url("/am"))
            .with("format", "alertmanager"),
    )
    .unwrap();
    assert_eq!(sink.limits().max_batch, 64);
    let n = Notification {
        id: "d1".into(),
        alerts: vec![
            alert(EventKind::UpstreamDown, "https://a"),
            alert(EventKind::UpstreamRecovered, "https://b"),
        ],
    };
    assert_eq!(sink.deliver(&n).await, Delivery::Delivered);
    let request = &rx.wait_for(1, Duration::from_secs(5)).await[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(body["alerts"][1]["status"], "resolved");
}

#[tokio::test]
async fn classifies_5xx_and_429_as_retry_and_other_4xx_as_permanent() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(503).body("busy"),
        Reply::status(429).header("Retry-After", "12"),
        Reply::status(404).body("no such hook"),
        Reply::status(204),
    ]);
    let sink = build(PluginConfig::new("webhook").with("url", rx.url("/h"))).unwrap();
    let n = one(EventKind::UpstreamDown);
    assert_eq!(
        sink.deliver(&n).await,
        Delivery::Retry {
            after: None,
            reason: "HTTP 503: busy".into()
        }
    );
    assert_eq!(
        sink.deliver(&n).await,
        Delivery::Retry {
            after: Some(Duration::from_secs(12)),
            reason: "HTTP 429".into()
        }
    );
    assert_eq!(
        sink.deliver(&n).await,
        Delivery::Permanent {
            reason: "HTTP 404: no such hook".into()
        }
    );
    assert_eq!(sink.deliver(&n).await, Delivery::Delivered);
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_and_the_reason_hides_the_url() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook/SECRET-TOKEN");
    let sink = build(PluginConfig::new("webhook").with("url", url)).unwrap();
    match sink.deliver(&one(EventKind::UpstreamDown)).await {
        Delivery::Retry { reason, .. } => {
            assert!(!reason.contains("SECRET-TOKEN"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn debug_shows_neither_url_path_nor_secret() {
    let sink = WebhookSink::new(
        Secret::new("https://ops.example/hooks/SECRET-PATH?token=SECRET-Q"),
        Format::Event,
        Some(Secret::new("SECRET-KEY")),
    )
    .unwrap();
    let text = format!("{sink:?}");
    assert!(text.contains("https://ops.example/***"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

#[test]
fn bad_options_name_their_key_without_echoing_the_value() {
    let err = build(PluginConfig::new("webhook")).unwrap_err();
    assert_eq!(err.to_string(), "url: is required for kind webhook");
    let err = build(PluginConfig::new("webhook").with("url", "ftp://h/SECRET")).unwrap_err();
    assert_eq!(err.key(), "url");
    assert!(err.reason().contains("use http or https"), "{err}");
    assert!(!err.to_string().contains("SECRET"));
    let err = build(PluginConfig::new("webhook").with("url", "SECRET-bare-token")).unwrap_err();
    assert_eq!(err.key(), "url");
    assert!(!err.to_string().contains("SECRET"));
    let err = build(
        PluginConfig::new("webhook")
            .with("url", "https://h/x")
            .with("format", "prometheus"),
    )
    .unwrap_err();
    assert_eq!(err.key(), "format");
    let err = build(
        PluginConfig::new("webhook")
            .with("url", "https://h/x")
            .with("secret", "whsec_***not-base64***"),
    )
    .unwrap_err();
    assert_eq!(err.key(), "secret");
    let err = build(
        PluginConfig::new("webhook")
            .with("url", "https://h/x")
            .with("msgtype", "text"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "msgtype: unknown key (expected one of: url, secret, format)"
    );
}
