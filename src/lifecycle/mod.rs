//! The serving process's life: its private runtime directory (upgrade socket, pid file,
//! status file), its signals (reload, upgrade, drain), and the `hubcache reload` /
//! `hubcache upgrade` commands that drive a running process through them.
//!
//! In `serve`: [`catch_early_signals`] first, [`Lifecycle::prepare`] before building the
//! server (its paths go into Pingora's `ServerConf`), [`Lifecycle::started`] once the
//! listeners are ours (after `bootstrap`), and [`Lifecycle::run`] instead of
//! `run_forever`.

mod drain;
pub mod notify;
pub mod paths;
pub mod pidfile;
pub mod reload_cmd;
pub mod service;
mod signals;
pub mod upgrade;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pingora::server::{RunArgs, Server};

use crate::app::{App, ReloadReport};
use crate::config::Config;
pub use paths::RuntimePaths;
use pidfile::{Status, StatusReload};
pub use signals::catch_early as catch_early_signals;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Paths(#[from] paths::PathError),
    #[error(
        "another hubcache (pid {pid}) serves with the pid file {}: stop it, upgrade it \
         (hubcache upgrade), or give this instance its own server.runtime_dir", pid_file.display()
    )]
    AlreadyRunning { pid: i32, pid_file: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One serving process's runtime files and how it was started.
pub struct Lifecycle {
    pub paths: RuntimePaths,
    /// The config file SIGHUP re-reads (absolute); `None`: the embedded default.
    config_path: Option<PathBuf>,
    /// This binary, as it was when the process started (a self-upgrade runs what is at this
    /// path now).
    exe: PathBuf,
    /// `server.grace_period`: the most a drain may take.
    grace: Duration,
    /// The last reload's outcome, for the status file.
    last_reload: Mutex<Option<(u64, StatusReload)>>,
}

impl Lifecycle {
    /// Resolve and check the runtime files for `config` (started from `config_path`).
    /// Refuses to start (unless `upgrade`) while another hubcache serves with the same pid
    /// file.
    pub fn prepare(
        config: &Config,
        config_path: Option<&Path>,
        upgrade: bool,
    ) -> Result<Self, LifecycleError> {
        let paths = RuntimePaths::resolve(&config.server);
        paths.prepare()?;
        if !upgrade {
            if let Ok(Some(pid)) = pidfile::read_pid(&paths.pid_file) {
                let me = i32::try_from(std::process::id()).unwrap_or(0);
                if pid != me && pidfile::is_live_hubcache(pid) {
                    return Err(LifecycleError::AlreadyRunning {
                        pid,
                        pid_file: paths.pid_file.clone(),
                    });
                }
            }
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LifecycleError::Io { path, source }
        };
        let config_path = match config_path {
            Some(p) => Some(std::path::absolute(p).map_err(io(p))?),
            None => None,
        };
        let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
        Ok(Self {
            paths,
            config_path,
            exe,
            grace: config.server.grace_period,
            last_reload: Mutex::new(None),
        })
    }

    /// For Pingora's `ServerConf::upgrade_sock`.
    pub fn upgrade_sock(&self) -> String {
        self.paths.upgrade_sock.display().to_string()
    }

    /// For Pingora's `ServerConf::pid_file` (Pingora writes it only when daemonising).
    pub fn pid_file(&self) -> String {
        self.paths.pid_file.display().to_string()
    }

    /// The listeners are ours: write the pid and status files, tell systemd. A pid file that
    /// cannot be written is logged, not fatal: after an upgrade the old process is already
    /// handing over, and serving matters more than `hubcache reload` finding us.
    pub fn started(&self) {
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        if let Err(e) = pidfile::write_pid(&self.paths.pid_file, pid) {
            log::error!(
                "cannot write the pid file {}: {e} (hubcache reload/upgrade will not find this \
                 process; SIGHUP still reloads)",
                self.paths.pid_file.display()
            );
        }
        self.write_status(None);
        notify::ready();
        log::info!(
            "pid {pid} serving (pid file {}, upgrade socket {})",
            self.paths.pid_file.display(),
            self.paths.upgrade_sock.display()
        );
    }

    /// Rewrite the status file (after a reload: with its outcome).
    fn write_status(&self, report: Option<&ReloadReport>) {
        let mut last = self.last_reload.lock();
        if let Some(report) = report {
            *last = Some((report.attempt, StatusReload::from(report)));
        }
        let status = Status {
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            upgrade_sock: self.paths.upgrade_sock.clone(),
            config: self.config_path.clone(),
            reloads: last.as_ref().map_or(0, |(n, _)| *n),
            last_reload: last.as_ref().map(|(_, r)| r.clone()),
        };
        let file = self.paths.status_file();
        if let Err(e) = pidfile::write_status(&file, &status) {
            log::warn!("cannot write the status file {}: {e}", file.display());
        }
    }

    /// The process ends: remove the pid and status files if they are still ours.
    fn finish(&self) {
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        pidfile::remove_if_ours(&self.paths.pid_file, &self.paths.status_file(), pid);
        log::logger().flush();
    }

    /// Run the server until it stops (signals: see `signals`), then exit.
    pub fn run(self, server: Server, app: Arc<App>) -> ! {
        let life = Arc::new(self);
        let phases = server.watch_execution_phase();
        let watch = signals::Signals {
            app: Arc::clone(&app),
            life: Arc::clone(&life),
            phases: Mutex::new(Some(phases)),
            watch: Mutex::new(signals::Watch::default()),
        };
        server.run(RunArgs {
            shutdown_signal: Box::new(watch),
        });
        app.meta.flush();
        // Every runtime is gone (SIGINT included): keep what the eviction index learned.
        if let Some(cache) = app.cache_service.get() {
            cache.shutdown();
        }
        life.finish();
        std::process::exit(0)
    }
}
