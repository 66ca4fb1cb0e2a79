//! The Olah cache formats without checksums: version 8 (DingoSpeed; Olah 0.1–0.3) and
//! version 9 (Olah 0.4).
//!
//! **Version 8** (DingoSpeed `internal/downloader/file_header.go`, `file.go`, `bitset.go`;
//! Olah 0.3 `olah/cache/olah_cache.py`): one file, all integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `OLAH` |
//! | 4 | 8 | version = 8 |
//! | 12 | 8 | block size (DingoSpeed `download.blockSize`, default 8 MiB) |
//! | 20 | 8 | file size |
//! | 28 | 8 | bitmap size in bits (1,048,576) |
//! | 36 | ceil(bits/8) | presence bitmap, bit *i* = `bits[i/8] & (1 << (i%8))` |
//! | 36 + ceil(bits/8) | file size | block *i* at `header + i*block_size`; the last block truncated |
//!
//! The file is pre-sized (sparse); a set bit is the writer's only claim that a block is
//! there, written without `fsync` after the data.
//!
//! **Version 9** (Olah 0.4 `olah/cache/olah_cache.py`): a directory holding `meta.bin`
//! (`<4sQQQQ`: magic, version 9, block size (default 50 MiB), file size, compression) and
//! `blocks/block_{index:08}.bin`, one file per present block holding the block's bytes (the
//! last block truncated), whole-block compressed with algorithm 0 (none), 1 (gzip, Olah 0.4's
//! default) or 2 (lzma, not supported here).
//!
//! Neither format checks anything: the importer accepts their bytes only when the whole
//! file matches its content hash.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::source::{
    geometry, io_err, olah_block_path, olah_block_present, sniff, Gaps, Geometry, Missing, Piece,
    SourceError, StreamError,
};

/// Length of the fixed part of both headers (`<4sQQQQ`).
pub const FIXED_HEADER_LEN: u64 = 36;
/// Olah's and DingoSpeed's v8 bitmap size (`DEFAULT_BLOCK_MASK_MAX`), in bits.
pub const DEFAULT_MASK_BITS: u64 = 1 << 20;
/// Largest v8 bitmap accepted, in bits (8 times what either writer uses).
const MAX_MASK_BITS: u64 = 1 << 26;
/// Olah 0.4's `MAX_BLOCK_NUM`.
const V9_MAX_BLOCKS: u64 = 8192;
/// Bytes read at a time.
const READ_CHUNK: usize = 1 << 20;

/// `(version, block_size, file_size, fourth)` of a `<4sQQQQ` header; `fourth` is the bitmap
/// size (v8) or the compression (v9).
fn fixed_header(bytes: &[u8]) -> Result<(u64, u64, u64, u64), SourceError> {
    if bytes.len() < 4 || &bytes[..4] != b"OLAH" {
        return Err(SourceError::NotOlah);
    }
    if (bytes.len() as u64) < FIXED_HEADER_LEN {
        return Err(SourceError::TruncatedHeader {
            have: bytes.len() as u64,
            need: FIXED_HEADER_LEN,
        });
    }
    let at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Ok((at(4), at(12), at(20), at(28)))
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
    /// Opens and validates a v8 file: magic, version, a sane bitmap that covers every block,
    /// and a header that fits in the file.
    pub fn open(path: &Path) -> Result<V8File, SourceError> {
        let file = File::open(path).map_err(io_err("open"))?;
        let file_len = file.metadata().map_err(io_err("stat"))?.len();
        let mut fixed = [0u8; FIXED_HEADER_LEN as usize];
        let have = (FIXED_HEADER_LEN as usize).min(file_len as usize);
        file.read_exact_at(&mut fixed[..have], 0)
            .map_err(io_err("read header"))?;
        let (version, block_size, file_size, mask_bits) = fixed_header(&fixed[..have])?;
        if version != 8 {
            return Err(SourceError::Version(version));
        }
        let geometry = geometry(block_size, file_size)?;
        if mask_bits == 0 || mask_bits > MAX_MASK_BITS {
            return Err(SourceError::Invalid(format!(
                "bitmap of {mask_bits} bits (expected 1..={MAX_MASK_BITS}, usually {DEFAULT_MASK_BITS})"
            )));
        }
        if geometry.block_count() > mask_bits {
            return Err(SourceError::Invalid(format!(
                "{} blocks of {block_size} bytes do not fit a bitmap of {mask_bits} bits",
                geometry.block_count()
            )));
        }
        let data_offset = FIXED_HEADER_LEN + mask_bits.div_ceil(8);
        if file_len < data_offset {
            return Err(SourceError::TruncatedHeader {
                have: file_len,
                need: data_offset,
            });
        }
        let mut bitmap = vec![0u8; mask_bits.div_ceil(8) as usize];
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

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn describe(&self) -> String {
        format!(
            "OLAH v8 file, {} blocks of {} B",
            self.geometry.block_count(),
            self.geometry.block_size
        )
    }

    fn bit(&self, block: u64) -> bool {
        block < self.geometry.block_count()
            && self.bitmap[(block / 8) as usize] & (1 << (block % 8)) != 0
    }

    /// The block's bit is set and the file is long enough to hold its bytes.
    pub fn is_present(&self, block: u64) -> bool {
        self.bit(block) && self.data_offset + self.geometry.block_range(block).end <= self.file_len
    }

    pub fn presence(&self) -> (u64, u64) {
        self.geometry.presence(|b| self.is_present(b))
    }

    /// Streams the content in order; blocks not present are gaps.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<Vec<Missing>, StreamError<E>> {
        let mut gaps = Gaps::default();
        let mut buf = vec![0u8; READ_CHUNK.min(self.geometry.file_size as usize)];
        for block in 0..self.geometry.block_count() {
            let range = self.geometry.block_range(block);
            if !self.is_present(block) {
                let reason = if self.bit(block) {
                    "marked present, but the file ends before it"
                } else {
                    "not downloaded"
                };
                gaps.push(block, range, reason, sink)?;
                continue;
            }
            let mut pos = range.start;
            while pos < range.end {
                let n = (range.end - pos).min(buf.len() as u64) as usize;
                self.file
                    .read_exact_at(&mut buf[..n], self.data_offset + pos)
                    .map_err(io_err("read block data"))?;
                sink(Piece::Data(&buf[..n])).map_err(StreamError::Sink)?;
                pos += n as u64;
            }
        }
        Ok(gaps.done)
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
    /// Opens `dir/meta.bin` and validates it.
    pub fn open(dir: &Path) -> Result<V9Dir, SourceError> {
        let bytes = sniff(&dir.join("meta.bin")).ok_or_else(|| {
            SourceError::Invalid("meta.bin is missing or not a regular file".into())
        })?;
        let (version, block_size, file_size, compression) = fixed_header(&bytes)?;
        if version != 9 {
            return Err(SourceError::Version(version));
        }
        let geometry = geometry(block_size, file_size)?;
        if fs::symlink_metadata(dir.join("blocks")).is_ok_and(|m| !m.is_dir()) {
            return Err(SourceError::Invalid(
                "blocks is not a directory (symlinks are not followed)".into(),
            ));
        }
        if geometry.block_count() > V9_MAX_BLOCKS {
            return Err(SourceError::Invalid(format!(
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

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn describe(&self) -> String {
        format!(
            "Olah v9, {} blocks of {} B, compression {}",
            self.geometry.block_count(),
            self.geometry.block_size,
            self.compression
        )
    }

    fn block_path(&self, block: u64) -> PathBuf {
        olah_block_path(&self.dir, block)
    }

    /// Olah's `has_block` (see [`olah_block_present`]).
    pub fn is_present(&self, block: u64) -> bool {
        olah_block_present(&self.dir, &self.geometry, block)
    }

    pub fn presence(&self) -> (u64, u64) {
        self.geometry.presence(|b| self.is_present(b))
    }

    /// Streams the content in order, decompressing block by block; missing blocks are gaps.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<Vec<Missing>, StreamError<E>> {
        if !matches!(self.compression, 0 | 1) {
            return Err(SourceError::Compression(self.compression).into());
        }
        let mut gaps = Gaps::default();
        for block in 0..self.geometry.block_count() {
            let range = self.geometry.block_range(block);
            if !self.is_present(block) {
                gaps.push(block, range, "not downloaded", sink)?;
                continue;
            }
            let expected = range.end - range.start;
            let file = File::open(self.block_path(block)).map_err(io_err("open block file"))?;
            let produced = if self.compression == 0 {
                copy_limited(file, expected, sink)
            } else {
                copy_limited(GzDecoder::new(file), expected, sink)
            };
            let produced = produced.map_err(|e| match e {
                StreamError::Source(SourceError::Io { source, .. }) => {
                    StreamError::Source(SourceError::BadBlock {
                        block,
                        reason: source.to_string(),
                    })
                }
                other => other,
            })?;
            if produced != expected {
                return Err(SourceError::BadBlock {
                    block,
                    reason: format!("holds {produced} bytes, the block is {expected}"),
                }
                .into());
            }
        }
        Ok(gaps.done)
    }
}

/// Streams `reader` to `sink`, refusing more than `limit` bytes.
fn copy_limited<E>(
    mut reader: impl Read,
    limit: u64,
    sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
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
            return Err(SourceError::Io {
                op: "read block file",
                source: io::Error::other(format!("holds more than the block's {limit} bytes")),
            }
            .into());
        }
        sink(Piece::Data(&buf[..n])).map_err(StreamError::Sink)?;
    }
}
