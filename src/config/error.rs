//! Errors from reading, parsing and validating the configuration.

use std::path::PathBuf;

/// Why a configuration was rejected.
///
/// Every message about a key starts with the key's dotted path, e.g.
/// `cache.block_size: "7MiB" is not a power of two` or
/// `upstreams[1].url: scheme "ftp" is not supported (use http or https)`.
/// [`Config::load`](super::Config::load) puts the file name in front of that.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not a YAML document this config can be read from (a syntax error, several
    /// documents, or a top level that is not a mapping of keys).
    #[error("invalid YAML: {reason}")]
    Syntax { reason: String },
    /// A key has a bad value, is unknown, or is missing. `path` is the dotted key path
    /// (`fill.segment`, `upstreams[0].url`).
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// Any of the above, found in `file`.
    #[error("{}: {error}", file.display())]
    InFile {
        file: PathBuf,
        error: Box<ConfigError>,
    },
}

impl ConfigError {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The dotted path of the offending key, when the error is about one key.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::InFile { error, .. } => error.key_path(),
            ConfigError::Io { .. } | ConfigError::Syntax { .. } => None,
        }
    }

    /// The reason without the key path or the file name.
    pub fn reason(&self) -> String {
        match self {
            ConfigError::Invalid { reason, .. } | ConfigError::Syntax { reason } => reason.clone(),
            ConfigError::Io { source, .. } => source.to_string(),
            ConfigError::InFile { error, .. } => error.reason(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_displays_path_then_reason() {
        let err = ConfigError::invalid("cache.block_size", "\"7MiB\" is not a power of two");
        assert_eq!(
            err.to_string(),
            "cache.block_size: \"7MiB\" is not a power of two"
        );
        assert_eq!(err.key_path(), Some("cache.block_size"));
    }

    #[test]
    fn in_file_displays_file_then_path_then_reason() {
        let err = ConfigError::InFile {
            file: PathBuf::from("/etc/hubcache.yaml"),
            error: Box::new(ConfigError::invalid("listen", "bad")),
        };
        assert_eq!(err.to_string(), "/etc/hubcache.yaml: listen: bad");
        assert_eq!(err.key_path(), Some("listen"));
        assert_eq!(err.reason(), "bad");
    }
}
