//! Olah 0.5 caches (format v10, `.body` answers, `resolved_commit.json`).

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// `repos/files/{type}s/{id}/resolve/{commit}/{path}`.
fn entry(repos: &Path, repo: &Repo, commit: &str, path: &str) -> PathBuf {
    repos
        .join("files")
        .join(repo.kind.api_plural())
        .join(repo.id.as_str())
        .join("resolve")
        .join(commit)
        .join(path)
}

fn api(repos: &Path, repo: &Repo) -> PathBuf {
    repos
        .join("api")
        .join(repo.kind.api_plural())
        .join(repo.id.as_str())
}

/// A file as Olah 0.5 caches it after a download: the cache directory (etag = the LFS
/// sha256 or the git blob sha1, quoted) and the paths-info answer.
fn olah_file(
    repos: &Path,
    repo: &Repo,
    commit: &str,
    path: &str,
    content: &[u8],
    lfs: bool,
    opts: V10,
) {
    let etag = if lfs {
        sha256_hex(content)
    } else {
        git_sha1_hex(content)
    };
    write_v10(
        &entry(repos, repo, commit, path),
        content,
        opts,
        &format!("\"{etag}\""),
        |_| true,
    );
    paths_info_answer(repos, repo, commit, path, content, lfs);
}

fn paths_info_answer(
    repos: &Path,
    repo: &Repo,
    commit: &str,
    path: &str,
    content: &[u8],
    lfs: bool,
) {
    write_olah_answer(
        &api(repos, repo)
            .join("paths-info")
            .join(commit)
            .join(path)
            .join("paths-info_post.json"),
        200,
        &[("content-type", "application/json; charset=utf-8")],
        &hub_paths_info(path, content, lfs),
        1_700_000_000.5,
    );
}

fn info_answer(repos: &Path, repo: &Repo, rev: &str, sha: &str, cached_at: f64) {
    write_olah_answer(
        &api(repos, repo)
            .join("revision")
            .join(rev)
            .join("meta_get.json"),
        200,
        &[("content-type", "application/json; charset=utf-8")],
        &repo_info(repo.id.as_str(), sha),
        cached_at,
    );
}

fn resolved_answer(repos: &Path, repo: &Repo, rev: &str, sha: &str, cached_at: f64) {
    write_olah_answer(
        &api(repos, repo)
            .join("revision")
            .join(rev)
            .join("resolved_commit.json"),
        200,
        &[],
        sha.as_bytes(),
        cached_at,
    );
}

#[tokio::test]
async fn imports_an_olah_05_cache_lfs_regular_nested_empty_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("olah").join("repos");
    let model = repo(RepoType::Model, "acme/tiny");
    let dataset = repo(RepoType::Dataset, "acme/data");
    let gpt2 = repo(RepoType::Model, "gpt2");
    let config = br#"{"model_type": "tiny"}"#.to_vec();
    let weights = data(1, 560_000); // 3.5 blocks of V10::SMALL
    let notes = b"nested notes\n".to_vec();
    let extra = data(2, 90_000);
    let train = data(3, 300_000);
    let gz = V10 {
        compression: 1,
        ..V10::SMALL
    };
    olah_file(
        &repos,
        &model,
        C1,
        "config.json",
        &config,
        false,
        V10::SMALL,
    );
    olah_file(
        &repos,
        &model,
        C1,
        "model.safetensors",
        &weights,
        true,
        V10::SMALL,
    );
    olah_file(
        &repos,
        &model,
        C1,
        "sub/dir/notes.txt",
        &notes,
        false,
        V10::SMALL,
    );
    paths_info_answer(&repos, &model, C1, "empty.txt", b"", false);
    paths_info_answer(&repos, &model, C1, "never.txt", b"never fetched", false);
    olah_file(&repos, &model, C2, "extra.bin", &extra, true, V10::SMALL);
    olah_file(&repos, &dataset, C3, "data/train.bin", &train, true, gz);
    olah_file(&repos, &gpt2, C1, "config.json", &config, false, V10::SMALL);
    // `main`: the file route's record is older than the repo-info answer; the newest wins.
    info_answer(&repos, &model, "main", C1, 1_700_000_100.0);
    resolved_answer(&repos, &model, "main", C3, 1_700_000_050.0);
    info_answer(&repos, &model, C1, C1, 1_700_000_100.0);
    write_olah_answer(
        &api(&repos, &model)
            .join("revision")
            .join(C1)
            .join("meta_head.json"),
        200,
        &[],
        b"",
        1.0,
    );
    resolved_answer(&repos, &model, "dev", C2, 1_700_000_200.0);
    info_answer(&repos, &dataset, "main", C3, 1_700_000_300.0);
    info_answer(&repos, &gpt2, "main", C1, 1_700_000_300.0);
    let cache = dir.path().join("cache");
    let app = app(&cache, "64KiB");

    // The parent of `repos/` is accepted too.
    let report = import_olah(&app, repos.parent().unwrap()).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    assert_eq!(report.root, fs::canonicalize(&repos).unwrap());
    assert_eq!(report.repos, 3);
    let c = report.counts();
    assert_eq!(
        (c.total, c.imported, c.not_downloaded, c.skipped, c.partial),
        (8, 7, 1, 0, 0),
        "{report}"
    );
    assert!(report.is_clean());
    assert!(report.other.is_empty(), "{report}");
    assert!(matches!(
        outcome(&report, "models/acme/tiny", C1, "never.txt"),
        FileOutcome::NotDownloaded { .. }
    ));
    assert_eq!(
        outcome(&report, "models/acme/tiny", C1, "model.safetensors"),
        &FileOutcome::Imported {
            blob: sha256_hex(&weights),
            size: weights.len() as u64,
            copied: true
        }
    );

    for (bytes, id) in [
        (&config, git_sha1_hex(&config)),
        (&weights, sha256_hex(&weights)),
        (&notes, git_sha1_hex(&notes)),
        (&extra, sha256_hex(&extra)),
        (&train, sha256_hex(&train)),
    ] {
        assert_eq!(stored(&app, &id).as_ref(), Some(bytes), "{id}");
    }
    // Offline, every file resolves by branch, tag-like name and commit.
    for (r, rev, path, size) in [
        (&model, "main", "config.json", config.len()),
        (&model, "main", "model.safetensors", weights.len()),
        (&model, C1, "sub/dir/notes.txt", notes.len()),
        (&model, "main", "empty.txt", 0),
        (&model, "dev", "extra.bin", extra.len()),
        (&dataset, "main", "data/train.bin", train.len()),
        (&gpt2, "main", "config.json", config.len()),
    ] {
        let meta = resolved(&app, r, rev, path)
            .await
            .unwrap_or_else(|| panic!("{r}@{rev}/{path}"));
        assert_eq!(meta.size, size as u64, "{r}@{rev}/{path}");
        assert!(meta.verifiable);
    }
    assert!(resolved(&app, &model, "main", "never.txt").await.is_none());
    let revs: Vec<(String, String, String)> = report
        .revisions
        .iter()
        .map(|r| (r.repo.clone(), r.revision.clone(), r.commit.clone()))
        .collect();
    assert!(
        revs.contains(&("models/acme/tiny".into(), "main".into(), C1.into())),
        "{revs:?}"
    );
    assert!(
        revs.contains(&("models/acme/tiny".into(), "dev".into(), C2.into())),
        "{revs:?}"
    );
    assert_eq!(revs.len(), 4, "{revs:?}");
    assert_eq!(report.repo_infos, 3);
    assert_eq!(commit(&app, &model, None).await, C1, "no revision = main");

    // Importing again copies nothing.
    let again = import_olah(&app, &repos).await.unwrap();
    assert_counts_match(&again);
    assert_eq!(again.counts().already_present, 6, "{again}");
    assert_eq!(again.blobs_copied, 0);
}

/// Which store blocks (of `hub` bytes) lie entirely within Olah blocks that are present.
fn covered(size: u64, olah_block: u64, hub: u64, present: &dyn Fn(u64) -> bool) -> Vec<bool> {
    (0..size.div_ceil(hub))
        .map(|b| {
            let (start, end) = (b * hub, ((b + 1) * hub).min(size));
            (start / olah_block..=(end - 1) / olah_block).all(present)
        })
        .collect()
}

#[tokio::test]
async fn a_partial_olah_file_imports_exactly_the_blocks_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/big");
    let content = data(7, 1_550_000); // 10 Olah blocks of 160,000 bytes
    let missing = [3u64, 4, 7];
    let present = |b: u64| !missing.contains(&b);
    let etag = sha256_hex(&content);
    write_v10(
        &entry(&repos, &model, C1, "big.bin"),
        &content,
        V10::SMALL,
        &format!("\"{etag}\""),
        present,
    );
    paths_info_answer(&repos, &model, C1, "big.bin", &content, true);
    info_answer(&repos, &model, "main", C1, 1_700_000_000.0);
    let app = app(&dir.path().join("cache"), "64KiB");

    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    let expected = covered(
        content.len() as u64,
        V10::SMALL.block_size,
        HUB_BLOCK,
        &present,
    );
    let blob = app
        .store
        .open_blob(&BlobId::parse(&etag).unwrap())
        .unwrap()
        .unwrap();
    let mut bytes = 0;
    for (b, want) in expected.iter().enumerate() {
        assert_eq!(blob.is_present(b as u64), *want, "store block {b}");
        if *want {
            let span = blob.block_span(b as u64);
            let got = blob
                .read_verified(span.start, (span.end - span.start) as usize)
                .unwrap();
            assert_eq!(&got[..], &content[span.start as usize..span.end as usize]);
            bytes += span.end - span.start;
        }
    }
    assert!(bytes > 0 && !blob.is_complete());
    match outcome(&report, "models/acme/big", C1, "big.bin") {
        FileOutcome::Partial {
            size,
            bytes: got,
            missing,
            ..
        } => {
            assert_eq!((*size, *got), (content.len() as u64, bytes));
            assert_eq!(
                missing,
                &["blocks 3-4: not downloaded", "block 7: not downloaded"]
            );
        }
        other => panic!("{other:?}"),
    }
    // Recorded, so an online hubcache fetches only the rest; offline it is not complete.
    assert_eq!(
        resolved(&app, &model, "main", "big.bin")
            .await
            .unwrap()
            .size,
        content.len() as u64
    );
    assert!(report.is_clean());
}

#[tokio::test]
async fn a_chunk_that_fails_its_crc_is_left_out_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/damaged");
    let content = data(8, 700_000);
    let etag = sha256_hex(&content);
    let path = entry(&repos, &model, C1, "w.bin");
    write_v10(&path, &content, V10::SMALL, &format!("\"{etag}\""), |_| {
        true
    });
    // Flip a byte in chunk 1 of block 2 (content offset 320,000 + 40,005).
    let block = path.join("blocks").join("block_00000002.bin");
    let mut raw = fs::read(&block).unwrap();
    raw[40_005] ^= 0x40;
    fs::write(&block, raw).unwrap();
    // A single-block file whose only chunk is damaged: nothing can be imported.
    let small = data(9, 30_000);
    let small_path = entry(&repos, &model, C1, "small.bin");
    write_v10(
        &small_path,
        &small,
        V10::SMALL,
        &format!("\"{}\"", sha256_hex(&small)),
        |_| true,
    );
    let block0 = small_path.join("blocks").join("block_00000000.bin");
    let mut raw = fs::read(&block0).unwrap();
    raw[0] ^= 1;
    fs::write(&block0, raw).unwrap();
    let app = app(&dir.path().join("cache"), "64KiB");

    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    let bad = 320_000 + 40_000..320_000 + 80_000u64;
    let blob = app
        .store
        .open_blob(&BlobId::parse(&etag).unwrap())
        .unwrap()
        .unwrap();
    for b in 0..blob.block_count() {
        let span = blob.block_span(b);
        let overlaps = span.start < bad.end && bad.start < span.end;
        assert_eq!(blob.is_present(b), !overlaps, "store block {b}");
    }
    match outcome(&report, "models/acme/damaged", C1, "w.bin") {
        FileOutcome::Partial { missing, .. } => {
            assert_eq!(missing, &["block 2: chunk 1 fails its CRC32"])
        }
        other => panic!("{other:?}"),
    }
    let reason = skipped_reason(&report, "models/acme/damaged", C1, "small.bin");
    assert!(
        reason.contains("block 0: chunk 0 fails its CRC32"),
        "{reason}"
    );
    assert!(app
        .store
        .open_blob(&BlobId::parse(&sha256_hex(&small)).unwrap())
        .unwrap()
        .is_none());
    assert!(!report.is_clean());
}

#[tokio::test]
async fn content_that_does_not_match_its_etag_is_never_imported() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/liar");
    let real = data(10, 200_000);
    let claimed = data(11, 200_000);
    // Olah's chunk CRCs match the bytes it got, but they are not the file's content.
    write_v10(
        &entry(&repos, &model, C1, "w.bin"),
        &real,
        V10::SMALL,
        &format!("\"{}\"", sha256_hex(&claimed)),
        |_| true,
    );
    paths_info_answer(&repos, &model, C1, "w.bin", &claimed, true);
    // meta.bin and paths-info disagree.
    let a = data(12, 1000);
    write_v10(
        &entry(&repos, &model, C1, "conflict.bin"),
        &a,
        V10::SMALL,
        &format!("\"{}\"", sha256_hex(&a)),
        |_| true,
    );
    paths_info_answer(&repos, &model, C1, "conflict.bin", &data(13, 1000), true);
    let app = app(&dir.path().join("cache"), "64KiB");

    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    let reason = skipped_reason(&report, "models/acme/liar", C1, "w.bin");
    assert!(
        reason.contains(&format!("hashes to {}", sha256_hex(&real))),
        "{reason}"
    );
    assert!(app
        .store
        .open_blob(&BlobId::parse(&sha256_hex(&claimed)).unwrap())
        .unwrap()
        .is_none());
    let reason = skipped_reason(&report, "models/acme/liar", C1, "conflict.bin");
    assert!(reason.starts_with("conflicting etags"), "{reason}");
    assert_eq!(report.counts().imported, 0);
    assert!(resolved(&app, &model, C1, "w.bin").await.is_none());
}

#[tokio::test]
async fn unreadable_olah_entries_are_reported_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/odd");
    let content = data(14, 50_000);
    let etag = format!("\"{}\"", sha256_hex(&content));
    type Spoil = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "crc.bin",
            Box::new(|p: &Path| {
                let mut h = fs::read(p.join("meta.bin")).unwrap();
                h[20] ^= 1; // the file size
                fs::write(p.join("meta.bin"), h).unwrap();
            }),
            "header CRC mismatch",
        ),
        (
            "v11.bin",
            Box::new(|p: &Path| {
                let mut h = fs::read(p.join("meta.bin")).unwrap();
                h[4] = 11;
                fs::write(p.join("meta.bin"), h).unwrap();
            }),
            "unsupported Olah cache version 11",
        ),
        (
            "nocrc.bin",
            Box::new(|p: &Path| fs::remove_file(p.join("chunks.crc")).unwrap()),
            "chunks.crc",
        ),
        (
            "nometa.bin",
            Box::new(|p: &Path| fs::remove_file(p.join("meta.bin")).unwrap()),
            "meta.bin is missing",
        ),
        (
            "short.bin",
            Box::new(|p: &Path| {
                let b = p.join("blocks").join("block_00000000.bin");
                let raw = fs::read(&b).unwrap();
                fs::write(&b, &raw[..raw.len() - 1]).unwrap();
            }),
            "holds 49999 bytes, expected 50000",
        ),
        (
            "linked.bin",
            Box::new(|p: &Path| {
                // blocks/ moved elsewhere and symlinked back: not followed.
                let outside = p.parent().unwrap().parent().unwrap().parent().unwrap();
                let elsewhere = outside.join("..").join("..").join("..").join("elsewhere");
                fs::rename(p.join("blocks"), &elsewhere).unwrap();
                std::os::unix::fs::symlink(&elsewhere, p.join("blocks")).unwrap();
            }),
            "blocks is not a directory",
        ),
    ];
    for (name, spoil, _) in &cases {
        let p = entry(&repos, &model, C1, name);
        write_v10(&p, &content, V10::SMALL, &etag, |_| true);
        spoil(&p);
    }
    let lzma = V10 {
        compression: 2,
        ..V10::SMALL
    };
    let p = entry(&repos, &model, C1, "lzma.bin");
    write_v10(&p, &content, lzma, &etag, |_| true);
    let app = app(&dir.path().join("cache"), "64KiB");

    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    for (name, _, expected) in &cases {
        let reason = skipped_reason(&report, "models/acme/odd", C1, name);
        assert!(reason.contains(expected), "{name}: {reason}");
    }
    let reason = skipped_reason(&report, "models/acme/odd", C1, "lzma.bin");
    assert!(
        reason.contains("lzma") && reason.contains("not supported"),
        "{reason}"
    );
    assert_eq!(report.counts().skipped, cases.len() + 1);
    assert!(app.store.list_blobs().unwrap().is_empty());
}

#[tokio::test]
async fn a_directory_without_a_cache_is_an_error_and_junk_inside_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir.path().join("cache"), "64KiB");
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = import_olah(&app, &empty).await.unwrap_err();
    assert!(matches!(err, ImportError::NotACache { .. }), "{err}");
    assert!(
        err.to_string().contains("no Olah or DingoSpeed cache here"),
        "{err}"
    );
    let err = import_olah(&app, &dir.path().join("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Open { .. }), "{err}");

    let repos = dir.path().join("junk");
    fs::create_dir_all(repos.join("files/models/acme/x/resolve/not-a-sha")).unwrap();
    fs::create_dir_all(repos.join("files/widgets/a/b")).unwrap();
    fs::create_dir_all(repos.join(format!("files/models/None/gpt2/resolve/{C1}"))).unwrap();
    fs::write(
        repos.join("files/models/acme/x/resolve/readme.txt"),
        b"hello",
    )
    .unwrap();
    let p = repos.join(format!("files/models/acme/x/resolve/{C1}/plain.txt"));
    mkparent(&p);
    fs::write(&p, b"not an Olah file").unwrap();
    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    let reason = skipped_reason(&report, "models/acme/x", C1, "plain.txt");
    assert!(reason.contains("not an Olah cache file"), "{reason}");
    let other: Vec<&str> = report.other.iter().map(|s| s.path.as_str()).collect();
    assert!(other.iter().any(|p| p.ends_with("not-a-sha")), "{other:?}");
    assert!(
        other.iter().any(|p| p.ends_with("files/widgets")),
        "{other:?}"
    );
    let none = report
        .other
        .iter()
        .find(|s| s.path.ends_with("None/gpt2"))
        .expect("None/");
    assert!(none.reason.contains("without an organisation"), "{none:?}");
}

#[tokio::test]
async fn an_imported_mapping_never_replaces_one_hubcache_learned_later() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/moved");
    resolved_answer(&repos, &model, "main", C1, 1_700_000_000.0);
    info_answer(&repos, &model, C1, C1, 1_700_000_000.0);
    let app = app(&dir.path().join("cache"), "64KiB");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(app.meta.import_revision(&model, "main", C2, now));
    let report = import_olah(&app, &repos).await.unwrap();
    assert!(report.revisions.is_empty(), "{report}");
    assert!(
        report.notes.iter().any(|n| n.contains("newer mapping")),
        "{report}"
    );
    assert_eq!(commit(&app, &model, Some("main")).await, C2);
}

#[tokio::test]
async fn the_import_returns_only_once_its_metadata_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/slow-disk");
    olah_file(&repos, &model, C1, "a.txt", b"a\n", false, V10::SMALL);
    info_answer(&repos, &model, "main", C1, 1_700_000_000.0);
    let app = app(&dir.path().join("cache"), "64KiB");
    // The metadata disk does not answer for a while: the import must wait for it, since the
    // command exits as soon as the import returns (a mirror started next found no file entry).
    app.meta
        .stall_writer_for(std::time::Duration::from_millis(400));
    let report = import_olah(&app, &repos).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(app.meta.queued_writes(), 0);
}

#[tokio::test]
async fn imported_blobs_get_every_replica_the_config_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/tiny");
    let content = data(40, 200_000);
    olah_file(&repos, &model, C1, "w.bin", &content, true, V10::SMALL);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let yaml = format!(
        "offline: true\nupstreams: []\ncache:\n  roots: [{}, {}]\n  replicas: 2\n  block_size: 64KiB\n",
        a.display(),
        b.display()
    );
    let app = App::new(Config::from_yaml_str(&yaml).unwrap()).unwrap();
    let report = import_olah(&app, &repos).await.unwrap();
    assert_eq!(report.counts().imported, 1, "{report}");
    let states = app
        .store
        .replica_status(&BlobId::parse(&sha256_hex(&content)).unwrap());
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states
            .iter()
            .all(|s| matches!(s, crate::store::ReplicaState::Complete { verified: true })),
        "{states:?}"
    );
}

#[tokio::test]
async fn answers_are_read_as_olah_reads_them_encoded_or_not() {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let gz = |raw: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::new(4));
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/gz");
    let content = data(50, 1000);
    let opts = V10::SMALL;
    write_v10(
        &entry(&repos, &model, C1, "a.bin"),
        &content,
        opts,
        &format!("\"{}\"", sha256_hex(&content)),
        |_| true,
    );
    // paths-info: httpx decoded the body, the upstream's content-encoding header was kept.
    write_olah_answer(
        &api(&repos, &model)
            .join("paths-info")
            .join(C1)
            .join("a.bin")
            .join("paths-info_post.json"),
        200,
        &[("content-encoding", "gzip")],
        &hub_paths_info("a.bin", &content, true),
        1.0,
    );
    // repo info: relayed raw, still gzip-encoded.
    write_olah_answer(
        &api(&repos, &model)
            .join("revision")
            .join("main")
            .join("meta_get.json"),
        200,
        &[("content-encoding", "gzip")],
        &gz(&repo_info("acme/gz", C1)),
        1.0,
    );
    // A legacy hex answer whose body is gzip without a header (Olah sniffs the magic).
    write_hex_answer(
        &api(&repos, &model)
            .join("revision")
            .join(C1)
            .join("meta_get.json"),
        200,
        &[],
        &gz(&repo_info("acme/gz", C1)),
        None,
    );
    let app = app(&dir.path().join("cache"), "64KiB");
    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert!(report.other.is_empty(), "{report}");
    assert_eq!(report.repo_infos, 1);
    assert_eq!(report.revisions.len(), 1);
    assert!(matches!(
        outcome(&report, "models/acme/gz", C1, "a.bin"),
        FileOutcome::Imported { .. }
    ));
    // The size came from the paths-info answer: a cached copy of another size is refused.
    let answer = cached::read(
        &api(&repos, &model)
            .join("paths-info")
            .join(C1)
            .join("a.bin")
            .join("paths-info_post.json"),
    )
    .unwrap();
    assert_eq!(
        cached::path_info(&answer, "a.bin").unwrap().size,
        Some(1000)
    );
}
