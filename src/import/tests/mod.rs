//! Import tests: small caches written byte for byte as Olah 0.5 (v10), Olah 0.4 (v9),
//! Olah 0.1-0.3 and DingoSpeed (v8) write them, imported into a hubcache `App` on a
//! temporary cache directory. The writers below follow the sources named in each format's
//! module; `tests/e2e/test_import_olah.py` runs the real Olah 0.5.4 as well.

mod dingospeed;
mod hf_cache;
mod legacy;
mod olah;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde_json::json;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::*;
use crate::app::App;
use crate::config::Config;
use crate::hf::{RepoId, RepoPath, RepoType, Revision};

/// hubcache block size of the test stores (the smallest allowed).
pub const HUB_BLOCK: u64 = 64 << 10;

pub const C1: &str = "1111111111111111111111111111111111111111";
pub const C2: &str = "2222222222222222222222222222222222222222";
pub const C3: &str = "3333333333333333333333333333333333333333";

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

pub fn mkparent(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
}

/// Geometry and options of an Olah v10 entry.
#[derive(Clone, Copy)]
pub struct V10 {
    pub block_size: u64,
    pub chunk_size: u64,
    /// 0 none, 1 gzip (raw deflate per chunk), 2 lzma.
    pub compression: u8,
}

impl V10 {
    /// Olah 0.5's defaults scaled down: blocks of 4 chunks.
    pub const SMALL: V10 = V10 {
        block_size: 4 * 40_000,
        chunk_size: 40_000,
        compression: 0,
    };
}

/// The `meta.bin` Olah 0.5 writes (`OlahCacheHeader.write`).
pub fn v10_header(opts: V10, file_size: u64, etag: &str) -> Vec<u8> {
    let etag = etag.as_bytes();
    let header_size = 43 + etag.len() + 4 + 4;
    let mut h = Vec::new();
    h.extend_from_slice(b"OLAH");
    h.extend_from_slice(&10u16.to_le_bytes());
    h.extend_from_slice(&u16::from(!etag.is_empty()).to_le_bytes());
    h.extend_from_slice(&(header_size as u32).to_le_bytes());
    h.extend_from_slice(&opts.block_size.to_le_bytes());
    h.extend_from_slice(&file_size.to_le_bytes());
    h.push(opts.compression);
    h.extend_from_slice(&(opts.chunk_size as u32).to_le_bytes());
    h.extend_from_slice(&(etag.len() as u16).to_le_bytes());
    h.extend_from_slice(&[0u8; 8]);
    h.extend_from_slice(etag);
    h.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(h.len(), header_size);
    h
}

/// Writes an Olah 0.5 cache directory as `OlahCache` does: `meta.bin`, `meta.lock`,
/// `chunks.crc` sized for every chunk (zero slots for blocks not written), and for each
/// present block its CRCs and `blocks/block_{i:08}.bin` (plus the `.dl.lock` Olah leaves).
/// `etag` is stored as given (Olah stores the quoted ETag).
pub fn write_v10(dir: &Path, content: &[u8], opts: V10, etag: &str, present: impl Fn(u64) -> bool) {
    let blocks_dir = dir.join("blocks");
    fs::create_dir_all(&blocks_dir).unwrap();
    let size = content.len() as u64;
    fs::write(dir.join("meta.bin"), v10_header(opts, size, etag)).unwrap();
    fs::write(dir.join("meta.lock"), b"").unwrap();
    let chunks = size.div_ceil(opts.chunk_size);
    let crc_file = fs::File::create(dir.join("chunks.crc")).unwrap();
    crc_file.set_len(chunks * 4).unwrap();
    let per_block = opts.block_size / opts.chunk_size;
    for b in (0..size.div_ceil(opts.block_size)).filter(|&b| present(b)) {
        let start = (b * opts.block_size) as usize;
        let end = (start + opts.block_size as usize).min(content.len());
        let payload = &content[start..end];
        let pieces: Vec<&[u8]> = payload.chunks(opts.chunk_size as usize).collect();
        let crcs: Vec<u8> = pieces
            .iter()
            .flat_map(|p| crc32fast::hash(p).to_le_bytes())
            .collect();
        crc_file.write_all_at(&crcs, b * per_block * 4).unwrap();
        let stored = match opts.compression {
            0 => payload.to_vec(),
            _ => {
                let streams: Vec<Vec<u8>> = pieces.iter().map(|p| deflate_raw(p)).collect();
                let mut out = b"OLBK".to_vec();
                out.extend_from_slice(&(streams.len() as u32).to_le_bytes());
                for s in &streams {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                }
                out.push(0);
                for s in &streams {
                    out.extend_from_slice(s);
                }
                out
            }
        };
        let name = format!("block_{b:0>8}.bin");
        fs::write(blocks_dir.join(&name), stored).unwrap();
        fs::write(blocks_dir.join(format!("{name}.dl.lock")), b"").unwrap();
    }
}

pub fn deflate_raw(raw: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::new(4));
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

/// A cached answer as Olah 0.5 stores it: the envelope plus the `.body` sidecar.
pub fn write_olah_answer(
    path: &Path,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    cached_at: f64,
) {
    mkparent(path);
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let doc = json!({"status_code": status, "headers": headers, "cached_at": cached_at});
    fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
    fs::write(cached::body_path(path), body).unwrap();
}

/// A cached answer as DingoSpeed (`WriteCacheRequest`, version 1) and Olah before 0.5 store
/// it: the body hex-encoded inline.
pub fn write_hex_answer(
    path: &Path,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    version: Option<u64>,
) {
    mkparent(path);
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut doc = json!({"status_code": status, "headers": headers, "content": hex::encode(body)});
    if let Some(v) = version {
        doc["version"] = json!(v);
    }
    fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

pub fn repo_info(id: &str, sha: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_id": "65f0", "id": id, "private": false, "gated": false, "sha": sha,
        "lastModified": "2024-01-01T00:00:00.000Z", "siblings": [],
    }))
    .unwrap()
}

/// A paths-info answer as the Hub sends it (no `lfs` key for a regular file).
pub fn hub_paths_info(path: &str, content: &[u8], lfs: bool) -> Vec<u8> {
    let mut entry =
        json!({"type": "file", "oid": git_sha1_hex(content), "size": content.len(), "path": path});
    if lfs {
        entry["oid"] = json!(git_sha1_hex(
            b"version https://git-lfs.github.com/spec/v1\n"
        ));
        entry["lfs"] =
            json!({"oid": sha256_hex(content), "size": content.len(), "pointerSize": 134});
    }
    serde_json::to_vec(&json!([entry])).unwrap()
}

pub fn app(cache: &Path, block_size: &str) -> Arc<App> {
    let yaml = format!(
        "offline: true\nupstreams: []\ncache:\n  dir: {}\n  block_size: {block_size}\n",
        cache.display()
    );
    App::new(Config::from_yaml_str(&yaml).unwrap()).unwrap()
}

pub fn repo(kind: RepoType, id: &str) -> Repo {
    Repo::new(kind, RepoId::new(id).unwrap())
}

/// The complete, verified bytes of blob `id`, if the store has them.
pub fn stored(app: &App, id: &str) -> Option<Vec<u8>> {
    let blob = app.store.open_blob(&BlobId::parse(id).unwrap()).unwrap()?;
    assert!(blob.is_complete(), "{id} is incomplete");
    assert!(blob.is_verified(), "{id} is not verified");
    Some(
        blob.read_verified(0, blob.size() as usize)
            .unwrap()
            .to_vec(),
    )
}

/// The report line of one file.
pub fn outcome<'a>(
    report: &'a ImportReport,
    repo: &str,
    commit: &str,
    path: &str,
) -> &'a FileOutcome {
    let found: Vec<&FileReport> = report
        .files
        .iter()
        .filter(|f| f.repo == repo && f.commit == commit && f.path == path)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{repo}@{commit}/{path} reported {} times:\n{report}",
        found.len()
    );
    &found[0].outcome
}

pub fn skipped_reason(report: &ImportReport, repo: &str, commit: &str, path: &str) -> String {
    match outcome(report, repo, commit, path) {
        FileOutcome::Skipped { reason } => reason.clone(),
        other => panic!("{path} was not left out but {other:?}:\n{report}"),
    }
}

/// Metadata of a file as an offline hubcache resolves it.
pub async fn resolved(
    app: &App,
    repo: &Repo,
    rev: &str,
    path: &str,
) -> Option<crate::meta::FileMeta> {
    app.meta
        .resolve_file(
            repo,
            &Revision::new(rev).unwrap(),
            &RepoPath::new(path).unwrap(),
            None,
        )
        .await
        .ok()
}

/// The commit a revision resolves to offline.
pub async fn commit(app: &App, repo: &Repo, rev: Option<&str>) -> String {
    let rev = rev.map(|r| Revision::new(r).unwrap());
    app.meta.commit_for(repo, rev.as_ref(), None).await.unwrap()
}

/// The counts of the report always match its lines.
pub fn assert_counts_match(report: &ImportReport) {
    let c = report.counts();
    assert_eq!(
        c.total,
        c.imported + c.partial + c.not_downloaded + c.skipped,
        "{report}"
    );
    let text = report.to_string();
    let lines = |status: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("  {status:<14} ")))
            .count()
    };
    assert_eq!(lines("imported"), c.imported, "{text}");
    assert_eq!(lines("partial"), c.partial, "{text}");
    assert_eq!(lines("not-downloaded"), c.not_downloaded, "{text}");
    assert_eq!(lines("left-out"), c.skipped, "{text}");
    let summary = format!(
        "{} files: {} imported ({} already in the store), {} partially imported, {} not \
         downloaded by the mirror, {} left out",
        c.total, c.imported, c.already_present, c.partial, c.not_downloaded, c.skipped
    );
    assert!(text.contains(&summary), "{summary:?} not in:\n{text}");
}
