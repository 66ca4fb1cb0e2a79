//! hubcache's configuration: the YAML schema, its defaults and its validation.
//!
//! ```text
//! let config = Config::load(Path::new("/etc/hubcache.yaml"))?;   // or Config::embedded_default()
//! ```
//!
//! The embedded [`DEFAULT_CONFIG_YAML`] (`conf/hubcache.yaml`) is the complete default; a user
//! file only lists what it changes. Every key is documented in `docs/configuration.md`.
//!
//! Parsing goes YAML text → `serde_yaml::Value` (syntax errors, non-string keys, empty values
//! dropped) → private `raw` structs through `serde_path_to_error` (unknown keys, bad single
//! values, each with its key path) → [`Config`] (defaults applied, rules across keys checked).

mod cluster;
pub mod env;
mod error;
mod operate;
mod operate_raw;
pub mod plugins;
mod plugins_raw;
mod prefetch;
mod raw;
mod schema;
mod tls;
pub mod units;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod testing;

use std::path::{Path, PathBuf};

use serde_path_to_error::Segment;
use serde_yaml::Value;

pub use cluster::{ClusterConfig, ClusterSecret};
pub use error::ConfigError;
pub use plugins::{AlertConfig, EvictionConfig, PluginsConfig, RepoGlob, Share};
pub use prefetch::PrefetchConfig;
pub use schema::{
    defaults, AdminConfig, AdminToken, CacheConfig, Config, Durability, FillConfig, FillMode,
    HealthConfig, LogConfig, LogFormat, LogLevel, ServerConfig, Trust, UpstreamConfig,
    UpstreamProxy,
};
pub use tls::TlsConfig;
pub use units::{ByteSize, HumanDuration};

/// The default configuration file, built into the binary.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../conf/hubcache.yaml");

/// The key path shown for errors about the document as a whole.
const TOP_LEVEL: &str = "(top level)";

impl Config {
    /// Parses and validates a YAML configuration. Keys that are left out take their defaults.
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
        let mut value: Value = serde_yaml::from_str(yaml).map_err(|e| ConfigError::Syntax {
            reason: e.to_string(),
        })?;
        value.apply_merge().map_err(|e| ConfigError::Syntax {
            reason: e.to_string(),
        })?;
        match &value {
            Value::Null => value = Value::Mapping(Default::default()),
            Value::Mapping(_) => {}
            other => {
                return Err(ConfigError::Syntax {
                    reason: format!(
                        "the top level must be a mapping of keys such as `listen: 0.0.0.0:8090`, \
                         not {}",
                        describe(other)
                    ),
                })
            }
        }
        tidy(&mut value, &mut String::new())?;
        let raw: raw::RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = format_path(e.path());
            humanize(path, &e.into_inner().to_string())
        })?;
        raw.into_config()
    }

    /// Reads, parses and validates the configuration file at `path`. Errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml_str(&text).map_err(|error| ConfigError::InFile {
            file: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// The built-in default configuration ([`DEFAULT_CONFIG_YAML`]).
    pub fn embedded_default() -> Config {
        Config::from_yaml_str(DEFAULT_CONFIG_YAML)
            .expect("conf/hubcache.yaml is a valid config (checked by a unit test)")
    }

    /// The storage roots: `cache.dir` or `cache.roots`, made absolute against the current
    /// working directory and cleaned (no `.` components, no repeated or trailing `/`; `..` is
    /// kept). Call it before anything changes the working directory (e.g. daemonising).
    pub fn cache_roots(&self) -> Vec<PathBuf> {
        match &self.cache.dir {
            Some(dir) => vec![raw::normalize_root(dir)],
            None => self
                .cache
                .roots
                .iter()
                .map(|r| raw::normalize_root(r))
                .collect(),
        }
    }
}

/// Drops mapping entries whose value is null (so `key:` means "use the default") and rejects
/// keys that are not strings, recursively. `path` is the dotted key path of `value`.
fn tidy(value: &mut Value, path: &mut String) -> Result<(), ConfigError> {
    match value {
        Value::Mapping(map) => {
            map.retain(|k, v| !v.is_null() || null_means_off(path, k));
            for (key, child) in map.iter_mut() {
                let Value::String(key) = key else {
                    let at = if path.is_empty() { TOP_LEVEL } else { path };
                    return Err(ConfigError::invalid(
                        at,
                        format!("keys must be strings, found {}", describe(key)),
                    ));
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                tidy(child, path)?;
                path.truncate(len);
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                tidy(child, path)?;
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => tidy(&mut tagged.value, path)?,
        _ => {}
    }
    Ok(())
}

/// Whether `key` under the mapping at `path` is one whose `null` means "off".
fn null_means_off(path: &str, key: &Value) -> bool {
    let Some(key) = key.as_str() else {
        return false;
    };
    operate_raw::NULL_MEANS_OFF.iter().any(|full| {
        if path.is_empty() {
            return *full == key;
        }
        full.strip_suffix(key)
            .and_then(|prefix| prefix.strip_suffix('.'))
            .is_some_and(|prefix| prefix == path)
    })
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// `fill.segment`, `upstreams[1].url`, ...
fn format_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    if out.is_empty() {
        TOP_LEVEL.to_string()
    } else {
        out
    }
}

/// Turns serde's own messages into the config's wording; our own reasons pass through.
fn humanize(path: String, message: &str) -> ConfigError {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected = rest.split_once(", expected ").map(|(_, list)| list);
        let reason = match expected {
            Some(list) => {
                let list = list
                    .strip_prefix("one of ")
                    .unwrap_or(list)
                    .replace('`', "");
                format!("unknown key (expected one of: {list})")
            }
            None => "unknown key (no keys are accepted here)".to_string(),
        };
        return ConfigError::invalid(path, reason);
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let path = if path == TOP_LEVEL {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return ConfigError::invalid(path, "is required but missing");
    }
    if let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        let found = match found {
            "unit value" => "an empty value".to_string(),
            "map" => "a mapping".to_string(),
            "sequence" => "a list".to_string(),
            other => other.replace('`', ""),
        };
        let expected = match expected {
            "a boolean" => "true or false",
            "a sequence" => "a list",
            other => other,
        };
        return ConfigError::invalid(path, format!("expected {expected}, found {found}"));
    }
    ConfigError::invalid(path, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::testing::{assert_rejected, parse, reject};

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    #[test]
    fn embedded_default_parses_with_the_documented_values() {
        let c = Config::embedded_default();
        assert_eq!(
            c.listen,
            Some("0.0.0.0:8090".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(c.public_url, None);
        assert!(!c.offline);
        assert_eq!(c.revision_ttl, Duration::from_secs(60));
        assert_eq!(c.auth_ttl, Duration::from_secs(3600));
        assert_eq!(c.cache.dir, Some(PathBuf::from("./cache")));
        assert!(c.cache.roots.is_empty());
        assert_eq!(c.cache.replicas, 1);
        assert_eq!(c.cache.block_size, 8 * 1024 * 1024);
        assert_eq!(c.cache.durability, Durability::Os);
        let urls: Vec<&str> = c.upstreams.iter().map(|u| u.base()).collect();
        assert_eq!(urls, ["https://huggingface.co", "https://hf-mirror.com"]);
        for upstream in &c.upstreams {
            assert_eq!(upstream.proxy, None);
            assert_eq!(upstream.timeout, Duration::from_secs(30));
            assert!(!upstream.forward_token);
            let health = &upstream.health;
            assert_eq!(health.fail_after, 3);
            assert_eq!(health.slow_threshold, Duration::from_secs(10));
            assert_eq!(health.slow_after, 3);
            assert_eq!(health.probe_every, Duration::from_secs(5));
            assert_eq!(health.probe_path, "/");
            assert_eq!(health.recover_after, 3);
            assert_eq!(health, &HealthConfig::default());
        }
        let trust: Vec<Trust> = c.upstreams.iter().map(|u| u.trust).collect();
        assert_eq!(trust, [Trust::Origin, Trust::Mirror]);
        assert_eq!(c.fill.mode, FillMode::Complete);
        assert_eq!(c.fill.segment, 32 * 1024 * 1024);
        assert_eq!(c.fill.connections_per_file, 8);
        assert_eq!(c.fill.connections_total, 64);
        assert_eq!(c.fill.read_ahead, 16 * 1024 * 1024);
        assert_eq!(c.fill.background_fills, 4);
        assert_eq!(c.server.threads, defaults::threads());
        assert!(c.server.threads >= 1);
        assert_eq!(c.server.grace_period, Duration::from_secs(3600));
        assert_eq!(c.server.runtime_dir, None);
        assert_eq!(c.server.upgrade_sock, None);
        assert_eq!(c.server.pid_file, None);
        assert!(!c.watch_config);
        assert_eq!(c.server.max_connections, 4096);
        assert_eq!(c.server.header_timeout, Duration::from_secs(20));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.body_timeout, Duration::from_secs(30));
        assert_eq!(c.server.send_timeout, Duration::from_secs(60));
        assert_eq!(c.server.tcp_keepalive, Duration::from_secs(60));
        assert!(c.server.sendfile);
        assert_eq!(
            c.admin.listen,
            Some("127.0.0.1:8091".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(c.admin.token, None);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, LogLevel::Info);
    }

    #[test]
    fn embedded_default_equals_builtin_defaults_and_empty_file() {
        let embedded = Config::embedded_default();
        assert_eq!(embedded, Config::default());
        assert_eq!(parse(""), embedded);
        assert_eq!(parse("# only a comment\n"), embedded);
    }

    #[test]
    fn embedded_default_comments_every_key() {
        // Each key line is preceded by a comment line (or carries one).
        let lines: Vec<&str> = DEFAULT_CONFIG_YAML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start().trim_start_matches("- ");
            if trimmed.starts_with('#') || trimmed.is_empty() || !trimmed.contains(':') {
                continue;
            }
            let is_section = trimmed.ends_with(':');
            let commented_above = i > 0 && lines[i - 1].trim_start().starts_with('#');
            assert!(
                is_section || commented_above || line.contains(" # "),
                "line {} has no comment: {line}",
                i + 1
            );
        }
    }

    #[test]
    fn docs_describe_every_key_of_the_default_config() {
        fn keys(value: &Value, prefix: &str, out: &mut Vec<String>) {
            match value {
                Value::Mapping(map) => {
                    for (k, v) in map {
                        let k = k.as_str().unwrap();
                        let path = if prefix.is_empty() {
                            k.to_string()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        out.push(path.clone());
                        keys(v, &path, out);
                    }
                }
                Value::Sequence(items) => {
                    for item in items {
                        keys(item, &format!("{prefix}[]"), out);
                    }
                }
                _ => {}
            }
        }
        let docs = include_str!("../../docs/configuration.md");
        let value: Value = serde_yaml::from_str(DEFAULT_CONFIG_YAML).unwrap();
        let mut all = Vec::new();
        keys(&value, "", &mut all);
        assert!(all.len() > 20, "{all:?}");
        for key in all {
            assert!(
                docs.contains(&format!("# `{key}`")),
                "docs lack a section for {key}"
            );
        }
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse("upstreams: [{url: http://127.0.0.1:1234}]");
        assert_eq!(c.upstreams.len(), 1);
        assert_eq!(c.upstreams[0].url, url("http://127.0.0.1:1234/"));
        assert_eq!(c.upstreams[0].timeout, Duration::from_secs(30));
        assert_eq!(c.upstreams[0].proxy, None);
        let expected = Config {
            upstreams: c.upstreams.clone(),
            ..Config::default()
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn empty_values_mean_defaults() {
        let c = parse("cache:\nfill:\n  mode:\npublic_url: ~\nupstreams:\n");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn full_example_parses_every_key() {
        let c = parse(
            r#"
listen: "[::1]:9000"
public_url: https://mirror.internal:8443/hf/
offline: false
revision_ttl: 5m
auth_ttl: 1h30m
cache:
  roots: [/data1/hubcache, /data2/hubcache/]
  replicas: 2
  block_size: 16MiB
  durability: fsync
upstreams:
  - url: https://huggingface.co/
    proxy: http://user:secret@proxy.corp:3128
    timeout: 500ms
    trust: origin
    forward_token: false
    health:
      fail_after: 5
      slow_threshold: 2s
      slow_after: 4
      probe_every: 500ms
      probe_path: /api/whoami-v2
      recover_after: 2
  - url: https://hf-mirror.com
    proxy: env
    trust: mirror
    forward_token: true
fill:
  mode: on_demand
  segment: 64KiB
  connections_per_file: 2
  connections_total: 2
  read_ahead: 0
  background_fills: 1
server:
  threads: 3
  grace_period: 0s
  runtime_dir: /run/hc
  upgrade_sock: /run/hc.sock
  pid_file: /run/hc.pid
  max_connections: 100
  header_timeout: 5s
  idle_timeout: 1500ms
  body_timeout: 7s
  send_timeout: 2m
  tcp_keepalive: 30s
  sendfile: false
log: {level: debug, format: json}
watch_config: true
"#,
        );
        assert_eq!(c.listen, Some("[::1]:9000".parse::<SocketAddr>().unwrap()));
        assert_eq!(c.public_url, Some(url("https://mirror.internal:8443/hf")));
        assert_eq!(c.revision_ttl, Duration::from_secs(300));
        assert_eq!(c.auth_ttl, Duration::from_secs(5400));
        assert_eq!(c.cache.dir, None);
        assert_eq!(
            c.cache.roots,
            [
                PathBuf::from("/data1/hubcache"),
                PathBuf::from("/data2/hubcache/")
            ]
        );
        assert_eq!(c.cache.replicas, 2);
        assert_eq!(c.cache.block_size, 16 << 20);
        assert_eq!(c.cache.durability, Durability::Fsync);
        assert_eq!(c.upstreams[0].base(), "https://huggingface.co");
        let Some(UpstreamProxy::Url(proxy)) = c.upstreams[0].proxy.as_ref() else {
            panic!("{:?}", c.upstreams[0].proxy)
        };
        assert_eq!(proxy.host_str(), Some("proxy.corp"));
        assert_eq!(proxy.port(), Some(3128));
        assert_eq!(proxy.username(), "user");
        assert_eq!(proxy.password(), Some("secret"));
        assert_eq!(c.upstreams[0].timeout, Duration::from_millis(500));
        assert_eq!(c.upstreams[1].timeout, Duration::from_secs(30));
        assert_eq!(c.upstreams[0].trust, Trust::Origin);
        assert_eq!(c.upstreams[1].trust, Trust::Mirror);
        assert!(!c.upstreams[0].forward_token && c.upstreams[1].forward_token);
        assert_eq!(c.upstreams[1].proxy, Some(UpstreamProxy::Env));
        assert_eq!(
            c.upstreams[0].health,
            HealthConfig {
                fail_after: 5,
                slow_threshold: Duration::from_secs(2),
                slow_after: 4,
                probe_every: Duration::from_millis(500),
                probe_path: "/api/whoami-v2".into(),
                recover_after: 2,
            }
        );
        assert_eq!(c.upstreams[1].health, HealthConfig::default());
        assert_eq!(
            c.fill,
            FillConfig {
                mode: FillMode::OnDemand,
                segment: 64 << 10,
                connections_per_file: 2,
                connections_total: 2,
                read_ahead: 0,
                background_fills: 1,
                prefetch: PrefetchConfig::default(),
            }
        );
        assert_eq!(
            c.server,
            ServerConfig {
                threads: 3,
                grace_period: Duration::ZERO,
                runtime_dir: Some(PathBuf::from("/run/hc")),
                upgrade_sock: Some(PathBuf::from("/run/hc.sock")),
                pid_file: Some(PathBuf::from("/run/hc.pid")),
                max_connections: 100,
                header_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_millis(1500),
                body_timeout: Duration::from_secs(7),
                send_timeout: Duration::from_secs(120),
                tcp_keepalive: Duration::from_secs(30),
                sendfile: false,
            }
        );
        assert_eq!(c.server.idle_timeout_secs(), 2);
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(c.watch_config);
        assert_eq!(
            c.cache_roots(),
            [
                PathBuf::from("/data1/hubcache"),
                PathBuf::from("/data2/hubcache")
            ]
        );
    }

    #[test]
    fn every_duration_unit_parses_in_config() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("60s", Duration::from_secs(60)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("1h30m", Duration::from_secs(5400)),
            ("1d12h", Duration::from_secs(129_600)),
        ] {
            let c = parse(&format!(
                "revision_ttl: {text}\nserver: {{grace_period: {text}}}"
            ));
            assert_eq!(c.revision_ttl, expected, "{text}");
            assert_eq!(c.server.grace_period, expected, "{text}");
        }
    }

    #[test]
    fn every_size_unit_parses_in_config() {
        for (text, expected) in [
            ("65536", 65_536u64),
            ("65536B", 65_536),
            ("64KiB", 64 << 10),
            ("8MiB", 8 << 20),
            ("1GiB", 1 << 30),
            ("1TiB", 1 << 40),
            ("100KB", 100_000),
            ("10MB", 10_000_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
        ] {
            let c = parse(&format!("fill: {{segment: {text}, read_ahead: {text}}}"));
            assert_eq!(c.fill.segment, expected, "{text}");
            assert_eq!(c.fill.read_ahead, expected, "{text}");
        }
        assert_eq!(parse("cache: {block_size: 1GiB}").cache.block_size, 1 << 30);
        assert_eq!(
            parse("cache: {block_size: 65536}").cache.block_size,
            1 << 16
        );
    }

    #[test]
    fn unknown_top_level_key_is_rejected_with_its_path() {
        assert_rejected(
            "lisen: 0.0.0.0:80",
            "lisen",
            "unknown key (expected one of: listen,",
        );
    }

    #[test]
    fn unknown_nested_keys_are_rejected_with_their_path() {
        let err = reject("fill:\n  conection_total: 3\n");
        assert_eq!(err.key_path(), Some("fill.conection_total"));
        assert_eq!(
            err.to_string(),
            "fill.conection_total: unknown key (expected one of: mode, segment, \
             connections_per_file, connections_total, read_ahead, background_fills, prefetch)"
        );
        assert_rejected("cache: {directory: /x}", "cache.directory", "unknown key");
        assert_rejected("server: {workers: 2}", "server.workers", "unknown key");
        assert_rejected(
            "upstreams:\n  - url: http://a\n  - url: http://b\n    timout: 5s\n",
            "upstreams[1].timout",
            "expected one of: url, proxy, timeout",
        );
    }

    #[test]
    fn non_string_keys_are_rejected_with_their_path() {
        assert_rejected("cache: {1: x}", "cache", "keys must be strings");
    }

    #[test]
    fn bad_durations_are_rejected_with_path_and_reason() {
        let err = reject("revision_ttl: 60");
        assert_eq!(
            err.to_string(),
            "revision_ttl: \"60\" has no unit (use ms, s, m, h or d)"
        );
        assert_rejected("auth_ttl: 1.5h", "auth_ttl", "fraction");
        assert_rejected("auth_ttl: -5s", "auth_ttl", "negative");
        assert_rejected("auth_ttl: 5 min", "auth_ttl", "space");
        assert_rejected("auth_ttl: 5min", "auth_ttl", "unknown unit \"min\"");
        assert_rejected(
            "server: {grace_period: 10}",
            "server.grace_period",
            "has no unit",
        );
        assert_rejected(
            "upstreams: [{url: http://a, timeout: 0s}]",
            "upstreams[0].timeout",
            "more than 0s",
        );
        assert_rejected(
            "upstreams: [{url: http://a, timeout: [1]}]",
            "upstreams[0].timeout",
            "expected a duration",
        );
    }

    #[test]
    fn bad_sizes_are_rejected_with_path_and_reason() {
        let err = reject("cache: {block_size: 7MiB}");
        assert_eq!(
            err.to_string(),
            "cache.block_size: \"7MiB\" is not a power of two (e.g. 4MiB, 8MiB, 16MiB)"
        );
        assert_rejected(
            "cache: {block_size: 32KiB}",
            "cache.block_size",
            "out of range",
        );
        assert_rejected(
            "cache: {block_size: 2GiB}",
            "cache.block_size",
            "out of range",
        );
        assert_rejected(
            "cache: {block_size: 8mib}",
            "cache.block_size",
            "unknown unit",
        );
        assert_rejected("fill: {segment: 1.5MiB}", "fill.segment", "fraction");
        assert_rejected("fill: {segment: -1}", "fill.segment", "negative");
        assert_rejected("fill: {segment: 1000}", "fill.segment", "too small");
        assert_rejected(
            "fill: {read_ahead: 99999999999999TiB}",
            "fill.read_ahead",
            "too large",
        );
    }

    #[test]
    fn bad_upstream_urls_are_rejected_with_path_and_reason() {
        let err = reject("upstreams:\n  - url: https://huggingface.co\n  - url: ftp://x.org\n");
        assert_eq!(
            err.to_string(),
            "upstreams[1].url: scheme \"ftp\" is not supported (use http or https)"
        );
        assert_rejected(
            "upstreams: [{url: huggingface.co}]",
            "upstreams[0].url",
            "absolute",
        );
        assert_rejected(
            "upstreams: [{url: 'https://h.co/?a=1'}]",
            "upstreams[0].url",
            "query",
        );
        assert_rejected(
            "upstreams: [{url: 'https://h.co/#x'}]",
            "upstreams[0].url",
            "fragment",
        );
        assert_rejected(
            "upstreams: [{url: 'https://u:p@h.co'}]",
            "upstreams[0].url",
            "credentials",
        );
        assert_rejected("upstreams: [{url: ''}]", "upstreams[0].url", "empty");
        assert_rejected(
            "upstreams: [{proxy: http://p:1}]",
            "upstreams[0].url",
            "required",
        );
        assert_rejected(
            "upstreams: [{url: 'https://h.co'}, {url: 'https://h.co/'}]",
            "upstreams[1].url",
            "already upstreams[0].url",
        );
        assert_rejected("upstreams: {url: http://a}", "upstreams", "expected a list");
    }

    #[test]
    fn bad_proxy_and_public_url_are_rejected_with_path_and_reason() {
        assert_rejected(
            "upstreams: [{url: http://a, proxy: 'https://p:3128'}]",
            "upstreams[0].proxy",
            "scheme \"https\" is not supported",
        );
        assert_rejected(
            "upstreams: [{url: http://a, proxy: 'socks5://p:1080'}]",
            "upstreams[0].proxy",
            "not supported",
        );
        assert_rejected(
            "upstreams: [{url: http://a, proxy: 'http://p:3128/x'}]",
            "upstreams[0].proxy",
            "has a path",
        );
        assert_rejected(
            "public_url: ftp://m.internal",
            "public_url",
            "scheme \"ftp\" is not supported (use http or https)",
        );
        assert_rejected("public_url: 'http://m/?q'", "public_url", "query");
    }

    #[test]
    fn bad_health_settings_are_rejected_with_path_and_reason() {
        for key in ["fail_after", "slow_after", "recover_after"] {
            assert_rejected(
                &format!("upstreams: [{{url: http://a}}, {{url: http://b, health: {{{key}: 0}}}}]"),
                &format!("upstreams[1].health.{key}"),
                "at least 1",
            );
            assert_rejected(
                &format!("upstreams: [{{url: http://a, health: {{{key}: 1001}}}}]"),
                &format!("upstreams[0].health.{key}"),
                "too large",
            );
        }
        for key in ["slow_threshold", "probe_every"] {
            assert_rejected(
                &format!("upstreams: [{{url: http://a, health: {{{key}: 0s}}}}]"),
                &format!("upstreams[0].health.{key}"),
                "more than 0s",
            );
            assert_rejected(
                &format!("upstreams: [{{url: http://a, health: {{{key}: 5}}}}]"),
                &format!("upstreams[0].health.{key}"),
                "has no unit",
            );
        }
        assert_rejected(
            "upstreams: [{url: http://a, health: {probe_path: api/x}}]",
            "upstreams[0].health.probe_path",
            "does not start with /",
        );
        assert_rejected(
            "upstreams: [{url: http://a, health: {probe_path: '/a b'}}]",
            "upstreams[0].health.probe_path",
            "contains a space",
        );
        assert_rejected(
            "upstreams: [{url: http://a, health: {open_for: 5s}}]",
            "upstreams[0].health.open_for",
            "expected one of: fail_after, slow_threshold, slow_after, probe_every, probe_path, \
             recover_after",
        );
        assert_rejected(
            "upstreams: [{url: http://a, health: 3}]",
            "upstreams[0].health",
            "expected a mapping of health settings",
        );
    }

    #[test]
    fn proxy_env_is_accepted_and_other_words_are_not() {
        let c = parse("upstreams: [{url: https://h.co, proxy: env}]");
        assert_eq!(c.upstreams[0].proxy, Some(UpstreamProxy::Env));
        assert_rejected(
            "upstreams: [{url: http://a, proxy: environment}]",
            "upstreams[0].proxy",
            "is neither env nor a proxy URL (write env for the HTTPS_PROXY / NO_PROXY",
        );
    }

    #[test]
    fn bad_listen_is_rejected_with_path_and_reason() {
        assert_rejected("listen: localhost:8090", "listen", "not an ip:port");
        assert_rejected("listen: 0.0.0.0", "listen", "not an ip:port");
        assert_rejected("listen: '0.0.0.0:99999'", "listen", "not an ip:port");
        assert_rejected("listen: 8090", "listen", "found 8090");
    }

    #[test]
    fn bad_scalar_types_are_rejected_with_path_and_reason() {
        assert_rejected("offline: yes", "offline", "expected true or false");
        assert_rejected(
            "cache: {durability: sync}",
            "cache.durability",
            "use fsync or os",
        );
        assert_rejected(
            "fill: {mode: lazy}",
            "fill.mode",
            "use complete or on_demand",
        );
        assert_rejected(
            "fill: {connections_per_file: -1}",
            "fill.connections_per_file",
            "negative",
        );
        assert_rejected(
            "fill: {connections_per_file: 0}",
            "fill.connections_per_file",
            "at least 1",
        );
        assert_rejected(
            "fill: {background_fills: 0}",
            "fill.background_fills",
            "at least 1",
        );
        assert_rejected(
            "fill: {background_fills: '3'}",
            "fill.background_fills",
            "whole number",
        );
        assert_rejected("server: {threads: 0}", "server.threads", "at least 1");
        assert_rejected("server: {threads: many}", "server.threads", "use auto");
        assert_rejected("server: {pid_file: ''}", "server.pid_file", "empty");
        assert_rejected(
            "server: {max_connections: 0}",
            "server.max_connections",
            "at least 1",
        );
        assert_rejected(
            "server: {max_connections: -5}",
            "server.max_connections",
            "negative",
        );
        assert_rejected(
            "server: {sendfile: maybe}",
            "server.sendfile",
            "true or false",
        );
        assert_rejected(
            "server: {idle_timeout: 500ms}",
            "server.idle_timeout",
            "at least 1s",
        );
        for key in [
            "header_timeout",
            "body_timeout",
            "send_timeout",
            "tcp_keepalive",
        ] {
            assert_rejected(
                &format!("server: {{{key}: 0s}}"),
                &format!("server.{key}"),
                "more than 0s",
            );
            assert_rejected(
                &format!("server: {{{key}: 10}}"),
                &format!("server.{key}"),
                "unit",
            );
        }
        assert_rejected("server: {runtime_dir: ''}", "server.runtime_dir", "empty");
        assert_rejected("cache: 5", "cache", "expected a mapping of cache settings");
    }

    #[test]
    fn connections_total_below_per_file_is_rejected() {
        assert_rejected(
            "fill: {connections_per_file: 100}",
            "fill.connections_total",
            "64 is less than fill.connections_per_file (100)",
        );
    }

    #[test]
    fn empty_upstreams_rejected_unless_offline() {
        assert_rejected("upstreams: []", "upstreams", "offline: true");
        let c = parse("offline: true\nupstreams: []");
        assert!(c.offline);
        assert!(c.upstreams.is_empty());
    }

    #[test]
    fn dir_and_roots_together_are_rejected() {
        assert_rejected(
            "cache: {dir: /a, roots: [/b, /c]}",
            "cache.roots",
            "cannot be used together with cache.dir",
        );
        assert_rejected("cache: {roots: []}", "cache.roots", "is empty");
        assert_rejected(
            "cache: {roots: [/a, /a/./]}",
            "cache.roots[1]",
            "cache.roots[0]",
        );
    }

    #[test]
    fn replicas_beyond_roots_are_rejected() {
        assert_rejected(
            "cache: {replicas: 2}",
            "cache.replicas",
            "2 copies need at least 2 roots",
        );
        assert_rejected(
            "cache: {roots: [/a, /b], replicas: 3}",
            "cache.replicas",
            "but 2 are configured",
        );
        assert_rejected("cache: {replicas: 0}", "cache.replicas", "at least 1");
        assert_eq!(
            parse("cache: {roots: [/a, /b], replicas: 2}")
                .cache
                .replicas,
            2
        );
    }

    #[test]
    fn path_prefixed_upstream_url_is_kept() {
        let c = parse("upstreams: [{url: 'https://example.org/hf/mirror/'}]");
        assert_eq!(c.upstreams[0].url.path(), "/hf/mirror");
        assert_eq!(c.upstreams[0].base(), "https://example.org/hf/mirror");
        let c = parse("upstreams: [{url: 'http://10.0.0.1:8080'}]");
        assert_eq!(c.upstreams[0].base(), "http://10.0.0.1:8080");
    }

    #[test]
    fn cache_roots_are_absolute_and_normalised() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(Config::default().cache_roots(), [cwd.join("cache")]);
        let c = parse("cache: {dir: '/srv//hubcache/./'}");
        assert_eq!(c.cache_roots(), [PathBuf::from("/srv/hubcache")]);
        let c = parse("cache: {roots: [/d1/, data2]}");
        assert_eq!(c.cache_roots(), [PathBuf::from("/d1"), cwd.join("data2")]);
    }

    #[test]
    fn yaml_syntax_and_shape_errors_are_reported() {
        let err = reject("listen: [unclosed");
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(err.to_string().starts_with("invalid YAML: "), "{err}");
        let err = reject("- listen: 0.0.0.0:1");
        assert!(
            err.to_string().contains("top level must be a mapping"),
            "{err}"
        );
        let err = reject("a: 1\na: 2\n");
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hubcache.yaml");
        std::fs::write(&file, "offline: true\nupstreams: []\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert!(c.offline);
    }

    #[test]
    fn load_of_a_missing_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing.yaml");
        let err = Config::load(&file).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn load_of_an_invalid_file_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "fill:\n  segment: 7\n").unwrap();
        let err = Config::load(&file).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: fill.segment: \"7B\" is too small (must be at least 64KiB)",
                file.display()
            )
        );
        assert_eq!(err.key_path(), Some("fill.segment"));
    }
}
