//! Readers for Olah's cache file formats (also written by DingoSpeed).
//!
//! **Version 8** (Olah `olah/utils/olah_cache.py` with `CURRENT_OLAH_CACHE_VERSION = 8`;
//! DingoSpeed `internal/downloader/file_header.go`, `file.go`, `bitset.go`): one file, all
//! integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `OLAH` |
//! | 4 | 8 | version = 8 |
//! | 12 | 8 | block size (Olah 8 MiB or 64 MiB by release, DingoSpeed `download.blockSize`, default 8 MiB) |
//! | 20 | 8 | file size |
//! | 28 | 8 | bitmap size in bits (1,048,576) |
//! | 36 | ceil(bits/8) | presence bitmap, bit *i* = `bits[i/8] & (1 << (i%8))` |
//! | 36 + ceil(bits/8) | file size | block *i* at `header + i*block_size`; the last block truncated |
//!
//! A set bit is the writer's only claim that a block is there: neither writer checksums or
//! `fsync`s anything, so the bytes are verified against the file's content hash on import.
//!
//! **Version 9** (current Olah, `src/olah/cache/olah_cache.py`): the cache entry is a
//! *directory* holding `meta.bin` (`<4sQQQQ`: magic, version 9, block size (default 50 MiB),
//! file size, compression algorithm) and `blocks/block_{index:08}.bin`, one file per present
//! block holding the block's bytes (the last block truncated), compressed with algorithm
//! 0 (none), 1 (gzip, Olah's default) or 2 (lzma, not supported here).
//!
//! Readers stream the content in order with bounded memory: one [`READ_CHUNK`] buffer (plus,
//! for gzip, the decompressor's output for one input chunk).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pingora::protocols::http::compression::Algorithm;

/// The magic number at offset 0 of every Olah cache header.
pub const MAGIC: &[u8; 4] = b"OLAH";
/// Length of the fixed part of the header (`<4sQQQQ`).
pub const FIXED_HEADER_LEN: u64 = 36;
/// The single-file format with a presence bitmap.
pub const VERSION_8: u64 = 8;
/// The directory format with one file per block.
pub const VERSION_9: u64 = 9;
/// Olah's and DingoSpeed's bitmap size (`DEFAULT_BLOCK_MASK_MAX`), in bits.
pub const DEFAULT_MASK_BITS: u64 = 1 << 20;
/// Largest bitmap accepted, in bits (a 8 MiB bitmap; 8 times what either writer uses).
pub const MAX_MASK_BITS: u64 = 1 << 26;
/// Olah v9's `MAX_BLOCK_NUM`.
pub const V9_MAX_BLOCKS: u64 = 8192;
/// Bytes read from a cache file at a time.
pub const READ_CHUNK: usize = 1 << 20;
/// Compressed bytes fed to a decompressor at a time (gzip expands at most ~1032:1, so one
/// call's output stays around 16 MiB in the worst case).
const INFLATE_CHUNK: usize = 16 << 10;

/// What is wrong with an Olah cache entry. Never fatal for an import: the entry is skipped.
#[derive(Debug, thiserror::Error)]
pub enum OlahError {
    #[error("not an Olah cache file (no OLAH magic)")]
    NotOlah,
    #[error("truncated Olah header: {have} bytes, the header needs {need}")]
    TruncatedHeader { have: u64, need: u64 },
    #[error("unsupported Olah cache version {0} (8 and 9 are supported)")]
    Version(u64),
    #[error("invalid Olah header: {0}")]
    Invalid(String),
    #[error("Olah v9 block compression {0} is not supported (0 = none and 1 = gzip are)")]
    Compression(u64),
    #[error("block {block}: {reason}")]
    BadBlock { block: u64, reason: String },
    #[error("the file ends at byte {file_len}, before the end of block {block}")]
    Truncated { block: u64, file_len: u64 },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> OlahError {
    move |source| OlahError::Io { op, source }
}

/// Streaming failed: in the cache entry, or in the consumer of the bytes.
#[derive(Debug)]
pub enum StreamError<E> {
    Source(OlahError),
    Sink(E),
}

impl<E> From<OlahError> for StreamError<E> {
    fn from(e: OlahError) -> Self {
        StreamError::Source(e)
    }
}

/// The geometry of an Olah cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub version: u64,
    pub block_size: u64,
    pub file_size: u64,
}

impl Geometry {
    /// Number of blocks: `ceil(file_size / block_size)`.
    pub fn block_count(&self) -> u64 {
        self.file_size.div_ceil(self.block_size)
    }

    /// Content bytes of `block` (the last one is shorter).
    pub fn block_len(&self, block: u64) -> u64 {
        let start = block.saturating_mul(self.block_size);
        self.file_size.saturating_sub(start).min(self.block_size)
    }
}

/// The fixed header fields: `(version, block_size, file_size, fourth)` where `fourth` is the
/// bitmap size (v8) or the compression algorithm (v9).
pub fn parse_fixed_header(bytes: &[u8]) -> Result<(u64, u64, u64, u64), OlahError> {
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(OlahError::NotOlah);
    }
    if (bytes.len() as u64) < FIXED_HEADER_LEN {
        return Err(OlahError::TruncatedHeader {
            have: bytes.len() as u64,
            need: FIXED_HEADER_LEN,
        });
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok((u64_at(4), u64_at(12), u64_at(20), u64_at(28)))
}

/// Reads the first bytes of `path` (at most 36) if it is a regular file; `None` when it is
/// not (or cannot be read).
pub fn sniff(path: &Path) -> Option<Vec<u8>> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut file = File::open(path).ok()?;
    let mut buf = Vec::with_capacity(FIXED_HEADER_LEN as usize);
    (&mut file)
        .take(FIXED_HEADER_LEN)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// A version 8 cache file.
#[derive(Debug)]
pub struct V8File {
    file: File,
    geometry: Geometry,
    bitmap: Vec<u8>,
    data_offset: u64,
    file_len: u64,
}

impl V8File {
    /// Opens and validates a v8 file: magic, version, a non-zero block size, a sane bitmap
    /// that covers every block, and a header that fits in the file.
    pub fn open(path: &Path) -> Result<V8File, OlahError> {
        let file = File::open(path).map_err(io_err("open"))?;
        let file_len = file.metadata().map_err(io_err("stat"))?.len();
        let mut fixed = [0u8; FIXED_HEADER_LEN as usize];
        let have = (FIXED_HEADER_LEN as usize).min(file_len as usize);
        file.read_exact_at(&mut fixed[..have], 0)
            .map_err(io_err("read header"))?;
        let (version, block_size, file_size, mask_bits) = parse_fixed_header(&fixed[..have])?;
        if version != VERSION_8 {
            return Err(OlahError::Version(version));
        }
        let geometry = validate(version, block_size, file_size)?;
        if mask_bits == 0 || mask_bits > MAX_MASK_BITS {
            return Err(OlahError::Invalid(format!(
                "bitmap of {mask_bits} bits (expected 1..={MAX_MASK_BITS}, usually {DEFAULT_MASK_BITS})"
            )));
        }
        if geometry.block_count() > mask_bits {
            return Err(OlahError::Invalid(format!(
                "{} blocks of {block_size} bytes do not fit a bitmap of {mask_bits} bits",
                geometry.block_count()
            )));
        }
        let bitmap_len = mask_bits.div_ceil(8);
        let data_offset = FIXED_HEADER_LEN + bitmap_len;
        if file_len < data_offset {
            return Err(OlahError::TruncatedHeader {
                have: file_len,
                need: data_offset,
            });
        }
        let mut bitmap = vec![0u8; bitmap_len as usize];
        file.read_exact_at(&mut bitmap, FIXED_HEADER_LEN)
            .map_err(io_err("read bitmap"))?;
        Ok(V8File {
            file,
            geometry,
            bitmap,
            data_offset,
            file_len,
        })
    }

    /// Bit `block` is set and the file is long enough to hold the block's bytes.
    pub fn is_present(&self, block: u64) -> bool {
        if block >= self.geometry.block_count() {
            return false;
        }
        let bit = self.bitmap[(block / 8) as usize] & (1 << (block % 8)) != 0;
        let end = block * self.geometry.block_size + self.geometry.block_len(block);
        bit && self.data_offset + end <= self.file_len
    }

    /// Streams the whole content, in order, to `sink` in chunks of at most [`READ_CHUNK`].
    /// Fails on the first block that is not present.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        let mut buf = vec![0u8; READ_CHUNK.min(self.geometry.file_size as usize)];
        let mut pos = 0u64;
        while pos < self.geometry.file_size {
            let block = pos / self.geometry.block_size;
            if !self.is_present(block) {
                return Err(
                    if self.data_offset + self.geometry.file_size > self.file_len {
                        StreamError::Source(OlahError::Truncated {
                            block,
                            file_len: self.file_len,
                        })
                    } else {
                        StreamError::Source(OlahError::BadBlock {
                            block,
                            reason: "not present".into(),
                        })
                    },
                );
            }
            let block_end = block * self.geometry.block_size + self.geometry.block_len(block);
            let n = (block_end - pos).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], self.data_offset + pos)
                .map_err(io_err("read block data"))?;
            sink(&buf[..n]).map_err(StreamError::Sink)?;
            pos += n as u64;
        }
        Ok(())
    }
}

/// A version 9 cache directory.
#[derive(Debug)]
pub struct V9Dir {
    dir: PathBuf,
    geometry: Geometry,
    compression: u64,
}

impl V9Dir {
    /// Opens `dir/meta.bin` and validates it. `meta.bin` and the block files must be regular
    /// files (symlinks are refused).
    pub fn open(dir: &Path) -> Result<V9Dir, OlahError> {
        let bytes = sniff(&dir.join("meta.bin")).ok_or_else(|| {
            OlahError::Invalid("meta.bin is missing or not a regular file".into())
        })?;
        let (version, block_size, file_size, compression) = parse_fixed_header(&bytes)?;
        if version != VERSION_9 {
            return Err(OlahError::Version(version));
        }
        let geometry = validate(version, block_size, file_size)?;
        if geometry.block_count() > V9_MAX_BLOCKS {
            return Err(OlahError::Invalid(format!(
                "{} blocks exceed Olah's limit of {V9_MAX_BLOCKS}",
                geometry.block_count()
            )));
        }
        Ok(V9Dir {
            dir: dir.to_path_buf(),
            geometry,
            compression,
        })
    }

    fn block_path(&self, block: u64) -> PathBuf {
        self.dir
            .join("blocks")
            .join(format!("block_{block:0>8}.bin"))
    }

    /// The block file exists as a regular file.
    pub fn is_present(&self, block: u64) -> bool {
        block < self.geometry.block_count()
            && fs::symlink_metadata(self.block_path(block)).is_ok_and(|m| m.is_file())
    }

    /// Streams the whole content, in order, decompressing block by block.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        if !matches!(self.compression, 0 | 1) {
            return Err(OlahError::Compression(self.compression).into());
        }
        for block in 0..self.geometry.block_count() {
            let expected = self.geometry.block_len(block);
            if !self.is_present(block) {
                return Err(OlahError::BadBlock {
                    block,
                    reason: "block file missing".into(),
                }
                .into());
            }
            let file = File::open(self.block_path(block)).map_err(io_err("open block file"))?;
            let produced = if self.compression == 0 {
                copy_limited(file, expected, block, sink)?
            } else {
                gunzip_limited(file, expected, block, sink)?
            };
            if produced != expected {
                return Err(OlahError::BadBlock {
                    block,
                    reason: format!("holds {produced} bytes, the block is {expected}"),
                }
                .into());
            }
        }
        Ok(())
    }
}

/// Streams at most `limit` bytes of `reader` to `sink`; more is an error.
fn copy_limited<E>(
    mut reader: impl Read,
    limit: u64,
    block: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, StreamError<E>> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io_err("read block file"))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        if total > limit {
            return Err(OlahError::BadBlock {
                block,
                reason: format!("holds more than the block's {limit} bytes"),
            }
            .into());
        }
        sink(&buf[..n]).map_err(StreamError::Sink)?;
    }
}

/// Decompresses the gzip stream `reader` to `sink`, refusing more than `limit` bytes.
fn gunzip_limited<E>(
    mut reader: impl Read,
    limit: u64,
    block: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, StreamError<E>> {
    let bad = |reason: String| OlahError::BadBlock { block, reason };
    let mut decoder = Algorithm::Gzip
        .decompressor(true)
        .ok_or_else(|| bad("no gzip decompressor available".into()))?;
    let mut buf = vec![0u8; INFLATE_CHUNK];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io_err("read block file"))?;
        let out = decoder
            .encode(&buf[..n], n == 0)
            .map_err(|e| bad(format!("gzip: {e}")))?;
        total += out.len() as u64;
        if total > limit {
            return Err(bad(format!("inflates to more than the block's {limit} bytes")).into());
        }
        if !out.is_empty() {
            sink(&out).map_err(StreamError::Sink)?;
        }
        if n == 0 {
            return Ok(total);
        }
    }
}

fn validate(version: u64, block_size: u64, file_size: u64) -> Result<Geometry, OlahError> {
    if block_size == 0 {
        return Err(OlahError::Invalid("block size 0".into()));
    }
    if block_size > 1 << 40 {
        return Err(OlahError::Invalid(format!(
            "implausible block size {block_size}"
        )));
    }
    if file_size > i64::MAX as u64 {
        return Err(OlahError::Invalid(format!(
            "implausible file size {file_size}"
        )));
    }
    Ok(Geometry {
        version,
        block_size,
        file_size,
    })
}

/// Any readable cache entry.
#[derive(Debug)]
pub enum OlahSource {
    V8(V8File),
    V9(V9Dir),
    /// A zero-length file: no header at all. DingoSpeed creates `blobs/{etag}` empty before the
    /// first byte arrives, so this is either an empty file or a download that never started;
    /// only the content hash can tell (the importer accepts it only for the hash of empty
    /// content).
    Empty,
}

impl OlahSource {
    /// Opens the cache entry at `path`: a v9 directory, a zero-length file, or a v8 file.
    pub fn open(path: &Path) -> Result<OlahSource, OlahError> {
        let meta = fs::metadata(path).map_err(io_err("stat"))?;
        if meta.is_dir() {
            return V9Dir::open(path).map(OlahSource::V9);
        }
        if meta.len() == 0 {
            return Ok(OlahSource::Empty);
        }
        V8File::open(path).map(OlahSource::V8)
    }

    pub fn size(&self) -> u64 {
        match self {
            OlahSource::V8(f) => f.geometry.file_size,
            OlahSource::V9(d) => d.geometry.file_size,
            OlahSource::Empty => 0,
        }
    }

    /// `"v8"`, `"v9"` or `"empty"`, for reports.
    pub fn describe(&self) -> String {
        match self {
            OlahSource::V8(f) => format!("OLAH v8, {} B blocks", f.geometry.block_size),
            OlahSource::V9(d) => format!(
                "OLAH v9, {} B blocks, compression {}",
                d.geometry.block_size, d.compression
            ),
            OlahSource::Empty => "empty file".into(),
        }
    }

    /// `(present, total)` blocks.
    pub fn presence(&self) -> (u64, u64) {
        let count = |n: u64, f: &dyn Fn(u64) -> bool| (0..n).filter(|&b| f(b)).count() as u64;
        match self {
            OlahSource::V8(f) => {
                let n = f.geometry.block_count();
                (count(n, &|b| f.is_present(b)), n)
            }
            OlahSource::V9(d) => {
                let n = d.geometry.block_count();
                (count(n, &|b| d.is_present(b)), n)
            }
            OlahSource::Empty => (0, 0),
        }
    }

    pub fn is_complete(&self) -> bool {
        let (present, total) = self.presence();
        present == total
    }

    /// Streams the whole content in order.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        match self {
            OlahSource::V8(f) => f.stream(sink),
            OlahSource::V9(d) => d.stream(sink),
            OlahSource::Empty => Ok(()),
        }
    }
}
