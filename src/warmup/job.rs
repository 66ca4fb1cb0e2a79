//! What a warm-up job is: the request ([`JobSpec`]), its validated target, the file filter
//! (`include` / `exclude` globs, as huggingface_hub's `allow_patterns` / `ignore_patterns`)
//! and the record of its progress ([`JobRecord`], answered by the admin API and persisted).

use serde::{Deserialize, Serialize};

use crate::config::ByteSize;
use crate::hf::{Repo, RepoId, RepoType, Revision};

/// A job as asked for (`POST /api/jobs`, or one entry of a pin manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `org/name` (or `name`).
    pub repo: String,
    /// `model` (default), `dataset`, `space` or `kernel`.
    #[serde(rename = "type", default = "default_kind")]
    pub kind: RepoType,
    /// Branch, tag or commit; the default branch (`main`) when absent.
    #[serde(default)]
    pub revision: Option<String>,
    /// Only paths matching one of these globs (all when empty).
    #[serde(default, deserialize_with = "one_or_many")]
    pub include: Vec<String>,
    /// No path matching one of these globs.
    #[serde(default, deserialize_with = "one_or_many")]
    pub exclude: Vec<String>,
    /// At most this many bytes per second for the whole job (`50MiB` or a number).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rate")]
    pub rate_limit: Option<u64>,
}

fn default_kind() -> RepoType {
    RepoType::Model
}

/// `"x"` or `["x", "y"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

mod rate {
    use super::ByteSize;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(rate: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match rate {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<ByteSize>::deserialize(d)?.map(|b| b.0))
    }
}

/// Why a job spec cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("repo {repo:?}: {reason}")]
    Repo { repo: String, reason: String },
    #[error("revision {revision:?}: {reason}")]
    Revision { revision: String, reason: String },
    #[error("rate_limit must be more than 0 bytes per second")]
    ZeroRate,
    #[error("{field} pattern {pattern:?} is empty")]
    EmptyPattern {
        field: &'static str,
        pattern: String,
    },
}

/// A validated job target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub repo: Repo,
    pub revision: Revision,
    pub filter: PathFilter,
}

impl JobSpec {
    /// A spec for the whole repo at its default branch.
    pub fn whole(repo: &str, kind: RepoType) -> Self {
        Self {
            repo: repo.to_string(),
            kind,
            revision: None,
            include: Vec::new(),
            exclude: Vec::new(),
            rate_limit: None,
        }
    }

    /// The repo, revision and filter, or why they are not valid.
    pub fn target(&self) -> Result<Target, SpecError> {
        let id = RepoId::new(&self.repo).map_err(|e| SpecError::Repo {
            repo: self.repo.clone(),
            reason: e.to_string(),
        })?;
        let name = self.revision.as_deref().unwrap_or("main");
        let revision = Revision::new(name).map_err(|e| SpecError::Revision {
            revision: name.to_string(),
            reason: e.to_string(),
        })?;
        if self.rate_limit == Some(0) {
            return Err(SpecError::ZeroRate);
        }
        for (field, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            if let Some(p) = patterns.iter().find(|p| p.is_empty()) {
                return Err(SpecError::EmptyPattern {
                    field,
                    pattern: p.clone(),
                });
            }
        }
        Ok(Target {
            repo: Repo::new(self.kind, id),
            revision,
            filter: PathFilter::new(&self.include, &self.exclude),
        })
    }
}

/// Which repo paths a job takes: huggingface_hub's `filter_repo_objects` (fnmatch: `*`
/// matches any run of characters, `/` included; a pattern ending in `/` takes the folder).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

fn folder_pattern(p: &str) -> String {
    if p.ends_with('/') {
        format!("{p}*")
    } else {
        p.to_string()
    }
}

impl PathFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        Self {
            include: include.iter().map(|p| folder_pattern(p)).collect(),
            exclude: exclude.iter().map(|p| folder_pattern(p)).collect(),
        }
    }

    /// Whether `path` is taken.
    pub fn wants(&self, path: &str) -> bool {
        let matches = |p: &String| fnmatch(p.as_bytes(), path.as_bytes());
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }
}

/// `*` (any run), `?` (one byte) and `[...]` classes (`[!...]` negated), as Python's fnmatch.
fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class(&pattern[p..], text[t]) {
                Some((true, len)) => Some(p + len),
                Some((false, _)) => None,
                // An unclosed `[` is a literal.
                None => (text[t] == b'[').then_some(p + 1),
            },
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the start of `pattern`: (whether `c` is in it, its length), or `None`
/// when it is not closed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(pattern.get(i), Some(b'!'));
    if negated {
        i += 1;
    }
    let start = i;
    let mut found = false;
    while let Some(&b) = pattern.get(i) {
        if b == b']' && i > start {
            return Some((found != negated, i + 1));
        }
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
            found |= (b..=pattern[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= b == c;
            i += 1;
        }
    }
    None
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a job slot.
    Queued,
    /// Resolving the revision and listing the files.
    Listing,
    /// Filling files.
    Running,
    /// Every file is cached.
    Done,
    /// Finished with failed files, or could not list the repo.
    Failed,
    /// Cancelled through the admin API.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Listing,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Listing => "listing",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended (a restart does not resume it).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A file that could not be cached, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedFile {
    pub path: String,
    pub reason: String,
}

/// Failed files kept per job (the count is exact, the list is capped).
pub const MAX_FAILED_LISTED: usize = 1000;

/// A job's record: what the admin API answers (with the live rate and ETA added) and what is
/// persisted under the cache's state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// `models/org/name`.
    pub repo: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// The commit the revision resolved to, once known.
    #[serde(default)]
    pub commit: Option<String>,
    pub created_ms: u64,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// Times the job was started (1, plus one per resume after a restart).
    #[serde(default)]
    pub runs: u32,
    #[serde(default)]
    pub files_total: u64,
    /// Files cached (fetched now or already present).
    #[serde(default)]
    pub files_done: u64,
    /// Of `files_done`, those that were already complete in the cache.
    #[serde(default)]
    pub files_present: u64,
    #[serde(default)]
    pub files_failed: u64,
    #[serde(default)]
    pub bytes_total: u64,
    /// Bytes of the files done, plus what was read of the files in progress.
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub failed: Vec<FailedFile>,
    /// Why the job as a whole failed (the repo could not be listed).
    #[serde(default)]
    pub error: Option<String>,
    /// It fetches with a hub token (kept only in memory): after a restart it cannot resume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_token: bool,
}

impl JobRecord {
    pub fn new(id: String, target: &Target, spec: JobSpec, now_ms: u64) -> Self {
        Self {
            id,
            repo: target.repo.to_string(),
            spec,
            state: JobState::Queued,
            commit: None,
            created_ms: now_ms,
            finished_ms: None,
            runs: 0,
            files_total: 0,
            files_done: 0,
            files_present: 0,
            files_failed: 0,
            bytes_total: 0,
            bytes_done: 0,
            failed: Vec::new(),
            error: None,
            needs_token: false,
        }
    }

    /// Forget the progress of an earlier run (a resumed job counts again; present files are
    /// skipped quickly).
    pub fn reset_progress(&mut self) {
        self.files_total = 0;
        self.files_done = 0;
        self.files_present = 0;
        self.files_failed = 0;
        self.bytes_total = 0;
        self.bytes_done = 0;
        self.failed.clear();
        self.error = None;
        self.finished_ms = None;
    }

    pub fn add_failure(&mut self, path: &str, reason: String) {
        self.files_failed += 1;
        if self.failed.len() < MAX_FAILED_LISTED {
            self.failed.push(FailedFile {
                path: path.to_string(),
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_spec_takes_one_or_many_patterns_and_a_rate_with_units() {
        let s = spec(
            r#"{"repo": "acme/x", "type": "dataset", "include": "*.json",
                "exclude": ["a/", "b*"], "rate_limit": "2MiB"}"#,
        )
        .unwrap();
        assert_eq!(s.kind, RepoType::Dataset);
        assert_eq!(s.include, ["*.json"]);
        assert_eq!(s.exclude, ["a/", "b*"]);
        assert_eq!(s.rate_limit, Some(2 << 20));
        let t = s.target().unwrap();
        assert_eq!(t.repo.to_string(), "datasets/acme/x");
        assert_eq!(t.revision.as_str(), "main");
        let back: JobSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let plain = spec(r#"{"repo": "gpt2", "rate_limit": 1000}"#).unwrap();
        assert_eq!(
            (plain.kind, plain.rate_limit),
            (RepoType::Model, Some(1000))
        );
    }

    #[test]
    fn invalid_specs_say_which_field() {
        assert!(spec(r#"{"repo": "a/b", "colour": 1}"#).is_err());
        assert!(spec(r#"{"repo": "a/b", "type": "car"}"#).is_err());
        let bad_repo = spec(r#"{"repo": "../x"}"#).unwrap().target().unwrap_err();
        assert!(matches!(bad_repo, SpecError::Repo { .. }), "{bad_repo}");
        let bad_rev = spec(r#"{"repo": "a/b", "revision": "x/../y"}"#)
            .unwrap()
            .target()
            .unwrap_err();
        assert!(matches!(bad_rev, SpecError::Revision { .. }), "{bad_rev}");
        let zero = spec(r#"{"repo": "a/b", "rate_limit": 0}"#).unwrap();
        assert_eq!(zero.target().unwrap_err(), SpecError::ZeroRate);
        let empty = spec(r#"{"repo": "a/b", "include": [""]}"#).unwrap();
        assert!(matches!(
            empty.target().unwrap_err(),
            SpecError::EmptyPattern {
                field: "include",
                ..
            }
        ));
    }

    #[test]
    fn the_filter_matches_like_huggingface_hub() {
        let f = PathFilter::new(
            &["*.json".into(), "dir0/".into(), "model-0000[1-2]*".into()],
            &["tokenizer*".into(), "dir0/file_00[!0]*".into()],
        );
        assert!(f.wants("config.json"));
        assert!(f.wants("sub/deep/x.json"), "* crosses /");
        assert!(!f.wants("tokenizer.json"));
        assert!(f.wants("dir0/file_000.txt"));
        assert!(!f.wants("dir0/file_001.txt"));
        assert!(f.wants("model-00001-of-00003.safetensors"));
        assert!(!f.wants("model-00003-of-00003.safetensors"));
        assert!(!f.wants("README.md"));
        let all = PathFilter::default();
        assert!(all.wants("anything/at/all"));
        assert!(fnmatch(b"a?c", b"abc") && !fnmatch(b"a?c", b"ac"));
        assert!(fnmatch(b"[x", b"[x"), "an unclosed [ is literal");
        assert!(fnmatch(b"*a*b*c", b"xxaybzzc") && !fnmatch(b"*a*b*c", b"xxaybzz"));
    }

    #[test]
    fn finished_states_are_the_ones_not_resumed() {
        let finished: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_finished())
            .map(JobState::as_str)
            .collect();
        assert_eq!(finished, ["done", "failed", "cancelled"]);
    }
}
