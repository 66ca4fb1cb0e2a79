//! The error type of the block store.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Result alias used inside the store module.
pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the block store.
///
/// Every variant that concerns a file names it, and every variant that concerns a block names
/// the block, so a log line is enough to find the culprit. Callers mostly care about three
/// variants: [`StoreError::NotPresent`] (fill the block first), [`StoreError::Corrupt`] (the
/// block was found damaged and has been invalidated: refetch it) and everything else (I/O
/// trouble or a programming error).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O operation failed. `op` says what the store was doing.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What the store was doing, e.g. `"write block data"`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A block size that is not a power of two in `min..=max`.
    #[error(
        "invalid block size {block_size}: must be a power of two between {min} and {max} bytes"
    )]
    InvalidBlockSize {
        /// The rejected block size.
        block_size: u64,
        /// The smallest block size accepted.
        min: u64,
        /// The largest block size accepted.
        max: u64,
    },

    /// The content is too large to be described by a blob file (header or file offsets would
    /// overflow).
    #[error("content of {size} bytes cannot be stored with block size {block_size}")]
    TooLarge {
        /// Content size in bytes.
        size: u64,
        /// Block size in bytes.
        block_size: u64,
    },

    /// A path the store cannot work with (e.g. one without a file name).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The header of a blob file is damaged, of an unknown version, or inconsistent.
    ///
    /// [`Store::open_blob`](super::Store::open_blob) handles this one itself (the file is
    /// removed and `None` returned); it is only seen by callers in unusual races.
    #[error("{path:?}: bad blob header: {reason}")]
    BadHeader {
        /// The blob file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A block index past the end of the blob.
    #[error("{path:?}: block {block} out of range (the blob has {block_count} blocks)")]
    BlockOutOfRange {
        /// The blob file.
        path: PathBuf,
        /// The requested block.
        block: u64,
        /// Number of blocks of the blob.
        block_count: u64,
    },

    /// A block index past the end of a [`Layout`](super::Layout) (no file involved).
    #[error("block {block} out of range (the layout has {block_count} blocks)")]
    NoSuchBlock {
        /// The requested block.
        block: u64,
        /// Number of blocks of the layout.
        block_count: u64,
    },

    /// A content byte range that does not lie within the content.
    #[error("{path:?}: {op} of {len} bytes at content offset {offset} is outside the content ({size} bytes)")]
    OutOfRange {
        /// The blob file.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// Start of the range (content offset).
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Content size.
        size: u64,
    },

    /// A verified read touched a block that is not (or no longer) present. Fill it first.
    #[error("{path:?}: block {block} is not present")]
    NotPresent {
        /// The blob file.
        path: PathBuf,
        /// The first missing block of the requested range.
        block: u64,
    },

    /// A page of a present block failed its CRC32C check. The block has been invalidated
    /// (its presence bit cleared on disk and in memory): refetch it.
    #[error(
        "{path:?}: block {block} is corrupt (page {page}: crc32c {actual:#010x}, header says \
         {expected:#010x}); the block has been invalidated"
    )]
    Corrupt {
        /// The blob file.
        path: PathBuf,
        /// The damaged block.
        block: u64,
        /// The first damaged page (global page index).
        page: u64,
        /// Checksum stored in the header.
        expected: u32,
        /// Checksum of the bytes on disk.
        actual: u32,
    },

    /// The file ended before the requested bytes (it was truncated underneath us).
    #[error(
        "{path:?}: short read ({op}) at file offset {offset}: wanted {wanted} bytes, got {got}"
    )]
    ShortRead {
        /// The file.
        path: PathBuf,
        /// What was being read.
        op: &'static str,
        /// File offset of the read.
        offset: u64,
        /// Bytes wanted.
        wanted: usize,
        /// Bytes actually available.
        got: usize,
    },

    /// `commit_block` was given the wrong number of page checksums.
    #[error("{path:?}: block {block} has {expected} pages but {got} page checksums were given")]
    ChecksumCount {
        /// The blob file.
        path: PathBuf,
        /// The block being committed.
        block: u64,
        /// Pages in the block.
        expected: u64,
        /// Checksums given.
        got: u64,
    },

    /// A part of a block to checksum on its own ([`BlockChecksummer::for_part`]) does not
    /// start on a page boundary, or ends neither on one nor at the block's end.
    ///
    /// [`BlockChecksummer::for_part`]: super::BlockChecksummer::for_part
    #[error("block {block}: bytes {from}..{to} of it are not a run of whole pages")]
    BadPart {
        /// The block.
        block: u64,
        /// Offsets in the block.
        from: u64,
        to: u64,
    },

    /// A [`BlockChecksummer`](super::BlockChecksummer) (or `put_block`) was fed a number of
    /// bytes different from the block's length.
    #[error("block {block}: got {got} bytes but the block is {expected} bytes long")]
    BlockLength {
        /// The block.
        block: u64,
        /// The block's length.
        expected: u64,
        /// Bytes fed.
        got: u64,
    },

    /// No storage root can take a new blob: every root is full (free space below the size plus
    /// the reserve), unhealthy, or failed the write for lack of space. `detail` says, per root,
    /// why. Callers serve the bytes without caching them.
    #[error("no storage root can take {needed} more bytes: {detail}")]
    NoSpace {
        /// Bytes the blob needs.
        needed: u64,
        /// Why each root was refused.
        detail: String,
    },

    /// A storage root cannot be used right now (missing, not a directory, unreadable, on another
    /// device than when the store was opened, or marked unhealthy after I/O errors).
    #[error("storage root {path:?} is unavailable: {reason}")]
    RootUnavailable {
        /// The root directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A store configuration that cannot work (no roots, a root listed twice, a replica count
    /// outside `1..=roots`).
    #[error("invalid store configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },

    /// `create_blob` kept finding a conflicting file published by someone else.
    #[error(
        "{path:?}: could not publish the blob after {attempts} attempts (concurrent replacement?)"
    )]
    PublishConflict {
        /// The final blob path.
        path: PathBuf,
        /// Attempts made.
        attempts: u32,
    },
}

impl StoreError {
    /// Helper building a closure that wraps an [`io::Error`] with its context.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// True for [`StoreError::NotPresent`].
    pub fn is_not_present(&self) -> bool {
        matches!(self, StoreError::NotPresent { .. })
    }

    /// True for [`StoreError::ShortRead`]: the file ends before data its bitmap says is
    /// there (truncated underneath an open handle).
    pub fn is_short_read(&self) -> bool {
        matches!(self, StoreError::ShortRead { .. })
    }

    /// True for [`StoreError::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// True when the disk (or the user's quota) is full: [`StoreError::NoSpace`], or an I/O
    /// error `ENOSPC` / `EDQUOT` from any write. A failed write never leaves a block present,
    /// so the caller may serve the bytes without caching them.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace { .. } => true,
            StoreError::Io { source, .. } => is_no_space_errno(source),
            _ => false,
        }
    }

    /// True for an I/O error of the file system (not for lack of space, nor for the process
    /// running out of descriptors or memory): the copy it came from may be on a failing disk,
    /// so a reader should call [`Store::failover`](super::Store::failover) for another copy.
    pub fn is_io_error(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                !is_no_space_errno(source) && !is_resource_errno(source)
            }
            StoreError::RootUnavailable { .. } => true,
            _ => false,
        }
    }

    /// True when the error says something about the storage root it happened on rather than
    /// about one file or about this process: the root is then marked unhealthy.
    pub(crate) fn is_root_failure(&self) -> bool {
        match self {
            StoreError::RootUnavailable { .. } => true,
            StoreError::Io { source, .. } => {
                source.kind() != io::ErrorKind::NotFound
                    && !is_no_space_errno(source)
                    && !is_resource_errno(source)
            }
            _ => false,
        }
    }
}

fn is_no_space_errno(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Errors that say the process (or the system) ran short of something, not that a disk failed.
fn is_resource_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(errno: i32) -> StoreError {
        StoreError::io("open blob", "/cache/blobs/x")(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn running_out_of_descriptors_or_memory_is_not_a_disk_failure() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EAGAIN] {
            let e = io_error(errno);
            assert!(!e.is_io_error(), "{e}");
            assert!(!e.is_root_failure(), "{e}");
            assert!(!e.is_no_space(), "{e}");
        }
    }

    #[test]
    fn disk_errors_and_full_disks_are_told_apart() {
        let eio = io_error(libc::EIO);
        assert!(eio.is_io_error() && eio.is_root_failure() && !eio.is_no_space());
        let full = io_error(libc::ENOSPC);
        assert!(full.is_no_space() && !full.is_io_error() && !full.is_root_failure());
    }
}
