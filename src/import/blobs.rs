//! The store side of an import: bringing one blob into the store from a cache entry, and
//! checking what the store already has.

use std::path::Path;

use super::copy::copy_into;
use super::files::is_empty_content;
use super::source::{CacheSource, Missing, StreamError};
use super::{ImportError, Importer};
use crate::store::{BlobFile, BlobId, ContentCheck, StoreError};

/// How one copy of a blob went.
pub(super) enum Attempt {
    /// The blob is complete and verified.
    Complete,
    /// Some blocks were imported; the cache could not provide `gaps`.
    Partial { gaps: Vec<Missing> },
    /// Nothing was imported from this copy.
    Failed(String),
}

impl Importer<'_> {
    pub(super) fn fatal(path: &Path, op: &'static str) -> impl FnOnce(StoreError) -> ImportError {
        let path = path.to_path_buf();
        move |source| ImportError::Store { path, op, source }
    }

    /// `(size, bytes present)` of the store's copy of `id`.
    pub(super) fn store_size(&self, id: &BlobId) -> Result<Option<(u64, u64)>, ImportError> {
        let blob = self
            .store
            .open_blob(id)
            .map_err(Self::fatal(&self.root, "open blob"))?;
        Ok(blob.map(|b| (b.size(), present_bytes(&b))))
    }

    /// Whether the store already has a complete copy of `id` that is (or now gets)
    /// verified. A complete copy that fails verification is removed.
    pub(super) fn already_present(
        &mut self,
        id: &BlobId,
        reasons: &mut Vec<(String, String)>,
    ) -> Result<bool, ImportError> {
        let fatal = |op| Self::fatal(&self.root, op);
        let Some(existing) = self.store.open_blob(id).map_err(fatal("open blob"))? else {
            return Ok(false);
        };
        if !existing.is_complete() {
            return Ok(false);
        }
        if existing.is_verified() {
            return Ok(true);
        }
        match existing.verify_content() {
            Ok(ContentCheck::Match) => {
                existing.mark_verified().map_err(fatal("mark verified"))?;
                Ok(true)
            }
            Ok(ContentCheck::Mismatch { actual }) => {
                self.store.remove_blob(id).map_err(fatal("remove blob"))?;
                reasons.push((
                    "hubcache store".into(),
                    format!("its copy hashed to {actual} and was removed"),
                ));
                Ok(false)
            }
            // Created as not content-addressed: the import re-creates it as content-addressed.
            Ok(ContentCheck::NotApplicable) => Ok(false),
            // A damaged block was invalidated: the import fills it again.
            Err(e) if e.is_corrupt() || e.is_not_present() => Ok(false),
            Err(e) => Err(fatal("verify blob")(e)),
        }
    }

    /// Copies one cache entry into blob `id`.
    pub(super) fn import_source(
        &mut self,
        id: &BlobId,
        data: &Path,
    ) -> Result<Attempt, ImportError> {
        let fatal = |op| Self::fatal(data, op);
        let opened = if self.plain {
            CacheSource::open_plain(data)
        } else {
            CacheSource::open(data)
        };
        let src = match opened {
            Ok(src) => src,
            Err(e) => return Ok(Attempt::Failed(e.to_string())),
        };
        let size = src.size();
        if size == 0 {
            return Ok(if is_empty_content(id) {
                Attempt::Complete
            } else {
                Attempt::Failed(format!(
                    "holds no content ({}; the download never started)",
                    src.describe()
                ))
            });
        }
        let existing = self.store.open_blob(id).map_err(fatal("open blob"))?;
        if let Some(existing) = existing.as_ref().filter(|e| e.size() != size) {
            return Ok(Attempt::Failed(format!(
                "holds {size} bytes but the hubcache store already has a {}-byte copy of this \
                 blob (kept)",
                existing.size()
            )));
        }
        let file = self
            .store
            .create_blob(id, size, self.block_size, true)
            .map_err(fatal("create blob"))?;
        file.reload_bitmap().map_err(fatal("read blob bitmap"))?;
        let existed = existing.is_some();
        let copied = match copy_into(&file, id, &src) {
            Ok(copied) => copied,
            Err(StreamError::Sink(e)) => return Err(fatal("write blob")(e)),
            Err(StreamError::Source(e)) => {
                self.discard(id, &file, existed, data)?;
                return Ok(Attempt::Failed(format!(
                    "cannot read ({}): {e}",
                    src.describe()
                )));
            }
        };
        if copied.gaps.is_empty() {
            if copied.hash.as_deref() != Some(id.as_str()) {
                self.discard(id, &file, existed, data)?;
                return Ok(Attempt::Failed(format!(
                    "content does not match its etag: it hashes to {}",
                    copied.hash.unwrap_or_default()
                )));
            }
        } else if !src.checks_chunks() {
            self.discard(id, &file, existed, data)?;
            let (present, total) = src.presence();
            return Ok(Attempt::Failed(format!(
                "incomplete ({present} of {total} blocks; {}): {} keeps no checksums, so only \
                 a complete file can be verified",
                gap_list(&copied.gaps),
                src.describe()
            )));
        }
        for (block, crcs) in &copied.blocks {
            file.commit_block(*block, crcs)
                .map_err(fatal("commit block"))?;
        }
        if !copied.blocks.is_empty() {
            self.report.blobs_copied += 1;
            self.report.blocks_copied += copied.blocks.len() as u64;
            self.report.bytes_copied += copied.bytes;
        }
        if !file.is_complete() {
            if file.present_count() == 0 {
                self.discard(id, &file, existed, data)?;
                return Ok(Attempt::Failed(format!(
                    "incomplete ({}), and no whole hubcache block ({} B) is covered by what \
                     is there",
                    gap_list(&copied.gaps),
                    file.block_size()
                )));
            }
            return Ok(Attempt::Partial { gaps: copied.gaps });
        }
        self.verify_imported(id, &file, data)
    }

    /// The last check of a completed blob: its stored bytes against the id.
    fn verify_imported(
        &mut self,
        id: &BlobId,
        file: &BlobFile,
        data: &Path,
    ) -> Result<Attempt, ImportError> {
        let fatal = |op| Self::fatal(data, op);
        match file.verify_content() {
            Ok(ContentCheck::Match) => {
                file.mark_verified().map_err(fatal("mark verified"))?;
                // With `cache.replicas` > 1, the other copies (as the fill engine makes them).
                if let Err(e) = self.store.replicate(id) {
                    self.report.notes.push(format!(
                        "{id}: imported, but not all replicas could be made ({e}); `hubcache \
                         cache verify --repair` makes them"
                    ));
                }
                log::info!(
                    "import: {id} ({} bytes) from {} verified",
                    file.size(),
                    data.display()
                );
                Ok(Attempt::Complete)
            }
            Ok(ContentCheck::Mismatch { actual }) => {
                self.store.remove_blob(id).map_err(fatal("remove blob"))?;
                Ok(Attempt::Failed(format!(
                    "the stored copy hashes to {actual}; removed from the store"
                )))
            }
            Ok(ContentCheck::NotApplicable) => Ok(Attempt::Failed(
                "the store does not treat the blob as content-addressed".into(),
            )),
            Err(e) if e.is_corrupt() || e.is_not_present() => {
                self.store.remove_blob(id).map_err(fatal("remove blob"))?;
                Ok(Attempt::Failed(format!(
                    "the stored copy failed verification ({e}); removed from the store"
                )))
            }
            Err(e) => Err(fatal("verify blob")(e)),
        }
    }

    /// After a failed copy nothing was committed, so a blob this import created is empty
    /// and is removed again; a pre-existing one is left as it was.
    fn discard(
        &self,
        id: &BlobId,
        file: &BlobFile,
        existed: bool,
        data: &Path,
    ) -> Result<(), ImportError> {
        if !existed && file.present_count() == 0 {
            self.store
                .remove_blob(id)
                .map_err(Self::fatal(data, "remove blob"))?;
        }
        Ok(())
    }
}

fn gap_list(gaps: &[Missing]) -> String {
    gaps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Content bytes of the present blocks of `blob`.
fn present_bytes(blob: &BlobFile) -> u64 {
    (0..blob.block_count())
        .filter(|&b| blob.is_present(b))
        .map(|b| {
            let span = blob.block_span(b);
            span.end - span.start
        })
        .sum()
}
