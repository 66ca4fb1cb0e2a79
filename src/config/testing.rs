//! Helpers for the config tests: parse through the whole loader, or expect an error about a key.

use super::{Config, ConfigError};

/// The config `yaml` describes (panics with the error otherwise).
pub fn parse(yaml: &str) -> Config {
    Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{yaml}\n=> {e}"))
}

/// The error `yaml` is refused with (panics if it is accepted).
pub fn reject(yaml: &str) -> ConfigError {
    match Config::from_yaml_str(yaml) {
        Ok(config) => panic!("accepted:\n{yaml}\n=> {config:?}"),
        Err(e) => e,
    }
}

/// Asserts `yaml` is refused with an error about `path` whose message says `reason_part`.
#[track_caller]
pub fn assert_rejected(yaml: &str, path: &str, reason_part: &str) -> String {
    let err = reject(yaml);
    let text = err.to_string();
    assert_eq!(err.key_path(), Some(path), "{text}");
    assert!(text.starts_with(&format!("{path}: ")), "{text}");
    assert!(
        text.contains(reason_part),
        "expected {reason_part:?} in {text}"
    );
    text
}
