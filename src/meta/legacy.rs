//! The metadata layout before `-/` for one-segment repo ids, and its one-time migration.
//!
//! The old layout put repo `gpt2` at `{type}/gpt2/`, which is also where org `gpt2`'s repos
//! live, so `gpt2`'s `commits/` directory was repo `gpt2/commits`'s directory. What the old
//! layout wrote for a one-segment repo is recognisable without ambiguity, because a repo
//! directory only ever holds `refs.json`, `access.json`, `commits/` and `live/`, and no two-
//! segment repo is named like a commit sha or a live entry:
//!
//! - `{type}/{X}/refs.json` and `access.json` (regular files),
//! - `{type}/{X}/commits/{40 hex}/`,
//! - `{type}/{X}/live/{64 hex}.json`.
//!
//! Those are moved to `{type}/-/{X}/` once per root; a marker file records that it was done.
//! When the new place already holds something, the old copy is dropped (metadata is
//! re-derivable). Anything that cannot be moved is left where it is and only logged: the old
//! place is never read as the one-segment repo again, so it cannot serve wrong data.

use std::fs;
use std::io;
use std::path::Path;

use super::disk::NO_ORG;
use crate::hf::RepoId;

/// Written into each `{root}/meta` once its layout is current.
const MARKER: &str = "layout-v2";

/// Move one-segment repos of the old layout under `{type}/-/`, once. Blocking; at startup.
pub fn migrate_once(meta_root: &Path) {
    let marker = meta_root.join(MARKER);
    if marker.exists() {
        return;
    }
    let moved = match migrate(meta_root) {
        Ok(moved) => moved,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            log::warn!(
                "metadata in {}: layout migration failed: {e}",
                meta_root.display()
            );
            return;
        }
    };
    if moved > 0 {
        log::info!(
            "metadata in {}: moved {moved} entries of one-segment repos to the current layout",
            meta_root.display()
        );
    }
    if let Err(e) = fs::create_dir_all(meta_root).and_then(|()| fs::write(&marker, b"2\n")) {
        log::warn!("cannot write {}: {e}", marker.display());
    }
}

fn migrate(meta_root: &Path) -> io::Result<usize> {
    let mut moved = 0;
    for kind in fs::read_dir(meta_root)? {
        let kind = kind?;
        if !kind.file_type()?.is_dir() {
            continue;
        }
        for repo in fs::read_dir(kind.path())? {
            let repo = repo?;
            let name = repo.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == NO_ORG || RepoId::new(name).is_err() || !repo.file_type()?.is_dir() {
                continue;
            }
            let target = kind.path().join(NO_ORG).join(name);
            moved += migrate_repo(&repo.path(), &target)?;
        }
    }
    Ok(moved)
}

/// Move the old layout's pieces of one-segment repo `old` to `new`; returns how many moved.
fn migrate_repo(old: &Path, new: &Path) -> io::Result<usize> {
    let mut moved = 0;
    for file in ["refs.json", "access.json"] {
        let from = old.join(file);
        if from.symlink_metadata().is_ok_and(|m| m.is_file()) {
            moved += move_entry(&from, &new.join(file))?;
        }
    }
    for (sub, wanted) in [
        ("commits", is_commit_dir as fn(&str) -> bool),
        ("live", is_live),
    ] {
        let dir = old.join(sub);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_str().is_some_and(wanted) {
                moved += move_entry(&entry.path(), &new.join(sub).join(&name))?;
            }
        }
        let _ = fs::remove_dir(&dir); // only if now empty
    }
    let _ = fs::remove_dir(old);
    Ok(moved)
}

fn is_commit_dir(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_live(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Rename `from` to `to` unless `to` exists; then drop `from`.
fn move_entry(from: &Path, to: &Path) -> io::Result<usize> {
    if to.symlink_metadata().is_ok() {
        let removed = if from.is_dir() {
            fs::remove_dir_all(from)
        } else {
            fs::remove_file(from)
        };
        removed?;
        return Ok(0);
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(from, to)?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn one_segment_repos_move_under_no_org_and_two_segment_repos_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = tmp.path().join("meta");
        let sha = "a".repeat(40);
        let live = format!("{}.json", "b".repeat(64));
        let models = meta.join("models");
        write(&models.join("gpt2/refs.json"), "gpt2 refs");
        write(&models.join("gpt2/access.json"), "gpt2 access");
        write(
            &models.join(format!("gpt2/commits/{sha}/files/x.json")),
            "f",
        );
        write(&models.join(format!("gpt2/live/{live}")), "l");
        // Org gpt2's own repos, one of them named like a piece of the old layout.
        write(&models.join("gpt2/commits/refs.json"), "org repo refs");
        write(&models.join("acme/tiny/refs.json"), "acme refs");

        migrate_once(&meta);

        let new = models.join("-/gpt2");
        assert_eq!(
            fs::read_to_string(new.join("refs.json")).unwrap(),
            "gpt2 refs"
        );
        assert_eq!(
            fs::read_to_string(new.join("access.json")).unwrap(),
            "gpt2 access"
        );
        assert!(new.join(format!("commits/{sha}/files/x.json")).is_file());
        assert!(new.join(format!("live/{live}")).is_file());
        assert!(!models.join("gpt2/refs.json").exists());
        assert!(!models.join("gpt2/live").exists());
        assert_eq!(
            fs::read_to_string(models.join("gpt2/commits/refs.json")).unwrap(),
            "org repo refs"
        );
        assert_eq!(
            fs::read_to_string(models.join("acme/tiny/refs.json")).unwrap(),
            "acme refs"
        );
        assert!(meta.join(MARKER).is_file());
        // Once done, it is not done again.
        write(&models.join("gpt3/refs.json"), "late");
        migrate_once(&meta);
        assert!(models.join("gpt3/refs.json").is_file());
    }

    #[test]
    fn a_fresh_cache_gets_the_marker_without_error() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = tmp.path().join("meta");
        migrate_once(&meta);
        assert!(meta.join(MARKER).is_file());
    }
}
