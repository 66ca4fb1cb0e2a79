//! `wecom`: posts alerts to a WeCom (企业微信) group robot.
//!
//! ```yaml
//! plugins:
//!   alerts:
//!     - kind: wecom
//!       url: ${WECOM_HOOK}     # the robot's whole webhook URL, or just its key
//!       msgtype: markdown      # markdown (default, ≤ 4096 bytes) | text (≤ 2048 bytes)
//!       mentioned_list: ["@all"]          # text only: user ids to @-mention
//!       mentioned_mobile_list: ["138..."] # text only: phone numbers to @-mention
//! ```
//!
//! The key in the URL is the robot's only credential: it never appears in logs, errors or
//! `Debug` output. A robot takes at most 20 messages a minute; the sink declares that rate and
//! the dispatcher coalesces what arrives faster into digests. WeCom answers HTTP 200 also on
//! failure, so the body's `errcode` decides: 0 delivered; 45009 ("api freq out of limit")
//! and -1 (busy) retried, after a minute for 45009; any other code permanent.

pub mod format;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use hubcache_plugin_api::http::{body_excerpt, check_http_url};
use hubcache_plugin_api::http_client::{http_client, post_json};
use hubcache_plugin_api::{
    async_trait, redact_url, AlertSink, Delivery, Notification, OptionError, PluginConfig, Rate,
    Registry, Secret, SinkLimits, SinkPlugin,
};

pub use format::MsgType;

pub const KIND: &str = "wecom";

/// Kind-specific keys.
pub const OPTIONS: &[&str] = &["url", "msgtype", "mentioned_list", "mentioned_mobile_list"];

/// Where a bare key is sent.
pub const DEFAULT_ENDPOINT: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send";

/// "每个机器人发送的消息不能超过20条/分钟".
pub const RATE: Rate = Rate {
    messages: 20,
    per: Duration::from_secs(60),
};

/// Alerts offered to one message (those that do not fit the byte limit are counted).
const MAX_BATCH: usize = 50;

/// errcode: "api freq out of limit".
const ERR_RATE_LIMITED: i64 = 45009;
/// errcode: "system busy".
const ERR_BUSY: i64 = -1;

/// The WeCom robot sink.
pub struct WeComSink {
    /// The full send URL, key included.
    url: Secret,
    msgtype: MsgType,
    mentioned: Vec<String>,
    mentioned_mobiles: Vec<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for WeComSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeComSink")
            .field("url", &redact_url(self.url.expose()))
            .field("msgtype", &self.msgtype)
            .finish()
    }
}

/// The send URL from the `url` option: a whole webhook URL (which must carry `key=`), or a
/// bare key appended to [`DEFAULT_ENDPOINT`].
pub fn send_url(value: &Secret) -> Result<Secret, OptionError> {
    let text = value.expose();
    if text.contains("://") {
        check_http_url("url", value)?;
        let has_key = text.split_once('?').is_some_and(|(_, query)| {
            query
                .split('&')
                .any(|p| p.starts_with("key=") && p.len() > 4)
        });
        if !has_key {
            return Err(OptionError::new(
                "url",
                "has no key= parameter (paste the robot's whole webhook URL, or only its key)",
            ));
        }
        return Ok(value.clone());
    }
    let valid_key = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_key {
        return Err(OptionError::new(
            "url",
            "is neither an http(s) URL nor a robot key (letters, digits, - and _)",
        ));
    }
    Ok(Secret::new(format!("{DEFAULT_ENDPOINT}?key={text}")))
}

impl WeComSink {
    pub fn new(url: &Secret, msgtype: MsgType) -> Result<WeComSink, OptionError> {
        let client = http_client()?;
        Ok(WeComSink {
            url: send_url(url)?,
            msgtype,
            mentioned: Vec::new(),
            mentioned_mobiles: Vec::new(),
            client,
        })
    }

    fn from_config(config: &mut PluginConfig) -> Result<WeComSink, OptionError> {
        let url = config
            .take_secret("url")?
            .ok_or_else(|| OptionError::new("url", "is required for kind wecom"))?;
        let msgtype = match config.take_choice("msgtype", &["markdown", "text"])? {
            Some("text") => MsgType::Text,
            _ => MsgType::Markdown,
        };
        let mut sink = WeComSink::new(&url, msgtype)?;
        for (key, list) in [
            ("mentioned_list", &mut sink.mentioned),
            ("mentioned_mobile_list", &mut sink.mentioned_mobiles),
        ] {
            if let Some(values) = config.take_str_list(key)? {
                if msgtype != MsgType::Text {
                    return Err(OptionError::new(key, "works with msgtype: text only"));
                }
                *list = values;
            }
        }
        Ok(sink)
    }

    /// The JSON body for a notification.
    pub fn body(&self, notification: &Notification) -> Value {
        let content = format::content(notification, self.msgtype);
        match self.msgtype {
            MsgType::Markdown => json!({"msgtype": "markdown", "markdown": {"content": content}}),
            MsgType::Text => {
                let mut text = json!({"content": content});
                if !self.mentioned.is_empty() {
                    text["mentioned_list"] = json!(self.mentioned);
                }
                if !self.mentioned_mobiles.is_empty() {
                    text["mentioned_mobile_list"] = json!(self.mentioned_mobiles);
                }
                json!({"msgtype": "text", "text": text})
            }
        }
    }
}

/// What a 2xx answer's `errcode` means.
pub fn classify_errcode(body: &str) -> Delivery {
    let Ok(reply) = serde_json::from_str::<Value>(body) else {
        return Delivery::retry(format!("unreadable answer: {}", body_excerpt(body, 120)));
    };
    let code = reply["errcode"].as_i64();
    let message = body_excerpt(reply["errmsg"].as_str().unwrap_or(""), 160);
    match code {
        Some(0) => Delivery::Delivered,
        Some(ERR_RATE_LIMITED) => Delivery::Retry {
            after: Some(RATE.per),
            reason: format!("errcode {ERR_RATE_LIMITED}: {message}"),
        },
        Some(ERR_BUSY) => Delivery::retry(format!("errcode {ERR_BUSY}: {message}")),
        Some(code) => Delivery::permanent(format!("errcode {code}: {message}")),
        None => Delivery::retry("answer without errcode"),
    }
}

#[async_trait]
impl AlertSink for WeComSink {
    fn limits(&self) -> SinkLimits {
        SinkLimits {
            max_batch: MAX_BATCH,
            rate: Some(RATE),
        }
    }

    async fn deliver(&self, notification: &Notification) -> Delivery {
        let body = serde_json::to_vec(&self.body(notification)).unwrap_or_default();
        let answer = post_json(&self.client, &self.url, &[], body, 160).await;
        match answer.delivery {
            Delivery::Delivered => classify_errcode(&answer.text),
            other => other,
        }
    }
}

/// Adds the `wecom` sink.
pub fn register(registry: &mut Registry) {
    registry.add_sink(SinkPlugin {
        kind: KIND,
        about: "WeCom (企业微信) group robot: markdown or text, 20 messages a minute",
        options: OPTIONS,
        build: |config| Ok(Arc::new(WeComSink::from_config(config)?)),
    });
}

#[cfg(test)]
mod tests;
