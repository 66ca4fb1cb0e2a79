//! A binary upgrade without a refused connection: start `hubcache serve --upgrade`, wait
//! until it waits for the listening sockets (its upgrade socket appears) and is still alive a
//! moment later, only then tell the old process to hand them over (SIGQUIT), and wait until
//! the new process serves. Pingora gives each side about 5 s, so the order matters: an old
//! process told first, with no receiver, shuts down anyway (a full outage).
//!
//! [`upgrade`] is `hubcache upgrade` (the new binary starts its own successor and signals
//! the old process). [`start_successor`] is also used by a server asked to upgrade itself
//! (SIGUSR2, for supervisors such as systemd, which must see the new process as its child).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::paths::RuntimePaths;
use super::pidfile;

/// How long the new process may take to open its upgrade socket (it opens the store first).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
/// The new process must still be alive this long after it started (a late start-up error).
const SETTLE: Duration = Duration::from_secs(1);
/// How long the hand-over and the new process's first pid-file write may take.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no running hubcache to upgrade: {0}")]
    NotRunning(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("cannot start {}: {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the new process exited ({status}) before taking over; the old process was not \
         signalled and keeps serving (see the new process's log lines)"
    )]
    DiedEarly { status: String },
    #[error(
        "the new process did not open the upgrade socket {} within {}s; it was stopped and the \
         old process keeps serving", path.display(), SOCKET_TIMEOUT.as_secs()
    )]
    NoSocket { path: PathBuf },
    #[error(
        "the old process (pid {old}) was told to hand over, but the new process {failure}: \
         the old process is shutting down, start hubcache again now"
    )]
    Committed { old: i32, failure: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What `hubcache upgrade` did.
#[derive(Debug)]
pub struct Upgraded {
    pub new_pid: u32,
    pub old_pid: i32,
}

/// Identity of the file at `path` (to tell a new socket from a stale one).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn exited(child: &mut Child) -> io::Result<Option<String>> {
    Ok(child.try_wait()?.map(|status| status.to_string()))
}

/// Start `exe serve [--config FILE] --upgrade` and return once it is waiting on
/// `upgrade_sock` and still alive [`SETTLE`] after it started. `log`: where its output goes
/// (then it also gets a session of its own); `None` inherits ours.
pub fn start_successor(
    exe: &Path,
    config: Option<&Path>,
    upgrade_sock: &Path,
    log: Option<File>,
) -> Result<Child, UpgradeError> {
    let before = identity(upgrade_sock);
    let mut command = Command::new(exe);
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.arg("--upgrade").stdin(Stdio::null());
    if let Some(log) = log {
        command.stdout(log.try_clone()?).stderr(log);
        // SAFETY: setsid is async-signal-safe; it detaches the server from the terminal
        // (and its Ctrl-C) of whoever ran `hubcache upgrade`.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| UpgradeError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    loop {
        if let Some(status) = exited(&mut child)? {
            return Err(UpgradeError::DiedEarly { status });
        }
        let now = identity(upgrade_sock);
        if now.is_some() && now != before {
            break;
        }
        if started.elapsed() > SOCKET_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(UpgradeError::NoSocket {
                path: upgrade_sock.to_path_buf(),
            });
        }
        std::thread::sleep(POLL);
    }
    std::thread::sleep(SETTLE.saturating_sub(started.elapsed()).max(POLL * 4));
    if let Some(status) = exited(&mut child)? {
        return Err(UpgradeError::DiedEarly { status });
    }
    Ok(child)
}

/// Where the old process writes its log, so the new one writes there too: its stderr, when
/// that is a file, a pipe or a terminal we may open (not a socket, e.g. journald's).
fn log_of(pid: i32) -> Option<File> {
    let fd = format!("/proc/{pid}/fd/2");
    let target = std::fs::read_link(&fd).ok()?;
    if target.to_string_lossy().starts_with("socket:") {
        return None;
    }
    OpenOptions::new().append(true).open(&fd).ok()
}

/// The pid of the hubcache serving with `paths`, checked alive.
pub fn serving_pid(paths: &RuntimePaths) -> Result<i32, UpgradeError> {
    let pid = pidfile::read_pid(&paths.pid_file)
        .map_err(|e| UpgradeError::NotRunning(format!("{}: {e}", paths.pid_file.display())))?
        .ok_or_else(|| {
            UpgradeError::NotRunning(format!(
                "no pid file at {} (is it running with this config?)",
                paths.pid_file.display()
            ))
        })?;
    if !pidfile::is_live_hubcache(pid) {
        return Err(UpgradeError::NotRunning(format!(
            "{} names pid {pid}, which is not a running hubcache",
            paths.pid_file.display()
        )));
    }
    Ok(pid)
}

/// `hubcache upgrade`: start this binary with `config` as the successor of the hubcache named
/// by `paths.pid_file`, then hand over.
pub fn upgrade(config: Option<&Path>, paths: &RuntimePaths) -> Result<Upgraded, UpgradeError> {
    let old = serving_pid(paths)?;
    if let Some(status) = pidfile::read_status(&paths.status_file()).filter(|s| s.pid == old) {
        if status.upgrade_sock != paths.upgrade_sock {
            return Err(UpgradeError::Mismatch(format!(
                "pid {old} hands over on {}, but this config names {} (server.upgrade_sock or \
                 server.runtime_dir changed): upgrade with the old values, change them later with \
                 a restart",
                status.upgrade_sock.display(),
                paths.upgrade_sock.display()
            )));
        }
    }
    let exe = std::env::current_exe()?;
    let mut child = start_successor(&exe, config, &paths.upgrade_sock, log_of(old))?;
    // SAFETY: plain kill(2) on the pid the pid file names (checked to be a hubcache).
    if unsafe { libc::kill(old, libc::SIGQUIT) } != 0 {
        let error = io::Error::last_os_error();
        let _ = child.kill();
        let _ = child.wait();
        return Err(UpgradeError::NotRunning(format!(
            "cannot signal pid {old}: {error}"
        )));
    }
    wait_serving(&mut child, &paths.pid_file, old)?;
    Ok(Upgraded {
        new_pid: child.id(),
        old_pid: old,
    })
}

/// Wait until the new process wrote its pid (it serves), or fail if it died.
fn wait_serving(child: &mut Child, pid_file: &Path, old: i32) -> Result<(), UpgradeError> {
    let started = Instant::now();
    let new = i32::try_from(child.id()).unwrap_or(-1);
    loop {
        if let Some(status) = exited(child)? {
            return Err(UpgradeError::Committed {
                old,
                failure: format!("exited ({status})"),
            });
        }
        if matches!(pidfile::read_pid(pid_file), Ok(Some(pid)) if pid == new) {
            return Ok(());
        }
        if started.elapsed() > SERVE_TIMEOUT {
            return Err(UpgradeError::Committed {
                old,
                failure: format!(
                    "(pid {new}) did not report serving within {}s",
                    SERVE_TIMEOUT.as_secs()
                ),
            });
        }
        std::thread::sleep(POLL);
    }
}
