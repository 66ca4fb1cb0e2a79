//! Files named by a per-commit listing, with what a resolve `HEAD` of each would say.
//!
//! Three answers list files with their size and object id: tree pages and paths-info (arrays
//! of `{type, oid, size, path, lfs?: {oid, size, pointerSize}}`) and repo info with
//! `blobs=true` (`siblings[]` of `{rfilename, blobId, size, lfs?: {sha256, size}}`). For a
//! regular file the hub's `HEAD` says `ETag: "<git blob oid>"` and the size; for an LFS file
//! `X-Linked-Etag: "<sha256>"` and `X-Linked-Size` (protocol notes §4.1). Entries that lack
//! any of these (directories, repo info without `blobs=true`, odd shapes) are skipped: the
//! mirror then asks the hub as before.

use serde_json::Value;

use super::repo::RepoPath;

/// One file as a listing describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub path: String,
    /// The real size (the LFS object's for LFS files).
    pub size: u64,
    /// What a `HEAD` sends as the file's etag, lowercase, unquoted: the sha256 of an LFS
    /// file's content, the git blob id of a regular file.
    pub etag: String,
    pub lfs: bool,
}

fn hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A tree or paths-info entry (`type: "file"`).
fn from_tree_entry(entry: &Value) -> Option<ListedFile> {
    if entry.get("type")?.as_str()? != "file" {
        return None;
    }
    let path = entry.get("path")?.as_str()?;
    match entry.get("lfs").filter(|v| !v.is_null()) {
        Some(lfs) => lfs_file(path, lfs.get("oid")?, lfs.get("size")?),
        None => regular_file(path, entry.get("oid")?, entry.get("size")?),
    }
}

/// A repo-info sibling (only complete with `blobs=true`).
fn from_sibling(entry: &Value) -> Option<ListedFile> {
    let path = entry.get("rfilename")?.as_str()?;
    match entry.get("lfs").filter(|v| !v.is_null()) {
        Some(lfs) => lfs_file(path, lfs.get("sha256")?, lfs.get("size")?),
        None => regular_file(path, entry.get("blobId")?, entry.get("size")?),
    }
}

fn lfs_file(path: &str, sha256: &Value, size: &Value) -> Option<ListedFile> {
    let (sha256, size) = (sha256.as_str()?, size.as_u64()?);
    hex_of_len(sha256, 64).then(|| ListedFile {
        path: path.to_string(),
        size,
        etag: sha256.to_ascii_lowercase(),
        lfs: true,
    })
}

fn regular_file(path: &str, oid: &Value, size: &Value) -> Option<ListedFile> {
    let (oid, size) = (oid.as_str()?, size.as_u64()?);
    hex_of_len(oid, 40).then(|| ListedFile {
        path: path.to_string(),
        size,
        etag: oid.to_ascii_lowercase(),
        lfs: false,
    })
}

/// Keep only entries whose path is a valid repo path (what a resolve URL could name).
fn valid(file: &ListedFile) -> bool {
    RepoPath::new(&file.path).is_ok()
}

/// The files a tree page or a paths-info answer names (an array of entries).
pub fn listed_in_tree(body: &Value) -> Vec<ListedFile> {
    body.as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(from_tree_entry)
                .filter(valid)
                .collect()
        })
        .unwrap_or_default()
}

/// The files a repo-info answer names with their blob ids (`blobs=true`); empty otherwise.
pub fn listed_in_repo_info(body: &Value) -> Vec<ListedFile> {
    body.get("siblings")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(from_sibling)
                .filter(valid)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OID: &str = "0123456789abcdef0123456789abcdef01234567";

    fn sha() -> String {
        "AB".repeat(32)
    }

    #[test]
    fn tree_entries_give_git_oid_for_regular_and_sha256_for_lfs_files() {
        let body = json!([
            {"type": "file", "oid": OID, "size": 42, "path": "config.json"},
            {"type": "file", "oid": OID, "size": 5, "path": "w.bin",
             "lfs": {"oid": sha(), "size": 5242880, "pointerSize": 134}},
            {"type": "directory", "oid": OID, "size": 0, "path": "sub"},
        ]);
        let files = listed_in_tree(&body);
        assert_eq!(
            files,
            vec![
                ListedFile {
                    path: "config.json".into(),
                    size: 42,
                    etag: OID.into(),
                    lfs: false
                },
                ListedFile {
                    path: "w.bin".into(),
                    size: 5_242_880,
                    etag: sha().to_ascii_lowercase(),
                    lfs: true
                },
            ]
        );
    }

    #[test]
    fn siblings_count_only_with_blob_ids() {
        let with_blobs = json!({"sha": "c", "siblings": [
            {"rfilename": "a.txt", "blobId": OID, "size": 3},
            {"rfilename": "m.bin", "blobId": OID, "size": 9,
             "lfs": {"sha256": sha(), "size": 9, "pointerSize": 130}},
        ]});
        let files = listed_in_repo_info(&with_blobs);
        assert_eq!(files.len(), 2);
        assert!(!files[0].lfs && files[1].lfs);
        assert_eq!(files[1].size, 9);
        let plain = json!({"sha": "c", "siblings": [{"rfilename": "a.txt"}]});
        assert!(listed_in_repo_info(&plain).is_empty());
    }

    #[test]
    fn entries_with_missing_or_malformed_ids_sizes_or_paths_are_skipped() {
        let body = json!([
            {"type": "file", "oid": "short", "size": 1, "path": "a"},
            {"type": "file", "oid": OID, "size": -1, "path": "b"},
            {"type": "file", "oid": OID, "path": "c"},
            {"type": "file", "oid": OID, "size": 1, "path": "../etc/passwd"},
            {"type": "file", "oid": OID, "size": 1, "path": "d",
             "lfs": {"oid": "nothex", "size": 1}},
        ]);
        assert!(listed_in_tree(&body).is_empty());
        assert!(listed_in_tree(&json!({"error": "x"})).is_empty());
    }
}
