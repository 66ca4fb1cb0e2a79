use std::time::Duration;

use hubcache_plugin_api::{Alert, AlertStatus, Event, EventKind, OptionValue};
use hubcache_plugin_testkit::{Receiver, Reply};

use super::*;

fn alert(kind: EventKind, subject: &str) -> Alert {
    let event = Event::new(kind, subject);
    let starts_at = event.time;
    Alert::new(event, AlertStatus::Firing, "node-a", starts_at, 0)
}

fn one() -> Notification {
    Notification {
        id: "1".into(),
        alerts: vec![alert(EventKind::UpstreamDown, "https://huggingface.co")],
    }
}

fn build(config: PluginConfig) -> Result<Arc<dyn AlertSink>, hubcache_plugin_api::PluginError> {
    Registry::of(register).build_sink(config)
}

fn ok_body() -> Reply {
    Reply::ok().body(r#"{"errcode":0,"errmsg":"ok"}"#)
}

#[tokio::test]
async fn posts_a_markdown_message_to_the_robot_url() {
    let rx = Receiver::start().await;
    rx.set_default(ok_body());
    let url = rx.url("/cgi-bin/webhook/send?key=test-key-1");
    let sink = build(PluginConfig::new("wecom").with("url", url)).unwrap();
    assert_eq!(sink.limits().rate, Some(RATE));
    assert_eq!(sink.deliver(&one()).await, Delivery::Delivered);
    let request = &rx.wait_for(1, Duration::from_secs(5)).await[0];
    assert_eq!(request.target, "/cgi-bin/webhook/send?key=test-key-1");
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["msgtype"], "markdown");
    let content = body["markdown"]["content"].as_str().unwrap();
    assert!(content.contains("`upstream_down`"), "{content}");
    assert!(content.contains("https://huggingface.co"), "{content}");
}

#[tokio::test]
async fn text_messages_carry_mentions_and_stay_within_2048_bytes() {
    let rx = Receiver::start().await;
    rx.set_default(ok_body());
    let sink = build(
        PluginConfig::new("wecom")
            .with("url", rx.url("/send?key=k"))
            .with("msgtype", "text")
            .with("mentioned_list", OptionValue::List(vec!["@all".into()]))
            .with("mentioned_mobile_list", "13800000000"),
    )
    .unwrap();
    let digest = Notification {
        id: "2".into(),
        alerts: (0..100)
            .map(|i| alert(EventKind::VerifyFailed, &format!("{i:064x}")))
            .collect(),
    };
    assert_eq!(sink.deliver(&digest).await, Delivery::Delivered);
    let request = &rx.wait_for(1, Duration::from_secs(5)).await[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["msgtype"], "text");
    assert_eq!(body["text"]["mentioned_list"][0], "@all");
    assert_eq!(body["text"]["mentioned_mobile_list"][0], "13800000000");
    let content = body["text"]["content"].as_str().unwrap();
    assert!(content.len() <= 2048, "{}", content.len());
    assert!(content.starts_with("hubcache: 100 alerts"));
}

#[tokio::test]
async fn errcode_decides_delivered_retry_or_permanent() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::ok().body(r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
        Reply::ok().body(r#"{"errcode":-1,"errmsg":"system busy"}"#),
        Reply::ok().body(r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#),
        Reply::status(502).body("bad gateway"),
        Reply::ok().body("<html>proxy error</html>"),
        ok_body(),
    ]);
    let sink = build(PluginConfig::new("wecom").with("url", rx.url("/s?key=k"))).unwrap();
    let n = one();
    assert_eq!(
        sink.deliver(&n).await,
        Delivery::Retry {
            after: Some(Duration::from_secs(60)),
            reason: "errcode 45009: api freq out of limit".into()
        }
    );
    assert!(matches!(
        sink.deliver(&n).await,
        Delivery::Retry { after: None, .. }
    ));
    assert_eq!(
        sink.deliver(&n).await,
        Delivery::Permanent {
            reason: "errcode 93000: invalid webhook url".into()
        }
    );
    assert!(matches!(sink.deliver(&n).await, Delivery::Retry { .. }));
    assert!(matches!(sink.deliver(&n).await, Delivery::Retry { .. }));
    assert_eq!(sink.deliver(&n).await, Delivery::Delivered);
}

#[test]
fn a_bare_key_goes_to_the_wecom_endpoint() {
    let url = send_url(&Secret::new("693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa")).unwrap();
    assert_eq!(
        url.expose(),
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa"
    );
}

#[test]
fn the_key_never_shows_in_debug_or_errors() {
    let sink = WeComSink::new(&Secret::new("SECRETKEY123"), MsgType::Markdown).unwrap();
    let text = format!("{sink:?}");
    assert!(text.contains("https://qyapi.weixin.qq.com/***"), "{text}");
    assert!(!text.contains("SECRETKEY"), "{text}");
    for bad in [
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?SECRETKEY",
        "SECRET KEY with spaces",
        "ftp://h/?key=SECRETKEY",
    ] {
        let err = build(PluginConfig::new("wecom").with("url", bad)).unwrap_err();
        assert_eq!(err.key(), "url", "{bad}");
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }
}

#[test]
fn mentions_need_msgtype_text() {
    let err = build(
        PluginConfig::new("wecom")
            .with("url", "k")
            .with("mentioned_list", "@all"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mentioned_list: works with msgtype: text only"
    );
    let err = build(
        PluginConfig::new("wecom")
            .with("url", "k")
            .with("msgtype", "news"),
    )
    .unwrap_err();
    assert_eq!(err.key(), "msgtype");
}
