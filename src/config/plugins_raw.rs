//! The `plugins:` section as serde sees it, and its validation into [`PluginsConfig`].
//!
//! `plugins.eviction` has fixed keys and is read by serde like the rest of the config. Each
//! `plugins.alerts` entry mixes keys the core handles (`kind`, `name`, `events`,
//! `repeat_every`, `send_resolved`, `queue`, `timeout`) with its kind's own options, so it is
//! read as a mapping and split here: the core's keys are validated, every other key becomes a
//! plugin option (strings with `${ENV_VAR}`s expanded) for the kind's factory to check.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use hubcache_plugin_api::http::check_http_url;
use hubcache_plugin_api::{EventKind, OptionValue, PluginConfig, Secret};

use super::env;
use super::error::ConfigError;
use super::plugins::{defaults, AlertConfig, EvictionConfig, PluginsConfig, RepoGlob, Share};
use super::units::{ByteSize, HumanDuration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with eviction and alerts")]
pub(crate) struct RawPlugins {
    eviction: Option<RawEviction>,
    alerts: Option<Vec<Mapping>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of eviction settings (policy, max_size, ...)"
)]
struct RawEviction {
    policy: Option<String>,
    max_size: Option<ByteSize>,
    high_watermark: Option<ShareValue>,
    low_watermark: Option<ShareValue>,
    max_idle: Option<HumanDuration>,
    min_age: Option<HumanDuration>,
    pin: Option<Vec<PinValue>>,
}

impl RawPlugins {
    pub(crate) fn into_config(self) -> Result<PluginsConfig, ConfigError> {
        let eviction = self.eviction.unwrap_or_default().into_config()?;
        let entries = self.alerts.unwrap_or_default();
        let mut alerts = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            alerts.push(alert_into_config(index, entry)?);
        }
        name_sinks(&mut alerts)?;
        Ok(PluginsConfig { eviction, alerts })
    }
}

impl RawEviction {
    fn into_config(self) -> Result<EvictionConfig, ConfigError> {
        let policy = self.policy.unwrap_or_else(|| defaults::POLICY.to_string());
        if policy.is_empty() {
            return Err(ConfigError::invalid(
                "plugins.eviction.policy",
                "is empty (use lru, fifo, large_first or lfuda)",
            ));
        }
        let max_size = self.max_size.map(|s| s.0);
        if max_size == Some(0) {
            return Err(ConfigError::invalid(
                "plugins.eviction.max_size",
                "must be more than 0 (leave it out for no budget)",
            ));
        }
        let (high, low) = watermarks(
            self.high_watermark.map(|s| s.0),
            self.low_watermark.map(|s| s.0),
        )?;
        let max_idle = self.max_idle.map(|d| d.0);
        if max_idle.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                "plugins.eviction.max_idle",
                "must be more than 0s (leave it out to never evict for idleness)",
            ));
        }
        Ok(EvictionConfig {
            policy,
            max_size,
            high_watermark: high,
            low_watermark: low,
            max_idle,
            min_age: self.min_age.map_or(defaults::MIN_AGE, |d| d.0),
            pin: self
                .pin
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.0)
                .collect(),
        })
    }
}

/// Reads one `plugins.alerts[index]` entry.
fn alert_into_config(index: usize, entry: Mapping) -> Result<AlertConfig, ConfigError> {
    let at = |key: &str| format!("plugins.alerts[{index}].{key}");
    let mut kind = None;
    let mut name = None;
    let mut events = None;
    let mut repeat_every = defaults::REPEAT_EVERY;
    let mut send_resolved = defaults::SEND_RESOLVED;
    let mut queue = defaults::QUEUE;
    let mut timeout = defaults::TIMEOUT;
    let mut options = Vec::new();
    for (key, value) in entry {
        // `tidy` has rejected non-string keys already.
        let key = key.as_str().unwrap_or_default().to_string();
        let path = at(&key);
        match key.as_str() {
            "kind" => kind = Some(non_empty_string(value, &path)?),
            "name" => name = Some(sink_name(value, &path)?),
            "events" => events = Some(event_set(value, &path)?),
            "repeat_every" => repeat_every = positive_duration(value, &path)?,
            "send_resolved" => send_resolved = boolean(value, &path)?,
            "queue" => queue = positive_count(value, &path)?,
            "timeout" => timeout = positive_duration(value, &path)?,
            _ => {
                let option = option_value(value, &path)?;
                if key == "url" {
                    check_url(&option, &path)?;
                }
                options.push((key, option));
            }
        }
    }
    let kind = kind.ok_or_else(|| {
        ConfigError::invalid(
            at("kind"),
            "is required but missing (the sink's kind, e.g. webhook, wecom, slack or log)",
        )
    })?;
    let mut plugin = PluginConfig::new(kind.clone());
    for (key, value) in options {
        plugin.insert(key, value);
    }
    Ok(AlertConfig {
        kind,
        name: name.unwrap_or_default(),
        events,
        repeat_every,
        send_resolved,
        queue,
        timeout,
        options: plugin,
    })
}

/// Gives unnamed sinks their kind as name (`webhook`, then `webhook-2`, ...) and checks that
/// names are unique.
fn name_sinks(alerts: &mut [AlertConfig]) -> Result<(), ConfigError> {
    let mut per_kind: HashMap<String, usize> = HashMap::new();
    for alert in alerts.iter_mut() {
        let n = per_kind.entry(alert.kind.clone()).or_default();
        *n += 1;
        if alert.name.is_empty() {
            alert.name = match *n {
                1 => alert.kind.clone(),
                n => format!("{}-{n}", alert.kind),
            };
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, alert) in alerts.iter().enumerate() {
        if let Some(first) = seen.insert(&alert.name, index) {
            return Err(ConfigError::invalid(
                format!("plugins.alerts[{index}].name"),
                format!(
                    "\"{}\" is already the name of plugins.alerts[{first}] (give each sink a \
                     distinct name)",
                    alert.name
                ),
            ));
        }
    }
    Ok(())
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn non_empty_string(value: Value, path: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::String(_) => Err(ConfigError::invalid(path, "is empty")),
        other => Err(ConfigError::invalid(
            path,
            format!("expected a string, found {}", describe(&other)),
        )),
    }
}

fn sink_name(value: Value, path: &str) -> Result<String, ConfigError> {
    let name = non_empty_string(value, path)?;
    let ok = name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(ConfigError::invalid(
            path,
            format!("\"{name}\" is not a valid sink name (up to 64 letters, digits, -, _ and .)"),
        ));
    }
    Ok(name)
}

fn event_set(value: Value, path: &str) -> Result<BTreeSet<EventKind>, ConfigError> {
    let Value::Sequence(items) = value else {
        return Err(ConfigError::invalid(
            path,
            format!("expected a list of event names, found {}", describe(&value)),
        ));
    };
    if items.is_empty() {
        return Err(ConfigError::invalid(
            path,
            "is empty (leave the key out to receive every event)",
        ));
    }
    let mut set = BTreeSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let name = non_empty_string(item, &item_path)?;
        let kind = EventKind::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            ConfigError::invalid(
                &item_path,
                format!("unknown event \"{name}\" (known: {})", known.join(", ")),
            )
        })?;
        set.insert(kind);
    }
    Ok(set)
}

fn positive_duration(value: Value, path: &str) -> Result<std::time::Duration, ConfigError> {
    let duration = serde_yaml::from_value::<HumanDuration>(value)
        .map_err(|e| ConfigError::invalid(path, e.to_string()))?
        .0;
    if duration.is_zero() {
        return Err(ConfigError::invalid(path, "must be more than 0s"));
    }
    Ok(duration)
}

fn boolean(value: Value, path: &str) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(ConfigError::invalid(
            path,
            format!("expected true or false, found {}", describe(&other)),
        )),
    }
}

fn positive_count(value: Value, path: &str) -> Result<usize, ConfigError> {
    match value.as_u64().map(usize::try_from) {
        Some(Ok(0)) => Err(ConfigError::invalid(path, "must be at least 1")),
        Some(Ok(n)) => Ok(n),
        _ => Err(ConfigError::invalid(
            path,
            format!("expected a whole number, found {}", describe(&value)),
        )),
    }
}

/// A plugin option: strings (`${ENV_VAR}`s expanded), booleans, whole numbers, or lists of
/// those. Error messages never include a string's value (it may be a credential).
fn option_value(value: Value, path: &str) -> Result<OptionValue, ConfigError> {
    match value {
        Value::String(s) => env::expand_from_process(&s)
            .map(OptionValue::Str)
            .map_err(|reason| ConfigError::invalid(path, reason)),
        Value::Bool(b) => Ok(OptionValue::Bool(b)),
        Value::Number(n) => n
            .as_i64()
            .map(OptionValue::Int)
            .ok_or_else(|| ConfigError::invalid(path, format!("{n} is not a whole number"))),
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Sequence(_) | Value::Mapping(_) => Err(ConfigError::invalid(
                    format!("{path}[{i}]"),
                    "lists of lists or mappings are not supported here",
                )),
                item => option_value(item, &format!("{path}[{i}]")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(OptionValue::List),
        Value::Tagged(tagged) => option_value(tagged.value, path),
        other => Err(ConfigError::invalid(
            path,
            format!(
                "expected a string, number, boolean or list, found {}",
                describe(&other)
            ),
        )),
    }
}

/// `url` of any kind: not empty, and when it has a scheme, http(s) with a host. A value
/// without a scheme is left to the kind (WeCom takes a bare robot key).
fn check_url(option: &OptionValue, path: &str) -> Result<(), ConfigError> {
    let OptionValue::Str(url) = option else {
        return Err(ConfigError::invalid(path, "expected a URL string"));
    };
    if url.is_empty() {
        return Err(ConfigError::invalid(path, "is empty"));
    }
    if url.contains("://") {
        check_http_url("url", &Secret::new(url.clone()))
            .map_err(|e| ConfigError::invalid(path, e.reason))?;
    }
    Ok(())
}

/// The watermarks: both unset (none), or a high one with a low one below it (given, or
/// [`defaults::LOW_BELOW_HIGH`] points lower).
fn watermarks(
    high: Option<Share>,
    low: Option<Share>,
) -> Result<(Option<Share>, Option<Share>), ConfigError> {
    let (high, low) = match (high, low) {
        (None, None) => return Ok((None, None)),
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "plugins.eviction.low_watermark",
                "is set without plugins.eviction.high_watermark (set both, or neither)",
            ))
        }
        (Some(high), None) => {
            if high.0 <= defaults::LOW_BELOW_HIGH {
                return Err(ConfigError::invalid(
                    "plugins.eviction.high_watermark",
                    format!(
                        "{high} leaves no room for the default low watermark ({} points \
                         lower); set plugins.eviction.low_watermark too",
                        defaults::LOW_BELOW_HIGH
                    ),
                ));
            }
            (high, Share(high.0 - defaults::LOW_BELOW_HIGH))
        }
        (Some(high), Some(low)) => (high, low),
    };
    if low >= high {
        return Err(ConfigError::invalid(
            "plugins.eviction.low_watermark",
            format!(
                "{low} is not below plugins.eviction.high_watermark ({high}); eviction \
                 frees space down to the low watermark, so it must be lower"
            ),
        ));
    }
    Ok((Some(high), Some(low)))
}

/// `plugins.eviction.*_watermark`: `90%`.
#[derive(Debug)]
struct ShareValue(Share);

impl<'de> Deserialize<'de> for ShareValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ShareVisitor;
        impl Visitor<'_> for ShareVisitor {
            type Value = ShareValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as 90%")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ShareValue, E> {
                Share::parse(text).map(ShareValue).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ShareValue, E> {
                Err(E::custom(format!(
                    "{n} is not a percentage (write it with %, e.g. {n}%)"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ShareValue, E> {
                Err(E::custom(format!("{n} is not a percentage (e.g. 90%)")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ShareValue, E> {
                Err(E::custom(format!(
                    "{n} is not a percentage (write a whole number with %, e.g. 90%)"
                )))
            }
        }
        d.deserialize_any(ShareVisitor)
    }
}

/// One `plugins.eviction.pin` entry.
#[derive(Debug)]
struct PinValue(RepoGlob);

impl<'de> Deserialize<'de> for PinValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RepoGlob::parse(&text)
            .map(PinValue)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
#[path = "plugins_tests.rs"]
mod tests;
