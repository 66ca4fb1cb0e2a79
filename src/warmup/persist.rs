//! Jobs on disk: one JSON file per job under `{first cache root}/warmup/jobs/`, written to a
//! temporary file and renamed (a crash leaves the old record or the new one, never half).

use std::path::{Path, PathBuf};

use super::job::JobRecord;

/// Where jobs are kept, under the first cache root.
pub const JOBS_DIR: &str = "warmup/jobs";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The job records of one node.
#[derive(Debug, Clone)]
pub struct JobStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A job id is what `Warmup` makes: letters, digits and `-` only (never a path).
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl JobStore {
    pub fn new(cache_root: &Path) -> Self {
        Self {
            dir: cache_root.join(JOBS_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the pins added through the admin API are kept (`warmup/pins.json`).
    pub fn pins_file(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("pins.json")
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        valid_id(id).then(|| self.dir.join(format!("{id}.json")))
    }

    /// Write `record` (blocking).
    pub fn save(&self, record: &JobRecord) -> Result<(), PersistError> {
        let Some(path) = self.path(&record.id) else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let body = serde_json::to_vec_pretty(record).map_err(|source| PersistError::Json {
            path: path.clone(),
            source,
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Forget job `id` (blocking; a missing file is fine).
    pub fn remove(&self, id: &str) -> Result<(), PersistError> {
        let Some(path) = self.path(id) else {
            return Ok(());
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Every readable record, oldest first; unreadable files are reported and skipped.
    pub fn load_all(&self) -> Vec<JobRecord> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                log::warn!("warm-up jobs in {}: {e}", self.dir.display());
                return Vec::new();
            }
        };
        let mut records: Vec<JobRecord> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|path| {
                let read = std::fs::read(&path).map_err(|e| e.to_string());
                match read.and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                    Ok(record) => Some(record),
                    Err(e) => {
                        log::warn!("warm-up job {}: {e}; ignored", path.display());
                        None
                    }
                }
            })
            .collect();
        records.sort_by(|a: &JobRecord, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::RepoType;
    use crate::warmup::job::{JobSpec, JobState};

    fn record(id: &str, created_ms: u64) -> JobRecord {
        let spec = JobSpec::whole("acme/x", RepoType::Model);
        let target = spec.target().unwrap();
        JobRecord::new(id.to_string(), &target, spec, created_ms)
    }

    #[test]
    fn records_round_trip_oldest_first_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        assert!(store.load_all().is_empty());
        let mut b = record("b", 20);
        b.state = JobState::Running;
        b.add_failure("x.bin", "refused".into());
        store.save(&b).unwrap();
        store.save(&record("a", 10)).unwrap();
        std::fs::write(store.dir().join("junk.json"), b"{not json").unwrap();
        let loaded = store.load_all();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].id, "a");
        assert_eq!(loaded[1], b);
        store.remove("a").unwrap();
        store.remove("a").unwrap();
        assert_eq!(store.load_all().len(), 1);
    }

    #[test]
    fn an_id_is_never_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        store.save(&record("../evil", 1)).unwrap();
        assert!(!dir.path().join("warmup/evil.json").exists());
        assert!(store.load_all().is_empty());
    }
}
