//! Making and repairing copies of a blob on other roots: [`Store::replicate`].

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use super::blob::BlobFile;
use super::blob_id::BlobId;
use super::checksum::BlockChecksummer;
use super::error::{Result, StoreError};
use super::format::{self, Layout, FLAG_NOT_CONTENT_ADDRESSED, FLAG_VERIFIED, MAX_PAGE_SIZE};
use super::fsutil::{
    fsync_dir, publish_no_clobber, remove_file_if_exists, remove_if_same, write_all_at,
    FileIdentity, Publish,
};
use super::root::Root;
use super::{Durability, Found, Store};

/// Bytes read from the source (and checked against its page CRCs) at a time: one page at
/// most, so memory stays bounded whatever the block size.
const COPY_CHUNK: u64 = MAX_PAGE_SIZE;

/// Which side of a copy failed.
pub(super) enum CopyError {
    /// Reading the source copy (corrupt page, I/O error): try another source.
    Source(StoreError),
    /// Writing the target root (full, I/O error): skip that root.
    Target(StoreError),
    /// The source copy was removed (evicted) meanwhile: do not resurrect the blob.
    SourceGone,
}

/// What a root holds, for replication.
enum Slot {
    Complete,
    Partial(Arc<BlobFile>),
    Missing,
    Unusable,
}

fn on_target<T>(r: Result<T>) -> std::result::Result<T, CopyError> {
    r.map_err(CopyError::Target)
}

/// Copy one block from `src` (every page read with its checksum verified) through `write`,
/// returning the block's page checksums for the target.
fn copy_block(
    src: &BlobFile,
    layout: &Layout,
    block: u64,
    mut write: impl FnMut(u64, &[u8]) -> Result<()>,
) -> std::result::Result<Vec<u32>, CopyError> {
    let span = layout.block_span(block);
    let mut sum = on_target(BlockChecksummer::new(layout, block))?;
    let mut off = span.start;
    while off < span.end {
        let n = COPY_CHUNK.min(span.end - off);
        let bytes = src
            .read_verified(off, n as usize)
            .map_err(CopyError::Source)?;
        sum.update(&bytes);
        on_target(write(off, &bytes))?;
        off += n;
    }
    on_target(sum.finish())
}

impl Store {
    /// Makes sure blob `id` has [`replicas`](Self::replicas) complete copies, copying it
    /// from a complete copy to every home root that lacks one; returns the number of copies
    /// made (0 when there is nothing to do, or no complete copy to copy from).
    ///
    /// Roots are visited in [`placement`](Self::placement) order until `replicas` complete
    /// copies exist: a root that already has one counts; a root that is unhealthy, has no
    /// room (free space below the bytes to copy plus the reserve) or fails the write for
    /// lack of space is skipped, and the next root in placement order is used instead, so N
    /// copies exist whenever N roots can hold them. Copies on roots further down are left
    /// alone.
    ///
    /// The source is a complete copy, verified ones first. Every byte copied is read through
    /// [`BlobFile::read_verified`], so it is checked against the source's page CRCs; a
    /// damaged source block is invalidated and the next complete copy (if any) used instead.
    /// A root without a copy gets a new file written in its `tmp/` and published with the
    /// same no-clobber link as [`create_blob`](Self::create_blob) (`fsync`ed first with
    /// [`Durability::Fsync`]); its header flags (verified, content-addressed) are the
    /// source's. A root with a partial copy of the same size has its missing blocks filled
    /// in place through the normal commit protocol (so a concurrent filler of that copy is
    /// never disturbed). A copy is never made of a blob removed while it is being copied.
    ///
    /// Errors: the last source's error when every complete copy failed to read (copies made
    /// before that remain); other errors of a target root mark it unhealthy and skip it.
    pub fn replicate(&self, id: &BlobId) -> Result<usize, StoreError> {
        let order = self.placement(id);
        let found = {
            let _stripe = self.stripe(id).lock();
            self.survey(id, &order)
        };
        let mut slots = Vec::with_capacity(found.len());
        let mut sources = Vec::new();
        for (r, f) in found {
            let slot = match f {
                Found::Copy(blob) => match blob.reload_bitmap() {
                    Err(e) => {
                        self.note_error(&self.roots[r], &e);
                        Slot::Unusable
                    }
                    Ok(()) if blob.is_complete() => {
                        sources.push(blob);
                        Slot::Complete
                    }
                    Ok(()) => Slot::Partial(blob),
                },
                Found::Missing => Slot::Missing,
                Found::Unreadable(_) => Slot::Unusable,
            };
            slots.push((r, slot));
        }
        if sources.is_empty() {
            return Ok(0);
        }
        // Verified copies first; placement order otherwise (the sort is stable).
        sources.sort_by_key(|b| !b.is_verified());
        let size = sources[0].size();

        let mut have = 0;
        let mut made = 0;
        for (r, slot) in slots {
            if have >= self.replicas {
                break;
            }
            let root = &self.roots[r];
            let mut partial = match slot {
                Slot::Complete => {
                    have += 1;
                    continue;
                }
                Slot::Unusable => continue,
                Slot::Missing => None,
                Slot::Partial(blob) => Some(blob),
            };
            if let Some(p) = partial.take_if(|p| p.size() != size) {
                log::warn!(
                    "store: {:?} holds {} bytes but {id} is {size} bytes; removing it",
                    p.path(),
                    p.size()
                );
                let _stripe = self.stripe(id).lock();
                root.forget(id);
                if let Err(e) = remove_if_same(p.path(), p.identity()) {
                    self.note_error(root, &e);
                    continue;
                }
            }
            let needed = match &partial {
                Some(p) => missing_bytes(p),
                None => size,
            };
            if let Err(why) = self.check_room(root, needed) {
                log::info!("store: not copying {id} to {:?}: {why}", root.path);
                continue;
            }
            loop {
                // Never empty here: the last failing source returns below.
                let src = Arc::clone(&sources[0]);
                let outcome = match &partial {
                    Some(p) => self.fill_partial(p, &src),
                    None => self.copy_new(root, &src),
                };
                match outcome {
                    Ok(wrote) => {
                        have += 1;
                        made += usize::from(wrote);
                        break;
                    }
                    Err(CopyError::Source(e)) => {
                        log::warn!(
                            "store: cannot copy {id} from {:?}: {e}; trying another copy",
                            src.path()
                        );
                        if e.is_root_failure() || e.is_io_error() {
                            if let Some(src_root) = self.roots.get(src.root_index()) {
                                src_root.forget_handle(&src);
                                src_root
                                    .mark_unhealthy(format!("I/O error on {:?}: {e}", src.path()));
                            }
                        }
                        sources.remove(0);
                        if sources.is_empty() {
                            return Err(e);
                        }
                    }
                    Err(CopyError::Target(e)) => {
                        if e.is_no_space() {
                            log::warn!("store: no space to copy {id} to {:?}: {e}", root.path);
                        } else {
                            self.note_error(root, &e);
                        }
                        break;
                    }
                    Err(CopyError::SourceGone) => return Ok(made),
                }
            }
        }
        if have < self.replicas {
            log::info!(
                "store: {id} has {have} complete copies of {} wanted (roots full or down)",
                self.replicas
            );
        }
        Ok(made)
    }

    /// Fills the missing blocks of `dst` (a partial copy of the same size) from `src`,
    /// committing each block. True if anything was written.
    fn fill_partial(&self, dst: &BlobFile, src: &BlobFile) -> std::result::Result<bool, CopyError> {
        let mut wrote = false;
        for block in 0..dst.block_count() {
            if dst.is_present(block) {
                continue;
            }
            let crcs = copy_block(src, dst.layout(), block, |off, bytes| {
                dst.write_data(off, bytes)
            })?;
            on_target(dst.commit_block(block, &crcs))?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Writes a complete copy of `src` to a temp file on `root` and publishes it. False if
    /// a copy appeared there meanwhile and was already complete.
    pub(super) fn copy_new(
        &self,
        root: &Root,
        src: &BlobFile,
    ) -> std::result::Result<bool, CopyError> {
        let id = src.id();
        let path = root.blob_path(id);
        on_target(self.create_shard_dirs(root, &path))?;
        let (file, tmp) = on_target(self.create_temp(root, id))?;
        let written = self.write_copy(&file, &tmp, src);
        let published = written.and_then(|()| {
            let _stripe = self.stripe(id).lock();
            // Do not resurrect a blob that was removed while we copied it.
            match fs::metadata(src.path()) {
                Ok(m) if FileIdentity::of(&m) == src.identity() => {}
                _ => return Err(CopyError::SourceGone),
            }
            match publish_no_clobber(&tmp, &path) {
                Ok(Publish::Published) => {
                    if self.durability == Durability::Fsync {
                        if let Some(shard) = path.parent() {
                            on_target(fsync_dir(shard))?;
                        }
                    }
                    Ok(None)
                }
                // Someone created a copy here meanwhile (a filler, or another replicator).
                Ok(Publish::AlreadyExists) => Ok(on_target(self.open_copy(root, id))?),
                Err(e) => Err(CopyError::Target(StoreError::io("publish blob", &path)(e))),
            }
        });
        if let Err(e) = remove_file_if_exists(&tmp) {
            log::warn!("store: could not remove temporary copy {tmp:?}: {e}");
        }
        match published? {
            None => Ok(true),
            Some(theirs) if theirs.size() == src.size() && !theirs.is_complete() => {
                self.fill_partial(&theirs, src)
            }
            Some(_) => Ok(false),
        }
    }

    /// Writes the whole of `src` (header with its flags, checksummed blocks, a full bitmap)
    /// into the new temp file `file`, and `fsync`s it with [`Durability::Fsync`].
    fn write_copy(
        &self,
        file: &File,
        tmp: &Path,
        src: &BlobFile,
    ) -> std::result::Result<(), CopyError> {
        let layout: Layout = *src.layout();
        let flags = src.flags() & (FLAG_VERIFIED | FLAG_NOT_CONTENT_ADDRESSED);
        let header = format::encode_fixed_header(&layout, flags, src.id());
        on_target(write_all_at(file, &header, 0, tmp, "write blob header"))?;
        on_target(
            file.set_len(layout.data_offset())
                .map_err(StoreError::io("extend blob header", tmp)),
        )?;
        for block in 0..layout.block_count() {
            let crcs = copy_block(src, &layout, block, |off, bytes| {
                write_all_at(
                    file,
                    bytes,
                    layout.data_offset() + off,
                    tmp,
                    "write block data",
                )
            })?;
            let crcs: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
            let at = layout.crc_offset() + layout.block_pages(block).start * 4;
            on_target(write_all_at(file, &crcs, at, tmp, "write page checksums"))?;
        }
        on_target(write_all_at(
            file,
            &format::full_bitmap(&layout),
            layout.bitmap_offset(),
            tmp,
            "write block bitmap",
        ))?;
        if self.durability == Durability::Fsync {
            on_target(
                file.sync_all()
                    .map_err(StoreError::io("fsync temporary copy", tmp)),
            )?;
        }
        Ok(())
    }
}

/// Content bytes of the blocks `blob` lacks.
fn missing_bytes(blob: &BlobFile) -> u64 {
    (0..blob.block_count())
        .filter(|&b| !blob.is_present(b))
        .map(|b| blob.layout().block_len(b))
        .sum()
}
