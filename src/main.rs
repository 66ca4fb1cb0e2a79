//! The `hubcache` command line: `serve`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use hubcache::app::App;
use hubcache::config::Config;
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
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => Ok(Config::embedded_default()),
    }
}

fn serve(config: Config, upgrade: bool) -> Result<(), String> {
    hubcache::logging::configure(config.log.format, config.log.level);
    let app = App::new(config.clone()).map_err(|e| e.to_string())?;
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
    if let Some(admin) = hubcache::admin::service(&app) {
        server.add_service(admin);
    }
    let mut service = http_proxy_service(&server.configuration, HubProxy::new(app));
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
    server.run_forever();
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
    hubcache::logging::init();
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
