//! The YAML shape as serde sees it, and its validation into [`Config`].
//!
//! Every key is optional here (`None` = take the default) so that cross-field rules can tell "not
//! given" from "given". Values are parsed and checked one by one during deserialisation, so
//! `serde_path_to_error` knows the key path of a bad one; rules that involve several keys are
//! checked in [`RawConfig::into_config`], which names the key path itself.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::ConfigError;
use super::operate_raw::{RawAdmin, RawLog};
use super::schema::{
    defaults, CacheConfig, Config, Durability, FillConfig, FillMode, HealthConfig, LogConfig,
    ServerConfig, Trust, UpstreamConfig, UpstreamProxy,
};
use super::units::{ByteSize, HumanDuration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of settings")]
pub(crate) struct RawConfig {
    #[serde(default)]
    listen: super::tls::PlainListen,
    tls: Option<super::tls::RawTls>,
    public_url: Option<PublicUrl>,
    offline: Option<bool>,
    revision_ttl: Option<HumanDuration>,
    auth_ttl: Option<HumanDuration>,
    cache: Option<RawCache>,
    upstreams: Option<Vec<RawUpstream>>,
    fill: Option<RawFill>,
    server: Option<RawServer>,
    plugins: Option<super::plugins_raw::RawPlugins>,
    watch_config: Option<bool>,
    admin: Option<RawAdmin>,
    log: Option<RawLog>,
    cluster: Option<super::cluster::RawCluster>,
    pins: Option<Vec<NonEmptyPath>>,
    pin_refresh: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of cache settings (dir, roots, ...)"
)]
struct RawCache {
    dir: Option<NonEmptyPath>,
    roots: Option<Vec<NonEmptyPath>>,
    replicas: Option<Count>,
    block_size: Option<ByteSize>,
    durability: Option<Named<Durability>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with url and optionally proxy, timeout, trust, forward_token and health"
)]
struct RawUpstream {
    url: UpstreamUrl,
    proxy: Option<ProxySetting>,
    timeout: Option<HumanDuration>,
    trust: Option<Named<Trust>>,
    forward_token: Option<bool>,
    health: Option<RawHealth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of health settings (fail_after, slow_threshold, ...)"
)]
struct RawHealth {
    fail_after: Option<Count>,
    slow_threshold: Option<HumanDuration>,
    slow_after: Option<Count>,
    probe_every: Option<HumanDuration>,
    probe_path: Option<ProbePath>,
    recover_after: Option<Count>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of fill settings (mode, segment, ...)"
)]
struct RawFill {
    mode: Option<Named<FillMode>>,
    segment: Option<ByteSize>,
    connections_per_file: Option<Count>,
    connections_total: Option<Count>,
    read_ahead: Option<ByteSize>,
    background_fills: Option<Count>,
    prefetch: Option<super::prefetch::RawPrefetch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of server settings (threads, ...)"
)]
struct RawServer {
    threads: Option<Threads>,
    grace_period: Option<HumanDuration>,
    runtime_dir: Option<NonEmptyPath>,
    upgrade_sock: Option<NonEmptyPath>,
    pid_file: Option<NonEmptyPath>,
    max_connections: Option<Count>,
    header_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    body_timeout: Option<HumanDuration>,
    send_timeout: Option<HumanDuration>,
    tcp_keepalive: Option<HumanDuration>,
    sendfile: Option<bool>,
}

impl RawConfig {
    /// Applies defaults and checks the rules that involve more than one value.
    pub(crate) fn into_config(self) -> Result<Config, ConfigError> {
        let offline = self.offline.unwrap_or(false);
        let cache = self.cache.unwrap_or_default().into_config()?;

        let upstreams = match self.upstreams {
            None => Config::default().upstreams,
            Some(list) => {
                if list.is_empty() && !offline {
                    return Err(ConfigError::invalid(
                        "upstreams",
                        "is empty: list at least one upstream, or set offline: true",
                    ));
                }
                let mut seen: HashMap<String, usize> = HashMap::new();
                let mut upstreams = Vec::with_capacity(list.len());
                for (i, raw) in list.into_iter().enumerate() {
                    let upstream = raw.into_config(i)?;
                    if let Some(first) = seen.insert(upstream.base().to_string(), i) {
                        return Err(ConfigError::invalid(
                            format!("upstreams[{i}].url"),
                            format!(
                                "\"{}\" is already upstreams[{first}].url (list each upstream once)",
                                upstream.base()
                            ),
                        ));
                    }
                    upstreams.push(upstream);
                }
                upstreams
            }
        };

        let fill = self.fill.unwrap_or_default().into_config()?;
        let server = self.server.unwrap_or_default().into_config()?;
        let plugins = self.plugins.unwrap_or_default().into_config()?;
        let admin = self.admin.unwrap_or_default().into_config();
        let (listen, tls) = super::tls::listeners(
            self.listen,
            self.tls,
            Config::default().listen,
            admin.listen,
        )?;
        let cluster = self.cluster.map(|c| c.into_config()).transpose()?;
        let log = self.log.unwrap_or_default();
        let log = LogConfig {
            format: log.format.map(|f| f.0).unwrap_or_default(),
            level: log.level.map(|l| l.0).unwrap_or_default(),
        };

        let pin_refresh = self.pin_refresh.map_or(defaults::PIN_REFRESH, Into::into);
        if pin_refresh.is_zero() {
            return Err(ConfigError::invalid(
                "pin_refresh",
                "must be more than 0 (how often pinned branches are resolved again)",
            ));
        }

        Ok(Config {
            listen,
            tls,
            public_url: self.public_url.map(|u| u.0),
            offline,
            revision_ttl: self.revision_ttl.map_or(defaults::REVISION_TTL, Into::into),
            auth_ttl: self.auth_ttl.map_or(defaults::AUTH_TTL, Into::into),
            cache,
            upstreams,
            fill,
            server,
            plugins,
            watch_config: self.watch_config.unwrap_or(false),
            admin,
            log,
            cluster,
            pins: self
                .pins
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.0)
                .collect(),
            pin_refresh,
        })
    }
}

impl RawCache {
    fn into_config(self) -> Result<CacheConfig, ConfigError> {
        let (dir, roots) = match (self.dir, self.roots) {
            (Some(_), Some(_)) => return Err(ConfigError::invalid(
                "cache.roots",
                "cannot be used together with cache.dir (use dir for one root, roots for several)",
            )),
            (None, Some(roots)) if roots.is_empty() => {
                return Err(ConfigError::invalid(
                    "cache.roots",
                    "is empty: list at least one directory, or use cache.dir",
                ))
            }
            (None, Some(roots)) => {
                let roots: Vec<PathBuf> = roots.into_iter().map(|p| p.0).collect();
                let normal: Vec<PathBuf> = roots.iter().map(|r| normalize_root(r)).collect();
                for (i, root) in roots.iter().enumerate() {
                    if let Some(first) = normal[..i].iter().position(|r| *r == normal[i]) {
                        return Err(ConfigError::invalid(
                            format!("cache.roots[{i}]"),
                            format!(
                                "\"{}\" is the same directory as cache.roots[{first}]",
                                root.display()
                            ),
                        ));
                    }
                }
                (None, roots)
            }
            (Some(dir), None) => (Some(dir.0), Vec::new()),
            (None, None) => (Some(PathBuf::from(defaults::CACHE_DIR)), Vec::new()),
        };
        let root_count = if dir.is_some() { 1 } else { roots.len() };

        let replicas = self.replicas.map_or(defaults::REPLICAS, |c| c.0);
        if replicas == 0 {
            return Err(ConfigError::invalid("cache.replicas", "must be at least 1"));
        }
        if replicas > root_count {
            return Err(ConfigError::invalid(
                "cache.replicas",
                format!(
                    "{replicas} copies need at least {replicas} roots, but {root_count} {} configured \
                     (each copy goes to a different root)",
                    if root_count == 1 { "is" } else { "are" }
                ),
            ));
        }

        let block_size = self.block_size.map_or(defaults::BLOCK_SIZE, |s| s.0);
        if !block_size.is_power_of_two() {
            return Err(ConfigError::invalid(
                "cache.block_size",
                format!(
                    "\"{}\" is not a power of two (e.g. 4MiB, 8MiB, 16MiB)",
                    ByteSize(block_size)
                ),
            ));
        }
        if !(defaults::MIN_BLOCK_SIZE..=defaults::MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(ConfigError::invalid(
                "cache.block_size",
                format!(
                    "\"{}\" is out of range (must be {} to {})",
                    ByteSize(block_size),
                    ByteSize(defaults::MIN_BLOCK_SIZE),
                    ByteSize(defaults::MAX_BLOCK_SIZE)
                ),
            ));
        }

        Ok(CacheConfig {
            dir,
            roots,
            replicas,
            block_size,
            durability: self.durability.map(|d| d.0).unwrap_or_default(),
        })
    }
}

impl RawUpstream {
    fn into_config(self, index: usize) -> Result<UpstreamConfig, ConfigError> {
        let timeout = self.timeout.map_or(defaults::UPSTREAM_TIMEOUT, Into::into);
        if timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("upstreams[{index}].timeout"),
                "must be more than 0s",
            ));
        }
        let trust = self
            .trust
            .map_or_else(|| Trust::default_for(&self.url.0), |t| t.0);
        let health = self.health.unwrap_or_default().into_config(index)?;
        Ok(UpstreamConfig {
            url: self.url.0,
            proxy: self.proxy.map(|p| p.0),
            timeout,
            trust,
            forward_token: self.forward_token.unwrap_or(false),
            health,
        })
    }
}

impl RawHealth {
    fn into_config(self, index: usize) -> Result<HealthConfig, ConfigError> {
        let key = |name: &str| format!("upstreams[{index}].health.{name}");
        let at_least_one = |name: &str, value: Option<Count>, default: u32| {
            let n = value.map_or(default as usize, |c| c.0);
            match u32::try_from(n) {
                Ok(0) => Err(ConfigError::invalid(key(name), "must be at least 1")),
                Ok(n) if n <= MAX_HEALTH_COUNT => Ok(n),
                _ => Err(ConfigError::invalid(
                    key(name),
                    format!("{n} is too large (at most {MAX_HEALTH_COUNT})"),
                )),
            }
        };
        let positive = |name: &str, value: Option<HumanDuration>, default: std::time::Duration| {
            let d = value.map_or(default, Into::into);
            if d.is_zero() {
                Err(ConfigError::invalid(key(name), "must be more than 0s"))
            } else {
                Ok(d)
            }
        };
        Ok(HealthConfig {
            fail_after: at_least_one("fail_after", self.fail_after, defaults::FAIL_AFTER)?,
            slow_threshold: positive(
                "slow_threshold",
                self.slow_threshold,
                defaults::SLOW_THRESHOLD,
            )?,
            slow_after: at_least_one("slow_after", self.slow_after, defaults::SLOW_AFTER)?,
            probe_every: positive("probe_every", self.probe_every, defaults::PROBE_EVERY)?,
            probe_path: self
                .probe_path
                .map_or_else(|| defaults::PROBE_PATH.to_string(), |p| p.0),
            recover_after: at_least_one(
                "recover_after",
                self.recover_after,
                defaults::RECOVER_AFTER,
            )?,
        })
    }
}

/// Largest `fail_after`, `slow_after` and `recover_after`.
const MAX_HEALTH_COUNT: u32 = 1000;

impl RawFill {
    fn into_config(self) -> Result<FillConfig, ConfigError> {
        let segment = self.segment.map_or(defaults::SEGMENT, |s| s.0);
        if segment < defaults::MIN_SEGMENT {
            return Err(ConfigError::invalid(
                "fill.segment",
                format!(
                    "\"{}\" is too small (must be at least {})",
                    ByteSize(segment),
                    ByteSize(defaults::MIN_SEGMENT)
                ),
            ));
        }
        let per_file = self
            .connections_per_file
            .map_or(defaults::CONNECTIONS_PER_FILE, |c| c.0);
        if per_file == 0 {
            return Err(ConfigError::invalid(
                "fill.connections_per_file",
                "must be at least 1",
            ));
        }
        let total = self
            .connections_total
            .map_or(defaults::CONNECTIONS_TOTAL, |c| c.0);
        if total < per_file {
            return Err(ConfigError::invalid(
                "fill.connections_total",
                format!(
                    "{total} is less than fill.connections_per_file ({per_file}); \
                     it must be at least as large"
                ),
            ));
        }
        let background_fills = self
            .background_fills
            .map_or(defaults::BACKGROUND_FILLS, |c| c.0);
        if background_fills == 0 {
            return Err(ConfigError::invalid(
                "fill.background_fills",
                "must be at least 1",
            ));
        }
        Ok(FillConfig {
            mode: self.mode.map(|m| m.0).unwrap_or_default(),
            segment,
            connections_per_file: per_file,
            connections_total: total,
            read_ahead: self.read_ahead.map_or(defaults::READ_AHEAD, |s| s.0),
            background_fills,
            prefetch: self.prefetch.unwrap_or_default().into_config()?,
        })
    }
}

impl RawServer {
    fn into_config(self) -> Result<ServerConfig, ConfigError> {
        let threads = match self.threads {
            None | Some(Threads::Auto) => defaults::threads(),
            Some(Threads::Count(0)) => {
                return Err(ConfigError::invalid(
                    "server.threads",
                    "must be at least 1 (or auto for one per CPU)",
                ))
            }
            Some(Threads::Count(n)) => n,
        };
        let max_connections = self
            .max_connections
            .map_or(defaults::MAX_CONNECTIONS, |c| c.0);
        if max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        let idle_timeout = self.idle_timeout.map_or(defaults::IDLE_TIMEOUT, Into::into);
        if idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "server.idle_timeout",
                "must be at least 1s (keep-alive time is counted in whole seconds)",
            ));
        }
        Ok(ServerConfig {
            threads,
            grace_period: self.grace_period.map_or(defaults::GRACE_PERIOD, Into::into),
            runtime_dir: self.runtime_dir.map(|p| p.0),
            upgrade_sock: self.upgrade_sock.map(|p| p.0),
            pid_file: self.pid_file.map(|p| p.0),
            max_connections,
            header_timeout: positive(
                "server.header_timeout",
                self.header_timeout,
                defaults::HEADER_TIMEOUT,
            )?,
            idle_timeout,
            body_timeout: positive(
                "server.body_timeout",
                self.body_timeout,
                defaults::BODY_TIMEOUT,
            )?,
            send_timeout: positive(
                "server.send_timeout",
                self.send_timeout,
                defaults::SEND_TIMEOUT,
            )?,
            tcp_keepalive: positive(
                "server.tcp_keepalive",
                self.tcp_keepalive,
                defaults::TCP_KEEPALIVE,
            )?,
            sendfile: self.sendfile.unwrap_or(true),
        })
    }
}

/// A duration that must be more than zero: the given value or `default`.
fn positive(
    key: &str,
    value: Option<HumanDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = value.map_or(default, Into::into);
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be more than 0s"));
    }
    Ok(value)
}

/// Makes a storage root absolute (relative to the current working directory) and cleans it
/// without touching the file system: drops `.` components, repeated and trailing separators.
/// `..` is kept (resolving it lexically is wrong across symlinks).
pub(crate) fn normalize_root(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let normal: PathBuf = absolute
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if normal.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        normal
    }
}

/// Deserialises a string value through `parse`, which returns the reason on failure.
pub(super) fn deserialize_parsed<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct ParsedVisitor<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for ParsedVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.parse)(text).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            Err(E::custom(format!("expected {}, found {n}", self.expecting)))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            Err(E::custom(format!("expected {}, found {n}", self.expecting)))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
            Err(E::custom(format!("expected {}, found {n}", self.expecting)))
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<T, E> {
            Err(E::custom(format!("expected {}, found {b}", self.expecting)))
        }
    }
    deserializer.deserialize_any(ParsedVisitor { expecting, parse })
}

/// Parses an absolute http(s)/proxy URL and applies the rules common to all URL keys.
pub(super) fn parse_url(
    text: &str,
    schemes: &[&str],
    scheme_hint: &str,
) -> Result<url::Url, String> {
    if text.is_empty() {
        return Err("is empty (give a URL, or remove the key)".to_string());
    }
    let mut url = url::Url::parse(text).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            format!("\"{text}\" is not an absolute URL (write the scheme, e.g. https://{text})")
        }
        other => format!("\"{text}\" is not a valid URL ({other})"),
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "scheme \"{}\" is not supported ({scheme_hint})",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("\"{text}\" has no host"));
    }
    if url.query().is_some() {
        return Err(format!(
            "\"{text}\" has a query (?...), which is not allowed here"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!(
            "\"{text}\" has a fragment (#...), which is not allowed here"
        ));
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    if trimmed.is_empty() {
        url.set_path("/");
    } else {
        url.set_path(&trimmed);
    }
    Ok(url)
}

pub(super) fn reject_credentials(url: &url::Url, text: &str) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "\"{text}\" contains credentials, which are not supported here \
             (clients' own tokens are passed on to origins)"
        ));
    }
    Ok(())
}

/// `upstreams[i].url`.
#[derive(Debug)]
struct UpstreamUrl(url::Url);

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "an http:// or https:// URL", |text| {
            let url = parse_url(text, &["http", "https"], "use http or https")?;
            reject_credentials(&url, text)?;
            Ok(UpstreamUrl(url))
        })
    }
}

/// `public_url`.
#[derive(Debug)]
struct PublicUrl(url::Url);

impl<'de> Deserialize<'de> for PublicUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "an http:// or https:// URL", |text| {
            let url = parse_url(text, &["http", "https"], "use http or https")?;
            reject_credentials(&url, text)?;
            Ok(PublicUrl(url))
        })
    }
}

/// `upstreams[i].proxy`: `env`, or an HTTP proxy, `http://[user:password@]host:port`.
#[derive(Debug)]
struct ProxySetting(UpstreamProxy);

impl<'de> Deserialize<'de> for ProxySetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "env or an http:// proxy URL", |text| {
            if text == "env" {
                return Ok(ProxySetting(UpstreamProxy::Env));
            }
            if !text.contains("://") {
                return Err(format!(
                    "\"{text}\" is neither env nor a proxy URL (write env for the \
                     HTTPS_PROXY / NO_PROXY variables, or http://host:port)"
                ));
            }
            let url = parse_url(
                text,
                &["http"],
                "a proxy must be http://host:port, or env for the HTTPS_PROXY / NO_PROXY variables",
            )?;
            if url.path() != "/" {
                return Err(format!(
                    "\"{text}\" has a path; a proxy URL is only http://host:port"
                ));
            }
            Ok(ProxySetting(UpstreamProxy::Url(url)))
        })
    }
}

/// `upstreams[i].health.probe_path`: a path starting with `/`.
#[derive(Debug)]
struct ProbePath(String);

impl<'de> Deserialize<'de> for ProbePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a path starting with /", |text| {
            if !text.starts_with('/') {
                return Err(format!(
                    "\"{text}\" does not start with / (it is appended to the upstream's URL)"
                ));
            }
            if text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '#')
            {
                return Err(format!(
                    "\"{text}\" contains a space, control character or # (percent-encode it)"
                ));
            }
            Ok(ProbePath(text.to_string()))
        })
    }
}

/// A file or directory path that is not empty.
#[derive(Debug)]
struct NonEmptyPath(PathBuf);

impl<'de> Deserialize<'de> for NonEmptyPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a path", |text| {
            if text.is_empty() {
                Err("is empty (give a path, or remove the key)".to_string())
            } else {
                Ok(NonEmptyPath(PathBuf::from(text)))
            }
        })
    }
}

/// A whole number (count of something); zero is allowed here, ranges are checked later.
#[derive(Debug)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                usize::try_from(n)
                    .map(Count)
                    .map_err(|_| E::custom(format!("{n} is too large")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "{n} is negative (expected a whole number)"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Count, E> {
                Err(E::custom(format!("expected a whole number, found {n}")))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Count, E> {
                Err(E::custom(format!(
                    "expected a whole number, found the string \"{text}\""
                )))
            }
        }
        d.deserialize_any(CountVisitor)
    }
}

/// `server.threads`: `auto` or a whole number.
#[derive(Debug)]
enum Threads {
    Auto,
    Count(usize),
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ThreadsVisitor;
        impl Visitor<'_> for ThreadsVisitor {
            type Value = Threads;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto or a whole number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Threads, E> {
                usize::try_from(n)
                    .map(Threads::Count)
                    .map_err(|_| E::custom(format!("{n} is too large")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Threads, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "{n} is negative (expected auto or a whole number)"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Threads, E> {
                Err(E::custom(format!(
                    "expected auto or a whole number, found {n}"
                )))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Threads, E> {
                if text == "auto" {
                    Ok(Threads::Auto)
                } else {
                    Err(E::custom(format!(
                        "\"{text}\" is not a thread count (use auto or a whole number)"
                    )))
                }
            }
        }
        d.deserialize_any(ThreadsVisitor)
    }
}

/// An enum read by its `FromStr` name (`fsync`, `on_demand`, ...).
#[derive(Debug)]
pub(super) struct Named<T>(pub(super) T);

pub(super) trait NamedEnum: std::str::FromStr<Err = String> {
    const EXPECTING: &'static str;
}

impl NamedEnum for Durability {
    const EXPECTING: &'static str = "fsync or os";
}

impl NamedEnum for FillMode {
    const EXPECTING: &'static str = "complete or on_demand";
}

impl NamedEnum for Trust {
    const EXPECTING: &'static str = "origin or mirror";
}

impl<'de, T: NamedEnum> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, T::EXPECTING, |text| text.parse::<T>().map(Named))
    }
}
