//! A range of a blob that may be handed to the kernel as it is on disk (`sendfile`): every
//! block present in the fill's copy, every page verified since the file last changed. The
//! proxy sends it from the file's descriptor, asks [`SendSource::unchanged`] between pieces,
//! reads the last bytes the checked way ([`SendSource::read_checked`]) and reports what it
//! sent ([`SendSource::sent`]) so the served-bytes tally, metrics and eviction reads are the
//! same as through a [`BlobReader`](super::BlobReader).

use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::context::{blocking, FillStats};
use super::{BlobFill, FetchError, FillEngine, ReadSource, ReadTally};
use crate::store::{BlobFile, BlobId, SendWindow};

/// Bytes checked per read when a file that changed during a transfer is checked again.
const RECHECK_CHUNK: u64 = 1 << 20;

/// Check `range` of `file` against its page checksums as the file is now, a chunk at a time.
fn recheck(file: &BlobFile, range: Range<u64>) -> Result<(), crate::store::StoreError> {
    let mut offset = range.start;
    while offset < range.end {
        let len = (range.end - offset).min(RECHECK_CHUNK);
        file.read_verified(offset, len as usize)?;
        offset += len;
    }
    Ok(())
}

/// The next part of a range for a sender that can hand file bytes to the kernel
/// ([`BlobReader::next_piece`](super::BlobReader::next_piece)).
pub enum Piece {
    /// Bytes read the normal way (checked, of a block in flight, or streamed uncached).
    Bytes(Bytes),
    /// `len` content bytes at `offset` of `file`, in blocks the fill committed into a file
    /// this process created and has written alone so far (custody, `store::custody`): they
    /// are the bytes it wrote, so the kernel may send them from the file as they are. Until
    /// the client has acknowledged them the kernel still refers to the file's pages, so the
    /// sender confirms them afterwards ([`OwnSent::confirm`]). `invalidations` is the file's
    /// [`BlobFile::invalidations`] from before the block was found present.
    Own {
        file: Arc<BlobFile>,
        offset: u64,
        len: u64,
        invalidations: u64,
    },
}

impl Piece {
    /// Content bytes this piece covers.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes(bytes) => bytes.len() as u64,
            Piece::Own { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A run of one file's content the kernel was handed, with the file's invalidation count
/// before it was.
struct OwnRun {
    file: Arc<BlobFile>,
    range: Range<u64>,
    invalidations: u64,
}

/// The [`Piece::Own`] runs a sender handed to the kernel, confirmed once the client
/// acknowledged all of them.
#[derive(Default)]
pub struct OwnSent {
    runs: Vec<OwnRun>,
}

impl OwnSent {
    /// Note that content bytes `range` of `file` are being handed to the kernel, found present
    /// when the file's invalidation count was `invalidations`.
    pub fn add(&mut self, file: &Arc<BlobFile>, range: Range<u64>, invalidations: u64) {
        if let Some(last) = self.runs.last_mut() {
            if Arc::ptr_eq(&last.file, file)
                && last.range.end == range.start
                && last.invalidations == invalidations
            {
                last.range.end = range.end;
                return;
            }
        }
        self.runs.push(OwnRun {
            file: Arc::clone(file),
            range,
            invalidations,
        });
    }

    /// Call once the client acknowledged every byte sent. `Ok` when every file is still in
    /// this process's custody (nobody else changed it, so the kernel sent the bytes the fill
    /// wrote). A file that left custody (another process or a person changed it) passes only
    /// if none of its blocks was invalidated since its runs were sent (an invalidated block
    /// is written again, which would hide what the client got) and the runs still match
    /// their page checksums. Otherwise the "changed" error: the response must be cut short.
    pub async fn confirm(self, id: &BlobId) -> Result<(), FetchError> {
        if self.runs.is_empty() {
            return Ok(());
        }
        let checked = blocking(move || {
            let mut in_custody: Vec<&Arc<BlobFile>> = Vec::new();
            for run in &self.runs {
                if in_custody.iter().any(|f| Arc::ptr_eq(f, &run.file)) {
                    continue;
                }
                if run.file.in_custody() {
                    in_custody.push(&run.file);
                    continue;
                }
                if run.file.invalidations() != run.invalidations {
                    return Err("a block was invalidated and fetched again".to_string());
                }
                recheck(&run.file, run.range.clone()).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await?;
        checked.map_err(|why| {
            FetchError::Internal(format!(
                "{id}: the blob file changed while being sent ({why}); the response is cut short"
            ))
        })
    }
}

/// A verified range of one blob file, open for sending.
pub struct SendSource {
    engine: FillEngine,
    id: BlobId,
    /// Holds the file (and its descriptor) open while it is sent.
    file: Arc<BlobFile>,
    window: SendWindow,
    range: Range<u64>,
    tally: Arc<ReadTally>,
    /// The download to count as one read of the blob, with the first bytes sent.
    download: Option<u64>,
    counted: AtomicBool,
}

impl FillEngine {
    /// `Some` when every byte of `range` of `fill`'s blob may be sent from its file as it is
    /// (see the module docs); `None`: serve it through a [`BlobReader`](super::BlobReader).
    pub fn send_source(
        &self,
        fill: &Arc<BlobFill>,
        range: Range<u64>,
        tally: Arc<ReadTally>,
        download: Option<u64>,
    ) -> Option<SendSource> {
        let file = fill.present_file(range.clone())?;
        let window = file.send_window(range.clone())?;
        Some(SendSource {
            engine: self.clone(),
            id: fill.id().clone(),
            file,
            window,
            range,
            tally,
            download,
            counted: AtomicBool::new(false),
        })
    }
}

impl SendSource {
    /// The blob file's descriptor (open as long as `self` lives).
    pub fn fd(&self) -> RawFd {
        self.file.raw_fd()
    }

    /// The content range this source covers.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The page size of the blob file's checksums.
    pub fn page_size(&self) -> u64 {
        self.file.page_size()
    }

    /// File offset of content byte `offset`.
    pub fn file_offset(&self, offset: u64) -> u64 {
        self.window.file_offset + (offset - self.range.start)
    }

    /// Whether the file is still exactly as when its pages were found verified: bytes sent
    /// from it since are the verified ones. Ask before and after every piece sent.
    pub fn unchanged(&self) -> bool {
        self.file.unchanged(&self.window.stamp)
    }

    /// Read `len` bytes at `offset` the checked way (pages checked against their CRC32C
    /// unless verified under an unchanged stamp; a bad block is invalidated, so it is
    /// fetched again next time), and only if the file is still unchanged.
    pub async fn read_checked(&self, offset: u64, len: usize) -> Result<Bytes, FetchError> {
        if !self.unchanged() {
            return Err(self.changed());
        }
        let file = Arc::clone(&self.file);
        let bytes = blocking(move || file.read_verified(offset, len)).await??;
        FillStats::add(&self.engine.stats().verified_read_bytes, bytes.len() as u64);
        Ok(bytes)
    }

    /// The error for a file that changed while being sent.
    pub fn changed(&self) -> FetchError {
        FetchError::Internal(format!(
            "{}: the blob file changed while being sent; the response is cut short",
            self.id
        ))
    }

    /// The file changed while `sent` was being sent (another process wrote the blob's header,
    /// a permission changed, or its bytes changed) and the client acknowledged all of it:
    /// check those bytes against their page checksums as the file is now. `Ok` when they
    /// match (the client got the verified content; the rest must then be read with
    /// [`read_now`](Self::read_now)), the "changed" error otherwise.
    pub async fn recheck(&self, sent: Range<u64>) -> Result<(), FetchError> {
        let file = Arc::clone(&self.file);
        let checked = blocking(move || recheck(&file, sent)).await?;
        checked.map_err(|e| self.changed_because(&e))
    }

    /// Read `len` bytes at `offset` the checked way whatever the file's stamp (after a
    /// [`recheck`](Self::recheck)); a page that fails its checksum is the "changed" error.
    pub async fn read_now(&self, offset: u64, len: usize) -> Result<Bytes, FetchError> {
        let file = Arc::clone(&self.file);
        let bytes = blocking(move || file.read_verified(offset, len))
            .await?
            .map_err(|e| self.changed_because(&e))?;
        FillStats::add(&self.engine.stats().verified_read_bytes, bytes.len() as u64);
        Ok(bytes)
    }

    fn changed_because(&self, e: &crate::store::StoreError) -> FetchError {
        FetchError::Internal(format!(
            "{}: the blob file changed while being sent ({e}); the response is cut short",
            self.id
        ))
    }

    /// Count `n` bytes sent to the client: from the cache (every block was present), into
    /// the request's tally and the served-bytes metrics; the first call also counts the
    /// download as a read of the blob (for eviction).
    pub fn sent(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.tally.add(ReadSource::Cache, n);
        FillStats::add(&self.engine.stats().served_cache_bytes, n);
        self.count_download();
    }

    /// Count `n` of the bytes [`sent`](Self::sent) as sent by the kernel from the file.
    pub fn sent_by_kernel(&self, n: u64) {
        FillStats::add(&self.engine.stats().sendfile_bytes, n);
    }

    fn count_download(&self) {
        if let Some(download) = self.download {
            if !self.counted.swap(true, Ordering::Relaxed) {
                self.engine.note_read(&self.id, download);
            }
        }
    }
}
