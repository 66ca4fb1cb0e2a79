//! Export tests: a huggingface_hub cache imported into an offline hubcache and exported
//! again comes out identical (blobs, symlinks, refs); the pattern rules.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::*;
use crate::config::Config;
use crate::hf::{RepoId, RepoType};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

fn app(cache: &Path) -> Arc<App> {
    let yaml = format!(
        "offline: true\nupstreams: []\ncache:\n  dir: {}\n  block_size: 64KiB\n",
        cache.display()
    );
    App::new(Config::from_yaml_str(&yaml).unwrap()).unwrap()
}

fn git_sha1(content: &[u8]) -> String {
    let mut h = ContentHasher::new(
        &BlobId::parse(&"0".repeat(40)).unwrap(),
        content.len() as u64,
    );
    h.update(content);
    h.finish()
}

/// One file as huggingface_hub writes it.
fn hf_file(folder: &Path, commit: &str, path: &str, content: &[u8]) {
    let etag = if content.len() > 1000 {
        hex::encode(Sha256::digest(content))
    } else {
        git_sha1(content)
    };
    fs::create_dir_all(folder.join("blobs")).unwrap();
    fs::write(folder.join("blobs").join(&etag), content).unwrap();
    let link = folder.join("snapshots").join(commit).join(path);
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    symlink(layout::snapshot_target(path, &etag), link).unwrap();
}

/// `{relative path: (symlink target or None, content)}` of everything under `root`.
fn tree(root: &Path) -> Vec<(String, Option<PathBuf>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let target = meta
                    .file_type()
                    .is_symlink()
                    .then(|| fs::read_link(&path).unwrap());
                out.push((rel, target, fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn request(revision: &str, to: &Path) -> ExportRequest {
    ExportRequest {
        repo: Repo::new(RepoType::Model, RepoId::new("acme/tiny").unwrap()),
        revision: Revision::new(revision).unwrap(),
        include: Vec::new(),
        exclude: Vec::new(),
        to: to.to_path_buf(),
        auth: None,
    }
}

#[tokio::test]
async fn an_imported_huggingface_hub_cache_exports_identically_offline() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let folder = hub.join("models--acme--tiny");
    let weights: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
    hf_file(&folder, C1, "model.safetensors", &weights);
    hf_file(&folder, C1, "config.json", b"{\"v\":1}");
    hf_file(&folder, C2, "model.safetensors", &weights);
    hf_file(&folder, C2, "a/b/config.json", b"{\"v\":2}");
    hf_file(&folder, C2, "empty.txt", b"");
    fs::create_dir_all(folder.join("refs")).unwrap();
    fs::write(folder.join("refs/main"), C2).unwrap();
    fs::write(folder.join("refs/v1"), C1).unwrap();

    let cache = tempfile::tempdir().unwrap();
    let app = app(cache.path());
    let store = Arc::clone(&app.store);
    let meta = app.meta.clone();
    let imported = tokio::task::spawn_blocking(move || {
        crate::import::import_hf_cache_blocking(&store, &meta, 64 << 10, &hub)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(imported.is_clean(), "{imported}");

    let out = dir.path().join("out");
    let main = export(&app, &request("main", &out)).await.unwrap();
    assert!(main.is_complete(), "{main}");
    assert_eq!(main.commit, C2);
    let v1 = export(&app, &request("v1", &out)).await.unwrap();
    assert!(v1.is_complete(), "{v1}");
    let shared: Vec<&str> = v1
        .files
        .iter()
        .filter(|f| f.outcome == ExportOutcome::Shared)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(shared, ["model.safetensors"], "{v1}");
    assert_eq!(tree(&out), tree(&dir.path().join("hub")));

    // A damaged blob in the export directory is noticed and written again.
    let blob = out
        .join("models--acme--tiny/blobs")
        .join(hex::encode(Sha256::digest(&weights)));
    fs::write(&blob, b"damaged").unwrap();
    let again = export(&app, &request("main", &out)).await.unwrap();
    assert!(again.is_complete(), "{again}");
    assert_eq!(fs::read(&blob).unwrap(), weights);
    assert!(again.to_string().contains("summary: 3 files"), "{again}");
}

#[tokio::test]
async fn offline_an_unknown_revision_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let app = app(cache.path());
    let out = dir.path().join("out");
    let err = export(&app, &request("main", &out)).await.unwrap_err();
    assert!(matches!(err, ExportError::Resolve { .. }), "{err}");
    assert!(!out.exists());
}

#[test]
fn patterns_follow_huggingface_hub() {
    let inc = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(selected("a/b.json", &[], &[]));
    assert!(selected("a/b.json", &inc(&["*.json"]), &[]));
    assert!(selected("a/b.json", &inc(&["a/"]), &[]));
    assert!(!selected("b/c.json", &inc(&["a/"]), &[]));
    assert!(!selected("x.bin", &inc(&["*.json"]), &[]));
    assert!(!selected("a/b.json", &[], &inc(&["*.json"])));
    assert!(!selected("w.json", &inc(&["*.json"]), &inc(&["w*"])));
}
