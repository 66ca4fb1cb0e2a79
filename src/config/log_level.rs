//! `log_level`: which log lines are written, as a list of directives: `info`, `debug`,
//! `warn,hubcache::fetch=debug`, `info,pingora_proxy=debug`. Checked here so that a typo is a
//! config error (with the key path), not a silently ignored directive.

use std::fmt;

/// The level names, quietest first.
pub const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A validated `log_level` value (env_logger directive syntax, without `/regex` filters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(String);

impl LogLevel {
    /// The directives as written (normalised: no spaces, lowercase levels).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(text: &str) -> Result<LogLevel, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty (use e.g. info, debug, or warn,hubcache=debug)".into());
        }
        if text.contains('/') {
            return Err(format!(
                "\"{text}\": /regex filters are not supported (list levels and modules only)"
            ));
        }
        let mut out = Vec::new();
        for directive in text.split(',').map(str::trim) {
            out.push(parse_directive(directive).map_err(|reason| format!("\"{text}\": {reason}"))?);
        }
        Ok(LogLevel(out.join(",")))
    }
}

impl Default for LogLevel {
    fn default() -> Self {
        LogLevel("info".into())
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn level(text: &str) -> Option<&'static str> {
    LEVELS
        .iter()
        .copied()
        .find(|l| l.eq_ignore_ascii_case(text))
}

fn is_module(text: &str) -> bool {
    !text.is_empty()
        && text.split("::").all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn parse_directive(directive: &str) -> Result<String, String> {
    if directive.is_empty() {
        return Err("has an empty directive (two commas in a row?)".into());
    }
    match directive.split_once('=') {
        Some((module, lvl)) => {
            let (module, lvl) = (module.trim(), lvl.trim());
            if !is_module(module) {
                return Err(format!(
                    "\"{module}\" is not a module path (e.g. hubcache::fetch)"
                ));
            }
            let lvl = level(lvl).ok_or_else(|| {
                format!(
                    "\"{lvl}\" is not a level (use one of {})",
                    LEVELS.join(", ")
                )
            })?;
            Ok(format!("{module}={lvl}"))
        }
        None => level(directive).map(str::to_string).ok_or_else(|| {
            format!(
                "\"{directive}\" is not a level (use one of {}, or module=level)",
                LEVELS.join(", ")
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_module_directives_are_accepted_and_normalised() {
        for (text, expected) in [
            ("info", "info"),
            ("DEBUG", "debug"),
            (
                " warn , hubcache::fetch = debug ",
                "warn,hubcache::fetch=debug",
            ),
            ("info,pingora_proxy=trace", "info,pingora_proxy=trace"),
        ] {
            assert_eq!(LogLevel::parse(text).unwrap().as_str(), expected, "{text}");
        }
    }

    #[test]
    fn typos_are_rejected_with_a_reason() {
        for (text, reason) in [
            ("verbose", "not a level (use one of"),
            ("hubcache", "or module=level"),
            ("info,,debug", "empty directive"),
            ("hubcache=loud", "not a level"),
            ("hub cache=info", "not a module path"),
            ("info/foo", "regex"),
            ("", "is empty"),
        ] {
            let err = LogLevel::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
