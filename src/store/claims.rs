//! Cross-process block claims ([`BlobFile::try_claim_block`](super::BlobFile::try_claim_block)).
//!
//! Block `i` is claimed by a non-blocking OFD write lock on the one byte
//! `CLAIM_LOCK_BASE + i`, taken through **one descriptor per blob handle**: the blob file
//! opened a second time, on the first claim. OFD locks exclude other open file descriptions
//! (other processes, other `Store`s) but not a second lock through the same description, so
//! the handle also keeps the set of blocks it holds: a block claimed through this handle is
//! refused until its claim is dropped, exactly as if it were held elsewhere. A fill claiming
//! thousands of small blocks thus holds two descriptors, not one per block.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::error::Result;
use super::format::CLAIM_LOCK_BASE;
use super::locks::{lock_unsupported, ofd_try_lock, ofd_unlock, warn_locks_unsupported};

/// The claims descriptor of one blob handle, opened on first use.
#[derive(Default)]
pub(crate) struct Claims {
    fd: Mutex<Option<Arc<ClaimFd>>>,
}

struct ClaimFd {
    file: File,
    path: PathBuf,
    /// Blocks claimed through this descriptor; guards every lock and unlock on it.
    held: Mutex<HashSet<u64>>,
    /// False where the file system has no OFD locks: claims then only exclude in-process.
    locking: bool,
}

impl Claims {
    /// Claims `block`: `Ok(None)` if it is held, here or elsewhere. `open` gives the claims
    /// descriptor the first time.
    pub(crate) fn try_claim(
        &self,
        block: u64,
        path: &Path,
        open: impl FnOnce() -> Result<File>,
    ) -> Result<Option<BlockClaim>> {
        let fd = self.descriptor(path, open)?;
        let mut held = fd.held.lock();
        if held.contains(&block) {
            return Ok(None);
        }
        if fd.locking {
            match ofd_try_lock(&fd.file, CLAIM_LOCK_BASE + block, 1) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err(super::StoreError::io("claim block of", path)(e)),
            }
        }
        held.insert(block);
        drop(held);
        Ok(Some(BlockClaim { block, fd }))
    }

    fn descriptor(&self, path: &Path, open: impl FnOnce() -> Result<File>) -> Result<Arc<ClaimFd>> {
        let mut slot = self.fd.lock();
        if let Some(fd) = slot.as_ref() {
            return Ok(Arc::clone(fd));
        }
        let file = open()?;
        // Probe lock support once, on a byte no claim uses.
        let locking = match ofd_try_lock(&file, CLAIM_LOCK_BASE - 1, 1) {
            Ok(_) => {
                let _ = ofd_unlock(&file, CLAIM_LOCK_BASE - 1, 1);
                true
            }
            Err(e) if lock_unsupported(&e) => {
                warn_locks_unsupported(
                    path,
                    &e,
                    "processes sharing this cache directory may fetch blocks twice",
                );
                false
            }
            Err(e) => return Err(super::StoreError::io("claim block of", path)(e)),
        };
        let fd = Arc::new(ClaimFd {
            file,
            path: path.to_path_buf(),
            held: Mutex::new(HashSet::new()),
            locking,
        });
        *slot = Some(Arc::clone(&fd));
        Ok(fd)
    }
}

/// A held claim on one block of a blob, from
/// [`BlobFile::try_claim_block`](super::BlobFile::try_claim_block). Dropping it releases the
/// claim (`F_UNLCK` on the handle's claims descriptor); so does the death of the process.
pub struct BlockClaim {
    block: u64,
    fd: Arc<ClaimFd>,
}

impl BlockClaim {
    /// The claimed block.
    pub fn block(&self) -> u64 {
        self.block
    }
}

impl Drop for BlockClaim {
    fn drop(&mut self) {
        // Unlock and forget under the same mutex as claiming, so a new claim of this block
        // through this handle cannot be unlocked by us.
        let mut held = self.fd.held.lock();
        if self.fd.locking {
            if let Err(e) = ofd_unlock(&self.fd.file, CLAIM_LOCK_BASE + self.block, 1) {
                log::warn!(
                    "store: {:?}: failed to release the claim of block {}: {e}",
                    self.fd.path,
                    self.block
                );
            }
        }
        held.remove(&self.block);
    }
}

impl fmt::Debug for BlockClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockClaim")
            .field("block", &self.block)
            .finish()
    }
}
