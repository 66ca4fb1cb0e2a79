//! `hubcache reload`: send SIGHUP to the serving process and report what its reload did, read
//! from the status file it rewrites after every attempt.

use std::time::{Duration, Instant};

use super::paths::RuntimePaths;
use super::pidfile::{self, StatusReload};
use super::upgrade::{serving_pid, UpgradeError};

/// How long a reload may take to be reported.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReloadCmdError {
    #[error("{0}")]
    NotRunning(#[from] UpgradeError),
    #[error("cannot signal pid {pid}: {error}")]
    Signal { pid: i32, error: std::io::Error },
    #[error(
        "pid {pid} did not report the reload within {}s (see its log; is it a hubcache that \
         writes {}?)", REPORT_TIMEOUT.as_secs(), status.display()
    )]
    NoReport {
        pid: i32,
        status: std::path::PathBuf,
    },
}

/// Reload the hubcache serving with `paths`; returns its pid and the outcome.
pub fn reload(paths: &RuntimePaths) -> Result<(i32, StatusReload), ReloadCmdError> {
    let pid = serving_pid(paths)?;
    let status_file = paths.status_file();
    let before = pidfile::read_status(&status_file)
        .filter(|s| s.pid == pid)
        .map_or(0, |s| s.reloads);
    // SAFETY: plain kill(2) on the pid the pid file names (checked to be a hubcache).
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(ReloadCmdError::Signal {
            pid,
            error: std::io::Error::last_os_error(),
        });
    }
    let started = Instant::now();
    while started.elapsed() < REPORT_TIMEOUT {
        if let Some(status) = pidfile::read_status(&status_file) {
            if status.pid == pid && status.reloads > before {
                if let Some(report) = status.last_reload {
                    return Ok((pid, report));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(ReloadCmdError::NoReport {
        pid,
        status: status_file,
    })
}
