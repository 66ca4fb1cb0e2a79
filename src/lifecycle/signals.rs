//! The process's signals, handled in Pingora's main loop (as its `ShutdownSignalWatch`):
//!
//! | signal | effect |
//! |---|---|
//! | `SIGHUP` | reload the config file (the process keeps running whatever the outcome) |
//! | `SIGUSR2` | upgrade itself: start `<its binary> serve --upgrade` and hand over to it |
//! | `SIGQUIT` | hand the listening sockets to a new process waiting with `--upgrade`, then drain; ignored (logged) when none waits |
//! | `SIGTERM` | stop accepting, then drain |
//! | `SIGINT` | stop at once (also during a drain) |
//!
//! With `watch_config: true` the config file (and the `tls` certificate and key) are also
//! checked every [`WATCH_EVERY`] and reloaded once a change has been stable for one check.
//!
//! Pingora leaves SIGHUP's default action (terminate) in place: [`catch_early`] catches HUP
//! and USR2 from the first line of `serve`, and a signal that arrives before the main loop
//! runs is acted on when it starts.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::broadcast;

use super::{drain, upgrade, Lifecycle};
use crate::app::App;
use crate::config::Config;

/// How often `watch_config` looks at the file.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What identifies a version of the config file.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// The file versions last applied (the config file, then the `tls` certificate and key), and
/// newer ones seen once (applied if still there next time).
#[derive(Default)]
pub(super) struct Watch {
    applied: Vec<Stamp>,
    pending: Option<Vec<Stamp>>,
}

static EARLY_HANGUP: AtomicBool = AtomicBool::new(false);
static EARLY_USR2: AtomicBool = AtomicBool::new(false);

extern "C" fn remember(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    match signal {
        libc::SIGHUP => EARLY_HANGUP.store(true, Ordering::SeqCst),
        libc::SIGUSR2 => EARLY_USR2.store(true, Ordering::SeqCst),
        _ => {}
    }
}

/// Keep SIGHUP and SIGUSR2 from killing the process before the main loop handles them (their
/// default action is to terminate). Call first thing in `serve`.
pub fn catch_early() {
    for sig in [libc::SIGHUP, libc::SIGUSR2] {
        // SAFETY: installs a handler that only stores to an atomic; the sigaction struct is
        // fully initialised (zeroed, then handler and an empty mask set).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = remember as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Pingora's shutdown watcher, extended with reload and self-upgrade.
pub(super) struct Signals {
    pub(super) app: Arc<App>,
    pub(super) life: Arc<Lifecycle>,
    /// Pingora's execution phases (the drain starts when the grace period does).
    pub(super) phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    pub(super) watch: Mutex<Watch>,
}

struct Streams {
    hangup: Signal,
    usr2: Signal,
    quit: Signal,
    term: Signal,
    interrupt: Signal,
}

fn streams() -> std::io::Result<Streams> {
    Ok(Streams {
        hangup: signal(SignalKind::hangup())?,
        usr2: signal(SignalKind::user_defined2())?,
        quit: signal(SignalKind::quit())?,
        term: signal(SignalKind::terminate())?,
        interrupt: signal(SignalKind::interrupt())?,
    })
}

/// Whether a process listens on the Unix socket at `path` (read from `/proc/net/unix`, so
/// nobody's single accept is used up; a stale socket file left by a crash does not count).
fn listening_unix_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let exists = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return exists;
    };
    exists && listed_as_listening(&table, path)
}

/// `/proc/net/unix`: `Num RefCount Protocol Flags Type St Inode Path`; a listening socket has
/// the flag `__SO_ACCEPTCON` (00010000).
fn listed_as_listening(table: &str, path: &Path) -> bool {
    let Some(path) = path.to_str() else {
        return true;
    };
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8 && fields[3] == "00010000" && fields[7..].join(" ") == path
    })
}

impl Signals {
    /// The versions of the files a reload reads: the config file, and the certificate and key
    /// of `tls` (a renewed certificate is picked up by `watch_config` too).
    fn stamps(&self, path: &Path) -> Vec<Stamp> {
        let mut stamps = vec![stamp(path)];
        if let Some(tls) = &self.app.settings().config.tls {
            stamps.push(stamp(&tls.cert));
            stamps.push(stamp(&tls.key));
        }
        stamps
    }

    /// SIGHUP: re-read the config file and apply it (or keep the running config).
    fn reload(&self) {
        let loaded = match &self.life.config_path {
            Some(path) => {
                self.watch.lock().applied = self.stamps(path);
                Config::load(path)
            }
            None => {
                log::info!("reload: started without --config; the embedded default stays");
                Ok(Config::embedded_default())
            }
        };
        let report = self.app.reload(self.life.config_path.as_deref(), loaded);
        self.life.write_status(Some(&report));
    }

    /// `watch_config`: whether the file changed and the change held for one more check.
    fn file_changed(&self) -> bool {
        let Some(path) = &self.life.config_path else {
            return false;
        };
        if !self.app.settings().config.watch_config {
            return false;
        }
        let now = self.stamps(path);
        let mut watch = self.watch.lock();
        if now == watch.applied {
            watch.pending = None;
            return false;
        }
        if watch.pending.as_ref() == Some(&now) {
            watch.pending = None;
            log::info!(
                "{} (or the tls files it names) changed: reloading (watch_config)",
                path.display()
            );
            return true;
        }
        watch.pending = Some(now);
        false
    }

    /// SIGUSR2: start the successor; true once it waits for the sockets.
    async fn upgrade_self(&self) -> bool {
        let life = Arc::clone(&self.life);
        log::info!("upgrade: starting {} serve --upgrade", life.exe.display());
        let started = tokio::task::spawn_blocking(move || {
            upgrade::start_successor(
                &life.exe,
                life.config_path.as_deref(),
                &life.paths.upgrade_sock,
                None,
            )
        })
        .await;
        match started {
            Ok(Ok(child)) => {
                log::info!(
                    "upgrade: new process {} waits for the listening sockets; handing over",
                    child.id()
                );
                true
            }
            Ok(Err(e)) => {
                log::error!("upgrade refused, this process keeps serving: {e}");
                false
            }
            Err(e) => {
                log::error!("upgrade failed, this process keeps serving: {e}");
                false
            }
        }
    }

    /// SIGQUIT hands the listeners to a process waiting on the upgrade socket. With none
    /// waiting, Pingora would close them and stop anyway (an outage): refuse instead.
    fn successor_waits(&self) -> bool {
        let sock = &self.life.paths.upgrade_sock;
        let waiting = listening_unix_socket(sock);
        if !waiting {
            log::error!(
                "SIGQUIT ignored: no new process waits on {} to take the listening sockets \
                 (start `hubcache serve --upgrade` first, or use `hubcache upgrade`; SIGTERM \
                 stops)",
                sock.display()
            );
        }
        waiting
    }

    /// The process will stop: answers carry `Connection: close` from now on, and it exits as
    /// soon as nothing is in flight once the listeners are closed.
    fn begin_stop(&self, why: &str) {
        log::info!(
            "{why}: draining (exit when the last download ends, at most {:?})",
            self.life.grace
        );
        self.app.activity.stop();
        if let Some(phases) = self.phases.lock().take() {
            tokio::spawn(drain::drain(
                Arc::clone(&self.app),
                Arc::clone(&self.life),
                phases,
            ));
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut s = match streams() {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for signals ({e}): stopping");
                return ShutdownSignal::FastShutdown;
            }
        };
        if let Some(path) = &self.life.config_path {
            self.watch.lock().applied = self.stamps(path);
        }
        let mut watch_tick = tokio::time::interval(WATCH_EVERY);
        if EARLY_HANGUP.swap(false, Ordering::SeqCst) {
            self.reload();
        }
        if EARLY_USR2.swap(false, Ordering::SeqCst) && self.upgrade_self().await {
            self.begin_stop("upgrade (SIGUSR2)");
            return ShutdownSignal::GracefulUpgrade;
        }
        loop {
            tokio::select! {
                _ = s.hangup.recv() => self.reload(),
                _ = watch_tick.tick() => {
                    if self.file_changed() {
                        self.reload();
                    }
                }
                _ = s.usr2.recv() => {
                    if self.upgrade_self().await {
                        self.begin_stop("upgrade (SIGUSR2)");
                        return ShutdownSignal::GracefulUpgrade;
                    }
                }
                _ = s.quit.recv() => {
                    if self.successor_waits() {
                        self.begin_stop("SIGQUIT: handing the listening sockets over");
                        return ShutdownSignal::GracefulUpgrade;
                    }
                }
                _ = s.term.recv() => {
                    self.begin_stop("SIGTERM");
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = s.interrupt.recv() => {
                    log::info!("SIGINT: stopping now");
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listening_socket_counts_as_a_waiting_successor() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 11 /run/hc/upgrade.sock\n\
            0000000000000000: 00000002 00000000 00000000 0001 03 12 /run/hc/other.sock\n";
        assert!(listed_as_listening(
            table,
            Path::new("/run/hc/upgrade.sock")
        ));
        assert!(!listed_as_listening(table, Path::new("/run/hc/other.sock")));
        assert!(!listed_as_listening(
            table,
            Path::new("/run/hc/missing.sock")
        ));
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        assert!(!listening_unix_socket(&sock));
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(listening_unix_socket(&sock));
        drop(listener);
        assert!(
            !listening_unix_socket(&sock),
            "a stale socket file does not count"
        );
    }
}
