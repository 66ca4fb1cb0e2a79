//! How much disk the cache takes on each root: a walk of `{root}/blobs/` summing the
//! allocated size of every blob file (sparse files count what they hold). It reads only
//! metadata; callers run it off the async runtime and not too often.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Store;

/// The cache's own use of one root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootUsage {
    /// Blob files found.
    pub blobs: u64,
    /// Bytes they occupy on disk (`st_blocks` × 512), headers included.
    pub allocated_bytes: u64,
}

/// Sum over the files three levels down (`blobs/ab/cd/<id>`). Entries that vanish while
/// walking (evicted, renamed) are skipped; an unreadable `blobs/` is an error.
fn walk(blobs_dir: &Path) -> io::Result<RootUsage> {
    let mut usage = RootUsage::default();
    for shard in fs::read_dir(blobs_dir)? {
        let Ok(shard) = shard else { continue };
        let Ok(inner) = fs::read_dir(shard.path()) else {
            continue;
        };
        for sub in inner {
            let Ok(sub) = sub else { continue };
            let Ok(files) = fs::read_dir(sub.path()) else {
                continue;
            };
            for file in files {
                let Ok(file) = file else { continue };
                let Ok(meta) = file.metadata() else { continue };
                if meta.is_file() {
                    usage.blobs += 1;
                    usage.allocated_bytes += meta.blocks().saturating_mul(512);
                }
            }
        }
    }
    Ok(usage)
}

impl Store {
    /// The cache's use of root `root` (a directory walk: seconds on a large cache).
    pub fn usage_of_root(&self, root: usize) -> io::Result<RootUsage> {
        let r = self
            .roots
            .get(root)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no root {root}")))?;
        walk(&r.blobs_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlobId, Durability, FsSpace, StoreOptions};
    use std::sync::Arc;

    #[test]
    fn usage_counts_blob_files_and_their_allocated_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // A roomy file system whatever the machine's disk holds.
        let mut options = StoreOptions::new(1, Durability::Os);
        options.space_probe = Some(Arc::new(|_: &std::path::Path| {
            Ok(FsSpace {
                free: 1 << 40,
                total: 1 << 41,
            })
        }));
        let store = Store::open_with(&[dir.path().to_path_buf()], options).unwrap();
        assert_eq!(store.usage_of_root(0).unwrap(), RootUsage::default());
        let id = BlobId::parse(&"ab".repeat(32)).unwrap();
        let file = store.create_blob(&id, 300_000, 1 << 16, true).unwrap();
        file.put_block(0, &vec![7u8; 1 << 16]).unwrap();
        let usage = store.usage_of_root(0).unwrap();
        assert_eq!(usage.blobs, 1);
        // The header and one 64 KiB block are on disk, not the file's whole length.
        assert!(usage.allocated_bytes >= 1 << 16, "{usage:?}");
        assert!(usage.allocated_bytes < 300_000 + (1 << 16), "{usage:?}");
        assert!(store.usage_of_root(1).is_err());
    }
}
