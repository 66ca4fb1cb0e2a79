//! `plugins:` — eviction (the cache's disk budget) and alerts, as validated config.
//!
//! The config checks everything it can without knowing the plugins: shapes, units, ranges,
//! event names, URLs, `${ENV_VAR}` references. Whether a `kind` or `policy` exists, and a
//! kind's own options, are checked by the plugin registry when the binary builds the plugins
//! (`hubcache::plugins::build`), which `check-config` and `serve` both do.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use hubcache_plugin_api::{EventKind, PluginConfig};

/// Built-in defaults of the `plugins:` section (the same as `conf/hubcache.yaml`).
pub mod defaults {
    use std::time::Duration;

    pub const POLICY: &str = "lru";
    /// Percentage points between the high watermark and the low one when only the high one
    /// is given.
    pub const LOW_BELOW_HIGH: u8 = 5;
    pub const MIN_AGE: Duration = Duration::ZERO;
    pub const REPEAT_EVERY: Duration = Duration::from_secs(3600);
    pub const SEND_RESOLVED: bool = true;
    pub const QUEUE: usize = 100;
    pub const TIMEOUT: Duration = Duration::from_secs(10);
}

/// `plugins:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginsConfig {
    pub eviction: EvictionConfig,
    /// Alert sinks, in config order.
    pub alerts: Vec<AlertConfig>,
}

/// `plugins.eviction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionConfig {
    /// The eviction policy's kind (`lru`, `fifo`, `large_first`, `lfuda`, ...).
    pub policy: String,
    /// Budget for all cached data in allocated bytes (all replicas). `None`: no budget.
    pub max_size: Option<u64>,
    /// A root whose filesystem is fuller than this is evicted from ... (`None`: no
    /// watermarks, only the budget and a full disk trigger eviction)
    pub high_watermark: Option<Share>,
    /// ... until it is at most this full. Set exactly when `high_watermark` is, and below it.
    pub low_watermark: Option<Share>,
    /// Evict blobs nobody read for this long. `None`: never.
    pub max_idle: Option<Duration>,
    /// Blobs filled less than this long ago are not evicted.
    pub min_age: Duration,
    /// Repos whose blobs are never evicted.
    pub pin: Vec<RepoGlob>,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            policy: defaults::POLICY.to_string(),
            max_size: None,
            high_watermark: None,
            low_watermark: None,
            max_idle: None,
            min_age: defaults::MIN_AGE,
            pin: Vec::new(),
        }
    }
}

impl EvictionConfig {
    /// The `(high, low)` watermarks, when set.
    pub fn watermarks(&self) -> Option<(Share, Share)> {
        self.high_watermark.zip(self.low_watermark)
    }

    /// The policy as a plugin config entry (policies take no options today).
    pub fn policy_config(&self) -> PluginConfig {
        PluginConfig::new(self.policy.clone())
    }
}

/// One entry of `plugins.alerts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// The sink's kind (`webhook`, `wecom`, `slack`, `log`, ...).
    pub kind: String,
    /// Unique among the sinks: names it in logs, metrics and `sink_failed` events.
    pub name: String,
    /// The events this sink receives; `None`: all.
    pub events: Option<BTreeSet<EventKind>>,
    /// Remind about an incident that is still going on at most this often.
    pub repeat_every: Duration,
    /// Also send a message when an incident is over.
    pub send_resolved: bool,
    /// Alerts waiting for this sink at most; more are dropped and counted.
    pub queue: usize,
    /// Time allowed for one delivery attempt.
    pub timeout: Duration,
    /// `url` and the kind's own options, `${ENV_VAR}`s expanded. `Debug` shows only the keys.
    pub options: PluginConfig,
}

impl AlertConfig {
    /// Whether this sink receives events of `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.as_ref().is_none_or(|set| set.contains(&kind))
    }
}

/// A share of a filesystem, in whole percent (`1..=100`). Written `90%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Share(pub u8);

impl Share {
    /// Parses `90%`: a whole number of percent from 1 to 100 followed by `%`.
    pub fn parse(text: &str) -> Result<Share, String> {
        let Some(number) = text.strip_suffix('%') else {
            return Err(format!(
                "\"{text}\" is not a percentage (write it with %, e.g. 90%)"
            ));
        };
        let value: u64 = number.parse().map_err(|_| {
            format!("\"{text}\" is not a whole percentage (e.g. 90%; no fractions or spaces)")
        })?;
        match value {
            0 => Err("0% is not allowed (must be more than 0%)".to_string()),
            1..=100 => Ok(Share(value as u8)),
            _ => Err(format!("{value}% is over 100%")),
        }
    }

    /// As a fraction of 1.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// `used` of `total` bytes exceeds this share.
    pub fn is_exceeded_by(self, used: u64, total: u64) -> bool {
        u128::from(used) * 100 > u128::from(total) * u128::from(self.0)
    }

    /// The bytes this share of `total` is (rounded down).
    pub fn of(self, total: u64) -> u64 {
        (u128::from(total) * u128::from(self.0) / 100) as u64
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A repo id or a glob over repo ids, as in `plugins.eviction.pin`: `owner/name` for a model,
/// `datasets/owner/name`, `spaces/owner/name` (`models/owner/name` is the same as
/// `owner/name`). In each part, `*` matches any run of characters and `?` one character;
/// neither crosses a `/`, so `meta-llama/*` pins every model of `meta-llama` but no dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoGlob {
    /// Normalised: without a `models/` prefix.
    pattern: String,
}

/// Characters allowed in a repo id, plus the glob characters.
fn is_pattern_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?')
}

impl RepoGlob {
    pub fn parse(text: &str) -> Result<RepoGlob, String> {
        if text.is_empty() {
            return Err(
                "is empty (write a repo id such as meta-llama/* or datasets/acme/eval)".into(),
            );
        }
        let pattern = text.strip_prefix("models/").unwrap_or(text);
        let parts: Vec<&str> = pattern.split('/').collect();
        let shape_ok = match parts.as_slice() {
            ["datasets" | "spaces", _] => false,
            [_, _] => true,
            ["datasets" | "spaces", _, _] => true,
            _ => false,
        };
        if !shape_ok {
            return Err(format!(
                "\"{text}\" is not a repo id (owner/name for a model, datasets/owner/name or \
                 spaces/owner/name)"
            ));
        }
        if parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(is_pattern_char))
        {
            return Err(format!(
                "\"{text}\" has an empty part or a character not allowed in repo ids (letters, \
                 digits, - _ . and the globs * ?)"
            ));
        }
        Ok(RepoGlob {
            pattern: pattern.to_string(),
        })
    }

    /// The pattern as written (without a `models/` prefix).
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `repo` (`owner/name`, `datasets/owner/name`, `spaces/owner/name`) matches.
    pub fn matches(&self, repo: &str) -> bool {
        let repo = repo.strip_prefix("models/").unwrap_or(repo);
        let mut want = self.pattern.split('/');
        let mut have = repo.split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some(w), Some(h)) if glob_match(w.as_bytes(), h.as_bytes()) => {}
                _ => return false,
            }
        }
    }
}

impl fmt::Display for RepoGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// `*` (any run) and `?` (one byte) matching, iterative with backtracking to the last `*`.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_whole_percentages_up_to_100() {
        assert_eq!(Share::parse("90%"), Ok(Share(90)));
        assert_eq!(Share::parse("100%"), Ok(Share(100)));
        assert_eq!(Share::parse("1%"), Ok(Share(1)));
        assert_eq!(Share::parse("101%").unwrap_err(), "101% is over 100%");
        assert!(Share::parse("0%").unwrap_err().contains("more than 0%"));
        assert!(Share::parse("90").unwrap_err().contains("write it with %"));
        assert!(Share::parse("92.5%")
            .unwrap_err()
            .contains("whole percentage"));
        assert!(Share::parse("-5%").is_err());
        assert_eq!(Share(90).to_string(), "90%");
    }

    #[test]
    fn share_compares_used_bytes_exactly() {
        assert!(!Share(90).is_exceeded_by(900, 1000));
        assert!(Share(90).is_exceeded_by(901, 1000));
        assert!(Share(100).is_exceeded_by(u64::MAX, u64::MAX - 1));
        assert_eq!(Share(80).of(1000), 800);
        assert_eq!(Share(50).of(u64::MAX), u64::MAX / 2);
    }

    #[test]
    fn repo_globs_match_within_parts() {
        let g = RepoGlob::parse("meta-llama/*").unwrap();
        assert!(g.matches("meta-llama/Llama-3.1-8B"));
        assert!(g.matches("models/meta-llama/x"));
        assert!(!g.matches("datasets/meta-llama/x"));
        assert!(!g.matches("meta-llama"));
        assert!(!g.matches("meta-llama-x/y"));
        let g = RepoGlob::parse("datasets/acme/eval").unwrap();
        assert!(g.matches("datasets/acme/eval"));
        assert!(!g.matches("datasets/acme/eval2"));
        assert!(!g.matches("acme/eval"));
        let g = RepoGlob::parse("models/*/bert-*-v?").unwrap();
        assert_eq!(g.as_str(), "*/bert-*-v?");
        assert!(g.matches("google/bert-base-v2"));
        assert!(!g.matches("google/bert-base-v10"));
        let g = RepoGlob::parse("spaces/*/*").unwrap();
        assert!(g.matches("spaces/a/b"));
        assert!(!g.matches("a/b"));
    }

    #[test]
    fn glob_backtracks_over_several_stars() {
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"**x", b"abx"));
        assert!(!glob_match(b"a*b", b"aXc"));
        assert!(!glob_match(b"?", b""));
    }

    #[test]
    fn malformed_repo_globs_are_rejected() {
        for bad in [
            "",
            "llama",
            "a/b/c",
            "models/a",
            "datasets/a",
            "a//b",
            "a/b c",
            "a/b/",
        ] {
            assert!(RepoGlob::parse(bad).is_err(), "{bad}");
        }
    }
}
