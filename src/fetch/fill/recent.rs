//! The last few checked pages of one blob, shared by its readers.
//!
//! Clients that download the same file at the same time (a cold file many jobs pull at once)
//! read the same pages moments apart. Each would otherwise read the page from disk, check its
//! checksum and hold its own copy while the socket drains it; here the first reader's checked
//! page is kept and the others slice it, so the work and the memory are paid once per page,
//! not once per reader.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::store::BlobFile;

/// Pages kept per blob (each at most one checksum page, 1 MiB with the default geometry).
const KEPT: usize = 4;

struct Kept {
    /// The copy the page was read from (a fill may move to another copy).
    file: Arc<BlobFile>,
    page: u64,
    bytes: Bytes,
}

#[derive(Default)]
pub(super) struct RecentPages {
    kept: Mutex<Vec<Kept>>,
}

impl RecentPages {
    /// `len` bytes at `offset` of `file`, when they lie in a kept page.
    pub(super) fn get(&self, file: &Arc<BlobFile>, offset: u64, len: usize) -> Option<Bytes> {
        let page_size = file.page_size();
        let page = offset / page_size;
        let mut kept = self.kept.lock();
        let at = kept
            .iter()
            .position(|k| k.page == page && Arc::ptr_eq(&k.file, file))?;
        let start = (offset - page * page_size) as usize;
        let end = start.checked_add(len)?;
        if end > kept[at].bytes.len() {
            return None;
        }
        // Most recently used last.
        let entry = kept.remove(at);
        let bytes = entry.bytes.slice(start..end);
        kept.push(entry);
        Some(bytes)
    }

    /// Keep the checked bytes of `page` of `file` (the whole page).
    pub(super) fn keep(&self, file: &Arc<BlobFile>, page: u64, bytes: Bytes) {
        let mut kept = self.kept.lock();
        kept.retain(|k| !(k.page == page && Arc::ptr_eq(&k.file, file)));
        if kept.len() >= KEPT {
            kept.remove(0);
        }
        kept.push(Kept {
            file: Arc::clone(file),
            page,
            bytes,
        });
    }

    /// Forget every page (a block turned out bad, or the fill moved to another copy).
    pub(super) fn clear(&self) {
        self.kept.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlobId, Durability, Store};

    fn blob(store: &Store, fill: u8) -> Arc<BlobFile> {
        let id = BlobId::parse(&format!("{fill:02x}").repeat(32)).unwrap();
        // 4 MiB blocks of four 1 MiB pages.
        store.create_blob(&id, 8 << 20, 4 << 20, false).unwrap()
    }

    #[test]
    fn kept_pages_are_sliced_for_later_readers_of_the_same_copy_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Os).unwrap();
        let (a, b) = (blob(&store, 0xaa), blob(&store, 0xbb));
        let page = Bytes::from((0..1u32 << 20).map(|i| i as u8).collect::<Vec<_>>());
        let recent = RecentPages::default();
        recent.keep(&a, 2, page.clone());
        let at = (2 << 20) + 1000;
        assert_eq!(recent.get(&a, at, 10).unwrap(), page.slice(1000..1010));
        // Another page, another copy, or a read past the kept bytes: not kept.
        assert!(recent.get(&a, 1000, 10).is_none());
        assert!(recent.get(&b, at, 10).is_none());
        assert!(recent.get(&a, (3 << 20) - 5, 10).is_none());
        recent.clear();
        assert!(recent.get(&a, at, 10).is_none());
    }

    #[test]
    fn only_the_most_recently_used_pages_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Os).unwrap();
        let a = blob(&store, 0xcc);
        let recent = RecentPages::default();
        let page = |n: u8| Bytes::from(vec![n; 1 << 20]);
        for n in 0..KEPT as u64 {
            recent.keep(&a, n, page(n as u8));
        }
        // Page 0 used again: page 1 is now the least recently used and goes first.
        assert!(recent.get(&a, 0, 1).is_some());
        recent.keep(&a, 7, page(7));
        assert!(recent.get(&a, 1 << 20, 1).is_none());
        assert_eq!(recent.get(&a, 0, 1).unwrap()[0], 0);
        assert_eq!(recent.get(&a, 7 << 20, 1).unwrap()[0], 7);
        assert_eq!(recent.kept.lock().len(), KEPT);
    }
}
