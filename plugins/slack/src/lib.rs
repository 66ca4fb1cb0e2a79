//! `slack`: posts alerts to a Slack incoming webhook.
//!
//! ```yaml
//! plugins:
//!   alerts:
//!     - kind: slack
//!       url: ${SLACK_WEBHOOK_URL}   # https://hooks.slack.com/services/T…/B…/…
//! ```
//!
//! Each message has a `text` fallback (what notifications show) and simple `blocks`: one
//! section per alert, up to 10 alerts per message. Slack takes about one message per second
//! per webhook; the sink declares that rate and the dispatcher coalesces what arrives faster
//! into digests. 429 is retried after its `Retry-After`; 5xx and network errors are retried;
//! 400 (`invalid_payload`), 403 (`action_prohibited`), 404 (`channel_not_found`,
//! `no_service`), 410 (`channel_is_archived`) and other 4xx are permanent. The URL is the
//! credential: it never appears in logs, errors or `Debug` output.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use hubcache_plugin_api::http::check_http_url;
use hubcache_plugin_api::http_client::{http_client, post_json};
use hubcache_plugin_api::text::{rfc3339, truncate_utf8};
use hubcache_plugin_api::{
    async_trait, redact_url, Alert, AlertSink, AlertStatus, Delivery, Notification, OptionError,
    PluginConfig, Rate, Registry, Secret, SinkLimits, SinkPlugin,
};

pub const KIND: &str = "slack";

/// Kind-specific keys.
pub const OPTIONS: &[&str] = &["url"];

/// "Posting messages: 1 per second, short bursts >1 allowed".
pub const RATE: Rate = Rate {
    messages: 1,
    per: Duration::from_secs(1),
};

/// Alerts per message (one section block each; Slack allows 50 blocks).
pub const MAX_BATCH: usize = 10;

/// Slack's limit on a section's text, in characters; we count bytes, which is stricter.
const SECTION_LIMIT: usize = 3000;

/// The Slack incoming-webhook sink.
pub struct SlackSink {
    url: Secret,
    client: reqwest::Client,
}

impl std::fmt::Debug for SlackSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSink")
            .field("url", &redact_url(self.url.expose()))
            .finish()
    }
}

/// Escapes the three characters Slack's mrkdwn reserves.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn section(alert: &Alert) -> Value {
    let icon = match alert.status {
        AlertStatus::Firing => ":red_circle:",
        AlertStatus::Resolved => ":large_green_circle:",
    };
    let mut text = format!(
        "{icon} *{}* `{}` ({})\n{}\n_node {} · since {}_",
        alert.status.as_str().to_uppercase(),
        alert.name(),
        alert.severity,
        escape(&alert.summary()),
        escape(&alert.node),
        rfc3339(alert.starts_at),
    );
    let details = alert.details_line();
    if !details.is_empty() {
        text.push_str(&format!("\n{}", escape(&details)));
    }
    json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate_utf8(&text, SECTION_LIMIT, "…")},
    })
}

/// The notification fallback line.
fn fallback(notification: &Notification) -> String {
    match notification.alerts.as_slice() {
        [one] => format!(
            "[{}] {}: {}",
            one.status.as_str().to_uppercase(),
            one.name(),
            one.summary()
        ),
        many => format!(
            "hubcache: {} alerts ({} firing)",
            many.len(),
            many.iter()
                .filter(|a| a.status == AlertStatus::Firing)
                .count()
        ),
    }
}

/// The message body for a notification.
pub fn body(notification: &Notification) -> Value {
    let mut blocks = Vec::with_capacity(notification.alerts.len() + 1);
    if notification.is_digest() {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("*hubcache: {} alerts*", notification.alerts.len())},
        }));
    }
    blocks.extend(notification.alerts.iter().map(section));
    json!({"text": truncate_utf8(&fallback(notification), SECTION_LIMIT, "…"), "blocks": blocks})
}

impl SlackSink {
    pub fn new(url: Secret) -> Result<SlackSink, OptionError> {
        check_http_url("url", &url)?;
        let client = http_client()?;
        Ok(SlackSink { url, client })
    }

    fn from_config(config: &mut PluginConfig) -> Result<SlackSink, OptionError> {
        let url = config
            .take_secret("url")?
            .ok_or_else(|| OptionError::new("url", "is required for kind slack"))?;
        SlackSink::new(url)
    }
}

#[async_trait]
impl AlertSink for SlackSink {
    fn limits(&self) -> SinkLimits {
        SinkLimits {
            max_batch: MAX_BATCH,
            rate: Some(RATE),
        }
    }

    async fn deliver(&self, notification: &Notification) -> Delivery {
        let body = serde_json::to_vec(&body(notification)).unwrap_or_default();
        post_json(&self.client, &self.url, &[], body, 120)
            .await
            .delivery
    }
}

/// Adds the `slack` sink.
pub fn register(registry: &mut Registry) {
    registry.add_sink(SinkPlugin {
        kind: KIND,
        about: "Slack incoming webhook: text plus blocks, one message a second",
        options: OPTIONS,
        build: |config| Ok(Arc::new(SlackSink::from_config(config)?)),
    });
}

#[cfg(test)]
mod tests;
