//! Olah's and DingoSpeed's cached upstream answers: `meta_get.json`, `paths-info_post.json`
//! and Olah's `heads/` files.
//!
//! Format (Olah `olah/utils/cache_utils.py` `_write_cache_request`, DingoSpeed
//! `FileDao.WriteCacheRequest`):
//!
//! ```json
//! {"version": 1, "status_code": 200, "headers": {"<lower-case name>": "<value>"}, "content": "<hex of the body>"}
//! ```
//!
//! `version` exists only in DingoSpeed's files. Olah stores the body as the upstream sent it
//! (`aiter_raw`), so it may be compressed: the `content-encoding` header says how (gzip and
//! br are decoded here, anything else is refused).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pingora::protocols::http::compression::Algorithm;
use serde_json::Value;

use crate::hf::{self, RepoInfoSummary};

/// Largest cached-answer file read (hex doubles the body).
const MAX_FILE: u64 = 128 << 20;
/// Largest decoded body accepted.
const MAX_BODY: usize = 64 << 20;
/// Compressed bytes fed to a decoder at a time.
const DECODE_CHUNK: usize = 16 << 10;

/// One cached upstream answer, body decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    /// Header names lower-cased; the first value when a list was stored.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl CachedResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads and decodes the cached answer at `path` (a regular file, checked by the caller to
/// lie inside the import directory).
pub fn read(path: &Path) -> Result<CachedResponse, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{} bytes is too large for a cached answer",
            meta.len()
        ));
    }
    let text = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))?;
    parse(&value)
}

/// Decodes a cached answer already parsed as JSON.
pub fn parse(value: &Value) -> Result<CachedResponse, String> {
    let obj = value
        .as_object()
        .ok_or("not a JSON object with status_code, headers and content")?;
    let status = obj
        .get("status_code")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or("missing or invalid \"status_code\"")?;
    let mut headers = BTreeMap::new();
    match obj.get("headers") {
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
        Some(_) => return Err("\"headers\" is not an object".into()),
    }
    let content = match obj.get("content") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("\"content\" is not a hex string".into()),
    };
    let raw = hex::decode(content.trim()).map_err(|e| format!("\"content\" is not hex: {e}"))?;
    let body = match headers.get("content-encoding") {
        Some(encoding) => decode_body(raw, encoding)?,
        None => raw,
    };
    if body.len() > MAX_BODY {
        return Err(format!("body of {} bytes is too large", body.len()));
    }
    Ok(CachedResponse {
        status,
        headers,
        body,
    })
}

/// Undoes `content-encoding` (listed in the order applied; decoded last to first).
fn decode_body(mut body: Vec<u8>, encoding: &str) -> Result<Vec<u8>, String> {
    for coding in encoding.split(',').rev().map(str::trim) {
        if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
            continue;
        }
        let algorithm = if coding.eq_ignore_ascii_case("x-gzip") {
            Algorithm::Gzip
        } else {
            Algorithm::from(coding)
        };
        let Some(mut decoder) = algorithm.decompressor(true) else {
            return Err(format!("unsupported content-encoding {coding:?}"));
        };
        let mut out = Vec::new();
        let mut chunks = body.chunks(DECODE_CHUNK).peekable();
        if chunks.peek().is_none() {
            return Err(format!("empty {coding} body"));
        }
        while let Some(chunk) = chunks.next() {
            let end = chunks.peek().is_none();
            let decoded = decoder
                .encode(chunk, end)
                .map_err(|e| format!("cannot decode {coding} body: {e}"))?;
            if out.len() + decoded.len() > MAX_BODY {
                return Err(format!("{coding} body inflates beyond {MAX_BODY} bytes"));
            }
            out.extend_from_slice(&decoded);
        }
        body = out;
    }
    Ok(body)
}

/// A repo-info answer (`api/{type}/{repo}/revision/{rev}/meta_get.json`).
#[derive(Debug, Clone)]
pub struct RepoInfo {
    pub summary: RepoInfoSummary,
    /// The JSON body, as the upstream sent it (decoded).
    pub body: Vec<u8>,
    /// The repo id the answer names (`id`, or `modelId` for old answers).
    pub id: Option<String>,
}

pub fn repo_info(resp: &CachedResponse) -> Result<RepoInfo, String> {
    if resp.status != 200 {
        return Err(format!("cached answer has status {}", resp.status));
    }
    let json: Value =
        serde_json::from_slice(&resp.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let summary = RepoInfoSummary::from_json(&json).map_err(|e| e.to_string())?;
    let id = ["id", "modelId"]
        .iter()
        .find_map(|k| json.get(*k).and_then(Value::as_str).map(str::to_string));
    Ok(RepoInfo {
        summary,
        body: resp.body.clone(),
        id,
    })
}

/// What a metadata file says about one file: its etag and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileClaim {
    /// Lower-case, unquoted.
    pub etag: String,
    pub size: Option<u64>,
}

/// The entry for `path` in a `paths-info` answer (`[{"type","oid","size","lfs":{"oid","size"},"path"}]`):
/// the LFS sha256 when the file is in LFS, else the git blob oid.
pub fn path_info(resp: &CachedResponse, path: &str) -> Result<FileClaim, String> {
    if resp.status != 200 {
        return Err(format!(
            "cached paths-info answer has status {}",
            resp.status
        ));
    }
    let json: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("paths-info body is not JSON: {e}"))?;
    let entries = json
        .as_array()
        .ok_or("paths-info body is not a JSON array")?;
    let entry = entries
        .iter()
        .find(|e| e.get("path").and_then(Value::as_str) == Some(path))
        .ok_or_else(|| format!("paths-info has no entry for {path:?}"))?;
    if let Some(kind) = entry.get("type").and_then(Value::as_str) {
        if kind != "file" {
            return Err(format!("paths-info says {path:?} is a {kind}"));
        }
    }
    let lfs = entry.get("lfs").filter(|v| v.is_object());
    let oid = lfs
        .and_then(|l| l.get("oid"))
        .or_else(|| entry.get("oid"))
        .and_then(Value::as_str)
        .ok_or("paths-info entry has no oid")?;
    let size = lfs
        .and_then(|l| l.get("size"))
        .or_else(|| entry.get("size"))
        .and_then(Value::as_u64);
    let oid = oid.strip_prefix("sha256:").unwrap_or(oid);
    Ok(FileClaim {
        etag: hf::normalize_etag(oid).to_ascii_lowercase(),
        size,
    })
}

/// A cached resolve `HEAD` answer (Olah's `heads/` tree): `x-linked-etag` or `etag`, and
/// `x-linked-size` or (for a 200) `content-length`. `commit` must match `x-repo-commit` when
/// the answer has one.
pub fn head_info(resp: &CachedResponse, commit: &str) -> Result<FileClaim, String> {
    if !(resp.status == 200 || (300..400).contains(&resp.status)) {
        return Err(format!("cached HEAD answer has status {}", resp.status));
    }
    if let Some(upstream) = resp.header("x-repo-commit") {
        if !upstream.eq_ignore_ascii_case(commit) {
            return Err(format!(
                "cached HEAD answer is for commit {upstream}, not {commit}"
            ));
        }
    }
    let raw = resp
        .header("x-linked-etag")
        .or_else(|| resp.header("etag"))
        .ok_or("cached HEAD answer has no etag")?;
    let size = resp
        .header("x-linked-size")
        .or_else(|| {
            (resp.status == 200)
                .then(|| resp.header("content-length"))
                .flatten()
        })
        .and_then(|s| s.trim().parse().ok());
    Ok(FileClaim {
        etag: hf::normalize_etag(raw).to_ascii_lowercase(),
        size,
    })
}
