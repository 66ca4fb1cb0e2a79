//! The pid file (written in the foreground too: Pingora writes one only when daemonising) and
//! the status file beside it, both replaced atomically (write a temporary file, rename).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::app::ReloadReport;

/// What the serving process publishes about itself next to its pid file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: i32,
    /// The hand-over socket it sends its listeners to on SIGQUIT.
    pub upgrade_sock: PathBuf,
    /// The config file it reloads on SIGHUP (`None`: the embedded default).
    pub config: Option<PathBuf>,
    /// Reload attempts so far.
    pub reloads: u64,
    /// The last reload's outcome.
    pub last_reload: Option<StatusReload>,
}

/// [`ReloadReport`] as stored in the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReload {
    pub result: String,
    pub generation: u64,
    pub message: String,
    pub changed: Vec<String>,
    pub needs_upgrade: Vec<String>,
}

impl From<&ReloadReport> for StatusReload {
    fn from(r: &ReloadReport) -> Self {
        Self {
            result: r.result.as_str().to_string(),
            generation: r.generation,
            message: r.message.clone(),
            changed: r.changed.clone(),
            needs_upgrade: r.needs_upgrade.clone(),
        }
    }
}

/// Write `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn write_pid(path: &Path, pid: i32) -> io::Result<()> {
    write_atomic(path, format!("{pid}\n").as_bytes())
}

/// The pid in `path`; `None` when the file is missing.
pub fn read_pid(path: &Path) -> io::Result<Option<i32>> {
    match fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|pid| *pid > 0)
            .map(Some)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("not a pid: {text:?}"))
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write_status(path: &Path, status: &Status) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    write_atomic(path, &text)
}

/// The status in `path`; `None` when missing or unreadable (an older process, a crash).
pub fn read_status(path: &Path) -> Option<Status> {
    let text = fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Remove `pid_file` and its status file if they still name `pid` (a newer process may
/// have written its own).
pub fn remove_if_ours(pid_file: &Path, status_file: &Path, pid: i32) {
    if matches!(read_pid(pid_file), Ok(Some(p)) if p == pid) {
        let _ = fs::remove_file(pid_file);
    }
    if read_status(status_file).is_some_and(|s| s.pid == pid) {
        let _ = fs::remove_file(status_file);
    }
}

/// Whether `pid` is a live process named like hubcache (not a recycled pid).
pub fn is_live_hubcache(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists
        && fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|comm| comm.trim().starts_with("hubcache"))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_and_status_round_trip_and_are_removed_only_by_their_process() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("hubcache.pid");
        let status_file = dir.path().join("hubcache.status.json");
        assert_eq!(read_pid(&pid_file).unwrap(), None);
        write_pid(&pid_file, 4242).unwrap();
        assert_eq!(read_pid(&pid_file).unwrap(), Some(4242));
        let status = Status {
            pid: 4242,
            upgrade_sock: dir.path().join("upgrade.sock"),
            config: None,
            reloads: 0,
            last_reload: None,
        };
        write_status(&status_file, &status).unwrap();
        assert_eq!(read_status(&status_file), Some(status));
        remove_if_ours(&pid_file, &status_file, 1);
        assert!(
            pid_file.exists() && status_file.exists(),
            "another pid's files stay"
        );
        remove_if_ours(&pid_file, &status_file, 4242);
        assert!(!pid_file.exists() && !status_file.exists());
        std::fs::write(&pid_file, "garbage").unwrap();
        assert!(read_pid(&pid_file).is_err());
    }

    #[test]
    fn this_test_process_is_not_taken_for_a_hubcache() {
        // The test binary's name starts with "hubcache-" (cargo's naming), so check a pid
        // that cannot exist instead, and our own pid's liveness through kill(0).
        assert!(!is_live_hubcache(i32::MAX));
    }
}
