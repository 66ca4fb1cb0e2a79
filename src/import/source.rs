//! One cached file in an Olah or DingoSpeed cache, whatever its format, streamed in order as
//! [`Piece`]s: bytes, or gaps where the cache has nothing usable.
//!
//! Formats (the modules say byte for byte what each writer writes):
//!
//! | format | written by | where | checksums |
//! |---|---|---|---|
//! | [`v10`](super::v10) directory | Olah 0.5.x (current) | `files/…/resolve/{sha}/{path}/` | CRC32 per chunk (1 MiB) |
//! | [`v9`](super::legacy::V9Dir) directory | Olah 0.4.x | same | none |
//! | [`v8`](super::legacy::V8File) file | DingoSpeed; Olah 0.1–0.3 | `files/…/blobs/{etag}` (DingoSpeed), `files/…/resolve/{sha}/{path}` (Olah) | none |
//!
//! A gap is a block the cache does not have (never downloaded, or a download cut off) or, in
//! the v10 format, a chunk whose bytes fail their CRC (damaged on disk). Bytes of v8 and v9
//! caches are never checked by anything but the file's content hash, so only complete files
//! of those formats can be imported ([`CacheSource::checks_chunks`]).

use std::fs;
use std::io;
use std::ops::Range;
use std::path::Path;

use super::legacy::{V8File, V9Dir};
use super::v10::V10Dir;

/// What is wrong with a cache entry as a whole (it is left out; never fatal for an import).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("not an Olah cache file (no OLAH magic)")]
    NotOlah,
    #[error("unsupported Olah cache version {0} (8, 9 and 10 are supported)")]
    Version(u64),
    #[error("truncated Olah header: {have} bytes, the header needs {need}")]
    TruncatedHeader { have: u64, need: u64 },
    #[error("invalid Olah header: {0}")]
    Invalid(String),
    #[error("Olah v9 block compression {0} is not supported (0 = none and 1 = gzip are)")]
    Compression(u64),
    #[error("block {block}: {reason}")]
    BadBlock { block: u64, reason: String },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

pub fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> SourceError {
    move |source| SourceError::Io { op, source }
}

/// Streaming failed: in the cache entry, or in the consumer of the bytes.
#[derive(Debug)]
pub enum StreamError<E> {
    Source(SourceError),
    Sink(E),
}

impl<E> From<SourceError> for StreamError<E> {
    fn from(e: SourceError) -> Self {
        StreamError::Source(e)
    }
}

/// The next part of the content, in order.
#[derive(Debug)]
pub enum Piece<'a> {
    /// Content bytes (checked against their chunk CRC when the format has them).
    Data(&'a [u8]),
    /// `len` bytes the cache cannot provide.
    Gap { len: u64 },
}

/// A run of missing or unusable content, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The cache's blocks concerned.
    pub blocks: Range<u64>,
    /// Byte range of the content.
    pub range: Range<u64>,
    /// Why, e.g. "not downloaded" or "chunk 5 fails its CRC32".
    pub reason: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.blocks.end - self.blocks.start == 1 {
            write!(f, "block {}: {}", self.blocks.start, self.reason)
        } else {
            write!(
                f,
                "blocks {}-{}: {}",
                self.blocks.start,
                self.blocks.end - 1,
                self.reason
            )
        }
    }
}

/// Collects the gaps of a stream, passing each on to the sink; a gap continuing the previous
/// one (next block, same reason) extends it.
#[derive(Debug, Default)]
pub struct Gaps {
    pub done: Vec<Missing>,
}

impl Gaps {
    pub fn push<E>(
        &mut self,
        block: u64,
        range: Range<u64>,
        reason: &str,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        sink(Piece::Gap {
            len: range.end - range.start,
        })
        .map_err(StreamError::Sink)?;
        match self.done.last_mut() {
            Some(prev)
                if prev.range.end == range.start
                    && prev.blocks.end == block
                    && prev.reason == reason =>
            {
                prev.range.end = range.end;
                prev.blocks.end = block + 1;
            }
            _ => self.done.push(Missing {
                blocks: block..block + 1,
                range,
                reason: reason.to_string(),
            }),
        }
        Ok(())
    }
}

/// The geometry of a cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u64,
    pub file_size: u64,
}

impl Geometry {
    /// `(blocks present, blocks in all)`, with `is_present` telling one block.
    pub fn presence(&self, is_present: impl Fn(u64) -> bool) -> (u64, u64) {
        let total = self.block_count();
        ((0..total).filter(|&b| is_present(b)).count() as u64, total)
    }

    /// Number of blocks: `ceil(file_size / block_size)`.
    pub fn block_count(&self) -> u64 {
        self.file_size.div_ceil(self.block_size)
    }

    /// Content bytes of `block` (the last one is shorter).
    pub fn block_len(&self, block: u64) -> u64 {
        let start = block.saturating_mul(self.block_size);
        self.file_size.saturating_sub(start).min(self.block_size)
    }

    /// Content range of `block`.
    pub fn block_range(&self, block: u64) -> Range<u64> {
        let start = block.saturating_mul(self.block_size);
        start..start + self.block_len(block)
    }
}

/// Largest block size accepted from any cache header (Olah's largest default is 64 MiB).
pub const MAX_BLOCK_SIZE: u64 = 1 << 40;

/// Checks what every format shares: a block size in `1..=MAX_BLOCK_SIZE` and a file size
/// that fits an `i64`.
pub fn geometry(block_size: u64, file_size: u64) -> Result<Geometry, SourceError> {
    if block_size == 0 || block_size > MAX_BLOCK_SIZE {
        return Err(SourceError::Invalid(format!(
            "implausible block size {block_size}"
        )));
    }
    if file_size > i64::MAX as u64 {
        return Err(SourceError::Invalid(format!(
            "implausible file size {file_size}"
        )));
    }
    Ok(Geometry {
        block_size,
        file_size,
    })
}

/// Any readable cache entry.
#[derive(Debug)]
pub enum CacheSource {
    V10(V10Dir),
    V9(V9Dir),
    V8(V8File),
    /// A zero-length file: no header at all. DingoSpeed creates `blobs/{etag}` empty before
    /// the first byte arrives (and never writes anything for a 0-byte file), so this is either
    /// empty content or a download that never started; only the content hash can tell.
    Empty,
}

impl CacheSource {
    /// Opens the cache entry at `path`: a v10 or v9 directory (holding `meta.bin`), a
    /// zero-length file, or a v8 file.
    pub fn open(path: &Path) -> Result<CacheSource, SourceError> {
        let meta = fs::metadata(path).map_err(io_err("stat"))?;
        if meta.is_dir() {
            let header = sniff(&path.join("meta.bin")).ok_or_else(|| {
                SourceError::Invalid("meta.bin is missing or not a regular file".into())
            })?;
            return match dir_version(&header)? {
                10 => V10Dir::open(path).map(CacheSource::V10),
                9 => V9Dir::open(path).map(CacheSource::V9),
                v => Err(SourceError::Version(v)),
            };
        }
        if meta.len() == 0 {
            return Ok(CacheSource::Empty);
        }
        V8File::open(path).map(CacheSource::V8)
    }

    pub fn size(&self) -> u64 {
        match self {
            CacheSource::V10(d) => d.geometry().file_size,
            CacheSource::V9(d) => d.geometry().file_size,
            CacheSource::V8(f) => f.geometry().file_size,
            CacheSource::Empty => 0,
        }
    }

    /// The etag Olah recorded for the content (v10 `meta.bin` only), unquoted, lower-case.
    pub fn recorded_etag(&self) -> Option<&str> {
        match self {
            CacheSource::V10(d) => d.etag(),
            _ => None,
        }
    }

    /// Whether the bytes are checked piece by piece (so a partial copy can be imported).
    pub fn checks_chunks(&self) -> bool {
        matches!(self, CacheSource::V10(_))
    }

    /// For reports: the format and block size.
    pub fn describe(&self) -> String {
        match self {
            CacheSource::V10(d) => d.describe(),
            CacheSource::V9(d) => d.describe(),
            CacheSource::V8(f) => f.describe(),
            CacheSource::Empty => "empty file".into(),
        }
    }

    /// `(present, total)` blocks of the cache's own block size.
    pub fn presence(&self) -> (u64, u64) {
        match self {
            CacheSource::V10(d) => d.presence(),
            CacheSource::V9(d) => d.presence(),
            CacheSource::V8(f) => f.presence(),
            CacheSource::Empty => (0, 0),
        }
    }

    /// Streams the whole content in order: data and gaps covering `0..size()` exactly.
    /// Returns the gaps with their reasons.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<Vec<Missing>, StreamError<E>> {
        match self {
            CacheSource::V10(d) => d.stream(sink),
            CacheSource::V9(d) => d.stream(sink),
            CacheSource::V8(f) => f.stream(sink),
            CacheSource::Empty => Ok(Vec::new()),
        }
    }
}

/// Reads the first bytes of `path` (at most 64) if it is a regular file (not a symlink).
pub fn sniff(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut buf = Vec::with_capacity(64);
    fs::File::open(path)
        .ok()?
        .take(64)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// The version of a directory-format header (`meta.bin`): Olah v9 writes `<4sQ…` (a u64
/// version), v10 `<4sH…` (a u16 version, then flags and the header size, so its u64 at
/// offset 4 is never a small number).
pub fn dir_version(header: &[u8]) -> Result<u64, SourceError> {
    if header.len() < 4 || &header[..4] != b"OLAH" {
        return Err(SourceError::NotOlah);
    }
    if header.len() < 12 {
        return Err(SourceError::TruncatedHeader {
            have: header.len() as u64,
            need: 12,
        });
    }
    let mut wide = [0u8; 8];
    wide.copy_from_slice(&header[4..12]);
    let wide = u64::from_le_bytes(wide);
    if wide <= 9 {
        return Ok(wide);
    }
    Ok(u64::from(u16::from_le_bytes([header[4], header[5]])))
}

/// Whether `dir` is an Olah directory-format cache entry: it holds a regular `meta.bin` with
/// the OLAH magic that is not itself a v8 cache file (a repo file named `meta.bin` cached by
/// Olah before 0.4).
pub fn is_entry_dir(dir: &Path) -> bool {
    sniff(&dir.join("meta.bin")).is_some_and(|h| match dir_version(&h) {
        Ok(version) => version != 8,
        Err(SourceError::TruncatedHeader { .. }) => true,
        Err(_) => false,
    })
}

/// Olah's block directory (0.4's v9 and 0.5's v10): block `n` of a file is
/// `blocks/block_{n:08}.bin` beside its `meta.bin`.
pub fn olah_block_path(dir: &std::path::Path, block: u64) -> std::path::PathBuf {
    dir.join("blocks").join(format!("block_{block:0>8}.bin"))
}

/// Olah's `has_block`: the block file exists and is not empty (regular files only).
pub fn olah_block_present(dir: &std::path::Path, geometry: &Geometry, block: u64) -> bool {
    block < geometry.block_count()
        && std::fs::symlink_metadata(olah_block_path(dir, block))
            .is_ok_and(|m| m.is_file() && m.len() > 0)
}
