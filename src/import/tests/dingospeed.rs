//! DingoSpeed caches, written as DingoSpeed's code writes them
//! (`shared/notes/dingospeed-behaviour.md` §3; `internal/dao/file_dao.go`,
//! `internal/downloader/file.go` at dingodb/dingospeed@0043b2a).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::legacy::write_v8;
use super::*;

/// DingoSpeed's `download.blockSize` (default 8 MiB; configurable, smaller here to keep the
/// test fast in debug builds).
const DINGO_BLOCK: u64 = 1 << 20;

/// `common.PathsInfo` marshalled by sonic: `lfs` has no `omitempty`, so a regular file has
/// `"lfs":{"oid":"","size":0,"pointerSize":0}`; xetHash and lastCommit are dropped.
fn dingo_paths_info(path: &str, content: &[u8], lfs: bool) -> Vec<u8> {
    let (oid, lfs_oid, lfs_size, pointer) = if lfs {
        (
            git_sha1_hex(b"version https://git-lfs.github.com/spec/v1\n"),
            sha256_hex(content),
            content.len(),
            134,
        )
    } else {
        (git_sha1_hex(content), String::new(), 0, 0)
    };
    format!(
        r#"[{{"type":"file","oid":"{oid}","size":{},"lfs":{{"oid":"{lfs_oid}","size":{lfs_size},"pointerSize":{pointer}}},"path":"{path}"}}]"#,
        content.len()
    )
    .into_bytes()
}

fn files_dir(repos: &Path, repo: &Repo) -> PathBuf {
    repos
        .join("files")
        .join(repo.kind.api_plural())
        .join(repo.id.as_str())
}

fn api(repos: &Path, repo: &Repo) -> PathBuf {
    repos
        .join("api")
        .join(repo.kind.api_plural())
        .join(repo.id.as_str())
}

/// What `GetPathsInfo` + `ConstructBlobsAndFileFile` + the download leave behind: the
/// paths-info answer, `blobs/{etag}` (an OLAH v8 file, or empty before any byte arrived) and
/// the relative symlink `resolve/{sha}/{path}` -> `blobs/{etag}`.
fn dingo_file(
    repos: &Path,
    repo: &Repo,
    sha: &str,
    path: &str,
    content: &[u8],
    lfs: bool,
    present: impl Fn(u64) -> bool,
) {
    write_hex_answer(
        &api(repos, repo)
            .join("paths-info")
            .join(sha)
            .join(path)
            .join("paths-info_post.json"),
        200,
        &[("content-type", "application/json")],
        &dingo_paths_info(path, content, lfs),
        Some(1),
    );
    let etag = if lfs {
        sha256_hex(content)
    } else {
        git_sha1_hex(content)
    };
    let blob = files_dir(repos, repo).join("blobs").join(&etag);
    if !blob.exists() {
        if content.is_empty() {
            mkparent(&blob);
            fs::write(&blob, b"").unwrap();
        } else {
            write_v8(&blob, content, DINGO_BLOCK, present);
        }
    }
    let link = files_dir(repos, repo).join("resolve").join(sha).join(path);
    mkparent(&link);
    let depth = link
        .parent()
        .unwrap()
        .strip_prefix(files_dir(repos, repo))
        .unwrap()
        .components()
        .count();
    let target = format!("{}blobs/{etag}", "../".repeat(depth));
    symlink(target, &link).unwrap();
}

#[tokio::test]
async fn imports_a_dingospeed_cache() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/tiny");
    let dataset = repo(RepoType::Dataset, "acme/data");
    let config = br#"{"a": 1}"#.to_vec();
    let weights = data(20, (1 << 20) + 12_345); // two DingoSpeed blocks
    let csv = b"a,b\n1,2\n".to_vec();
    let partial = data(21, (2 << 20) + 1);
    let wrong = data(22, 1000);
    dingo_file(&repos, &model, C1, "config.json", &config, false, |_| true);
    dingo_file(
        &repos,
        &model,
        C1,
        "model.safetensors",
        &weights,
        true,
        |_| true,
    );
    dingo_file(&repos, &model, C1, "empty.txt", b"", false, |_| true);
    dingo_file(&repos, &model, C1, "sub/part.bin", &partial, true, |b| {
        b != 1
    });
    // A second commit sharing the weights (one blob per repo, symlinked twice).
    dingo_file(
        &repos,
        &model,
        C2,
        "model.safetensors",
        &weights,
        true,
        |_| true,
    );
    dingo_file(&repos, &dataset, C3, "data/x.csv", &csv, false, |_| true);
    // A blob whose bytes are not what its name says.
    let liar = files_dir(&repos, &model)
        .join("blobs")
        .join(sha256_hex(&data(23, 1000)));
    write_v8(&liar, &wrong, DINGO_BLOCK, |_| true);
    // An orphan blob (its symlink removed by DingoSpeed's repair tool).
    let orphan = data(24, 5000);
    write_v8(
        &files_dir(&repos, &model)
            .join("blobs")
            .join(sha256_hex(&orphan)),
        &orphan,
        DINGO_BLOCK,
        |_| true,
    );
    // `requestAndSaveMeta`: revision/{sha}/ and, for main, revision/main/.
    for (r, sha) in [(&model, C1), (&dataset, C3)] {
        for rev in ["main", sha] {
            write_hex_answer(
                &api(&repos, r)
                    .join("revision")
                    .join(rev)
                    .join("meta_get.json"),
                200,
                &[("content-type", "application/json")],
                &repo_info(r.id.as_str(), sha),
                Some(1),
            );
        }
    }
    let app = app(&dir.path().join("cache"), "256KiB");

    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    let c = report.counts();
    assert_eq!(
        (c.total, c.imported, c.partial, c.skipped),
        (6, 5, 0, 1),
        "{report}"
    );
    for (bytes, id) in [
        (&config, git_sha1_hex(&config)),
        (&weights, sha256_hex(&weights)),
        (&csv, git_sha1_hex(&csv)),
        (&orphan, sha256_hex(&orphan)),
    ] {
        assert_eq!(stored(&app, &id).as_ref(), Some(bytes), "{id}");
    }
    let reason = skipped_reason(&report, "models/acme/tiny", C1, "sub/part.bin");
    assert!(
        reason.contains("incomplete (2 of 3 blocks; block 1: not downloaded)"),
        "{reason}"
    );
    assert!(reason.contains("keeps no checksums"), "{reason}");
    assert!(app
        .store
        .open_blob(&BlobId::parse(&sha256_hex(&partial)).unwrap())
        .unwrap()
        .is_none());
    let liar_reason = &report
        .other
        .iter()
        .find(|s| s.path.ends_with(&sha256_hex(&data(23, 1000))))
        .expect("liar reported")
        .reason;
    assert!(
        liar_reason.contains("does not match its etag"),
        "{liar_reason}"
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("no cached file refers to it")),
        "{report}"
    );
    for (r, rev, path, size) in [
        (&model, "main", "config.json", config.len()),
        (&model, "main", "model.safetensors", weights.len()),
        (&model, "main", "empty.txt", 0),
        (&model, C2, "model.safetensors", weights.len()),
        (&dataset, "main", "data/x.csv", csv.len()),
    ] {
        let meta = resolved(&app, r, rev, path)
            .await
            .unwrap_or_else(|| panic!("{r}@{rev}/{path}"));
        assert_eq!(meta.size, size as u64);
    }
    assert_eq!(report.revisions.len(), 2, "{report}");
    assert!(!report.is_clean());
}

#[tokio::test]
async fn dingospeed_symlinks_leaving_the_import_directory_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/tiny");
    let outside = dir.path().join("outside.bin");
    fs::write(&outside, b"secret").unwrap();
    let link = files_dir(&repos, &model)
        .join("resolve")
        .join(C1)
        .join("escape.bin");
    mkparent(&link);
    symlink(&outside, &link).unwrap();
    let app = app(&dir.path().join("cache"), "64KiB");
    let report = import_olah(&app, &repos).await.unwrap();
    let escape = report
        .other
        .iter()
        .find(|s| s.path.ends_with("escape.bin"))
        .expect("reported");
    assert!(
        escape
            .reason
            .contains("points outside the import directory"),
        "{report}"
    );
    assert!(report.files.is_empty());
}

#[tokio::test]
async fn an_empty_dingospeed_blob_is_the_empty_file_and_a_never_started_one_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let model = repo(RepoType::Model, "acme/tiny");
    // `ConstructBlobsAndFileFile` creates the blob empty; for a 0-byte file nothing more is
    // written. Here without a cached paths-info answer: the blob's name is the only etag.
    for (name, etag) in [
        ("empty.txt", files::EMPTY_GIT_SHA1.to_string()),
        ("never.bin", sha256_hex(b"some content")),
    ] {
        let blob = files_dir(&repos, &model).join("blobs").join(&etag);
        mkparent(&blob);
        fs::write(&blob, b"").unwrap();
        let link = files_dir(&repos, &model)
            .join("resolve")
            .join(C1)
            .join(name);
        mkparent(&link);
        symlink(format!("../../blobs/{etag}"), &link).unwrap();
    }
    let app = app(&dir.path().join("cache"), "64KiB");
    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    assert!(matches!(
        outcome(&report, "models/acme/tiny", C1, "empty.txt"),
        FileOutcome::Imported { size: 0, .. }
    ));
    let reason = skipped_reason(&report, "models/acme/tiny", C1, "never.bin");
    assert!(reason.contains("the download never started"), "{reason}");
}
