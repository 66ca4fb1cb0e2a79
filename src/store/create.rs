//! Creating a blob: reuse a copy of the same size, else publish a new empty one on the first
//! root in placement order that is healthy and has room, never clobbering another process's.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::Result;
use super::format::{self, Layout, FLAG_NOT_CONTENT_ADDRESSED};
use super::fsutil::{
    create_dir_durable, fsync_dir, publish_no_clobber, remove_file_if_exists, unique_suffix,
    write_all_at, FileIdentity, Publish,
};
use super::locks::hold_in_use;
use super::root::Root;
use super::{BlobFile, BlobId, Durability, Store, StoreError, PUBLISH_ATTEMPTS};

impl Store {
    /// Opens blob `id` for filling, creating it if needed.
    ///
    /// - An existing copy on any usable root of content size `size` is reused as it is (the
    ///   best one, as for [`open_blob`](Self::open_blob); its present blocks are kept, and its
    ///   own block size wins over `block_size`). If its content-addressed flag disagrees with
    ///   `content_addressed`, the flag is updated (the caller knows where the id came from).
    /// - Copies of another size are removed (with a warning).
    /// - Otherwise a new blob with no block present is created on the first root in
    ///   placement order that is healthy and has room: free space of at least `size` plus the
    ///   reserve. It is written to a temp file in that root's `tmp/` (`fsync`ed with
    ///   [`Durability::Fsync`]) and published by hard-linking it to the blob path, which never
    ///   clobbers a blob another process published meanwhile: on `EEXIST` that blob is used
    ///   instead. A root whose write fails for lack of space is skipped; one that fails
    ///   otherwise is marked unhealthy and skipped.
    /// - If no root can take it: [`StoreError::NoSpace`] (see [`StoreError::is_no_space`]).
    ///
    /// `content_addressed`: whether `id` is the content's hash (sha256 or git blob sha1).
    /// When false, header flag bit 1 is set and [`BlobFile::verify_content`] answers
    /// [`ContentCheck::NotApplicable`].
    ///
    /// `block_size` must be a power of two in `MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE`
    /// ([`StoreError::InvalidBlockSize`]). Empty content (`size == 0`) has no blocks and is
    /// complete at once.
    pub fn create_blob(
        &self,
        id: &BlobId,
        size: u64,
        block_size: u64,
        content_addressed: bool,
    ) -> Result<Arc<BlobFile>, StoreError> {
        let layout = Layout::new(size, block_size)?;
        let flags = if content_addressed {
            0
        } else {
            FLAG_NOT_CONTENT_ADDRESSED
        };
        let order = self.placement(id);
        let _stripe = self.stripe(id).lock();
        for _ in 0..PUBLISH_ATTEMPTS {
            if let Some(existing) = self.find_copy(id, &order, Some(size)) {
                if existing.is_content_addressed() != content_addressed {
                    log::warn!(
                        "store: {:?}: content-addressed flag was {}, now {content_addressed}",
                        existing.path(),
                        existing.is_content_addressed()
                    );
                    existing.set_content_addressed(content_addressed)?;
                }
                return Ok(existing);
            }
            let mut refused = Vec::new();
            let mut raced = false;
            for &r in &order {
                let root = &self.roots[r];
                if !root.usable() {
                    let why = root.problem().unwrap_or_else(|| "unhealthy".into());
                    refused.push(format!("{:?}: unhealthy ({why})", root.path));
                    continue;
                }
                if let Err(why) = self.check_room(root, size) {
                    refused.push(format!("{:?}: {why}", root.path));
                    continue;
                }
                match self.publish_new(root, id, layout, flags) {
                    Ok(Some(blob)) => {
                        let blob = Arc::new(blob);
                        root.remember(&blob);
                        return Ok(blob);
                    }
                    Ok(None) => {
                        // Someone else published first: look again and use theirs.
                        raced = true;
                        break;
                    }
                    Err(e) if e.is_no_space() => {
                        log::warn!("store: no space for {id} on {:?}: {e}", root.path);
                        refused.push(format!("{:?}: {e}", root.path));
                    }
                    Err(e) if e.is_root_failure() => {
                        root.mark_unhealthy(e.to_string());
                        refused.push(format!("{:?}: {e}", root.path));
                    }
                    Err(e) => return Err(e),
                }
            }
            if !raced {
                return Err(StoreError::NoSpace {
                    needed: size,
                    detail: refused.join("; "),
                });
            }
        }
        Err(StoreError::PublishConflict {
            path: self.roots[order[0]].blob_path(id),
            attempts: PUBLISH_ATTEMPTS,
        })
    }

    /// Creates the shard directories of `path` on `root` (never the root or `blobs/` itself:
    /// a missing `blobs/` means the root is gone).
    pub(super) fn create_shard_dirs(&self, root: &Root, path: &Path) -> Result<()> {
        root.check_blobs_dir()?;
        let shard = path.parent().unwrap_or(&root.blobs_dir);
        if shard.is_dir() {
            return Ok(());
        }
        if let Some(first) = shard.parent() {
            create_dir_durable(first, self.durability)?;
        }
        create_dir_durable(shard, self.durability)
    }

    /// A new temp file in `root`'s `tmp/` for blob `id`.
    pub(super) fn create_temp(&self, root: &Root, id: &BlobId) -> Result<(fs::File, PathBuf)> {
        let tmp = root
            .tmp_dir
            .join(format!("{}.{}.tmp", id.as_str(), unique_suffix()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::RootUnavailable {
                path: root.path.clone(),
                reason: "tmp/ directory missing".into(),
            }),
            Err(e) => Err(StoreError::io("create temporary blob", &tmp)(e)),
        }
    }

    /// Writes a new empty blob to a temp file on `root` and publishes it unless something is
    /// already there (`Ok(None)`).
    pub(super) fn publish_new(
        &self,
        root: &Root,
        id: &BlobId,
        layout: Layout,
        flags: u32,
    ) -> Result<Option<BlobFile>> {
        let path = root.blob_path(id);
        self.create_shard_dirs(root, &path)?;
        let (file, tmp) = self.create_temp(root, id)?;
        let published = (|| {
            // In use from the moment it is published: no evictor can take it before we do.
            hold_in_use(&file, &tmp)?;
            let header = format::encode_fixed_header(&layout, flags, id);
            write_all_at(&file, &header, 0, &tmp, "write blob header")?;
            // Bitmap and checksums start zeroed: extend the file to the data offset (sparse).
            file.set_len(layout.data_offset())
                .map_err(StoreError::io("extend blob header", &tmp))?;
            if self.durability == Durability::Fsync {
                file.sync_all()
                    .map_err(StoreError::io("fsync temporary blob", &tmp))?;
            }
            publish_no_clobber(&tmp, &path).map_err(StoreError::io("publish blob", &path))
        })();
        if let Err(e) = remove_file_if_exists(&tmp) {
            log::warn!("store: could not remove temporary blob {tmp:?}: {e}");
        }
        match published? {
            Publish::AlreadyExists => Ok(None),
            Publish::Published => {
                if self.durability == Durability::Fsync {
                    if let Some(shard) = path.parent() {
                        fsync_dir(shard)?;
                    }
                }
                let meta = file.metadata().map_err(StoreError::io("stat", &path))?;
                let blob = BlobFile::new_created(
                    file,
                    root.index,
                    path,
                    FileIdentity::of(&meta),
                    id.clone(),
                    layout,
                    flags,
                    self.durability,
                )?;
                blob.take_custody();
                Ok(Some(blob))
            }
        }
    }
}
