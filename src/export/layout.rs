//! The huggingface_hub cache layout on the writing side: folder names, snapshot symlink
//! targets, and creating directories inside the export directory without following a
//! symlink out of it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::hf::Repo;

/// `models--org--name` (`datasets--…`, `spaces--…`), as huggingface_hub's
/// `repo_folder_name` makes it.
pub fn folder_name(repo: &Repo) -> String {
    format!(
        "{}--{}",
        repo.kind.api_plural(),
        repo.id.as_str().replace('/', "--")
    )
}

/// The relative symlink target from `snapshots/{commit}/{path}` to `blobs/{etag}`.
pub fn snapshot_target(path: &str, etag: &str) -> PathBuf {
    let depth = path.split('/').count() + 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join("blobs").join(etag)
}

/// Whether `name` can be a file name in `blobs/` (an etag is hex; anything with a path
/// separator or a dot-only name is refused).
pub fn safe_blob_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Creates `base/rel` one component at a time; every component that already exists must be
/// a real directory (a symlink there could lead the export outside `base`).
pub fn make_dirs(base: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut dir = base.to_path_buf();
    for part in rel.components() {
        dir.push(part.as_os_str());
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory (symlinks are not followed)",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_real_dir(&dir) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{RepoId, RepoType};

    #[test]
    fn folder_names_follow_huggingface_hub() {
        let repo = |kind, id| Repo::new(kind, RepoId::new(id).unwrap());
        assert_eq!(
            folder_name(&repo(RepoType::Model, "acme/tiny")),
            "models--acme--tiny"
        );
        assert_eq!(
            folder_name(&repo(RepoType::Dataset, "acme/d")),
            "datasets--acme--d"
        );
        assert_eq!(folder_name(&repo(RepoType::Model, "gpt2")), "models--gpt2");
        for (kind, id) in [(RepoType::Model, "acme/tiny"), (RepoType::Dataset, "x")] {
            let r = repo(kind, id);
            assert_eq!(crate::import::parse_folder_name(&folder_name(&r)), Some(r));
        }
    }

    #[test]
    fn snapshot_targets_climb_to_the_repo_folder() {
        assert_eq!(
            snapshot_target("config.json", "abc"),
            PathBuf::from("../../blobs/abc")
        );
        assert_eq!(
            snapshot_target("a/b/c.txt", "abc"),
            PathBuf::from("../../../../blobs/abc")
        );
    }

    #[test]
    fn make_dirs_refuses_a_symlinked_component() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("models--a--b")).unwrap();
        let err = make_dirs(dir.path(), Path::new("models--a--b/blobs")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(!outside.path().join("blobs").exists());
        let made = make_dirs(dir.path(), Path::new("models--c--d/snapshots/x")).unwrap();
        assert!(made.is_dir());
    }

    #[test]
    fn blob_names_with_separators_are_refused() {
        assert!(safe_blob_name("e3b0c442"));
        assert!(!safe_blob_name("../x"));
        assert!(!safe_blob_name(".."));
        assert!(!safe_blob_name(""));
    }
}
