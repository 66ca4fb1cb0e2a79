//! The `hubcache` command line: `serve`, `check-config`, `cache verify|import|gc|ls`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

use hubcache::app::App;
use hubcache::config::{Config, ConfigError};
use hubcache::evict::cli::SortBy;
use hubcache::evict::CacheService;
use hubcache::plugins::api::Registry;
use hubcache::plugins::Plugins;
use hubcache::proxy::HubProxy;

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
        /// the new binary with this flag, then send SIGQUIT to the old one.
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config file and exit (non-zero, naming the key, when invalid).
    CheckConfig {
        /// YAML config file.
        file: PathBuf,
    },
    /// Maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
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
    /// Import an Olah (0.5, and older) or DingoSpeed cache (its `repos` directory) without
    /// downloading again. Reports what happened to every file; only bytes that verify are
    /// imported. Exits 1 when a file the cache had bytes for was left out.
    Import {
        /// YAML config file (for the cache roots); the embedded default otherwise.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The Olah / DingoSpeed `repos` directory (or its parent).
        #[arg(long)]
        olah: PathBuf,
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

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(path) => load_checked(path).map_err(|e| e.to_string()),
        None => Ok(Config::embedded_default()),
    }
}

fn build_plugins(config: &Config) -> Result<Plugins, String> {
    hubcache::plugins::build(&config.plugins, &plugin_registry()).map_err(|e| e.to_string())
}

fn serve(config: Config, upgrade: bool) -> Result<(), String> {
    let plugins = build_plugins(&config)?;
    let app = App::new(config.clone()).map_err(|e| e.to_string())?;
    let cache_service = CacheService::start(&app, plugins).map_err(|e| e.to_string())?;
    let mut server_conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        pid_file: config.server.pid_file.display().to_string(),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    server_conf.upstream_keepalive_pool_size = 128;
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, HubProxy::new(app));
    service.add_tcp(&config.listen.to_string());
    server.add_service(service);
    server.add_service(background_service(
        "cache service",
        cache_service.background(),
    ));
    log::info!(
        "hubcache listening on {} (cache {:?}, upstreams: {}, offline: {})",
        config.listen,
        config.cache_roots(),
        config
            .upstreams
            .iter()
            .map(|u| u.url.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        config.offline
    );
    server.run(RunArgs::default());
    // Every runtime is gone (SIGINT included): keep what the index learned.
    cache_service.shutdown();
    Ok(())
}

fn gc(config: Config, dry_run: bool) -> Result<ExitCode, String> {
    let plugins = build_plugins(&config)?;
    let app = App::new(config).map_err(|e| e.to_string())?;
    let view = hubcache::evict::cli::view(&app, plugins.policy)?;
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

fn import(config: Config, dir: &std::path::Path, json: bool) -> Result<ExitCode, String> {
    let block_size = config.cache.block_size;
    let app = App::new(config).map_err(|e| e.to_string())?;
    let report = hubcache::import::import_olah_blocking(&app.store, &app.meta, block_size, dir)
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
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,pingora=warn,pingora_core=warn"),
    )
    .init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load_checked(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Cache { command } => match command {
            CacheCommand::Verify { config, repair } => {
                exit_with(load_config(config.as_ref()).and_then(|c| verify(c, repair)))
            }
            CacheCommand::Import { config, olah, json } => {
                exit_with(load_config(config.as_ref()).and_then(|c| import(c, &olah, json)))
            }
            CacheCommand::Gc { config, dry_run } => {
                exit_with(load_config(config.as_ref()).and_then(|c| gc(c, dry_run)))
            }
            CacheCommand::Ls { config, sort } => {
                exit_with(load_config(config.as_ref()).and_then(|c| ls(c, sort)))
            }
        },
        Command::Serve { config, upgrade } => {
            let result = load_config(config.as_ref()).and_then(|c| serve(c, upgrade));
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
