//! The validated configuration types and their built-in defaults.
//!
//! These are what the rest of hubcache reads. They are produced by
//! [`Config::from_yaml_str`](super::Config::from_yaml_str) / [`Config::load`](super::Config::load),
//! which check every rule documented in `docs/configuration.md`; a value of these types built by
//! hand is not re-validated.
//!
//! The built-in defaults here must equal `conf/hubcache.yaml` (a unit test compares them).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use super::operate::{AdminConfig, AdminToken, LogConfig, LogFormat, LogLevel};

/// Built-in default values (the same as `conf/hubcache.yaml`).
pub mod defaults {
    use std::time::Duration;

    pub const LISTEN: &str = "0.0.0.0:8090";
    pub const REVISION_TTL: Duration = Duration::from_secs(60);
    pub const PIN_REFRESH: Duration = Duration::from_secs(600);
    pub const AUTH_TTL: Duration = Duration::from_secs(3600);
    pub const CACHE_DIR: &str = "./cache";
    pub const REPLICAS: usize = 1;
    pub const BLOCK_SIZE: u64 = 8 << 20;
    /// Smallest allowed `cache.block_size`.
    pub const MIN_BLOCK_SIZE: u64 = 64 << 10;
    /// Largest allowed `cache.block_size`.
    pub const MAX_BLOCK_SIZE: u64 = 1 << 30;
    /// The default upstream chain, in order.
    pub const UPSTREAMS: [&str; 2] = ["https://huggingface.co", "https://hf-mirror.com"];
    /// The host whose `https` URL is an `origin` by default (every other upstream a `mirror`).
    pub const HUB_HOST: &str = "huggingface.co";
    pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
    /// `upstreams[].health.fail_after`.
    pub const FAIL_AFTER: u32 = 3;
    /// `upstreams[].health.slow_threshold`.
    pub const SLOW_THRESHOLD: Duration = Duration::from_secs(10);
    /// `upstreams[].health.slow_after`.
    pub const SLOW_AFTER: u32 = 3;
    /// `upstreams[].health.probe_every`.
    pub const PROBE_EVERY: Duration = Duration::from_secs(5);
    /// `upstreams[].health.probe_path`.
    pub const PROBE_PATH: &str = "/";
    /// `upstreams[].health.recover_after`.
    pub const RECOVER_AFTER: u32 = 3;
    pub const SEGMENT: u64 = 32 << 20;
    /// Smallest allowed `fill.segment`.
    pub const MIN_SEGMENT: u64 = 64 << 10;
    pub const CONNECTIONS_PER_FILE: usize = 8;
    pub const CONNECTIONS_TOTAL: usize = 64;
    pub const READ_AHEAD: u64 = 16 << 20;
    pub const BACKGROUND_FILLS: usize = 4;
    /// Long enough for a large model to finish downloading from the old process during a
    /// binary upgrade (35 GiB at 10 MiB/s); an idle old process exits at once anyway.
    pub const GRACE_PERIOD: Duration = Duration::from_secs(3600);
    /// File names inside `server.runtime_dir` when `upgrade_sock` / `pid_file` are not set.
    pub const UPGRADE_SOCK_NAME: &str = "upgrade.sock";
    pub const PID_FILE_NAME: &str = "hubcache.pid";
    pub const MAX_CONNECTIONS: usize = 4096;
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
    pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
    pub const ADMIN_LISTEN: &str = "127.0.0.1:8091";

    /// The default for `server.threads` (`auto`): the number of CPUs this process may use.
    pub fn threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Socket address the proxy listens on (plain HTTP). `None` (`listen: null`): no
    /// plain-HTTP listener, only `tls` (the loader allows that only when `tls` is set).
    pub listen: Option<SocketAddr>,
    /// HTTPS (and HTTP/2) on a second listener; `None`: plain HTTP only.
    pub tls: Option<super::TlsConfig>,
    /// How clients reach this mirror (used in rewritten redirects and links). `None`: derive it
    /// from the request's `Host` header, falling back to `listen`. Never ends in `/`.
    pub public_url: Option<url::Url>,
    /// Never contact an upstream: serve only what is cached.
    pub offline: bool,
    /// How long a branch/tag → commit mapping is trusted while online.
    pub revision_ttl: Duration,
    /// How long an upstream authorisation decision for (token, repo) is remembered.
    pub auth_ttl: Duration,
    pub cache: CacheConfig,
    /// The default upstream chain, tried in order. Empty only when `offline`.
    pub upstreams: Vec<UpstreamConfig>,
    pub fill: FillConfig,
    pub server: ServerConfig,
    pub plugins: super::plugins::PluginsConfig,
    /// Reload the config file when it changes (polled), as on SIGHUP.
    pub watch_config: bool,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// `cluster:` — sibling nodes; `None` for a single node.
    pub cluster: Option<super::ClusterConfig>,
    /// Pin manifests: YAML lists of `{repo, type, revision, include, exclude}` kept warm and
    /// out of eviction.
    pub pins: Vec<PathBuf>,
    /// How often pinned revisions are resolved again (a pinned branch follows upstream).
    pub pin_refresh: Duration,
}

/// `cache:` — where and how blobs are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The single storage root, when given as `dir` (the default, `./cache`). Exactly one of
    /// `dir` and `roots` is set; use [`Config::cache_roots`](super::Config::cache_roots) to get
    /// the list either way.
    pub dir: Option<PathBuf>,
    /// Several storage roots, when given as `roots` (then `dir` is `None`).
    pub roots: Vec<PathBuf>,
    /// Copies of each blob, on distinct roots: `1..=number of roots`.
    pub replicas: usize,
    /// Block size in bytes: a power of two in `64KiB..=1GiB`.
    pub block_size: u64,
    pub durability: Durability,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: Some(PathBuf::from(defaults::CACHE_DIR)),
            roots: Vec::new(),
            replicas: defaults::REPLICAS,
            block_size: defaults::BLOCK_SIZE,
            durability: Durability::default(),
        }
    }
}

/// `cache.durability` — when written blocks count as safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// `fsync`: a block is flushed to stable storage (file data and the directory entry) before
    /// it is marked present, so a power loss or kernel crash loses at most the blocks in flight.
    Fsync,
    /// `os` (default): the page cache decides when data reaches the disk. Surviving a process
    /// crash is unaffected; a power loss or kernel crash can lose recently written blocks (they
    /// are detected by their checksums and fetched again, never served corrupt).
    #[default]
    Os,
}

impl Durability {
    pub const NAMES: [&'static str; 2] = ["fsync", "os"];

    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            _ => Err(format!("\"{text}\" is not a durability (use fsync or os)")),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `upstreams[].trust` — what an upstream is trusted with. Sibling hubcache nodes will be a
/// third kind; each property below is one `match`, so a new kind states its own answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trust {
    /// `origin`: the Hub itself (or a hub the operator runs). Receives clients' tokens, and its
    /// answers decide who may read gated and private repos.
    Origin,
    /// `mirror`: a third-party mirror. Serves content, but never receives a client's token
    /// (unless `forward_token: true`) and never decides access.
    Mirror,
}

impl Trust {
    pub const NAMES: [&'static str; 2] = ["origin", "mirror"];

    /// The default for an upstream URL: `origin` for `https://huggingface.co`, `mirror` for
    /// anything else.
    pub fn default_for(url: &url::Url) -> Trust {
        let is_hub = url.scheme() == "https"
            && url.host_str() == Some(defaults::HUB_HOST)
            && url.port().is_none();
        if is_hub {
            Trust::Origin
        } else {
            Trust::Mirror
        }
    }

    /// Whether clients' `Authorization` is sent to an upstream of this kind without opting in.
    pub fn receives_tokens(self) -> bool {
        match self {
            Trust::Origin => true,
            Trust::Mirror => false,
        }
    }

    /// Whether its answers teach hubcache a repo's visibility (private, gated) and a token's
    /// grants.
    pub fn decides_access(self) -> bool {
        match self {
            Trust::Origin => true,
            Trust::Mirror => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Origin => "origin",
            Trust::Mirror => "mirror",
        }
    }
}

impl FromStr for Trust {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "origin" => Ok(Trust::Origin),
            "mirror" => Ok(Trust::Mirror),
            _ => Err(format!(
                "\"{text}\" is not a trust level (use origin or mirror)"
            )),
        }
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `upstreams[].proxy` — how requests to an upstream reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamProxy {
    /// `env`: the standard variables, as curl reads them: `HTTPS_PROXY` / `HTTP_PROXY` /
    /// `ALL_PROXY` (or their lower-case forms) by the scheme of each destination, unless
    /// `NO_PROXY` names its host.
    Env,
    /// An explicit `http://[user:password@]host:port`, for every request to this upstream and
    /// the CDNs it redirects to.
    Url(url::Url),
}

/// `upstreams[].health` — when an upstream is taken out of use and when it comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive failures (refused or broken connections, 5xx answers) that open the
    /// circuit (>= 1). A timeout opens it at once.
    pub fail_after: u32,
    /// An answer whose headers take longer than this is slow; a request waiting this long
    /// with no other answer in between makes the upstream suspect. Also a probe's time limit.
    pub slow_threshold: Duration,
    /// Consecutive slow answers that open the circuit (>= 1).
    pub slow_after: u32,
    /// How often an upstream whose circuit is open is probed.
    pub probe_every: Duration,
    /// Path (after the base URL) of the probe, a `HEAD` request. Starts with `/`.
    pub probe_path: String,
    /// Consecutive passing probes before traffic returns (>= 1).
    pub recover_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            fail_after: defaults::FAIL_AFTER,
            slow_threshold: defaults::SLOW_THRESHOLD,
            slow_after: defaults::SLOW_AFTER,
            probe_every: defaults::PROBE_EVERY,
            probe_path: defaults::PROBE_PATH.to_string(),
            recover_after: defaults::RECOVER_AFTER,
        }
    }
}

/// One entry of `upstreams:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `http` or `https` base URL, possibly with a path prefix; no query, fragment or
    /// credentials. Trailing slashes are stripped, so `url.path()` is `/` or `/prefix`.
    pub url: url::Url,
    /// Outbound HTTP proxy for this upstream; `None`: connect directly.
    pub proxy: Option<UpstreamProxy>,
    /// Per-request connect + response-header timeout.
    pub timeout: Duration,
    /// What the upstream is trusted with (default: [`Trust::default_for`] its URL).
    pub trust: Trust,
    /// Send clients' `Authorization` to it even though it is not an origin.
    pub forward_token: bool,
    /// Circuit breaker and probe settings.
    pub health: HealthConfig,
}

impl UpstreamConfig {
    /// An upstream with the given (already validated) URL and default settings.
    pub fn new(url: url::Url) -> Self {
        UpstreamConfig {
            trust: Trust::default_for(&url),
            url,
            proxy: None,
            timeout: defaults::UPSTREAM_TIMEOUT,
            forward_token: false,
            health: HealthConfig::default(),
        }
    }

    /// Whether a client's `Authorization` may be sent to this upstream.
    pub fn receives_tokens(&self) -> bool {
        self.trust.receives_tokens() || self.forward_token
    }

    /// The base URL without a trailing slash (`https://huggingface.co`,
    /// `https://example.org/hf`), ready for `format!("{}/api/models/...", base)`.
    pub fn base(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }
}

/// `fill:` — how missing blocks are fetched from upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillConfig {
    pub mode: FillMode,
    /// Bytes per ranged upstream request (>= 64KiB).
    pub segment: u64,
    /// Parallel upstream connections for one file (>= 1).
    pub connections_per_file: usize,
    /// Parallel upstream connections for all files together (>= `connections_per_file`).
    pub connections_total: usize,
    /// Extra bytes fetched after the end of what a client asked for.
    pub read_ahead: u64,
    /// Files completed in the background at once (>= 1).
    pub background_fills: usize,
    /// Small regular files of a listed commit fetched ahead of the client.
    pub prefetch: super::prefetch::PrefetchConfig,
}

impl Default for FillConfig {
    fn default() -> Self {
        FillConfig {
            mode: FillMode::default(),
            segment: defaults::SEGMENT,
            connections_per_file: defaults::CONNECTIONS_PER_FILE,
            connections_total: defaults::CONNECTIONS_TOTAL,
            read_ahead: defaults::READ_AHEAD,
            background_fills: defaults::BACKGROUND_FILLS,
            prefetch: Default::default(),
        }
    }
}

/// `fill.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FillMode {
    /// `complete` (default): once a file is requested, the whole file is fetched into the cache,
    /// the client's range first and the rest in the background.
    #[default]
    Complete,
    /// `on_demand`: only the blocks clients ask for (plus `read_ahead`) are fetched.
    OnDemand,
}

impl FillMode {
    pub const NAMES: [&'static str; 2] = ["complete", "on_demand"];

    pub fn as_str(self) -> &'static str {
        match self {
            FillMode::Complete => "complete",
            FillMode::OnDemand => "on_demand",
        }
    }
}

impl FromStr for FillMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "complete" => Ok(FillMode::Complete),
            "on_demand" => Ok(FillMode::OnDemand),
            _ => Err(format!(
                "\"{text}\" is not a fill mode (use complete or on_demand)"
            )),
        }
    }
}

impl fmt::Display for FillMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `server:` — process-level settings for Pingora.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Worker threads of the proxy service (>= 1); `auto` in YAML = the number of CPUs.
    pub threads: usize,
    /// How long a graceful shutdown or upgrade waits at most for in-flight downloads.
    pub grace_period: Duration,
    /// The private directory (mode 0700) of the upgrade socket and the pid file. `None`:
    /// chosen at start (`lifecycle::runtime_dir`).
    pub runtime_dir: Option<PathBuf>,
    /// Unix socket over which a new binary takes over the listening sockets. `None`:
    /// `upgrade.sock` in the runtime directory.
    pub upgrade_sock: Option<PathBuf>,
    /// The file the serving process's id is written to. `None`: `hubcache.pid` in the
    /// runtime directory.
    pub pid_file: Option<PathBuf>,
    /// Client connections served at once (>= 1); the next one is answered 503 and closed.
    pub max_connections: usize,
    /// Time allowed to receive a whole request head, from its first byte (from the accept for
    /// the first request of a connection). > 0.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept open between requests (>= 1s; Pingora
    /// counts whole seconds, so it is rounded up).
    pub idle_timeout: Duration,
    /// Time allowed to receive a whole request body. > 0.
    pub body_timeout: Duration,
    /// A client that accepts no response bytes for this long is disconnected. > 0.
    pub send_timeout: Duration,
    /// Idle time of an accepted connection before TCP keepalive probes start. > 0.
    pub tcp_keepalive: Duration,
    /// Serve warm plain-HTTP/1 downloads with `sendfile(2)` (the kernel copies the verified
    /// file bytes to the socket once); `false`: always through Pingora's body writer.
    pub sendfile: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: defaults::threads(),
            grace_period: defaults::GRACE_PERIOD,
            runtime_dir: None,
            upgrade_sock: None,
            pid_file: None,
            max_connections: defaults::MAX_CONNECTIONS,
            header_timeout: defaults::HEADER_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            body_timeout: defaults::BODY_TIMEOUT,
            send_timeout: defaults::SEND_TIMEOUT,
            tcp_keepalive: defaults::TCP_KEEPALIVE,
            sendfile: true,
        }
    }
}

impl ServerConfig {
    /// [`idle_timeout`](Self::idle_timeout) in whole seconds, rounded up (Pingora's unit; never
    /// 0, which Pingora reads as "wait for ever").
    pub fn idle_timeout_secs(&self) -> u64 {
        let d = self.idle_timeout;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// The built-in defaults; the same as [`Config::embedded_default`](super::Config::embedded_default).
impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8090)),
            tls: None,
            public_url: None,
            offline: false,
            revision_ttl: defaults::REVISION_TTL,
            auth_ttl: defaults::AUTH_TTL,
            cache: CacheConfig::default(),
            upstreams: defaults::UPSTREAMS
                .iter()
                .map(|u| UpstreamConfig::new(url::Url::parse(u).expect("default upstream URL")))
                .collect(),
            fill: FillConfig::default(),
            server: ServerConfig::default(),
            plugins: Default::default(),
            watch_config: false,
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            cluster: None,
            pins: Vec::new(),
            pin_refresh: defaults::PIN_REFRESH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::operate::{LogFormat, LogLevel};
    use super::*;

    #[test]
    fn default_listen_matches_the_listen_constant() {
        assert_eq!(
            Config::default().listen.map(|l| l.to_string()).as_deref(),
            Some(defaults::LISTEN)
        );
    }

    #[test]
    fn enums_round_trip_through_their_names() {
        for name in Durability::NAMES {
            assert_eq!(name.parse::<Durability>().unwrap().to_string(), name);
        }
        for name in FillMode::NAMES {
            assert_eq!(name.parse::<FillMode>().unwrap().to_string(), name);
        }
        for name in Trust::NAMES {
            assert_eq!(name.parse::<Trust>().unwrap().to_string(), name);
        }
        for name in LogFormat::NAMES {
            assert_eq!(name.parse::<LogFormat>().unwrap().to_string(), name);
        }
        for name in LogLevel::NAMES {
            assert_eq!(name.parse::<LogLevel>().unwrap().to_string(), name);
        }
        assert!("Fsync".parse::<Durability>().is_err());
        assert!("on-demand".parse::<FillMode>().is_err());
    }

    #[test]
    fn only_https_huggingface_co_is_an_origin_by_default() {
        let trust = |u: &str| Trust::default_for(&url::Url::parse(u).unwrap());
        assert_eq!(trust("https://huggingface.co"), Trust::Origin);
        assert_eq!(trust("https://huggingface.co/"), Trust::Origin);
        for other in [
            "https://hf-mirror.com",
            "http://huggingface.co",
            "https://huggingface.co:8443",
            "https://huggingface.co.evil.example",
            "http://127.0.0.1:8080",
        ] {
            assert_eq!(trust(other), Trust::Mirror, "{other}");
        }
        let mirror = UpstreamConfig::new(url::Url::parse("https://hf-mirror.com").unwrap());
        assert!(!mirror.receives_tokens());
        assert!(UpstreamConfig {
            forward_token: true,
            ..mirror
        }
        .receives_tokens());
    }

    #[test]
    fn trust_and_forward_token_parse_with_defaults_from_the_url() {
        let c = Config::from_yaml_str(
            "upstreams:\n  - url: https://huggingface.co\n  - url: http://10.0.0.1/hf\n  \
             - url: https://hub.corp\n    trust: origin\n  \
             - url: https://hf-mirror.com\n    forward_token: true\n",
        )
        .unwrap();
        let got: Vec<(Trust, bool)> = c
            .upstreams
            .iter()
            .map(|u| (u.trust, u.forward_token))
            .collect();
        assert_eq!(
            got,
            [
                (Trust::Origin, false),
                (Trust::Mirror, false),
                (Trust::Origin, false),
                (Trust::Mirror, true),
            ]
        );
    }

    #[test]
    fn bad_trust_and_forward_token_are_rejected_with_their_path() {
        let err = Config::from_yaml_str("upstreams: [{url: http://a, trust: peer}]").unwrap_err();
        assert_eq!(err.key_path(), Some("upstreams[0].trust"));
        assert!(err.to_string().contains("use origin or mirror"), "{err}");
        let err = Config::from_yaml_str("upstreams: [{url: http://a, forward_token: yes please}]")
            .unwrap_err();
        assert_eq!(err.key_path(), Some("upstreams[0].forward_token"), "{err}");
    }

    #[test]
    fn upstream_base_has_no_trailing_slash() {
        let root = UpstreamConfig::new(url::Url::parse("https://huggingface.co").unwrap());
        assert_eq!(root.base(), "https://huggingface.co");
        let prefixed = UpstreamConfig::new(url::Url::parse("https://example.org/hf").unwrap());
        assert_eq!(prefixed.base(), "https://example.org/hf");
    }
}
