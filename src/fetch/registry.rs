//! The live fills: at most one [`BlobFill`] per blob in this process, shared by every reader.
//! Entries are weak: a fill lives as long as a reader, a segment or its background
//! completion holds it; dead entries are pruned as the map grows.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::fill::BlobFill;
use crate::store::BlobId;

#[derive(Default)]
pub(super) struct Registry {
    fills: Mutex<Fills>,
}

#[derive(Default)]
struct Fills {
    live: HashMap<BlobId, Weak<BlobFill>>,
    prune_at: usize,
}

impl Registry {
    /// The live fill of `id`, if any.
    pub(super) fn live(&self, id: &BlobId) -> Option<Arc<BlobFill>> {
        self.fills.lock().live.get(id).and_then(Weak::upgrade)
    }

    /// The live fill of `id`, or the one `make` builds (registered). The bool says whether
    /// it is new.
    pub(super) fn get_or_insert(
        &self,
        id: &BlobId,
        make: impl FnOnce() -> Arc<BlobFill>,
    ) -> (Arc<BlobFill>, bool) {
        let mut fills = self.fills.lock();
        if let Some(existing) = fills.live.get(id).and_then(Weak::upgrade) {
            return (existing, false);
        }
        let fill = make();
        fills.live.insert(id.clone(), Arc::downgrade(&fill));
        if fills.live.len() > fills.prune_at {
            fills.live.retain(|_, w| w.strong_count() > 0);
            fills.prune_at = (fills.live.len() * 2).max(1024);
        }
        (fill, true)
    }

    /// Every live fill.
    pub(super) fn all(&self) -> Vec<Arc<BlobFill>> {
        self.fills
            .lock()
            .live
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Number of live fills.
    pub(super) fn len(&self) -> usize {
        self.fills
            .lock()
            .live
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}
