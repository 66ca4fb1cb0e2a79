//! Where the upgrade socket, the pid file and the status file live, and the checks that keep
//! them private.
//!
//! Pingora creates the upgrade socket world-writable (0666): whoever can reach it can hand a
//! new process fake listeners, or take the real ones from the old process. So its directory
//! must be ours and closed to everyone else (no group/other permission bits). By default all
//! three files live in one such directory, created 0700 when missing:
//!
//! 1. `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
//! 2. `$XDG_RUNTIME_DIR/hubcache`, else
//! 3. `/run/hubcache` when running as root, else
//! 4. `hubcache-<uid>` in the system temp directory.
//!
//! None of these depends on a key that an upgrade may change (listen, cache roots), so the old
//! and the new process always agree. Two instances run by one user need their own
//! `server.runtime_dir`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{defaults, ServerConfig};

/// Why the runtime files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{}: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The files one serving instance uses to be found, reloaded and upgraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePaths {
    /// The runtime directory (created private when missing).
    pub dir: PathBuf,
    pub upgrade_sock: PathBuf,
    pub pid_file: PathBuf,
}

impl RuntimePaths {
    /// The paths `server` names, with the defaults filled in.
    pub fn resolve(server: &ServerConfig) -> Self {
        let dir = server
            .runtime_dir
            .clone()
            .unwrap_or_else(default_runtime_dir);
        Self {
            upgrade_sock: server
                .upgrade_sock
                .clone()
                .unwrap_or_else(|| dir.join(defaults::UPGRADE_SOCK_NAME)),
            pid_file: server
                .pid_file
                .clone()
                .unwrap_or_else(|| dir.join(defaults::PID_FILE_NAME)),
            dir,
        }
    }

    /// The status file next to the pid file: the serving process's pid, upgrade socket and
    /// its last reload's outcome (read by `hubcache reload` and `hubcache upgrade`).
    pub fn status_file(&self) -> PathBuf {
        status_file_of(&self.pid_file)
    }

    /// Create the runtime directory if needed and check that the upgrade socket's directory
    /// is private (ours, no group/other access).
    pub fn prepare(&self) -> Result<(), PathError> {
        let len = self.upgrade_sock.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(PathError::Unsafe {
                path: self.upgrade_sock.clone(),
                reason: format!(
                    "the upgrade socket's path is {len} bytes, a Unix socket path has at most \
                     {MAX_SOCKET_PATH}: choose a shorter server.runtime_dir (or upgrade_sock)"
                ),
            });
        }
        ensure_private_dir(&self.dir)?;
        if let Some(parent) = self.upgrade_sock.parent().filter(|p| *p != self.dir) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            check_private_dir(parent, "the directory of server.upgrade_sock")?;
        }
        Ok(())
    }
}

/// The longest Unix socket path (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `hubcache.pid` → `hubcache.status.json`.
pub fn status_file_of(pid_file: &Path) -> PathBuf {
    pid_file.with_extension("status.json")
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    let value = std::env::var_os(name)?;
    let first = value.to_str()?.split(':').next()?.to_string();
    let path = PathBuf::from(first);
    path.is_absolute().then_some(path)
}

/// The default runtime directory (see the module doc).
pub fn default_runtime_dir() -> PathBuf {
    if let Some(dir) = env_dir("RUNTIME_DIRECTORY") {
        return dir;
    }
    if let Some(dir) = env_dir("XDG_RUNTIME_DIR") {
        return dir.join("hubcache");
    }
    if euid() == 0 {
        return PathBuf::from("/run/hubcache");
    }
    std::env::temp_dir().join(format!("hubcache-{}", euid()))
}

/// Create `dir` with mode 0700 if it is missing (its parents with the default mode), then
/// check it as [`check_private_dir`] does.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PathError> {
    let io = |source| PathError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io)?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    }
    check_private_dir(dir, "the runtime directory (server.runtime_dir)")
}

/// `dir` must be a real directory (not a symlink), owned by this user, with no permission
/// for group or others: else a local user could take the listening sockets over.
pub fn check_private_dir(dir: &Path, what: &str) -> Result<(), PathError> {
    let meta = fs::symlink_metadata(dir).map_err(|source| PathError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let unsafe_dir = |reason: String| PathError::Unsafe {
        path: dir.to_path_buf(),
        reason: format!(
            "{what} must be a private directory: {reason} (the upgrade socket there lets whoever \
             can reach it take over the listening sockets)"
        ),
    };
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory (a symlink?)".into()));
    }
    if meta.uid() != euid() {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by this user (uid {})",
            meta.uid(),
            euid()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "its mode is {mode:03o}; run `chmod 700 {}`",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_live_in_the_runtime_dir_and_explicit_paths_win() {
        let server = ServerConfig {
            runtime_dir: Some(PathBuf::from("/run/hc")),
            ..ServerConfig::default()
        };
        let paths = RuntimePaths::resolve(&server);
        assert_eq!(paths.upgrade_sock, PathBuf::from("/run/hc/upgrade.sock"));
        assert_eq!(paths.pid_file, PathBuf::from("/run/hc/hubcache.pid"));
        assert_eq!(
            paths.status_file(),
            PathBuf::from("/run/hc/hubcache.status.json")
        );
        let explicit = ServerConfig {
            upgrade_sock: Some(PathBuf::from("/srv/u.sock")),
            pid_file: Some(PathBuf::from("/srv/p")),
            ..server
        };
        let paths = RuntimePaths::resolve(&explicit);
        assert_eq!(paths.upgrade_sock, PathBuf::from("/srv/u.sock"));
        assert_eq!(paths.status_file(), PathBuf::from("/srv/p.status.json"));
    }

    #[test]
    fn a_missing_runtime_dir_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/run");
        ensure_private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir).unwrap();
    }

    #[test]
    fn a_runtime_dir_others_can_enter_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("mode is 755") && err.contains("chmod 700"),
            "{err}"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let err = check_private_dir(&link, "x").unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn an_upgrade_socket_in_a_shared_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let paths = RuntimePaths {
            dir: tmp.path().join("run"),
            upgrade_sock: shared.join("hubcache_upgrade.sock"),
            pid_file: tmp.path().join("run/hubcache.pid"),
        };
        let err = paths.prepare().unwrap_err().to_string();
        assert!(err.contains("server.upgrade_sock"), "{err}");
    }

    #[test]
    fn an_upgrade_socket_path_too_long_for_unix_sockets_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r".repeat(100));
        let paths = RuntimePaths::resolve(&ServerConfig {
            runtime_dir: Some(dir.clone()),
            ..ServerConfig::default()
        });
        let err = paths.prepare().unwrap_err().to_string();
        assert!(err.contains("at most 107"), "{err}");
        assert!(!dir.exists(), "nothing is created for a refused config");
    }
}
