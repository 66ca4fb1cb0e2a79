//! The `hubcache` command line: `serve`, `reload`, `upgrade`, `check-config`, `cache ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use hubcache::app::App;
use hubcache::config::Config;
use hubcache::lifecycle::{self, Lifecycle};
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
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => Ok(Config::embedded_default()),
    }
}

fn serve(config: Config, config_path: Option<&PathBuf>, upgrade: bool) -> Result<(), String> {
    hubcache::logging::init(&config.log_level);
    let life = Lifecycle::prepare(&config, config_path.map(PathBuf::as_path), upgrade)
        .map_err(|e| e.to_string())?;
    let app = App::new(config.clone()).map_err(|e| e.to_string())?;
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
    life.started();
    let mut service =
        lifecycle::service::proxy_service(&server.configuration, HubProxy::new(app.clone()));
    service.add_tcp(&config.listen.to_string());
    server.add_service(service);
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
    life.run(server, app);
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
    hubcache::logging::init(&Default::default());
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
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
        },
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
