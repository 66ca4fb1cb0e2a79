//! Cached upstream answers in an Olah or DingoSpeed `repos/api/` tree: repo-info answers
//! (`revision/{rev}/meta_get.json`), one file's `paths-info` answer
//! (`paths-info/{sha}/{path}/paths-info_post.json`) and Olah's revision records
//! (`revision/{rev}/resolved_commit.json`).
//!
//! Two envelopes exist, both a JSON object with `status_code` and `headers` (names
//! lower-cased):
//!
//! - **Olah 0.5** (`olah/utils/cache_utils.py` `write_cache_request`): the body is in a
//!   sidecar file `{name}.body`, stored as the upstream sent it (possibly content-encoded; the
//!   `content-encoding` header says how), and the envelope has `cached_at` (unix seconds, when
//!   Olah got the answer).
//! - **DingoSpeed** (`FileDao.WriteCacheRequest`: `{"version":1,"status_code","headers",
//!   "content"}`) and **Olah before 0.5**: the body hex-encoded in `content`, no `cached_at`.
//!
//! Olah reads the sidecar when it exists and the hex `content` otherwise; so does this module.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use pingora::protocols::http::compression::Algorithm;
use serde_json::Value;

use crate::hf::{self, is_commit_sha, RepoInfoSummary};

/// Largest envelope read (a hex `content` doubles the body).
const MAX_ENVELOPE: u64 = 128 << 20;
/// Largest body accepted (raw or decoded).
const MAX_BODY: u64 = 64 << 20;
/// Compressed bytes fed to a decoder at a time.
const DECODE_CHUNK: usize = 16 << 10;

/// Why a cached answer was not used. The text is what the import report shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("not a cached answer: {0}")]
    Envelope(String),
    #[error("cannot decode its body: {0}")]
    Body(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("the cached answer has status {0}")]
    Status(u16),
    #[error("unexpected content: {0}")]
    Content(String),
}

/// One cached upstream answer, body decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    pub status: u16,
    /// Header names lower-cased; the first value when a list was stored.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Unix seconds when Olah stored it (`cached_at`; Olah 0.5 only).
    pub cached_at: Option<u64>,
}

/// The sidecar holding the body of the envelope at `path` (Olah 0.5).
pub fn body_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".body");
    PathBuf::from(name)
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, AnswerError> {
    let meta = fs::symlink_metadata(path).map_err(|e| AnswerError::Read(e.to_string()))?;
    if !meta.is_file() {
        return Err(AnswerError::Read(
            "not a regular file (symlinks are not followed)".into(),
        ));
    }
    if meta.len() > limit {
        return Err(AnswerError::Read(format!(
            "{} bytes is more than the {limit} accepted",
            meta.len()
        )));
    }
    fs::read(path).map_err(|e| AnswerError::Read(e.to_string()))
}

/// Reads the cached answer whose envelope is `path` (a regular file inside the import
/// directory, checked by the caller), with its body from the sidecar or the hex `content`.
pub fn read(path: &Path) -> Result<CachedAnswer, AnswerError> {
    let text = read_limited(path, MAX_ENVELOPE)?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| AnswerError::Envelope(e.to_string()))?;
    let sidecar = body_path(path);
    let raw_body = if fs::symlink_metadata(&sidecar).is_ok() {
        Some(read_limited(&sidecar, MAX_BODY)?)
    } else {
        None
    };
    parse(&value, raw_body)
}

/// Decodes an envelope already parsed as JSON; `sidecar` is the `.body` file's bytes when
/// there is one.
pub fn parse(value: &Value, sidecar: Option<Vec<u8>>) -> Result<CachedAnswer, AnswerError> {
    let obj = value.as_object().ok_or_else(|| {
        AnswerError::Envelope("not a JSON object with status_code and headers".into())
    })?;
    let status = obj
        .get("status_code")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| AnswerError::Envelope("missing or invalid \"status_code\"".into()))?;
    let headers = parse_headers(obj.get("headers"))?;
    let cached_at = obj
        .get("cached_at")
        .and_then(Value::as_f64)
        .and_then(|t| (0.0..1e12).contains(&t).then_some(t as u64));
    let raw = match sidecar {
        Some(body) => body,
        None => match obj.get("content") {
            Some(Value::String(s)) => hex::decode(s.trim())
                .map_err(|e| AnswerError::Envelope(format!("\"content\" is not hex: {e}")))?,
            None | Some(Value::Null) => {
                return Err(AnswerError::Envelope(
                    "no body: neither a .body file nor a hex \"content\"".into(),
                ))
            }
            Some(_) => {
                return Err(AnswerError::Envelope(
                    "\"content\" is not a hex string".into(),
                ))
            }
        },
    };
    // Olah 0.5 stores some bodies as sent (`revision/…/meta_get.json`: still encoded) and
    // others decoded but with the upstream's `content-encoding` kept (`paths-info`, as httpx
    // hands it over); it also un-gzips a body that starts with the gzip magic whatever the
    // headers say. Like Olah (`repo_utils._load_cached_json_payload`), a body that does not
    // decode is taken as it is: the JSON parse that follows is the real check.
    let encoding = headers
        .get("content-encoding")
        .map(String::as_str)
        .or(raw.starts_with(&[0x1f, 0x8b]).then_some("gzip"));
    let body = match encoding {
        Some(encoding) => match decode_body(&raw, encoding) {
            Ok(body) => body,
            Err(e @ AnswerError::TooLarge(_)) => return Err(e),
            Err(_) => raw,
        },
        None => raw,
    };
    Ok(CachedAnswer {
        status,
        headers,
        body,
        cached_at,
    })
}

fn parse_headers(value: Option<&Value>) -> Result<BTreeMap<String, String>, AnswerError> {
    let mut headers = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, v) in map {
                let text = match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Array(list) => list.iter().find_map(|x| x.as_str().map(str::to_string)),
                    _ => None,
                };
                if let Some(text) = text {
                    headers.insert(name.to_ascii_lowercase(), text);
                }
            }
        }
        Some(_) => return Err(AnswerError::Envelope("\"headers\" is not an object".into())),
    }
    Ok(headers)
}

/// Undoes `content-encoding` (codings listed in the order applied; undone last to first).
fn decode_body(raw: &[u8], encoding: &str) -> Result<Vec<u8>, AnswerError> {
    let mut body = raw.to_vec();
    for coding in encoding.split(',').rev().map(str::trim) {
        if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
            continue;
        }
        let algorithm = if coding.eq_ignore_ascii_case("x-gzip") {
            Algorithm::Gzip
        } else {
            Algorithm::from(coding)
        };
        let mut decoder = algorithm
            .decompressor(true)
            .ok_or_else(|| AnswerError::Body(format!("unsupported content-encoding {coding:?}")))?;
        let mut out = Vec::new();
        let mut chunks = body.chunks(DECODE_CHUNK).peekable();
        if chunks.peek().is_none() {
            return Err(AnswerError::Body(format!("empty {coding} body")));
        }
        while let Some(chunk) = chunks.next() {
            let end = chunks.peek().is_none();
            let decoded = decoder
                .encode(chunk, end)
                .map_err(|e| AnswerError::Body(format!("{coding}: {e}")))?;
            if (out.len() + decoded.len()) as u64 > MAX_BODY {
                return Err(AnswerError::TooLarge(format!(
                    "its {coding} body inflates beyond {MAX_BODY} bytes"
                )));
            }
            out.extend_from_slice(&decoded);
        }
        body = out;
    }
    Ok(body)
}

fn ok_json(answer: &CachedAnswer) -> Result<Value, AnswerError> {
    if answer.status != 200 {
        return Err(AnswerError::Status(answer.status));
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| AnswerError::Content(format!("body is not JSON: {e}")))
}

/// A repo-info answer (`revision/{rev}/meta_get.json`).
#[derive(Debug, Clone)]
pub struct RepoInfo {
    pub summary: RepoInfoSummary,
    /// The JSON body (decoded).
    pub body: Vec<u8>,
    /// The repo id the answer names (`id`, or `modelId` in old answers).
    pub id: Option<String>,
}

pub fn repo_info(answer: &CachedAnswer) -> Result<RepoInfo, AnswerError> {
    let json = ok_json(answer)?;
    let summary =
        RepoInfoSummary::from_json(&json).map_err(|e| AnswerError::Content(e.to_string()))?;
    let id = ["id", "modelId"]
        .iter()
        .find_map(|k| json.get(*k).and_then(Value::as_str).map(str::to_string));
    Ok(RepoInfo {
        summary,
        body: answer.body.clone(),
        id,
    })
}

/// Olah's record of where a branch or tag pointed (`revision/{rev}/resolved_commit.json`,
/// written by `record_resolved_commit`): the body is the commit sha.
pub fn resolved_commit(answer: &CachedAnswer) -> Result<String, AnswerError> {
    if answer.status != 200 {
        return Err(AnswerError::Status(answer.status));
    }
    let text = std::str::from_utf8(&answer.body)
        .map_err(|_| AnswerError::Content("the commit is not text".into()))?
        .trim()
        .to_ascii_lowercase();
    if !is_commit_sha(&text) {
        return Err(AnswerError::Content(format!(
            "{:?} is not a commit sha",
            text.chars().take(80).collect::<String>()
        )));
    }
    Ok(text)
}

/// What a `paths-info` answer says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The LFS sha256 for an LFS file, else the git blob sha1; lower-case, unquoted.
    pub etag: String,
    pub size: Option<u64>,
    pub lfs: bool,
}

/// The entry for `path` in a `paths-info` answer: a JSON array of
/// `{"type","oid","size","lfs":{"oid","size","pointerSize"},"path"}`. DingoSpeed always
/// writes `lfs` (Go struct without `omitempty`), with an empty `oid` for a regular file.
pub fn path_info(answer: &CachedAnswer, path: &str) -> Result<PathInfo, AnswerError> {
    let json = ok_json(answer)?;
    let entries = json
        .as_array()
        .ok_or_else(|| AnswerError::Content("paths-info body is not a JSON array".into()))?;
    let entry = entries
        .iter()
        .find(|e| e.get("path").and_then(Value::as_str) == Some(path))
        .ok_or_else(|| AnswerError::Content(format!("paths-info has no entry for {path:?}")))?;
    if let Some(kind) = entry.get("type").and_then(Value::as_str) {
        if kind != "file" {
            return Err(AnswerError::Content(format!(
                "paths-info says {path:?} is a {kind}"
            )));
        }
    }
    let lfs_oid = entry
        .get("lfs")
        .and_then(|l| l.get("oid"))
        .and_then(Value::as_str)
        .filter(|oid| !oid.is_empty());
    let (oid, lfs) = match lfs_oid {
        Some(oid) => (oid, true),
        None => (
            entry
                .get("oid")
                .and_then(Value::as_str)
                .ok_or_else(|| AnswerError::Content("paths-info entry has no oid".into()))?,
            false,
        ),
    };
    let oid = oid.strip_prefix("sha256:").unwrap_or(oid);
    Ok(PathInfo {
        etag: hf::normalize_etag(oid).to_ascii_lowercase(),
        size: entry.get("size").and_then(Value::as_u64),
        lfs,
    })
}
