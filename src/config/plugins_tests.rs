//! Tests of the `plugins:` section, through the whole config loader.

use std::time::Duration;

use hubcache_plugin_api::{EventKind, OptionValue};

use crate::config::plugins::{defaults, RepoGlob, Share};
use crate::config::Config;

use crate::config::testing::{assert_rejected, parse, reject};

#[test]
fn defaults_have_no_budget_lru_and_no_alerts() {
    let c = Config::embedded_default();
    let e = &c.plugins.eviction;
    assert_eq!(e.policy, "lru");
    assert_eq!(e.max_size, None);
    assert_eq!(e.watermarks(), None, "no watermarks unless configured");
    assert_eq!(e.max_idle, None);
    assert_eq!(e.min_age, Duration::ZERO);
    assert!(e.pin.is_empty());
    assert!(c.plugins.alerts.is_empty());
}

#[test]
fn eviction_keys_parse() {
    let c = parse(
        r#"
plugins:
  eviction:
    policy: lfuda
    max_size: 500GiB
    high_watermark: 85%
    low_watermark: 70%
    max_idle: 30d
    min_age: 10m
    pin: ["meta-llama/*", "datasets/acme/eval", "models/google/bert-base"]
"#,
    );
    let e = &c.plugins.eviction;
    assert_eq!(e.policy, "lfuda");
    assert_eq!(e.max_size, Some(500 << 30));
    assert_eq!(e.watermarks(), Some((Share(85), Share(70))));
    assert_eq!(e.max_idle, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(e.min_age, Duration::from_secs(600));
    let pins: Vec<&str> = e.pin.iter().map(RepoGlob::as_str).collect();
    assert_eq!(
        pins,
        ["meta-llama/*", "datasets/acme/eval", "google/bert-base"]
    );
}

#[test]
fn a_high_watermark_alone_gets_a_low_one_five_points_below() {
    let c = parse("plugins: {eviction: {high_watermark: 90%}}");
    assert_eq!(
        c.plugins.eviction.watermarks(),
        Some((Share(90), Share(85)))
    );
}

#[test]
fn bad_eviction_values_name_key_and_reason() {
    assert_rejected(
        "plugins: {eviction: {high_watermark: 80%, low_watermark: 80%}}",
        "plugins.eviction.low_watermark",
        "80% is not below plugins.eviction.high_watermark (80%)",
    );
    assert_rejected(
        "plugins: {eviction: {low_watermark: 80%}}",
        "plugins.eviction.low_watermark",
        "is set without plugins.eviction.high_watermark",
    );
    assert_rejected(
        "plugins: {eviction: {high_watermark: 5%}}",
        "plugins.eviction.high_watermark",
        "leaves no room for the default low watermark",
    );
    assert_rejected(
        "plugins: {eviction: {high_watermark: 120%}}",
        "plugins.eviction.high_watermark",
        "120% is over 100%",
    );
    assert_rejected(
        "plugins: {eviction: {high_watermark: 90}}",
        "plugins.eviction.high_watermark",
        "write it with %",
    );
    assert_rejected(
        "plugins: {eviction: {high_watermark: 50%, low_watermark: 0%}}",
        "plugins.eviction.low_watermark",
        "more than 0%",
    );
    assert_rejected(
        "plugins: {eviction: {max_size: 0}}",
        "plugins.eviction.max_size",
        "more than 0",
    );
    assert_rejected(
        "plugins: {eviction: {max_size: 5 GB}}",
        "plugins.eviction.max_size",
        "",
    );
    assert_rejected(
        "plugins: {eviction: {max_idle: 0s}}",
        "plugins.eviction.max_idle",
        "more than 0s",
    );
    assert_rejected(
        "plugins: {eviction: {policy: ''}}",
        "plugins.eviction.policy",
        "is empty",
    );
    assert_rejected(
        "plugins: {eviction: {pin: [llama]}}",
        "plugins.eviction.pin[0]",
        "not a repo id",
    );
    assert_rejected(
        "plugins: {eviction: {polcy: lru}}",
        "plugins.eviction.polcy",
        "unknown key (expected one of: policy, max_size, high_watermark",
    );
    assert_rejected("plugins: {evict: {}}", "plugins.evict", "unknown key");
}

#[test]
fn an_alert_entry_splits_core_keys_from_kind_options() {
    let c = parse(
        r#"
plugins:
  alerts:
    - kind: webhook
      url: https://ops.example/hook
      events: [upstream_down, upstream_recovered]
      secret: s3cret
      format: alertmanager
      repeat_every: 4h
      send_resolved: false
      queue: 10
      timeout: 3s
    - kind: log
"#,
    );
    let a = &c.plugins.alerts[0];
    assert_eq!(a.kind, "webhook");
    assert_eq!(a.name, "webhook");
    assert_eq!(
        a.events
            .as_ref()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [EventKind::UpstreamDown, EventKind::UpstreamRecovered]
    );
    assert!(a.wants(EventKind::UpstreamDown));
    assert!(!a.wants(EventKind::RootLost));
    assert_eq!(a.repeat_every, Duration::from_secs(4 * 3600));
    assert!(!a.send_resolved);
    assert_eq!(a.queue, 10);
    assert_eq!(a.timeout, Duration::from_secs(3));
    let mut options = a.options.clone();
    assert_eq!(options.kind(), "webhook");
    assert_eq!(
        options.take_str("url").unwrap().as_deref(),
        Some("https://ops.example/hook")
    );
    assert_eq!(
        options.take_str("secret").unwrap().as_deref(),
        Some("s3cret")
    );
    assert_eq!(
        options.take_str("format").unwrap().as_deref(),
        Some("alertmanager")
    );
    assert_eq!(options.remaining().count(), 0);
    let log = &c.plugins.alerts[1];
    assert_eq!(log.name, "log");
    assert!(log.wants(EventKind::VerifyFailed), "no events = all events");
    assert_eq!(log.repeat_every, defaults::REPEAT_EVERY);
    assert!(log.send_resolved);
    assert_eq!(log.queue, defaults::QUEUE);
    assert_eq!(log.timeout, defaults::TIMEOUT);
}

#[test]
fn sinks_of_one_kind_get_distinct_default_names() {
    let c = parse(
        "plugins: {alerts: [{kind: log}, {kind: log}, {kind: webhook, url: 'http://h'}, {kind: log}]}",
    );
    let names: Vec<&str> = c.plugins.alerts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["log", "log-2", "webhook", "log-3"]);
    assert_rejected(
        "plugins: {alerts: [{kind: log, name: ops}, {kind: log, name: ops}]}",
        "plugins.alerts[1].name",
        "\"ops\" is already the name of plugins.alerts[0]",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, name: 'a b'}]}",
        "plugins.alerts[0].name",
        "not a valid sink name",
    );
}

#[test]
fn env_references_are_expanded_in_options() {
    let path = std::env::var("PATH").unwrap();
    let c =
        parse("plugins: {alerts: [{kind: wecom, url: '${PATH}', mentioned_list: ['${PATH}', x]}]}");
    let mut options = c.plugins.alerts[0].options.clone();
    assert_eq!(options.take_str("url").unwrap(), Some(path.clone()));
    assert_eq!(
        options.take_str_list("mentioned_list").unwrap(),
        Some(vec![path, "x".to_string()])
    );
}

#[test]
fn a_missing_env_variable_is_named_with_the_key() {
    assert_rejected(
        "plugins: {alerts: [{kind: slack, url: '${HUBCACHE_TEST_UNSET_VARIABLE_91}'}]}",
        "plugins.alerts[0].url",
        "environment variable HUBCACHE_TEST_UNSET_VARIABLE_91 is not set",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: webhook, url: 'http://h', secret: '${NOPE_HUBCACHE_X}'}]}",
        "plugins.alerts[0].secret",
        "NOPE_HUBCACHE_X is not set",
    );
}

#[test]
fn bad_alert_entries_name_key_and_reason() {
    assert_rejected(
        "plugins: {alerts: [{url: 'http://h'}]}",
        "plugins.alerts[0].kind",
        "is required",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log}, {kind: webhook, url: 'ftp://h/x'}]}",
        "plugins.alerts[1].url",
        "scheme \"ftp\" is not supported (use http or https)",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: webhook, url: ''}]}",
        "plugins.alerts[0].url",
        "is empty",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, events: [upstream_down, upstrem_up]}]}",
        "plugins.alerts[0].events[1]",
        "unknown event \"upstrem_up\" (known: upstream_down, upstream_recovered,",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, events: []}]}",
        "plugins.alerts[0].events",
        "leave the key out",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, events: upstream_down}]}",
        "plugins.alerts[0].events",
        "expected a list of event names",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, repeat_every: 0s}]}",
        "plugins.alerts[0].repeat_every",
        "more than 0s",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, repeat_every: 60}]}",
        "plugins.alerts[0].repeat_every",
        "has no unit",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, queue: 0}]}",
        "plugins.alerts[0].queue",
        "at least 1",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, send_resolved: yes}]}",
        "plugins.alerts[0].send_resolved",
        "expected true or false",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, level: {a: 1}}]}",
        "plugins.alerts[0].level",
        "found a mapping",
    );
    assert_rejected(
        "plugins: {alerts: [{kind: log, ratio: 1.5}]}",
        "plugins.alerts[0].ratio",
        "not a whole number",
    );
    assert_rejected("plugins: {alerts: [log]}", "plugins.alerts[0]", "");
    assert_rejected("plugins: {alerts: {kind: log}}", "plugins.alerts", "");
}

#[test]
fn url_errors_never_echo_the_url() {
    let err = reject("plugins: {alerts: [{kind: slack, url: 'ftp://hooks/SECRETPART'}]}");
    assert!(!err.to_string().contains("SECRETPART"), "{err}");
    let err = reject("plugins: {alerts: [{kind: slack, url: 'https://a b/SECRETPART'}]}");
    assert!(!err.to_string().contains("SECRETPART"), "{err}");
}

#[test]
fn config_debug_never_shows_alert_option_values() {
    let c = parse(
        "plugins: {alerts: [{kind: wecom, url: 'https://q.example/send?key=SECRETKEY', msgtype: text}]}",
    );
    let text = format!("{c:?}");
    assert!(text.contains("wecom"), "{text}");
    assert!(!text.contains("SECRETKEY"), "{text}");
    let mut options = c.plugins.alerts[0].options.clone();
    assert_eq!(
        options.take_str("msgtype").unwrap().as_deref(),
        Some("text")
    );
}

#[test]
fn option_values_keep_their_types() {
    let c = parse("plugins: {alerts: [{kind: x, flag: true, n: 3, list: [a, 1, false]}]}");
    let mut o = c.plugins.alerts[0].options.clone();
    assert_eq!(o.take_bool("flag").unwrap(), Some(true));
    assert_eq!(o.take_u64("n").unwrap(), Some(3));
    let expected = OptionValue::List(vec!["a".into(), OptionValue::Int(1), false.into()]);
    let mut with = hubcache_plugin_api::PluginConfig::new("x").with("list", expected);
    assert_eq!(with.take_str_list("list").unwrap_err().key, "list[1]");
    assert_eq!(o.take_str_list("list").unwrap_err().key, "list[1]");
}
