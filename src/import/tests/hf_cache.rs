//! huggingface_hub caches (`models--org--name/{blobs,snapshots,refs}`), written as
//! `huggingface_hub.file_download` writes them: blobs named by etag, snapshot entries as
//! relative symlinks, refs holding the commit.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;

/// Writes `blobs/{etag}` and the snapshot symlink of one file; returns the etag.
fn hf_file(folder: &Path, commit: &str, path: &str, content: &[u8], lfs: bool) -> String {
    let etag = if lfs {
        sha256_hex(content)
    } else {
        git_sha1_hex(content)
    };
    let blob = folder.join("blobs").join(&etag);
    mkparent(&blob);
    fs::write(&blob, content).unwrap();
    let link = folder.join("snapshots").join(commit).join(path);
    mkparent(&link);
    let depth = path.split('/').count() + 1;
    let target: PathBuf = std::iter::repeat_n("..", depth)
        .collect::<PathBuf>()
        .join("blobs")
        .join(&etag);
    symlink(target, &link).unwrap();
    etag
}

fn hf_ref(folder: &Path, rev: &str, commit: &str) {
    let file = folder.join("refs").join(rev);
    mkparent(&file);
    fs::write(file, commit).unwrap();
}

fn import(app: &App, dir: &Path) -> Result<ImportReport, ImportError> {
    import_hf_cache_blocking(&app.store, &app.meta, HUB_BLOCK, dir)
}

#[tokio::test]
async fn a_huggingface_hub_cache_is_imported_with_its_refs_and_served_offline() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let model = hub.join("models--acme--tiny");
    let weights = data(1, 300_000);
    let config_v1 = b"{\"v\":1}".to_vec();
    let config_v2 = b"{\"v\":2}".to_vec();
    let weights_id = hf_file(&model, C1, "model.safetensors", &weights, true);
    hf_file(&model, C1, "config.json", &config_v1, false);
    hf_file(&model, C2, "model.safetensors", &weights, true);
    let config_id = hf_file(&model, C2, "sub/dir/config.json", &config_v2, false);
    hf_ref(&model, "main", C2);
    hf_ref(&model, "refs/pr/1", C1);
    let dataset = hub.join("datasets--acme--data");
    let rows = data(2, 5_000);
    hf_file(&dataset, C3, "train.csv", &rows, false);
    hf_ref(&dataset, "main", C3);
    fs::create_dir_all(hub.join(".locks/models--acme--tiny")).unwrap();
    fs::write(hub.join("version.txt"), "1").unwrap();

    let cache = tempfile::tempdir().unwrap();
    let app = app(cache.path(), "64KiB");
    let report = import(&app, &hub).unwrap();
    assert_counts_match(&report);
    assert!(report.is_clean(), "{report}");
    assert!(report.other.is_empty(), "{report}");
    let tiny = repo(RepoType::Model, "acme/tiny");
    for (commit, path) in [
        (C1, "model.safetensors"),
        (C1, "config.json"),
        (C2, "model.safetensors"),
        (C2, "sub/dir/config.json"),
    ] {
        assert!(
            matches!(
                outcome(&report, "models/acme/tiny", commit, path),
                FileOutcome::Imported { .. }
            ),
            "{path}@{commit}:\n{report}"
        );
    }
    assert_eq!(stored(&app, &weights_id).unwrap(), weights);
    assert_eq!(stored(&app, &config_id).unwrap(), config_v2);
    assert_eq!(commit(&app, &tiny, Some("main")).await, C2);
    assert_eq!(commit(&app, &tiny, None).await, C2);
    assert_eq!(commit(&app, &tiny, Some("refs/pr/1")).await, C1);
    let meta = resolved(&app, &tiny, "main", "sub/dir/config.json")
        .await
        .unwrap();
    assert_eq!((meta.size, meta.blob.as_str()), (7, config_id.as_str()));
    let data_repo = repo(RepoType::Dataset, "acme/data");
    assert!(resolved(&app, &data_repo, "main", "train.csv")
        .await
        .is_some());
    assert!(
        app.meta.files_public(&tiny).await,
        "imported repos are public"
    );

    // Importing again copies nothing.
    let again = import(&app, &hub).unwrap();
    assert!(again.is_clean(), "{again}");
    assert_eq!(again.blobs_copied, 0, "{again}");
}

#[test]
fn bad_entries_are_left_out_and_nothing_unverified_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let secret = data(9, 1000);
    let secret_id = sha256_hex(&secret);
    fs::write(outside.join(&secret_id), &secret).unwrap();

    let model = hub.join("models--acme--bad");
    let good = b"good".to_vec();
    let good_id = hf_file(&model, C1, "good.txt", &good, false);
    let claimed = data(3, 2000);
    let claimed_id = hf_file(&model, C1, "tampered.bin", &claimed, true);
    fs::write(model.join("blobs").join(&claimed_id), data(4, 2000)).unwrap();
    let snap = model.join("snapshots").join(C1);
    symlink(
        format!("../../blobs/{}", "d".repeat(64)),
        snap.join("dangling"),
    )
    .unwrap();
    symlink(
        format!("../../../../outside/{secret_id}"),
        snap.join("escape"),
    )
    .unwrap();
    symlink(outside.join(&secret_id), snap.join("absolute")).unwrap();
    symlink(
        outside.join(&secret_id),
        model.join("blobs").join(&secret_id),
    )
    .unwrap();
    symlink(format!("../../blobs/{secret_id}"), snap.join("via-blob")).unwrap();
    symlink(&outside, snap.join("dir-link")).unwrap();
    fs::write(snap.join("copy.txt"), b"a copy, not a symlink").unwrap();
    fs::write(model.join("blobs/not-a-hash"), b"x").unwrap();
    symlink("../../blobs/not-a-hash", snap.join("unnamed")).unwrap();
    fs::write(
        model.join(format!("blobs/{}.incomplete", "e".repeat(64))),
        b"x",
    )
    .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let app = app(cache.path(), "64KiB");
    let report = import(&app, &hub).unwrap();
    assert_counts_match(&report);
    assert!(!report.is_clean());
    let repo = "models/acme/bad";
    assert!(matches!(
        outcome(&report, repo, C1, "good.txt"),
        FileOutcome::Imported { .. }
    ));
    let reason = |path| skipped_reason(&report, repo, C1, path);
    assert!(reason("tampered.bin").contains("does not match"));
    assert!(reason("dangling").contains("dangling"));
    assert!(reason("escape").contains("outside the repo's blobs/"));
    assert!(reason("absolute").contains("absolute"));
    assert!(reason("via-blob").contains("outside the repo's blobs/"));
    assert!(reason("copy.txt").contains("not a symlink"));
    assert!(reason("unnamed").contains("not a content hash"));
    let other: Vec<&str> = report.other.iter().map(|s| s.path.as_str()).collect();
    assert!(other.iter().any(|p| p.ends_with("dir-link")), "{report}");
    assert!(other.iter().any(|p| p.ends_with(".incomplete")), "{report}");
    assert_eq!(stored(&app, &good_id).unwrap(), good);
    assert!(stored(&app, &claimed_id).is_none());
    assert!(stored(&app, &secret_id).is_none());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn a_directory_that_is_no_huggingface_hub_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("files/models")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let app = app(cache.path(), "64KiB");
    assert!(matches!(
        import(&app, dir.path()),
        Err(ImportError::NotAnHfCache { .. })
    ));
    assert!(matches!(
        import(&app, &dir.path().join("missing")),
        Err(ImportError::Open { .. })
    ));
}
