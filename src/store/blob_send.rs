//! Handing a verified range of a [`BlobFile`] to the kernel (`sendfile`): which file bytes
//! hold the content, and whether every page of a range was checked against its CRC32C since
//! the file last changed (see [`VerifiedPages`]), so it may be sent without reading it here.
//!
//! The content is one contiguous run in the file (the header, bitmap and page checksums come
//! before it, padded to [`DATA_ALIGNMENT`](super::format::DATA_ALIGNMENT)), so content byte
//! `o` is file byte `data_offset + o`.

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};

use super::blob::BlobFile;
use super::verified::{Stamp, VerifiedPages};

/// One state of a blob file's bytes (device, inode, `ctime`, size): the range a
/// [`SendWindow`] covers may only be sent while the file still has this stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp(Stamp);

/// A range of a blob file whose every page was verified under `stamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    pub stamp: FileStamp,
    /// File offset of the range's first content byte.
    pub file_offset: u64,
}

impl BlobFile {
    /// The file's descriptor, for `sendfile` (valid as long as this handle lives).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// File offset of content byte `offset` (the content is one contiguous run).
    pub fn file_offset(&self, offset: u64) -> u64 {
        self.layout.data_offset() + offset
    }

    /// `Some` when every block holding `range` is present and every page of it was verified
    /// under the file's current stamp: its bytes may be sent as they are on disk, as long as
    /// [`unchanged`](Self::unchanged) says the stamp still holds. `None` for an empty range,
    /// one past the end, or anything not (or no longer) verified: read it the checked way.
    pub fn send_window(&self, range: Range<u64>) -> Option<SendWindow> {
        if range.start >= range.end || range.end > self.layout.size() {
            return None;
        }
        if self
            .layout
            .blocks_covering(range.clone())
            .any(|b| !self.is_present(b))
        {
            return None;
        }
        let page_size = self.layout.page_size();
        let pages = range.start / page_size..(range.end - 1) / page_size + 1;
        let stamp = Stamp::now(&self.file)?;
        if !VerifiedPages::global().all_verified(&stamp, pages) {
            return None;
        }
        Some(SendWindow {
            stamp: FileStamp(stamp),
            file_offset: self.file_offset(range.start),
        })
    }

    /// Whether the file still has `stamp` (no write, truncation or `chmod` since); `false`
    /// when its status cannot be read.
    pub fn unchanged(&self, stamp: &FileStamp) -> bool {
        Stamp::now(&self.file).is_some_and(|now| now == stamp.0)
    }
}
