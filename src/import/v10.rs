//! Olah cache format version 10, written by Olah 0.5.x (`olah/cache/olah_cache.py`,
//! `CURRENT_OLAH_CACHE_VERSION = 10`; read from the 0.5.4 release).
//!
//! A cache entry is a directory (`files/{type}/{repo}/resolve/{commit}/{path}/`):
//!
//! ```text
//! meta.bin      header, all integers little-endian:
//!               magic "OLAH" | version u16 = 10 | flags u16 (bit 0: has etag) |
//!               header_size u32 (the whole header) | block_size u64 (default 64 MiB) |
//!               file_size u64 | compression u8 (0 none, 1 gzip, 2 lzma) |
//!               chunk_size u32 (default 1 MiB; divides block_size) | etag_len u16 |
//!               reserved [8] | etag [etag_len] (the upstream ETag, quoted) |
//!               extension_len u32 | extension | crc32 u32 (zlib CRC-32 of all before it)
//! chunks.crc    u32 CRC-32 of every chunk of the content: block b's chunks at slot
//!               b * (block_size / chunk_size); written (fsync) before the block appears
//! blocks/block_{b:08}.bin
//!               one file per present block, published by rename; a block is present when
//!               its file exists and is not empty. Compression 0: the block's bytes (the last
//!               block shorter). Otherwise "OLBK" | count u32 | count × u32 compressed
//!               lengths | filter u8 | one independently compressed stream per chunk (raw
//!               deflate for gzip, raw LZMA2 for lzma)
//! meta.lock, blocks/*.dl.lock, *.tmp   locks and temp files (ignored)
//! ```
//!
//! Every chunk is checked against `chunks.crc` as it is read; a chunk that fails, a block
//! file that cannot be read and a block that is not there are gaps. lzma-compressed entries
//! (`cache-compression = "lzma"`) are not supported: their blocks are reported as gaps.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::read::DeflateDecoder;

use super::source::{
    geometry, io_err, olah_block_path, olah_block_present, Gaps, Geometry, Missing, Piece,
    SourceError, StreamError,
};
use crate::hf;

/// The format version this module reads.
pub const VERSION: u16 = 10;
/// Length of the fixed prefix (`<4sHHIQQBIH8s`).
const PREFIX_LEN: usize = 43;
/// Largest `meta.bin` read (the etag is at most 64 KiB).
const MAX_META: u64 = 1 << 20;
/// Olah's `MAX_BLOCK_NUM`.
const MAX_BLOCKS: u64 = 131_072;
/// Largest chunk accepted (one chunk is held in memory while its CRC is checked).
const MAX_CHUNK_SIZE: u64 = 64 << 20;

/// An Olah v10 cache directory.
#[derive(Debug)]
pub struct V10Dir {
    dir: PathBuf,
    geometry: Geometry,
    chunk_size: u64,
    compression: u8,
    etag: Option<String>,
}

/// The fields of a `meta.bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub block_size: u64,
    pub file_size: u64,
    pub compression: u8,
    pub chunk_size: u64,
    /// The etag as stored (usually quoted).
    pub etag: String,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Parses and validates a v10 `meta.bin` as Olah's `OlahCacheHeader.read` + `_validate` do.
pub fn parse_header(bytes: &[u8]) -> Result<Header, SourceError> {
    if bytes.len() < 4 || &bytes[..4] != b"OLAH" {
        return Err(SourceError::NotOlah);
    }
    if bytes.len() < PREFIX_LEN {
        return Err(SourceError::TruncatedHeader {
            have: bytes.len() as u64,
            need: PREFIX_LEN as u64,
        });
    }
    let version = le_u16(bytes, 4);
    if version != VERSION {
        return Err(SourceError::Version(u64::from(version)));
    }
    let header_size = le_u32(bytes, 8) as usize;
    if header_size < PREFIX_LEN + 8 {
        return Err(SourceError::Invalid(format!(
            "header size {header_size} is too small"
        )));
    }
    if bytes.len() < header_size {
        return Err(SourceError::TruncatedHeader {
            have: bytes.len() as u64,
            need: header_size as u64,
        });
    }
    let header = &bytes[..header_size];
    let stored_crc = le_u32(header, header_size - 4);
    let actual_crc = crc32fast::hash(&header[..header_size - 4]);
    if stored_crc != actual_crc {
        return Err(SourceError::Invalid(format!(
            "header CRC mismatch (stored {stored_crc:08x}, computed {actual_crc:08x})"
        )));
    }
    let block_size = le_u64(header, 12);
    let file_size = le_u64(header, 20);
    let compression = header[28];
    let chunk_size = u64::from(le_u32(header, 29));
    let etag_len = usize::from(le_u16(header, 33));
    let body = &header[PREFIX_LEN..header_size - 4];
    if body.len() < etag_len + 4 {
        return Err(SourceError::Invalid(
            "etag length exceeds the header".into(),
        ));
    }
    let extension_len = le_u32(body, etag_len) as usize;
    if extension_len > body.len() - etag_len - 4 {
        return Err(SourceError::Invalid(
            "extension length exceeds the header".into(),
        ));
    }
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(SourceError::Invalid(format!(
            "chunk size {chunk_size} (expected 1..={MAX_CHUNK_SIZE})"
        )));
    }
    if block_size == 0 || !block_size.is_multiple_of(chunk_size) {
        return Err(SourceError::Invalid(format!(
            "block size {block_size} is not a multiple of the chunk size {chunk_size}"
        )));
    }
    if compression > 2 {
        return Err(SourceError::Invalid(format!(
            "unknown compression {compression}"
        )));
    }
    let etag = String::from_utf8(body[..etag_len].to_vec())
        .map_err(|_| SourceError::Invalid("the etag is not UTF-8".into()))?;
    Ok(Header {
        block_size,
        file_size,
        compression,
        chunk_size,
        etag,
    })
}

impl V10Dir {
    /// Opens `dir/meta.bin` and validates it.
    pub fn open(dir: &Path) -> Result<V10Dir, SourceError> {
        let meta_path = dir.join("meta.bin");
        let meta = fs::symlink_metadata(&meta_path).map_err(io_err("stat meta.bin"))?;
        if !meta.is_file() || meta.len() > MAX_META {
            return Err(SourceError::Invalid(
                "meta.bin is not a regular file of a plausible size".into(),
            ));
        }
        let bytes = fs::read(&meta_path).map_err(io_err("read meta.bin"))?;
        let header = parse_header(&bytes)?;
        let geometry = geometry(header.block_size, header.file_size)?;
        if geometry.block_count() > MAX_BLOCKS {
            return Err(SourceError::Invalid(format!(
                "{} blocks exceed Olah's limit of {MAX_BLOCKS}",
                geometry.block_count()
            )));
        }
        if fs::symlink_metadata(dir.join("blocks")).is_ok_and(|m| !m.is_dir()) {
            return Err(SourceError::Invalid(
                "blocks is not a directory (symlinks are not followed)".into(),
            ));
        }
        let etag = hf::normalize_etag(&header.etag).to_ascii_lowercase();
        Ok(V10Dir {
            dir: dir.to_path_buf(),
            geometry,
            chunk_size: header.chunk_size,
            compression: header.compression,
            etag: (!etag.is_empty()).then_some(etag),
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The recorded etag, unquoted and lower-case.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    pub fn describe(&self) -> String {
        let compression = match self.compression {
            0 => "",
            1 => ", gzip",
            _ => ", lzma",
        };
        format!(
            "Olah v10, {} blocks of {} B{compression}",
            self.geometry.block_count(),
            self.geometry.block_size
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

    /// `(offset within the block, length)` of each chunk of `block`.
    fn chunks(&self, block: u64) -> impl Iterator<Item = (u64, u64)> {
        let len = self.geometry.block_len(block);
        let size = self.chunk_size;
        (0..len.div_ceil(size)).map(move |i| (i * size, size.min(len - i * size)))
    }

    /// The CRCs of `block`'s chunks from `chunks.crc`.
    fn read_crcs(&self, block: u64) -> Result<Vec<u32>, String> {
        let count = self.chunks(block).count();
        let per_block = self.geometry.block_size / self.chunk_size;
        let path = self.dir.join("chunks.crc");
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("chunks.crc: {e}"))?;
        if !meta.is_file() {
            return Err("chunks.crc is not a regular file".into());
        }
        let file = File::open(&path).map_err(|e| format!("chunks.crc: {e}"))?;
        let mut raw = vec![0u8; count * 4];
        file.read_exact_at(&mut raw, block * per_block * 4)
            .map_err(|_| "chunks.crc does not hold its checksums".to_string())?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Streams the content block by block, each chunk checked against its CRC.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<Vec<Missing>, StreamError<E>> {
        let mut gaps = Gaps::default();
        let mut buf = Vec::new();
        for block in 0..self.geometry.block_count() {
            let range = self.geometry.block_range(block);
            if !self.is_present(block) {
                gaps.push(block, range, "not downloaded", sink)?;
                continue;
            }
            match self.read_crcs(block) {
                Ok(crcs) => self.stream_block(block, &crcs, &mut buf, &mut gaps, sink)?,
                Err(reason) => gaps.push(block, range, &reason, sink)?,
            }
        }
        Ok(gaps.done)
    }

    fn stream_block<E>(
        &self,
        block: u64,
        crcs: &[u32],
        buf: &mut Vec<u8>,
        gaps: &mut Gaps,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        let range = self.geometry.block_range(block);
        let reader = match BlockReader::open(&self.block_path(block), self, block) {
            Ok(reader) => reader,
            Err(reason) => return gaps.push(block, range, &reason, sink),
        };
        for (i, (offset, len)) in self.chunks(block).enumerate() {
            let at = range.start + offset;
            let chunk = at..at + len;
            match reader.read_chunk(i, offset, len, buf) {
                Err(reason) => gaps.push(block, chunk, &format!("chunk {i}: {reason}"), sink)?,
                Ok(()) if crc32fast::hash(buf) != crcs[i] => {
                    gaps.push(block, chunk, &format!("chunk {i} fails its CRC32"), sink)?
                }
                Ok(()) => sink(Piece::Data(buf)).map_err(StreamError::Sink)?,
            }
        }
        Ok(())
    }
}

/// Reads the chunks of one block file.
struct BlockReader {
    file: File,
    /// Compressed: where each chunk's stream starts and how long it is.
    streams: Option<Vec<(u64, u64)>>,
}

impl BlockReader {
    fn open(path: &Path, dir: &V10Dir, block: u64) -> Result<BlockReader, String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat: {e}"))?
            .len();
        match dir.compression {
            0 => {
                let expected = dir.geometry.block_len(block);
                if len != expected {
                    return Err(format!(
                        "the block file holds {len} bytes, expected {expected}"
                    ));
                }
                Ok(BlockReader {
                    file,
                    streams: None,
                })
            }
            1 => {
                let streams = read_index(&file, len, dir.chunks(block).count())?;
                Ok(BlockReader {
                    file,
                    streams: Some(streams),
                })
            }
            _ => Err("lzma-compressed (Olah cache-compression = \"lzma\"): not supported".into()),
        }
    }

    /// Reads chunk `index` (`len` content bytes at `offset` in the block) into `buf`.
    fn read_chunk(
        &self,
        index: usize,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), String> {
        buf.clear();
        match &self.streams {
            None => {
                buf.resize(len as usize, 0);
                self.file
                    .read_exact_at(buf, offset)
                    .map_err(|e| format!("cannot read: {e}"))
            }
            Some(streams) => {
                let (at, compressed_len) = streams[index];
                let mut compressed = vec![0u8; compressed_len as usize];
                self.file
                    .read_exact_at(&mut compressed, at)
                    .map_err(|e| format!("cannot read: {e}"))?;
                DeflateDecoder::new(compressed.as_slice())
                    .take(len + 1)
                    .read_to_end(buf)
                    .map_err(|e| format!("cannot inflate: {e}"))?;
                if buf.len() as u64 != len {
                    return Err(format!("inflates to {} bytes, expected {len}", buf.len()));
                }
                Ok(())
            }
        }
    }
}

/// Parses the `OLBK` index of a compressed block file of `len` bytes holding `chunks` streams.
fn read_index(file: &File, len: u64, chunks: usize) -> Result<Vec<(u64, u64)>, String> {
    let index_len = 8 + chunks as u64 * 4 + 1;
    if len < index_len {
        return Err("compressed block file shorter than its index".into());
    }
    let mut index = vec![0u8; index_len as usize];
    file.read_exact_at(&mut index, 0)
        .map_err(|e| format!("cannot read: {e}"))?;
    if &index[..4] != b"OLBK" {
        return Err("compressed block file without its OLBK header".into());
    }
    let count = le_u32(&index, 4) as usize;
    if count != chunks {
        return Err(format!(
            "index lists {count} chunks, the block has {chunks}"
        ));
    }
    let mut at = index_len;
    let mut streams = Vec::with_capacity(chunks);
    for i in 0..chunks {
        let n = u64::from(le_u32(&index, 8 + i * 4));
        streams.push((at, n));
        at += n;
    }
    if at != len {
        return Err(format!(
            "index covers {at} bytes, the block file holds {len}"
        ));
    }
    Ok(streams)
}
