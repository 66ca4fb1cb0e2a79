//! Import tests: small Olah and DingoSpeed caches written byte for byte as those mirrors
//! write them, imported into a hubcache `App` on a temporary cache directory.

use std::fs;
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::protocols::http::compression::Algorithm;
use serde_json::json;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::olah::{OlahError, OlahSource, DEFAULT_MASK_BITS, FIXED_HEADER_LEN};
use super::*;
use crate::app::App;
use crate::config::Config;
use crate::hf::{RepoId, RepoType, Revision};

/// Olah block size used by the test caches: not a power of two and not a multiple of
/// hubcache's block size, so blocks are re-cut on import.
const OLAH_BLOCK: u64 = 40_000;
/// hubcache block size of the test store (the smallest allowed).
const HUB_BLOCK: u64 = 64 << 10;

fn data(seed: u64, len: usize) -> Vec<u8> {
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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

fn mkparent(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
}

/// Writes an OLAH v8 file exactly as Olah (`OlahCache.resize` + `write_block`) and DingoSpeed
/// (`Resize` + `WriteBlock`) do: the `<4sQQQQ` header, a bitmap of 1,048,576 bits, the file
/// pre-sized (sparse) to header + size, then each present block at `header + i*block_size`
/// (the last one truncated) with its bit set.
fn write_olah_v8(path: &Path, content: &[u8], block_size: u64, present: impl Fn(u64) -> bool) {
    mkparent(path);
    let size = content.len() as u64;
    let blocks = size.div_ceil(block_size);
    let mut bitmap = vec![0u8; (DEFAULT_MASK_BITS / 8) as usize];
    for b in (0..blocks).filter(|&b| present(b)) {
        bitmap[(b / 8) as usize] |= 1 << (b % 8);
    }
    let mut header = Vec::new();
    header.extend_from_slice(b"OLAH");
    for v in [8u64, block_size, size, DEFAULT_MASK_BITS] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(header.len() as u64, FIXED_HEADER_LEN);
    header.extend_from_slice(&bitmap);
    let header_len = header.len() as u64;
    assert_eq!(header_len, 131_108);
    let file = fs::File::create(path).unwrap();
    file.write_all_at(&header, 0).unwrap();
    file.set_len(header_len + size).unwrap();
    for b in (0..blocks).filter(|&b| present(b)) {
        let start = (b * block_size) as usize;
        let end = (start + block_size as usize).min(content.len());
        file.write_all_at(&content[start..end], header_len + start as u64)
            .unwrap();
    }
}

/// Writes an Olah v9 cache directory: `meta.bin` (`<4sQQQQ`: magic, 9, block size, file size,
/// compression) and `blocks/block_{i:08}.bin` for the present blocks (gzip when
/// `compression == 1`).
fn write_olah_v9(
    dir: &Path,
    content: &[u8],
    block_size: u64,
    compression: u64,
    present: impl Fn(u64) -> bool,
) {
    fs::create_dir_all(dir.join("blocks")).unwrap();
    let size = content.len() as u64;
    let mut meta = Vec::new();
    meta.extend_from_slice(b"OLAH");
    for v in [9u64, block_size, size, compression] {
        meta.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(dir.join("meta.bin"), meta).unwrap();
    for b in (0..size.div_ceil(block_size)).filter(|&b| present(b)) {
        let start = (b * block_size) as usize;
        let end = (start + block_size as usize).min(content.len());
        let raw = &content[start..end];
        let stored = if compression == 1 {
            gzip(raw)
        } else {
            raw.to_vec()
        };
        fs::write(
            dir.join("blocks").join(format!("block_{b:0>8}.bin")),
            stored,
        )
        .unwrap();
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut c = Algorithm::Gzip.compressor(4).unwrap();
    c.encode(raw, true).unwrap().to_vec()
}

/// A cached upstream answer as Olah's `_write_cache_request` / DingoSpeed's
/// `WriteCacheRequest` store it.
fn write_cached(path: &Path, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    mkparent(path);
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let doc = json!({"status_code": status, "headers": headers, "content": hex::encode(body)});
    fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

fn repo_info(id: &str, sha: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_id": "65f0", "id": id, "private": false, "gated": false, "sha": sha,
        "lastModified": "2024-01-01T00:00:00.000Z", "siblings": [],
    }))
    .unwrap()
}

fn paths_info(path: &str, oid: &str, size: u64, lfs: Option<&str>) -> Vec<u8> {
    let mut entry = json!({"type": "file", "oid": oid, "size": size, "path": path});
    if let Some(sha) = lfs {
        entry["lfs"] = json!({"oid": sha, "size": size, "pointerSize": 134});
    }
    serde_json::to_vec(&json!([entry])).unwrap()
}

fn app(cache: &Path) -> Arc<App> {
    let yaml = format!(
        "offline: true\nupstreams: []\ncache:\n  dir: {}\n  block_size: 64KiB\n",
        cache.display()
    );
    App::new(Config::from_yaml_str(&yaml).unwrap()).unwrap()
}

fn model(id: &str) -> Repo {
    Repo::new(RepoType::Model, RepoId::new(id).unwrap())
}

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const C3: &str = "3333333333333333333333333333333333333333";

/// Files of the test caches, by name.
struct Fixture {
    _dir: tempfile::TempDir,
    repos: PathBuf,
    cache: PathBuf,
    lfs: Vec<u8>,
    regular: Vec<u8>,
    partial: Vec<u8>,
    bad_claim: String,
    orphan: Vec<u8>,
    weights: Vec<u8>,
    readme: Vec<u8>,
    v9: Vec<u8>,
    gpt2_config: Vec<u8>,
}

/// Builds:
/// - a DingoSpeed repo `acme/tiny` at C1: `blobs/{etag}` + relative `resolve/` symlinks (a
///   complete LFS file, a complete regular file, a partial file, a file whose content does
///   not match its etag, a symlink escaping the import dir), an unreferenced blob, and
///   `revision/main` + `revision/{C1}` repo-info answers;
/// - an Olah repo `olahorg/olahrepo` at C2: OLAH files directly under `resolve/`, etags from
///   cached paths-info and HEAD answers (one of them not a content hash, one file with no
///   metadata at all), an Olah v9 gzip directory, and a gzip-encoded `revision/main` answer;
/// - Olah's no-org quirk: `None/gpt2` at C3.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("olah").join("repos");
    let cache = dir.path().join("cache");
    let outside = dir.path().join("outside.bin");
    fs::write(&outside, b"secret").unwrap();

    // DingoSpeed: acme/tiny.
    let files = repos.join("files/models/acme/tiny");
    let lfs = data(1, 300_000);
    let regular = br#"{"architectures": ["Tiny"], "hidden_size": 8}"#.to_vec();
    let partial = data(2, 150_000);
    let bad_claim = sha256_hex(b"what the file should have been");
    let orphan = data(3, 70_000);
    let blob = |etag: &str| files.join("blobs").join(etag);
    write_olah_v8(&blob(&sha256_hex(&lfs)), &lfs, OLAH_BLOCK, |_| true);
    write_olah_v8(&blob(&git_sha1_hex(&regular)), &regular, OLAH_BLOCK, |_| {
        true
    });
    write_olah_v8(&blob(&sha256_hex(&partial)), &partial, OLAH_BLOCK, |b| {
        b != 2
    });
    write_olah_v8(&blob(&bad_claim), &data(4, 90_000), OLAH_BLOCK, |_| true);
    write_olah_v8(&blob(&sha256_hex(&orphan)), &orphan, OLAH_BLOCK, |_| true);
    let link = |path: &str, etag: &str| {
        let at = files.join("resolve").join(C1).join(path);
        mkparent(&at);
        let up = "../".repeat(path.matches('/').count() + 2);
        symlink(format!("{up}blobs/{etag}"), at).unwrap();
    };
    link("model.safetensors", &sha256_hex(&lfs));
    link("config.json", &git_sha1_hex(&regular));
    link("sub/partial.bin", &sha256_hex(&partial));
    link("bad.bin", &bad_claim);
    symlink(&outside, files.join("resolve").join(C1).join("escape.bin")).unwrap();
    let api = repos.join("api/models/acme/tiny/revision");
    write_cached(
        &api.join("main/meta_get.json"),
        200,
        &[("content-type", "application/json")],
        &repo_info("acme/tiny", C1),
    );
    write_cached(
        &api.join(C1).join("meta_get.json"),
        200,
        &[],
        &repo_info("acme/tiny", C1),
    );

    // Olah: olahorg/olahrepo.
    let files = repos.join("files/models/olahorg/olahrepo/resolve").join(C2);
    let api = repos.join("api/models/olahorg/olahrepo");
    let heads = repos.join("heads/models/olahorg/olahrepo/resolve").join(C2);
    let weights = data(5, 200_001);
    let readme = b"# olah repo\n".to_vec();
    let v9 = data(6, 123_457);
    write_olah_v8(&files.join("weights.bin"), &weights, 8 << 20, |_| true);
    let pi = |path: &str| {
        api.join("paths-info")
            .join(C2)
            .join(path)
            .join("paths-info_post.json")
    };
    write_cached(
        &pi("weights.bin"),
        200,
        &[],
        &paths_info(
            "weights.bin",
            &"9".repeat(40),
            200_001,
            Some(&sha256_hex(&weights)),
        ),
    );
    write_olah_v8(&files.join("docs/README.md"), &readme, OLAH_BLOCK, |_| true);
    write_cached(
        &heads.join("docs/README.md"),
        200,
        &[
            ("etag", &format!("\"{}\"", git_sha1_hex(&readme))),
            ("content-length", &readme.len().to_string()),
            ("x-repo-commit", C2),
        ],
        b"",
    );
    write_olah_v9(&files.join("data/v9.bin"), &v9, 50_000, 1, |_| true);
    write_cached(
        &pi("data/v9.bin"),
        200,
        &[],
        &paths_info(
            "data/v9.bin",
            &"8".repeat(40),
            123_457,
            Some(&sha256_hex(&v9)),
        ),
    );
    let weird = b"weird".to_vec();
    write_olah_v8(&files.join("weird.txt"), &weird, OLAH_BLOCK, |_| true);
    write_cached(
        &pi("weird.txt"),
        200,
        &[],
        &paths_info("weird.txt", "not-a-hash", 5, None),
    );
    write_olah_v8(&files.join("unknown.txt"), b"who knows", OLAH_BLOCK, |_| {
        true
    });
    write_cached(
        &api.join("revision/main/meta_get.json"),
        200,
        &[
            ("content-encoding", "gzip"),
            ("content-type", "application/json"),
        ],
        &gzip(&repo_info("olahorg/olahrepo", C2)),
    );

    // Olah < v9: a no-org repo under None/.
    let gpt2_config = br#"{"model_type": "gpt2"}"#.to_vec();
    let files = repos.join("files/models/None/gpt2/resolve").join(C3);
    write_olah_v8(&files.join("config.json"), &gpt2_config, OLAH_BLOCK, |_| {
        true
    });
    write_cached(
        &repos
            .join("api/models/None/gpt2/paths-info")
            .join(C3)
            .join("config.json/paths-info_post.json"),
        200,
        &[],
        &paths_info(
            "config.json",
            &git_sha1_hex(&gpt2_config),
            gpt2_config.len() as u64,
            None,
        ),
    );
    write_cached(
        &repos.join("api/models/None/gpt2/revision/main/meta_get.json"),
        200,
        &[],
        &repo_info("gpt2", C3),
    );

    Fixture {
        _dir: dir,
        repos,
        cache,
        lfs,
        regular,
        partial,
        bad_claim,
        orphan,
        weights,
        readme,
        v9,
        gpt2_config,
    }
}

fn stored(app: &App, id: &str) -> Option<Vec<u8>> {
    let blob = app.store.open_blob(&BlobId::parse(id).unwrap()).unwrap()?;
    assert!(blob.is_complete(), "{id} is incomplete");
    assert!(blob.is_verified(), "{id} is not verified");
    Some(
        blob.read_verified(0, blob.size() as usize)
            .unwrap()
            .to_vec(),
    )
}

fn skip_reason<'a>(report: &'a ImportReport, path_end: &str) -> &'a str {
    report
        .skipped
        .iter()
        .find(|(p, _)| p.ends_with(path_end))
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("{path_end} was not reported skipped: {report}"))
}

#[tokio::test]
async fn imports_verified_files_and_leaves_out_what_cannot_be_verified() {
    let fx = fixture();
    let app = app(&fx.cache);
    // The parent of `repos/` is accepted too.
    let report = import_olah(&app, fx.repos.parent().unwrap()).await.unwrap();
    println!("{report}");

    assert_eq!(report.root, fs::canonicalize(&fx.repos).unwrap());
    assert_eq!(report.repos, 3);
    assert_eq!(report.files_imported, 6, "{report}");
    assert_eq!(
        report.blobs_imported, 7,
        "6 referenced + 1 unreferenced blob: {report}"
    );
    assert_eq!(report.blobs_already_present, 0);
    let total: usize = [
        &fx.lfs,
        &fx.regular,
        &fx.orphan,
        &fx.weights,
        &fx.readme,
        &fx.v9,
        &fx.gpt2_config,
    ]
    .iter()
    .map(|v| v.len())
    .sum();
    assert_eq!(report.bytes_imported, total as u64);
    let blocks: u64 = [
        &fx.lfs,
        &fx.regular,
        &fx.orphan,
        &fx.weights,
        &fx.readme,
        &fx.v9,
        &fx.gpt2_config,
    ]
    .iter()
    .map(|v| (v.len() as u64).div_ceil(HUB_BLOCK))
    .sum();
    assert_eq!(report.blocks_imported, blocks);
    // main + "" for each of the three repos.
    assert_eq!(report.revisions, 3);
    assert_eq!(report.repo_infos, 3);

    // Good files: complete, verified, byte-identical.
    for content in [&fx.lfs, &fx.orphan, &fx.weights, &fx.v9] {
        assert_eq!(stored(&app, &sha256_hex(content)).as_ref(), Some(content));
    }
    for content in [&fx.regular, &fx.readme, &fx.gpt2_config] {
        assert_eq!(stored(&app, &git_sha1_hex(content)).as_ref(), Some(content));
    }
    // Blocks were re-cut to hubcache's block size.
    let blob = app
        .store
        .open_blob(&BlobId::parse(&sha256_hex(&fx.lfs)).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(blob.block_size(), HUB_BLOCK);

    // Left out: partial, mismatching, escaping, non-hash etag, unknown etag.
    assert!(stored(&app, &sha256_hex(&fx.partial)).is_none());
    assert!(stored(&app, &fx.bad_claim).is_none());
    assert!(skip_reason(&report, "sub/partial.bin").contains("incomplete (3 of 4 blocks present"));
    assert!(skip_reason(&report, "bad.bin").contains("does not match its etag"));
    assert!(skip_reason(&report, "escape.bin").contains("outside the import directory"));
    assert!(skip_reason(&report, "weird.txt").contains("not a content hash"));
    assert!(skip_reason(&report, "unknown.txt").contains("no etag known"));
    let outcome = |path: &str| {
        report
            .files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.outcome.clone())
            .unwrap_or_else(|| panic!("no report for {path}"))
    };
    assert!(matches!(
        outcome("sub/partial.bin"),
        FileOutcome::Skipped { .. }
    ));
    assert!(matches!(outcome("bad.bin"), FileOutcome::Skipped { .. }));
    assert_eq!(
        outcome("model.safetensors"),
        FileOutcome::Imported {
            blob: sha256_hex(&fx.lfs),
            size: fx.lfs.len() as u64
        }
    );
    assert!(
        report.notes.iter().any(|n| n.contains("None/gpt2")),
        "{report}"
    );

    // Offline, `main` resolves to the imported metadata.
    let main = Revision::new("main").unwrap();
    let tiny = model("acme/tiny");
    let meta = app
        .meta
        .resolve_file(
            &tiny,
            &main,
            &RepoPath::new("model.safetensors").unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        meta,
        FileMeta {
            path: "model.safetensors".into(),
            commit: C1.into(),
            size: fx.lfs.len() as u64,
            etag: sha256_hex(&fx.lfs),
            lfs: true,
            blob: sha256_hex(&fx.lfs),
            verifiable: true,
        }
    );
    let config = app
        .meta
        .resolve_file(&tiny, &main, &RepoPath::new("config.json").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        (config.etag.as_str(), config.lfs),
        (git_sha1_hex(&fx.regular).as_str(), false)
    );
    for missing in ["sub/partial.bin", "bad.bin", "escape.bin"] {
        let path = RepoPath::new(missing).unwrap();
        assert!(
            app.meta
                .resolve_file(&tiny, &main, &path, None)
                .await
                .is_err(),
            "{missing}"
        );
    }
    let olah = model("olahorg/olahrepo");
    for (path, content) in [
        ("weights.bin", &fx.weights),
        ("docs/README.md", &fx.readme),
        ("data/v9.bin", &fx.v9),
    ] {
        let meta = app
            .meta
            .resolve_file(&olah, &main, &RepoPath::new(path).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(
            (meta.commit.as_str(), meta.size),
            (C2, content.len() as u64),
            "{path}"
        );
    }
    let gpt2 = app
        .meta
        .resolve_file(
            &model("gpt2"),
            &main,
            &RepoPath::new("config.json").unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(gpt2.blob, git_sha1_hex(&fx.gpt2_config));
    // The default revision ("" = no revision in the URL) follows main.
    assert_eq!(app.meta.commit_for(&tiny, None, None).await.unwrap(), C1);
    // The offline file path of the proxy finds the blob.
    let id = BlobId::parse(&meta.blob).unwrap();
    assert!(app.fill.open_cached(&id).await.unwrap().is_some());

    // Importing again copies nothing and records the same files.
    let again = import_olah(&app, &fx.repos).await.unwrap();
    assert_eq!(again.blobs_imported, 0);
    assert_eq!(again.blobs_already_present, 7);
    assert_eq!(again.bytes_imported, 0);
    assert_eq!(again.files_imported, 6);
}

#[tokio::test]
async fn fills_only_missing_blocks_of_a_blob_already_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let content = data(7, 200_000);
    let id = sha256_hex(&content);
    write_olah_v8(
        &repos.join("files/models/a/b/blobs").join(&id),
        &content,
        OLAH_BLOCK,
        |_| true,
    );
    let app = app(&dir.path().join("cache"));
    let blob = app
        .store
        .create_blob(
            &BlobId::parse(&id).unwrap(),
            content.len() as u64,
            HUB_BLOCK,
            true,
        )
        .unwrap();
    blob.put_block(1, &content[HUB_BLOCK as usize..2 * HUB_BLOCK as usize])
        .unwrap();
    drop(blob);
    let report = import_olah(&app, &repos).await.unwrap();
    assert_eq!(report.blobs_imported, 1, "{report}");
    assert_eq!(report.blocks_imported, 3);
    assert_eq!(report.bytes_imported, content.len() as u64 - HUB_BLOCK);
    assert_eq!(stored(&app, &id), Some(content));
}

#[tokio::test]
async fn a_mismatching_file_never_becomes_present_and_a_pre_existing_partial_copy_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let content = data(8, 200_000);
    let id = sha256_hex(&content);
    let mut damaged = content.clone();
    damaged[150_000] ^= 1;
    write_olah_v8(
        &repos.join("files/models/a/b/blobs").join(&id),
        &damaged,
        OLAH_BLOCK,
        |_| true,
    );
    let app = app(&dir.path().join("cache"));
    let blob_id = BlobId::parse(&id).unwrap();
    let blob = app
        .store
        .create_blob(&blob_id, content.len() as u64, HUB_BLOCK, true)
        .unwrap();
    blob.put_block(0, &content[..HUB_BLOCK as usize]).unwrap();
    drop(blob);
    let report = import_olah(&app, &repos).await.unwrap();
    assert_eq!(report.blobs_imported, 0);
    assert!(report
        .skipped
        .iter()
        .any(|(_, r)| r.contains("does not match its etag")));
    let blob = app.store.open_blob(&blob_id).unwrap().unwrap();
    assert_eq!(
        blob.present_count(),
        1,
        "only hubcache's own block is present"
    );
    assert!(!blob.is_verified());
}

#[tokio::test]
async fn empty_files_and_v9_plain_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let files = repos.join("files/datasets/org/set");
    // An empty regular file: DingoSpeed creates blobs/{etag} empty; fine for empty content.
    let empty_sha1 = git_sha1_hex(b"");
    fs::create_dir_all(files.join("blobs")).unwrap();
    fs::write(files.join("blobs").join(&empty_sha1), b"").unwrap();
    // A download that never started: empty file, non-empty etag.
    fs::write(files.join("blobs").join(sha256_hex(b"x")), b"").unwrap();
    // An OLAH v8 header for empty content.
    let empty_lfs = files.join("resolve").join(C1).join("empty.bin");
    write_olah_v8(&empty_lfs, b"", OLAH_BLOCK, |_| true);
    write_cached(
        &repos
            .join("api/datasets/org/set/paths-info")
            .join(C1)
            .join("empty.bin/paths-info_post.json"),
        200,
        &[],
        &paths_info("empty.bin", &"0".repeat(40), 0, Some(&sha256_hex(b""))),
    );
    let plain = data(9, 100_000);
    let v9_dir = files.join("cdn").join(sha256_hex(&plain));
    write_olah_v9(&v9_dir, &plain, 30_000, 0, |_| true);
    let lzma = data(10, 1000);
    write_olah_v9(
        &files.join("cdn").join(sha256_hex(&lzma)),
        &lzma,
        30_000,
        2,
        |_| true,
    );
    let app = app(&dir.path().join("cache"));
    let report = import_olah(&app, &repos).await.unwrap();
    assert_eq!(report.blobs_imported, 3, "{report}");
    assert_eq!(stored(&app, &empty_sha1), Some(Vec::new()));
    assert_eq!(stored(&app, &sha256_hex(b"")), Some(Vec::new()));
    assert_eq!(stored(&app, &sha256_hex(&plain)), Some(plain));
    assert!(stored(&app, &sha256_hex(b"x")).is_none());
    assert!(skip_reason(&report, &sha256_hex(b"x")).contains("never started"));
    assert!(skip_reason(&report, &sha256_hex(&lzma)).contains("compression 2"));
    // The dataset has no repo info: its files need an upstream check before being served.
    assert!(report
        .notes
        .iter()
        .any(|n| n.contains("datasets/org/set") && n.contains("visibility is unknown")));
}

#[tokio::test]
async fn a_directory_without_a_cache_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir.path().join("cache"));
    let err = import_olah(&app, dir.path()).await.unwrap_err();
    assert!(matches!(err, ImportError::NotACache { .. }), "{err}");
    let err = import_olah(&app, &dir.path().join("nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Open { .. }), "{err}");
}

#[test]
fn revision_names_nested_and_percent_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("api");
    for rev in ["main", "refs/pr/1", "refs%2Fconvert%2Fparquet", "v1.0"] {
        write_cached(
            &api.join("revision").join(rev).join("meta_get.json"),
            200,
            &[],
            b"{}",
        );
    }
    let mut skipped = Vec::new();
    let revs: Vec<String> = layout::revision_metas(&api, &mut skipped)
        .into_iter()
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(revs, ["main", "refs/convert/parquet", "refs/pr/1", "v1.0"]);
    assert!(skipped.is_empty());
}

#[test]
fn malformed_olah_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    };
    let header = |version: u64, block: u64, size: u64, mask: u64| {
        let mut h = b"OLAH".to_vec();
        for v in [version, block, size, mask] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    };
    let open = |p: &Path| OlahSource::open(p).map(|_| ());
    assert!(matches!(
        open(&file("magic", b"NOPE and more bytes")),
        Err(OlahError::NotOlah)
    ));
    assert!(matches!(
        open(&file("short", b"OL")),
        Err(OlahError::NotOlah)
    ));
    assert!(matches!(
        open(&file("fixed", b"OLAH\x08\0\0")),
        Err(OlahError::TruncatedHeader { .. })
    ));
    assert!(matches!(
        open(&file("v7", &header(7, 8, 8, 8))),
        Err(OlahError::Version(7))
    ));
    assert!(matches!(
        open(&file("bs0", &header(8, 0, 8, 8))),
        Err(OlahError::Invalid(_))
    ));
    assert!(matches!(
        open(&file("mask0", &header(8, 8, 8, 0))),
        Err(OlahError::Invalid(_))
    ));
    assert!(matches!(
        open(&file("huge", &header(8, 8, 8, u64::MAX))),
        Err(OlahError::Invalid(_))
    ));
    assert!(matches!(
        open(&file("toomany", &header(8, 1, 100, 8))),
        Err(OlahError::Invalid(_))
    ));
    assert!(matches!(
        open(&file("nobitmap", &header(8, 8, 8, 1 << 20))),
        Err(OlahError::TruncatedHeader { .. })
    ));
    assert!(matches!(
        open(&file("bigsize", &header(8, 1 << 30, u64::MAX, 1 << 20))),
        Err(OlahError::Invalid(_))
    ));

    // Bits set but the data cut off: those blocks count as missing.
    let content = data(11, 100_000);
    let cut = dir.path().join("cut");
    write_olah_v8(&cut, &content, OLAH_BLOCK, |_| true);
    let f = fs::OpenOptions::new().write(true).open(&cut).unwrap();
    f.set_len(131_108 + 50_000).unwrap();
    let src = OlahSource::open(&cut).unwrap();
    assert_eq!(src.presence(), (1, 3));
    assert!(src.stream(&mut |_: &[u8]| Ok::<(), ()>(())).is_err());

    // Garbage after a valid magic never panics.
    for seed in 0..200u64 {
        let mut bytes = b"OLAH".to_vec();
        bytes.extend(data(seed, (seed * 7 % 300) as usize));
        let p = file("fuzz", &bytes);
        if let Ok(src) = OlahSource::open(&p) {
            let _ = src.presence();
            let _ = src.stream(&mut |_: &[u8]| Ok::<(), ()>(()));
        }
    }
    // v9: a corrupt gzip block and a block holding too much are errors.
    let v9 = dir.path().join("v9");
    write_olah_v9(&v9, &content, 60_000, 1, |_| true);
    fs::write(v9.join("blocks/block_00000001.bin"), b"not gzip").unwrap();
    assert!(OlahSource::open(&v9)
        .unwrap()
        .stream(&mut |_: &[u8]| Ok::<(), ()>(()))
        .is_err());
    let v9b = dir.path().join("v9b");
    write_olah_v9(&v9b, &content, 60_000, 0, |_| true);
    fs::write(v9b.join("blocks/block_00000001.bin"), data(1, 50_000)).unwrap();
    assert!(OlahSource::open(&v9b)
        .unwrap()
        .stream(&mut |_: &[u8]| Ok::<(), ()>(()))
        .is_err());
}

#[test]
fn cached_answers_decode_their_envelope() {
    let body = repo_info("a/b", C1);
    let doc = json!({"version": 1, "status_code": 200, "headers": {"Content-Encoding": ["gzip"], "X-Thing": 5}, "content": hex::encode(gzip(&body))});
    let resp = metajson::parse(&doc).unwrap();
    assert_eq!(resp.body, body);
    assert_eq!(resp.header("x-thing"), Some("5"));
    assert_eq!(metajson::repo_info(&resp).unwrap().summary.sha, C1);

    assert!(metajson::parse(&json!({"status_code": 200, "content": "zz"})).is_err());
    assert!(metajson::parse(&json!({"headers": {}, "content": ""})).is_err());
    assert!(metajson::parse(&json!([1, 2])).is_err());
    let zstd =
        json!({"status_code": 200, "headers": {"content-encoding": "zstd"}, "content": "00"});
    assert!(metajson::parse(&zstd).unwrap_err().contains("unsupported"));
    let not_gzip =
        json!({"status_code": 200, "headers": {"content-encoding": "gzip"}, "content": "0011"});
    assert!(metajson::parse(&not_gzip).is_err());

    let pi = metajson::CachedResponse {
        status: 200,
        headers: Default::default(),
        body: paths_info("x.bin", &"a".repeat(40), 9, Some(&"B".repeat(64))),
    };
    let claim = metajson::path_info(&pi, "x.bin").unwrap();
    assert_eq!((claim.etag, claim.size), ("b".repeat(64), Some(9)));
    assert!(metajson::path_info(&pi, "other.bin").is_err());

    let head = metajson::CachedResponse {
        status: 302,
        headers: [
            (
                "x-linked-etag".to_string(),
                format!("\"{}\"", "c".repeat(64)),
            ),
            ("x-linked-size".to_string(), "77".to_string()),
            ("content-length".to_string(), "1".to_string()),
            ("x-repo-commit".to_string(), C1.to_string()),
        ]
        .into_iter()
        .collect(),
        body: Vec::new(),
    };
    let claim = metajson::head_info(&head, C1).unwrap();
    assert_eq!((claim.etag, claim.size), ("c".repeat(64), Some(77)));
    assert!(metajson::head_info(&head, C2).is_err());
}

#[test]
fn discovery_tells_no_org_repos_from_orgs_and_never_follows_directory_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repos");
    let touch = |rel: &str| {
        let p = root.join(rel);
        mkparent(&p);
        fs::write(p, b"x").unwrap();
    };
    // DingoSpeed / Olah v9 no-org repo, and an org that has a repo literally named "resolve".
    touch(&format!("files/models/gpt2/resolve/{C1}/config.json"));
    touch(&format!("files/models/acme/resolve/resolve/{C1}/a.txt"));
    touch(&format!("files/datasets/org/set/blobs/{}", "a".repeat(40)));
    touch("api/models/acme/tiny/revision/main/meta_get.json");
    touch(&format!("heads/spaces/org/space/resolve/{C1}/app.py"));
    // A bad repo name and a symlinked org directory (not followed).
    touch(&format!("files/models/org/bad--name/resolve/{C1}/x"));
    symlink(
        root.join("files/models/acme"),
        root.join("files/models/linked"),
    )
    .unwrap();
    // A symlinked directory inside a commit tree (not followed).
    symlink(
        root.join("files/models/acme"),
        root.join(format!("files/models/gpt2/resolve/{C1}/loop")),
    )
    .unwrap();

    let root = fs::canonicalize(&root).unwrap();
    let d = layout::discover(&root);
    let found: Vec<String> = d.repos.keys().map(|r| r.to_string()).collect();
    assert_eq!(
        found,
        [
            "models/acme/resolve",
            "models/acme/tiny",
            "models/gpt2",
            "datasets/org/set",
            "spaces/org/space"
        ]
    );
    assert!(d
        .skipped
        .iter()
        .any(|(p, r)| p.contains("bad--name") && r.contains("not a valid repo")));
    assert!(d
        .skipped
        .iter()
        .any(|(p, r)| p.ends_with("linked") && r.contains("symlinks are not followed")));

    let mut skipped = Vec::new();
    let entries =
        layout::walk_resolve(&root, &root.join("files/models/gpt2/resolve"), &mut skipped);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["config.json"]);
    assert!(skipped
        .iter()
        .any(|(p, r)| p.ends_with("loop") && r.contains("not followed")));
}
