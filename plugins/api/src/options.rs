//! The options a plugin is built from: the keys of its config entry besides the ones the core
//! handles (`kind`, `events`, `repeat_every`, ...), already checked for shape and with
//! `${ENV_VAR}` references expanded.
//!
//! A factory *takes* the keys it knows (`take_str`, `take_secret`, ...); the registry rejects
//! whatever is left as an unknown key. Values are never printed by `Debug` (any of them may be
//! a secret).

use std::collections::BTreeMap;
use std::fmt;

use crate::secret::Secret;

/// One option value.
#[derive(Clone, PartialEq, Eq)]
pub enum OptionValue {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<OptionValue>),
}

impl OptionValue {
    fn describe(&self) -> &'static str {
        match self {
            OptionValue::Bool(_) => "a boolean",
            OptionValue::Int(_) => "a number",
            OptionValue::Str(_) => "a string",
            OptionValue::List(_) => "a list",
        }
    }
}

impl fmt::Debug for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.describe())
    }
}

impl From<&str> for OptionValue {
    fn from(s: &str) -> Self {
        OptionValue::Str(s.to_string())
    }
}

impl From<String> for OptionValue {
    fn from(s: String) -> Self {
        OptionValue::Str(s)
    }
}

impl From<bool> for OptionValue {
    fn from(b: bool) -> Self {
        OptionValue::Bool(b)
    }
}

impl From<i64> for OptionValue {
    fn from(n: i64) -> Self {
        OptionValue::Int(n)
    }
}

/// A bad option: the key (relative to the plugin's entry, e.g. `format`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub key: String,
    pub reason: String,
}

impl OptionError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> OptionError {
        OptionError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for OptionError {}

/// The config entry of one plugin instance.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginConfig {
    kind: String,
    values: BTreeMap<String, OptionValue>,
}

impl fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginConfig")
            .field("kind", &self.kind)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PluginConfig {
    pub fn new(kind: impl Into<String>) -> PluginConfig {
        PluginConfig {
            kind: kind.into(),
            values: BTreeMap::new(),
        }
    }

    /// Adds an option (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<OptionValue>) -> Self {
        self.insert(key, value);
        self
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<OptionValue>) {
        self.values.insert(key.into(), value.into());
    }

    /// The plugin kind (`webhook`, `lru`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The keys not taken yet.
    pub fn remaining(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// Takes a string option.
    pub fn take_str(&mut self, key: &str) -> Result<Option<String>, OptionError> {
        match self.values.remove(key) {
            None => Ok(None),
            Some(OptionValue::Str(s)) => Ok(Some(s)),
            Some(other) => Err(expected(key, "a string", &other)),
        }
    }

    /// Takes a string option that is a credential (a URL with a key, a signing secret).
    pub fn take_secret(&mut self, key: &str) -> Result<Option<Secret>, OptionError> {
        Ok(self.take_str(key)?.map(Secret::new))
    }

    /// Takes a string option that must be one of `choices`.
    pub fn take_choice(
        &mut self,
        key: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, OptionError> {
        let Some(text) = self.take_str(key)? else {
            return Ok(None);
        };
        choices
            .iter()
            .copied()
            .find(|c| *c == text)
            .map(Some)
            .ok_or_else(|| {
                OptionError::new(
                    key,
                    format!("\"{text}\" is not one of: {}", choices.join(", ")),
                )
            })
    }

    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, OptionError> {
        match self.values.remove(key) {
            None => Ok(None),
            Some(OptionValue::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(expected(key, "true or false", &other)),
        }
    }

    /// Takes a whole number option that must not be negative.
    pub fn take_u64(&mut self, key: &str) -> Result<Option<u64>, OptionError> {
        match self.values.remove(key) {
            None => Ok(None),
            Some(OptionValue::Int(n)) => u64::try_from(n)
                .map(Some)
                .map_err(|_| OptionError::new(key, format!("{n} is negative"))),
            Some(other) => Err(expected(key, "a whole number", &other)),
        }
    }

    /// Takes a list of strings (a single string counts as a list of one).
    pub fn take_str_list(&mut self, key: &str) -> Result<Option<Vec<String>>, OptionError> {
        match self.values.remove(key) {
            None => Ok(None),
            Some(OptionValue::Str(s)) => Ok(Some(vec![s])),
            Some(OptionValue::List(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    OptionValue::Str(s) => Ok(s),
                    other => Err(expected(&format!("{key}[{i}]"), "a string", &other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(expected(key, "a list of strings", &other)),
        }
    }
}

fn expected(key: &str, what: &str, found: &OptionValue) -> OptionError {
    OptionError::new(key, format!("expected {what}, found {}", found.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_removes_the_key_and_checks_the_type() {
        let mut c = PluginConfig::new("webhook")
            .with("format", "alertmanager")
            .with("send", true)
            .with("n", 3i64);
        assert_eq!(
            c.take_choice("format", &["event", "alertmanager"]).unwrap(),
            Some("alertmanager")
        );
        assert!(!c.contains("format"));
        assert_eq!(c.take_u64("n").unwrap(), Some(3));
        let err = c.take_str("send").unwrap_err();
        assert_eq!(err.to_string(), "send: expected a string, found a boolean");
        assert_eq!(c.take_str("missing").unwrap(), None);
        assert_eq!(c.remaining().count(), 0);
    }

    #[test]
    fn choice_outside_the_list_names_the_choices() {
        let mut c = PluginConfig::new("wecom").with("msgtype", "html");
        let err = c.take_choice("msgtype", &["markdown", "text"]).unwrap_err();
        assert_eq!(err.key, "msgtype");
        assert_eq!(err.reason, "\"html\" is not one of: markdown, text");
    }

    #[test]
    fn lists_accept_a_single_string_and_name_a_bad_item() {
        let mut c = PluginConfig::new("wecom").with("m", "@all");
        assert_eq!(c.take_str_list("m").unwrap(), Some(vec!["@all".into()]));
        let mut c = PluginConfig::new("wecom").with(
            "m",
            OptionValue::List(vec!["a".into(), OptionValue::Int(1)]),
        );
        assert_eq!(c.take_str_list("m").unwrap_err().key, "m[1]");
    }

    #[test]
    fn debug_prints_keys_but_never_values() {
        let c = PluginConfig::new("slack").with("url", "https://hooks.slack.com/services/SECRET");
        let text = format!("{c:?}");
        assert!(text.contains("url"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn negative_numbers_are_rejected() {
        let mut c = PluginConfig::new("x").with("n", -1i64);
        assert_eq!(c.take_u64("n").unwrap_err().reason, "-1 is negative");
    }
}
