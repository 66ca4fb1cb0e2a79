//! `fill.prefetch`: fetching the small regular files of a listed commit ahead of the client.

use serde::Deserialize;

use super::error::ConfigError;
use super::units::ByteSize;

/// `fill.prefetch` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of prefetch settings (enabled, max_file_size, parallel)"
)]
pub(super) struct RawPrefetch {
    enabled: Option<bool>,
    max_file_size: Option<ByteSize>,
    parallel: Option<usize>,
}

/// `fill.prefetch`: after the hub lists a commit's files, fetch its regular (non-LFS) files
/// of at most `max_file_size` bytes, `parallel` at a time, before any client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchConfig {
    pub enabled: bool,
    pub max_file_size: u64,
    pub parallel: usize,
}

/// Upper bound of `fill.prefetch.parallel`.
const MAX_PARALLEL: usize = 64;

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_file_size: 1 << 20,
            parallel: 16,
        }
    }
}

impl RawPrefetch {
    pub(super) fn into_config(self) -> Result<PrefetchConfig, ConfigError> {
        let default = PrefetchConfig::default();
        let parallel = self.parallel.unwrap_or(default.parallel);
        if !(1..=MAX_PARALLEL).contains(&parallel) {
            return Err(ConfigError::invalid(
                "fill.prefetch.parallel",
                format!("{parallel} is out of range (1 to {MAX_PARALLEL})"),
            ));
        }
        Ok(PrefetchConfig {
            enabled: self.enabled.unwrap_or(default.enabled),
            max_file_size: self.max_file_size.map_or(default.max_file_size, |s| s.0),
            parallel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<PrefetchConfig, ConfigError> {
        let raw: RawPrefetch = serde_yaml::from_str(yaml).unwrap();
        raw.into_config()
    }

    #[test]
    fn prefetch_defaults_and_given_values() {
        assert_eq!(parse("{}").unwrap(), PrefetchConfig::default());
        let c = parse("{enabled: false, max_file_size: 64KiB, parallel: 2}").unwrap();
        assert_eq!(
            c,
            PrefetchConfig {
                enabled: false,
                max_file_size: 64 << 10,
                parallel: 2
            }
        );
    }

    #[test]
    fn prefetch_parallel_out_of_range_names_the_key() {
        for yaml in ["{parallel: 0}", "{parallel: 65}"] {
            let err = parse(yaml).unwrap_err().to_string();
            assert!(err.starts_with("fill.prefetch.parallel"), "{err}");
        }
    }
}
