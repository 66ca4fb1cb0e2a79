//! The `hubcache` command line: `serve`, `reload`, `upgrade`, `check-config`, `export`,
//! `cache verify|import|gc|ls`, `warm`, `jobs list|cancel`, `pin`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::protocols::TcpKeepalive;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use hubcache::app::App;
use hubcache::config::{Config, ConfigError, ServerConfig};
use hubcache::evict::cli::SortBy;
use hubcache::evict::CacheService;
use hubcache::lifecycle::{self, Lifecycle};
use hubcache::plugins::api::Registry;
use hubcache::plugins::Plugins;
use hubcache::proxy::conn::{ConnSettings, Gate, StreamLimits};
use hubcache::proxy::HubProxy;
use hubcache::upstream::ProbeService;

#[derive(Parser)]
#[command(
    name = "hubcache",
    version,
    about = "A caching Hugging Face Hub mirror"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mirror (with the embedded default config unless --config is given).
    Serve {
        /// YAML config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Take over the listening sockets of a running hubcache (graceful upgrade): start
        /// the new binary with this flag, then send SIGQUIT to the old one (`hubcache
        /// upgrade` does both in the right order).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Make the running hubcache re-read its config file (SIGHUP) and report the outcome.
    /// Exits 1 when the file was refused (the running config stays).
    Reload {
        /// The config of the running hubcache (to find its pid file); the embedded default
        /// otherwise.
        #[arg(short, long, conflicts_with = "pid_file")]
        config: Option<PathBuf>,
        /// The pid file of the running hubcache.
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Replace the running hubcache by this binary without refusing a connection: start
    /// `serve --upgrade`, wait until it waits for the sockets, then SIGQUIT the old process,
    /// which drains. Reports the outcome.
    Upgrade {
        /// The config file (the same file the running hubcache uses).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit (non-zero, naming the key, when invalid).
    CheckConfig {
        /// YAML config file.
        file: PathBuf,
    },
    /// Write one revision of a repo into DIR in the huggingface_hub cache layout
    /// (`HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1` then loads it), from the mirror's cache, fetching
    /// what is missing through the upstream chain. Exits 1 when a file could not be exported.
    Export(ExportArgs),
    /// Maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Ask a running node (its admin API) to fetch a whole repo, and show the progress (files,
    /// bytes, rate, ETA) until it is done. Exits 0 when every file is cached, 1 listing the
    /// files that failed, 2 when the admin API cannot be used.
    Warm(hubcache::warmup::client::WarmArgs),
    /// List or cancel the warm-up jobs of a running node.
    Jobs(hubcache::warmup::client::JobsArgs),
    /// Pin every entry of a manifest (a YAML list of {repo, type, revision, include, exclude})
    /// on a running node: kept warm and out of eviction, branches followed. Shows the warm-up
    /// jobs until they end; exits 0 when every file is cached.
    Pin(hubcache::warmup::pin_cli::PinArgs),
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The repo id (`org/name`).
    repo: String,
    /// The export directory (what `HF_HUB_CACHE` will name).
    #[arg(long)]
    to: PathBuf,
    #[arg(long = "type", value_enum, default_value = "model")]
    kind: ExportType,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Only paths matching this glob (huggingface_hub's `allow_patterns`; repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// Leave out paths matching this glob (`ignore_patterns`; repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// YAML config file (cache roots, upstreams, offline); the embedded default otherwise.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportType {
    Model,
    Dataset,
    Space,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Check every block checksum, every complete file against its hash, and replica counts.
    /// Exits 1 when problems remain.
    Verify {
        /// YAML config file (for the cache roots); the embedded default otherwise.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Fix what can be fixed: invalidate bad blocks (fetched again on demand), delete
        /// copies that do not match their hash, make missing replicas.
        #[arg(long)]
        repair: bool,
    },
    /// Import an Olah (0.5, and older) or DingoSpeed cache (its `repos` directory), or a
    /// huggingface_hub cache (`HF_HUB_CACHE`), without downloading again. Reports what
    /// happened to every file; only bytes that verify are imported. Exits 1 when a file the
    /// cache had bytes for was left out.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["olah", "hf_cache"])))]
    Import {
        /// YAML config file (for the cache roots); the embedded default otherwise.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The Olah / DingoSpeed `repos` directory (or its parent).
        #[arg(long)]
        olah: Option<PathBuf>,
        /// A huggingface_hub cache directory (what `HF_HUB_CACHE` names, holding
        /// `models--org--name/…`).
        #[arg(long)]
        hf_cache: Option<PathBuf>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Evict down to plugins.eviction's limits (budget, watermarks, max_idle), with the
    /// configured policy and pins, as the running mirror would; safe while it runs (a file
    /// it has open stays). Exits 1 when a limit could not be met.
    Gc {
        /// YAML config file; the embedded default otherwise.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print what would be evicted and why, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the cached repos and files with their size, space on disk, last read and
    /// downloads.
    Ls {
        /// YAML config file; the embedded default otherwise.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// `size`: largest first; `last-read`: most recently read first.
        #[arg(long, value_enum, default_value = "size")]
        sort: SortBy,
    },
}

/// Every plugin this binary ships, registered by kind: the one place that names them
/// (docs/plugins.md). The core builds what the config asks for from this registry.
fn plugin_registry() -> Registry {
    let mut registry = Registry::default();
    hubcache_plugin_lru::register(&mut registry);
    hubcache_plugin_fifo::register(&mut registry);
    hubcache_plugin_large_first::register(&mut registry);
    hubcache_plugin_lfuda::register(&mut registry);
    hubcache_plugin_webhook::register(&mut registry);
    hubcache_plugin_wecom::register(&mut registry);
    hubcache_plugin_slack::register(&mut registry);
    hubcache_plugin_log::register(&mut registry);
    registry
}

/// Loads and validates a config file, including the plugins it names (kinds, options).
fn load_checked(path: &std::path::Path) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    hubcache::plugins::build(&config.plugins, &plugin_registry()).map_err(|error| {
        ConfigError::InFile {
            file: path.to_path_buf(),
            error: Box::new(error),
        }
    })?;
    Ok(config)
}

/// Reads the `tls` certificate pair as `serve` would: its warnings, or why it cannot serve.
fn check_tls(config: &Config) -> Result<Vec<String>, hubcache::tls::TlsError> {
    match &config.tls {
        Some(tls) => hubcache::tls::pair::load(tls).map(|pair| pair.warnings),
        None => Ok(Vec::new()),
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(path) => load_checked(path).map_err(|e| e.to_string()),
        None => Ok(Config::embedded_default()),
    }
}

fn build_plugins(config: &Config) -> Result<Plugins, String> {
    hubcache::plugins::build(&config.plugins, &plugin_registry()).map_err(|e| e.to_string())
}

fn serve(config: Config, config_path: Option<&PathBuf>, upgrade: bool) -> Result<(), String> {
    hubcache::logging::configure(config.log.format, config.log.level);
    let life = Lifecycle::prepare(&config, config_path.map(PathBuf::as_path), upgrade)
        .map_err(|e| e.to_string())?;
    let plugins = build_plugins(&config)?;
    let app = App::new(config.clone()).map_err(|e| e.to_string())?;
    let certs = edge_certificates(&config, config_path)?;
    if let Some(certs) = &certs {
        let _ = app.tls.set(Arc::clone(certs));
    }
    let cache_service = CacheService::start(&app, plugins).map_err(|e| e.to_string())?;
    let warmup = hubcache::warmup::Warmup::start(&app);
    let mut server_conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        pid_file: life.pid_file(),
        upgrade_sock: life.upgrade_sock(),
        ..ServerConf::default()
    };
    server_conf.upstream_keepalive_pool_size = 128;
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    raise_fd_limit(config.server.max_connections);
    life.started();
    let probe_app = Arc::clone(&app);
    let probes = ProbeService::new(move || Arc::clone(&probe_app.settings().upstream));
    server.add_service(background_service("upstream probes", probes));
    let mut proxy =
        lifecycle::service::draining_proxy(&server.configuration, HubProxy::new(app.clone()));
    if let Some(proxy) = proxy.inner_mut() {
        proxy.server_options = Some(server_options(&config.server));
    }
    let gate = Gate::new(proxy, conn_settings(&config.server));
    let mut service = Service::new("hubcache".to_string(), gate);
    if let Some(listen) = config.listen {
        service.add_listener(listener(listen, &config.server));
    }
    if let (Some(tls), Some(certs)) = (&config.tls, certs) {
        let settings =
            hubcache::tls::listener::tls_settings(certs).map_err(|e| format!("tls.listen: {e}"))?;
        service.add_listener(listener(tls.listen, &config.server).tls(settings));
        service
            .endpoints()
            .set_pre_tls_callback(Arc::new(hubcache::tls::listener::PlainHttpRefusal));
    }
    server.add_service(background_service("warm-up jobs", warmup.background(&app)));
    if let Some(admin) = hubcache::admin::service(&app) {
        server.add_service(admin);
    }
    server.add_service(service);
    server.add_service(background_service(
        "cache service",
        cache_service.background(),
    ));
    log::info!(
        "hubcache listening on {} (cache {:?}, upstreams: {}, offline: {})",
        config.listen_summary(),
        config.cache_roots(),
        config
            .upstreams
            .iter()
            .map(|u| u.url.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        config.offline
    );
    life.run(server, app);
}

fn conn_settings(server: &ServerConfig) -> ConnSettings {
    ConnSettings {
        max_connections: server.max_connections,
        idle_timeout_secs: server.idle_timeout_secs(),
        limits: StreamLimits {
            header_timeout: server.header_timeout,
            send_timeout: server.send_timeout,
        },
    }
}

/// A public listener (plain HTTP, or the TCP side of HTTPS). No read buffer in front of each
/// accepted socket: Pingora's default is a 64 KiB one per connection (64 MiB for 1000 idle
/// keep-alive clients), and the HTTP session reads into its own buffer anyway.
fn listener(addr: std::net::SocketAddr, server: &ServerConfig) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string())
        .tcp_socket_options(socket_options(server))
        .l4_buffer(L4BufferSettings::default().read(0))
}

/// An idle HTTP/2 connection is closed after `server.idle_timeout`, as an HTTP/1 one.
fn server_options(server: &ServerConfig) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(server.idle_timeout);
    options
}

/// Reads and checks the `tls` certificate pair, when `tls` is set. Errors name the key.
fn edge_certificates(
    config: &Config,
    config_path: Option<&PathBuf>,
) -> Result<Option<Arc<hubcache::tls::Certificates>>, String> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    hubcache::tls::Certificates::load(tls)
        .map(Some)
        .map_err(|e| match config_path {
            Some(path) => format!("{}: {e}", path.display()),
            None => e.to_string(),
        })
}

/// TCP keepalive on every accepted connection: probes after `server.tcp_keepalive` of silence,
/// then every 10 s; after 6 unanswered ones the kernel closes the connection.
fn socket_options(server: &ServerConfig) -> TcpSocketOptions {
    let mut options = TcpSocketOptions::default();
    options.tcp_keepalive = Some(TcpKeepalive {
        idle: server.tcp_keepalive,
        interval: std::time::Duration::from_secs(10),
        count: 6,
        #[cfg(target_os = "linux")]
        user_timeout: std::time::Duration::ZERO,
    });
    options
}

/// Each client connection needs a descriptor, and so do cache files and upstream connections:
/// raise the soft open-file limit to the hard one, and warn when that is still too low.
fn raise_fd_limit(max_connections: usize) {
    const SPARE: u64 = 1024;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let needed = max_connections as u64 + SPARE;
    if soft < needed {
        log::warn!(
            "the open-file limit is {soft}, below server.max_connections ({max_connections}) + \
             {SPARE}: raise it (ulimit -n, LimitNOFILE=) or lower server.max_connections"
        );
    }
}

fn gc(config: Config, dry_run: bool) -> Result<ExitCode, String> {
    let plugins = build_plugins(&config)?;
    let app = App::new(config).map_err(|e| e.to_string())?;
    let view = hubcache::evict::cli::view(&app, plugins.policy)?;
    view.index
        .set_extra_pins(&hubcache::warmup::pins::configured_globs(&app));
    let (report, met) = hubcache::evict::cli::gc(&app, &view, dry_run);
    print!("{report}");
    Ok(if met || dry_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ls(config: Config, sort: SortBy) -> Result<ExitCode, String> {
    let plugins = build_plugins(&config)?;
    let app = App::new(config).map_err(|e| e.to_string())?;
    let view = hubcache::evict::cli::view(&app, plugins.policy)?;
    view.index
        .set_extra_pins(&hubcache::warmup::pins::configured_globs(&app));
    print!("{}", hubcache::evict::cli::ls(&view, sort));
    Ok(ExitCode::SUCCESS)
}

fn verify(config: Config, repair: bool) -> Result<ExitCode, String> {
    let app = App::new(config).map_err(|e| e.to_string())?;
    let report = app.store.verify(repair).map_err(|e| e.to_string())?;
    print!("{report}");
    Ok(if report.is_clean(repair) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where `cache import` reads from.
enum ImportSource {
    Olah(PathBuf),
    HfCache(PathBuf),
}

fn import(config: Config, source: ImportSource, json: bool) -> Result<ExitCode, String> {
    let block_size = config.cache.block_size;
    let app = App::new(config).map_err(|e| e.to_string())?;
    let report = match source {
        ImportSource::Olah(dir) => {
            hubcache::import::import_olah_blocking(&app.store, &app.meta, block_size, &dir)
        }
        ImportSource::HfCache(dir) => {
            hubcache::import::import_hf_cache_blocking(&app.store, &app.meta, block_size, &dir)
        }
    }
    .map_err(|e| e.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn export(config: Config, args: ExportArgs) -> Result<ExitCode, String> {
    use hubcache::hf::{Repo, RepoId, RepoType, Revision};
    let kind = match args.kind {
        ExportType::Model => RepoType::Model,
        ExportType::Dataset => RepoType::Dataset,
        ExportType::Space => RepoType::Space,
    };
    let id = RepoId::new(&args.repo).map_err(|e| e.to_string())?;
    let request = hubcache::export::ExportRequest {
        repo: Repo::new(kind, id),
        revision: Revision::new(&args.revision).map_err(|e| e.to_string())?,
        include: args.include,
        exclude: args.exclude,
        to: args.to,
        // As huggingface_hub does: HF_TOKEN reads gated and private repos.
        auth: std::env::var("HF_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| format!("Bearer {}", t.trim())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(async {
        let app = App::new(config).map_err(|e| e.to_string())?;
        hubcache::export::export(&app, &request)
            .await
            .map_err(|e| e.to_string())
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn reload(config: Option<&PathBuf>, pid_file: Option<PathBuf>) -> Result<ExitCode, String> {
    let paths = match pid_file {
        Some(pid_file) => lifecycle::RuntimePaths {
            upgrade_sock: PathBuf::new(),
            dir: pid_file.parent().map(PathBuf::from).unwrap_or_default(),
            pid_file,
        },
        None => lifecycle::RuntimePaths::resolve(&load_config(config)?.server),
    };
    let (pid, report) = lifecycle::reload_cmd::reload(&paths).map_err(|e| e.to_string())?;
    println!(
        "hubcache pid {pid}: reload {}: {}",
        report.result, report.message
    );
    if !report.needs_upgrade.is_empty() {
        println!(
            "not applied, needs `hubcache upgrade`: {}",
            report.needs_upgrade.join(", ")
        );
    }
    Ok(if report.result == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn upgrade(config: Option<&PathBuf>) -> Result<ExitCode, String> {
    let loaded = load_config(config)?;
    let paths = lifecycle::RuntimePaths::resolve(&loaded.server);
    let done = lifecycle::upgrade::upgrade(config.map(PathBuf::as_path), &paths)
        .map_err(|e| format!("upgrade failed: {e}"))?;
    println!(
        "hubcache pid {} now serves; pid {} drains (it exits when its last download ends, at \
         most after server.grace_period = {})",
        done.new_pid,
        done.old_pid,
        hubcache::config::HumanDuration(loaded.server.grace_period)
    );
    Ok(ExitCode::SUCCESS)
}

fn exit_with(result: Result<ExitCode, String>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("hubcache: {e}");
        ExitCode::from(2)
    })
}

/// Keep the heap flat under many concurrent downloads: glibc gives each thread that
/// allocates its own arena (up to 8 per core) and raises its mmap threshold as large buffers
/// are freed, so 1 MiB read buffers churning across Tokio's blocking threads would pin memory
/// in many arenas and fault fresh pages on every read. Two arenas, buffers kept on the heap for
/// reuse, and trimming only above 16 MiB of free top-of-heap keep RSS proportional to what is
/// in flight.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    hubcache::logging::init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load_checked(&file) {
            Ok(config) => match check_tls(&config) {
                Ok(warnings) => {
                    for warning in warnings {
                        eprintln!("{}: warning: {warning}", file.display());
                    }
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::from(2)
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Cache { command } => match command {
            CacheCommand::Verify { config, repair } => {
                exit_with(load_config(config.as_ref()).and_then(|c| verify(c, repair)))
            }
            CacheCommand::Import {
                config,
                olah,
                hf_cache,
                json,
            } => {
                let source = match (olah, hf_cache) {
                    (Some(dir), _) => ImportSource::Olah(dir),
                    (None, Some(dir)) => ImportSource::HfCache(dir),
                    (None, None) => {
                        return exit_with(Err("give --olah DIR or --hf-cache DIR".into()))
                    }
                };
                exit_with(load_config(config.as_ref()).and_then(|c| import(c, source, json)))
            }
            CacheCommand::Gc { config, dry_run } => {
                exit_with(load_config(config.as_ref()).and_then(|c| gc(c, dry_run)))
            }
            CacheCommand::Ls { config, sort } => {
                exit_with(load_config(config.as_ref()).and_then(|c| ls(c, sort)))
            }
        },
        Command::Export(args) => {
            let config = args.config.clone();
            exit_with(load_config(config.as_ref()).and_then(|c| export(c, args)))
        }
        Command::Warm(args) => ExitCode::from(hubcache::warmup::client::warm_command(args)),
        Command::Pin(args) => ExitCode::from(hubcache::warmup::pin_cli::pin_command(args)),
        Command::Jobs(args) => ExitCode::from(hubcache::warmup::client::jobs_command(args)),
        Command::Reload { config, pid_file } => exit_with(reload(config.as_ref(), pid_file)),
        Command::Upgrade { config } => exit_with(upgrade(config.as_ref())),
        Command::Serve { config, upgrade } => {
            lifecycle::catch_early_signals();
            let result =
                load_config(config.as_ref()).and_then(|c| serve(c, config.as_ref(), upgrade));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hubcache: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_ships_every_documented_kind() {
        let registry = plugin_registry();
        assert_eq!(
            registry.policy_kinds(),
            ["fifo", "large_first", "lfuda", "lru"]
        );
        assert_eq!(registry.sink_kinds(), ["log", "slack", "webhook", "wecom"]);
    }
}
