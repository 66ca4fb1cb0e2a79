//! `webhook`: POSTs each alert as JSON to a URL.
//!
//! ```yaml
//! plugins:
//!   alerts:
//!     - kind: webhook
//!       url: https://ops.example/hook       # or ${OPS_HOOK}
//!       secret: ${OPS_HOOK_SECRET}          # optional: Standard Webhooks signature headers
//!       format: event                       # event (default) | alertmanager
//! ```
//!
//! `format: event` sends one alert per request in hubcache's own JSON ([`payload::event`]);
//! `format: alertmanager` sends Alertmanager's v4 webhook payload ([`payload::alertmanager`]),
//! up to 64 alerts per request, so receivers written for Alertmanager work unchanged. With a
//! `secret`, every request carries `webhook-id` (the same on retries), `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`.
//!
//! Responses: 2xx delivered; 408, 429 and 5xx retried (honouring `Retry-After`); connection
//! errors and timeouts retried; any other status is permanent.

pub mod payload;
pub mod sign;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hubcache_plugin_api::http::check_http_url;
use hubcache_plugin_api::http_client::{http_client, post_json};
use hubcache_plugin_api::{
    async_trait, redact_url, AlertSink, Delivery, Notification, OptionError, PluginConfig,
    Registry, Secret, SinkLimits, SinkPlugin,
};

use sign::Signer;

pub const KIND: &str = "webhook";

/// Kind-specific keys.
pub const OPTIONS: &[&str] = &["url", "secret", "format"];

/// Alerts per request in the Alertmanager format.
const ALERTMANAGER_BATCH: usize = 64;

/// The body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// hubcache's event JSON, one alert per request.
    Event,
    /// Alertmanager's webhook payload, version 4.
    Alertmanager,
}

/// The generic webhook sink.
pub struct WebhookSink {
    url: Secret,
    format: Format,
    signer: Option<Signer>,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &redact_url(self.url.expose()))
            .field("format", &self.format)
            .field("signed", &self.signer.is_some())
            .finish()
    }
}

impl WebhookSink {
    pub fn new(url: Secret, format: Format, secret: Option<Secret>) -> Result<Self, OptionError> {
        check_http_url("url", &url)?;
        let signer = secret
            .map(|s| Signer::new(&s).map_err(|reason| OptionError::new("secret", reason)))
            .transpose()?;
        Ok(WebhookSink {
            url,
            format,
            signer,
            client: http_client()?,
        })
    }

    fn from_config(config: &mut PluginConfig) -> Result<Self, OptionError> {
        let url = config
            .take_secret("url")?
            .ok_or_else(|| OptionError::new("url", "is required for kind webhook"))?;
        let format = match config.take_choice("format", &["event", "alertmanager"])? {
            Some("alertmanager") => Format::Alertmanager,
            _ => Format::Event,
        };
        let secret = config.take_secret("secret")?;
        WebhookSink::new(url, format, secret)
    }

    /// The request body for a notification.
    pub fn body(&self, notification: &Notification) -> Vec<u8> {
        let value = match self.format {
            Format::Alertmanager => payload::alertmanager(notification),
            // max_batch is 1 for this format: a notification holds one alert.
            Format::Event => match notification.alerts.as_slice() {
                [one] => payload::event(one),
                many => serde_json::Value::Array(many.iter().map(payload::event).collect()),
            },
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

#[async_trait]
impl AlertSink for WebhookSink {
    fn limits(&self) -> SinkLimits {
        SinkLimits {
            max_batch: match self.format {
                Format::Event => 1,
                Format::Alertmanager => ALERTMANAGER_BATCH,
            },
            rate: None,
        }
    }

    async fn deliver(&self, notification: &Notification) -> Delivery {
        let body = self.body(notification);
        let mut headers = Vec::new();
        if let Some(signer) = &self.signer {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            headers.push(("webhook-id", notification.id.clone()));
            headers.push(("webhook-timestamp", timestamp.to_string()));
            headers.push((
                "webhook-signature",
                signer.sign(&notification.id, timestamp, &body),
            ));
        }
        post_json(&self.client, &self.url, &headers, body, 200)
            .await
            .delivery
    }
}

/// Adds the `webhook` sink.
pub fn register(registry: &mut Registry) {
    registry.add_sink(SinkPlugin {
        kind: KIND,
        about: "POST JSON (hubcache events or Alertmanager format), optionally signed",
        options: OPTIONS,
        build: |config| Ok(Arc::new(WebhookSink::from_config(config)?)),
    });
}

#[cfg(test)]
mod tests;
