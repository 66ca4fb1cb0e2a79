//! Validated Hub identifiers: repo types, repo ids, revisions and file paths.
//!
//! Every value here is *decoded* (no percent-encoding) and validated on construction, so code
//! holding one can put it in a cache path or an upstream URL (through [`super::encoding`])
//! without further checks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest repo id (`org/name` as a whole) the Hub accepts.
pub const MAX_REPO_ID_LEN: usize = 96;
/// Longest revision accepted, in bytes.
pub const MAX_REVISION_LEN: usize = 256;
/// Longest file path inside a repo accepted, in bytes.
pub const MAX_REPO_PATH_LEN: usize = 4096;

/// Why a repo id, revision or path was rejected. The offending input is in every message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The repo type word is not one of the known types.
    #[error("unknown repo type {input:?}")]
    RepoType {
        /// The rejected input.
        input: String,
    },
    /// The repo id breaks the Hub's naming rules.
    #[error("invalid repo id {input:?}: {reason}")]
    RepoId {
        /// The rejected input.
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// The revision is empty, too long, or could escape a directory.
    #[error("invalid revision {input:?}: {reason}")]
    Revision {
        /// The rejected input.
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// The file path is empty, absolute, too long, or could escape a directory.
    #[error("invalid path {input:?}: {reason}")]
    RepoPath {
        /// The rejected input.
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },
}

/// The kind of a Hub repository.
///
/// `Kernel` is the Hub's newest repo type (`kernels/` prefix, `/api/kernels`); the real clients
/// (huggingface_hub 2.x `hf_hub_url`) build URLs for it exactly like for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    /// A model repo: no URL prefix, `/api/models`.
    Model,
    /// A dataset repo: `datasets/` prefix, `/api/datasets`.
    Dataset,
    /// A Space: `spaces/` prefix, `/api/spaces`.
    Space,
    /// A kernel repo: `kernels/` prefix, `/api/kernels`.
    Kernel,
}

impl RepoType {
    /// All repo types, in a stable order.
    pub const ALL: [RepoType; 4] = [
        RepoType::Model,
        RepoType::Dataset,
        RepoType::Space,
        RepoType::Kernel,
    ];

    /// Prefix in front of the repo id in `resolve` URLs: `""`, `"datasets/"`, `"spaces/"`, `"kernels/"`.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
            RepoType::Kernel => "kernels/",
        }
    }

    /// The plural used in API URLs: `"models"`, `"datasets"`, `"spaces"`, `"kernels"`.
    pub fn api_plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
            RepoType::Space => "spaces",
            RepoType::Kernel => "kernels",
        }
    }

    /// The singular the Python client uses as `repo_type`: `"model"`, `"dataset"`, `"space"`, `"kernel"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoType::Model => "model",
            RepoType::Dataset => "dataset",
            RepoType::Space => "space",
            RepoType::Kernel => "kernel",
        }
    }

    /// The type for an API plural (`"models"` → `Model`); `None` for anything else.
    pub fn from_plural(plural: &str) -> Option<RepoType> {
        RepoType::ALL.into_iter().find(|t| t.api_plural() == plural)
    }

    /// The type for the first segment of a `resolve` URL (`"datasets"` → `Dataset`).
    ///
    /// Models have no prefix, so `"models"` gives `None`, as does any other word.
    pub fn from_prefix_segment(segment: &str) -> Option<RepoType> {
        match segment {
            "datasets" => Some(RepoType::Dataset),
            "spaces" => Some(RepoType::Space),
            "kernels" => Some(RepoType::Kernel),
            _ => None,
        }
    }
}

impl fmt::Display for RepoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RepoType {
    type Err = ValidationError;

    /// Accepts the singular or the plural, case-insensitively (`model`, `Datasets`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        RepoType::ALL
            .into_iter()
            .find(|t| t.as_str() == lower || t.api_plural() == lower)
            .ok_or_else(|| ValidationError::RepoType {
                input: s.to_string(),
            })
    }
}

/// A validated repo id: `name` or `org/name`.
///
/// Each segment is non-empty, uses only `[A-Za-z0-9_.-]`, contains no `--` or `..`, and neither
/// starts nor ends with `-` or `.`; the whole id is at most [`MAX_REPO_ID_LEN`] bytes. Case is
/// kept as given (the Hub answers case mismatches with a redirect to the canonical name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoId(String);

impl RepoId {
    /// Validates `id` (`name` or `org/name`).
    pub fn new(id: &str) -> Result<RepoId, ValidationError> {
        let err = |reason| ValidationError::RepoId {
            input: id.to_string(),
            reason,
        };
        if id.is_empty() {
            return Err(err("must not be empty"));
        }
        if id.len() > MAX_REPO_ID_LEN {
            return Err(err("longer than 96 characters"));
        }
        let segments: Vec<&str> = id.split('/').collect();
        if segments.len() > 2 {
            return Err(err("must be `name` or `org/name`"));
        }
        for seg in segments {
            check_repo_id_segment(seg).map_err(err)?;
        }
        Ok(RepoId(id.to_string()))
    }

    /// Builds an id from one segment (`name`) or two (`org`, `name`).
    pub fn from_segments(org: Option<&str>, name: &str) -> Result<RepoId, ValidationError> {
        match org {
            Some(org) => RepoId::new(&format!("{org}/{name}")),
            None => RepoId::new(name),
        }
    }

    /// The id as written, e.g. `"org/name"` or `"gpt2"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace (`org`), if the id has two segments.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once('/').map(|(org, _)| org)
    }

    /// The repo name: the last segment.
    pub fn name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, name)| name)
    }
}

fn check_repo_id_segment(seg: &str) -> Result<(), &'static str> {
    if seg.is_empty() {
        return Err("empty segment");
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("only letters, digits, '_', '.' and '-' are allowed");
    }
    if seg.contains("--") || seg.contains("..") {
        return Err("must not contain '--' or '..'");
    }
    let first_last = [seg.as_bytes()[0], seg.as_bytes()[seg.len() - 1]];
    if first_last.iter().any(|b| matches!(b, b'-' | b'.')) {
        return Err("a segment must not start or end with '-' or '.'");
    }
    Ok(())
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoId::new(s)
    }
}

impl TryFrom<String> for RepoId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RepoId::new(&s)
    }
}

impl From<RepoId> for String {
    fn from(id: RepoId) -> String {
        id.0
    }
}

impl AsRef<str> for RepoId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A repository: its type and id. Displays as `models/org/name` (API plural, then id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Repo {
    /// Model, dataset, space or kernel.
    pub kind: RepoType,
    /// The validated id.
    pub id: RepoId,
}

impl Repo {
    /// A repo of `kind` with `id`.
    pub fn new(kind: RepoType, id: RepoId) -> Repo {
        Repo { kind, id }
    }

    /// Parses `"models/org/name"`-style strings (the [`Display`](fmt::Display) form); a string
    /// without a known plural in front is taken as a model id (`"org/name"`, `"gpt2"`).
    pub fn parse(s: &str) -> Result<Repo, ValidationError> {
        if let Some((first, rest)) = s.split_once('/') {
            if let Some(kind) = RepoType::from_plural(first) {
                return Ok(Repo::new(kind, RepoId::new(rest)?));
            }
        }
        Ok(Repo::new(RepoType::Model, RepoId::new(s)?))
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.api_plural(), self.id)
    }
}

impl FromStr for Repo {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Repo::parse(s)
    }
}

/// True when `s` is a full commit sha: exactly 40 lowercase hex characters.
pub fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A decoded revision: branch (`main`), tag, `refs/pr/1`, `refs/convert/parquet`, short or full sha.
///
/// Non-empty, at most [`MAX_REVISION_LEN`] bytes, no NUL, control character or backslash, and no
/// `/`-separated segment that is empty, `.` or `..` (so it can never escape a cache directory).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Revision(String);

impl Revision {
    /// Validates a decoded revision.
    pub fn new(rev: &str) -> Result<Revision, ValidationError> {
        let err = |reason| ValidationError::Revision {
            input: rev.to_string(),
            reason,
        };
        if rev.is_empty() {
            return Err(err("must not be empty"));
        }
        if rev.len() > MAX_REVISION_LEN {
            return Err(err("longer than 256 bytes"));
        }
        if rev.chars().any(char::is_control) {
            return Err(err("must not contain NUL or control characters"));
        }
        if rev.contains('\\') {
            return Err(err("must not contain a backslash"));
        }
        if rev
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(err("must not contain empty, '.' or '..' segments"));
        }
        Ok(Revision(rev.to_string()))
    }

    /// The revision as decoded text, e.g. `"refs/pr/1"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when this is a full commit sha (40 lowercase hex), the only form that is immutable.
    pub fn is_commit(&self) -> bool {
        is_commit_sha(&self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Revision {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Revision::new(s)
    }
}

impl TryFrom<String> for Revision {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Revision::new(&s)
    }
}

impl From<Revision> for String {
    fn from(r: Revision) -> String {
        r.0
    }
}

impl AsRef<str> for Revision {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A decoded file (or folder) path inside a repo, e.g. `"sub/weird name +#%é.txt"`.
///
/// Non-empty, at most [`MAX_REPO_PATH_LEN`] bytes, no leading `/`, no empty, `.` or `..`
/// segment (so no trailing `/` either), no NUL or backslash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoPath(String);

impl RepoPath {
    /// Validates a decoded path.
    pub fn new(path: &str) -> Result<RepoPath, ValidationError> {
        let err = |reason| ValidationError::RepoPath {
            input: path.to_string(),
            reason,
        };
        if path.is_empty() {
            return Err(err("must not be empty"));
        }
        if path.len() > MAX_REPO_PATH_LEN {
            return Err(err("longer than 4096 bytes"));
        }
        if path.starts_with('/') {
            return Err(err("must not start with '/'"));
        }
        if path.contains('\0') {
            return Err(err("must not contain NUL"));
        }
        if path.contains('\\') {
            return Err(err("must not contain a backslash"));
        }
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(err("must not contain empty, '.' or '..' segments"));
        }
        Ok(RepoPath(path.to_string()))
    }

    /// The path as decoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (the file name).
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, name)| name)
    }

    /// The `/`-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoPath {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoPath::new(s)
    }
}

impl TryFrom<String> for RepoPath {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RepoPath::new(&s)
    }
}

impl From<RepoPath> for String {
    fn from(p: RepoPath) -> String {
        p.0
    }
}

impl AsRef<str> for RepoPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_type_prefixes_and_plurals() {
        assert_eq!(RepoType::Model.url_prefix(), "");
        assert_eq!(RepoType::Dataset.url_prefix(), "datasets/");
        assert_eq!(RepoType::Space.url_prefix(), "spaces/");
        assert_eq!(RepoType::Kernel.url_prefix(), "kernels/");
        for t in RepoType::ALL {
            assert_eq!(RepoType::from_plural(t.api_plural()), Some(t));
            assert_eq!(t.as_str().parse::<RepoType>(), Ok(t));
            assert_eq!(t.api_plural().parse::<RepoType>(), Ok(t));
        }
        assert_eq!(RepoType::from_plural("model"), None);
        assert_eq!(RepoType::from_prefix_segment("models"), None);
        assert_eq!(
            RepoType::from_prefix_segment("datasets"),
            Some(RepoType::Dataset)
        );
        assert_eq!(
            RepoType::from_prefix_segment("spaces"),
            Some(RepoType::Space)
        );
        assert!("widgets".parse::<RepoType>().is_err());
    }

    #[test]
    fn repo_id_accepts_one_and_two_segments() {
        for ok in [
            "gpt2",
            "bert-base-uncased",
            "openai-community/gpt2",
            "mlx-community/Qwen3.5-9B-4bit",
            "a/b",
            "A_b.c-d/e_F",
        ] {
            let id = RepoId::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(id.as_str(), ok);
        }
        let id = RepoId::new("org/name").unwrap();
        assert_eq!(id.namespace(), Some("org"));
        assert_eq!(id.name(), "name");
        assert_eq!(RepoId::new("gpt2").unwrap().namespace(), None);
    }

    #[test]
    fn repo_id_rejects_bad_names() {
        let long = "a".repeat(97);
        for bad in [
            "",
            "a/b/c",
            "/a",
            "a/",
            "a//b",
            "..",
            "a/..",
            "a..b",
            "a--b",
            "-a",
            "a-",
            ".a",
            "a.",
            "a b",
            "a%2Fb",
            "é",
            "a\\b",
            long.as_str(),
        ] {
            let err = RepoId::new(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(RepoId::new(&"a".repeat(96)).is_ok());
    }

    #[test]
    fn repo_displays_with_api_plural() {
        let repo = Repo::new(RepoType::Dataset, RepoId::new("org/name").unwrap());
        assert_eq!(repo.to_string(), "datasets/org/name");
        assert_eq!(Repo::parse("datasets/org/name").unwrap(), repo);
        assert_eq!(
            Repo::parse("gpt2").unwrap(),
            Repo::new(RepoType::Model, RepoId::new("gpt2").unwrap())
        );
        assert_eq!(
            Repo::parse("models/gpt2").unwrap().to_string(),
            "models/gpt2"
        );
    }

    #[test]
    fn revision_accepts_refs_and_shas() {
        for ok in [
            "main",
            "v1.0",
            "refs/pr/1",
            "refs/convert/parquet",
            "abc1234",
            "0123456789abcdef0123456789abcdef01234567",
            "é-branch",
        ] {
            assert_eq!(Revision::new(ok).unwrap().as_str(), ok);
        }
        assert!(Revision::new("0123456789abcdef0123456789abcdef01234567")
            .unwrap()
            .is_commit());
        assert!(!Revision::new("0123456789ABCDEF0123456789abcdef01234567")
            .unwrap()
            .is_commit());
        assert!(!Revision::new("abc1234").unwrap().is_commit());
        assert!(!Revision::new("main").unwrap().is_commit());
    }

    #[test]
    fn revision_rejects_traversal_and_junk() {
        let long = "a".repeat(257);
        for bad in [
            "", "..", ".", "../x", "a/../b", "a/", "/a", "a//b", "a\0b", "a\nb", "a\\b", &long,
        ] {
            let err = Revision::new(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid revision"), "{err}");
        }
    }

    #[test]
    fn repo_path_accepts_nested_and_unicode() {
        for ok in [
            "config.json",
            "a/b/c.txt",
            "weird name +#%é.txt",
            "a..b",
            ".gitattributes",
        ] {
            assert_eq!(RepoPath::new(ok).unwrap().as_str(), ok);
        }
        let p = RepoPath::new("a/b/c.txt").unwrap();
        assert_eq!(p.file_name(), "c.txt");
        assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
    }

    #[test]
    fn repo_path_rejects_traversal_and_junk() {
        let long = "a".repeat(4097);
        for bad in [
            "", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\0", "a\\b", &long,
        ] {
            let err = RepoPath::new(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid path"), "{err}");
        }
    }

    #[test]
    fn serde_round_trips_validated_strings() {
        let repo = Repo::new(RepoType::Space, RepoId::new("org/app").unwrap());
        let json = serde_json::to_string(&repo).unwrap();
        assert_eq!(json, r#"{"kind":"space","id":"org/app"}"#);
        assert_eq!(serde_json::from_str::<Repo>(&json).unwrap(), repo);
        assert!(serde_json::from_str::<Revision>(r#"".."#).is_err());
        assert!(serde_json::from_str::<RepoPath>(r#""a/../b""#).is_err());
    }
}
