//! Copying one cache entry into a hubcache blob, re-cut to the blob's block size.
//!
//! Bytes are written into the blob as they stream in, but a block becomes present (is
//! committed) only later, by the caller: all of them when the whole content matched its id,
//! or, for a partial entry whose format checks every chunk, those whose bytes all passed
//! their checks. A hubcache block that overlaps a gap is never committed.

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::source::{CacheSource, Missing, Piece, SourceError, StreamError};
use crate::store::{BlobFile, BlobId, BlockChecksummer, StoreError};

/// The result of streaming one source into a blob.
#[derive(Debug)]
pub struct Copied {
    /// Blocks written but not committed, with their page checksums: every block not already
    /// present whose bytes all came from the source (none overlaps a gap).
    pub blocks: Vec<(u64, Vec<u32>)>,
    /// Content bytes in `blocks`.
    pub bytes: u64,
    /// Lower-case hex of the content hash (of the id's kind); `None` when there were gaps.
    pub hash: Option<String>,
    /// What the source could not provide.
    pub gaps: Vec<Missing>,
}

/// Hashes content the way its blob id was made: sha256 for a 64-digit id, git's blob sha1
/// (`sha1("blob {size}\0" + content)`) for a 40-digit one.
pub enum ContentHasher {
    Sha256(Sha256),
    Sha1(Sha1),
}

impl ContentHasher {
    pub fn new(id: &BlobId, size: u64) -> Self {
        if id.is_sha256() {
            ContentHasher::Sha256(Sha256::new())
        } else {
            let mut h = Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            ContentHasher::Sha1(h)
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Sha256(h) => h.update(data),
            ContentHasher::Sha1(h) => h.update(data),
        }
    }

    /// Lower-case hex of the hash.
    pub fn finish(self) -> String {
        match self {
            ContentHasher::Sha256(h) => hex::encode(h.finalize()),
            ContentHasher::Sha1(h) => hex::encode(h.finalize()),
        }
    }
}

/// Where the copy is in the blob.
struct Cursor<'a> {
    file: &'a BlobFile,
    pos: u64,
    block: u64,
    /// Checksummer of the current block while it is being written (`None`: already present,
    /// or spoilt by a gap).
    current: Option<BlockChecksummer>,
    written: Vec<(u64, Vec<u32>)>,
    bytes: u64,
}

impl<'a> Cursor<'a> {
    fn new(file: &'a BlobFile) -> Result<Self, StoreError> {
        let mut cursor = Cursor {
            file,
            pos: 0,
            block: 0,
            current: None,
            written: Vec::new(),
            bytes: 0,
        };
        cursor.begin_block()?;
        Ok(cursor)
    }

    fn begin_block(&mut self) -> Result<(), StoreError> {
        self.current = if self.block < self.file.block_count() && !self.file.is_present(self.block)
        {
            Some(self.file.checksummer(self.block)?)
        } else {
            None
        };
        Ok(())
    }

    /// The end of the current block, or an error past the end of the blob.
    fn block_end(&self, len: u64) -> Result<u64, StoreError> {
        if self.block >= self.file.block_count() {
            return Err(StoreError::OutOfRange {
                path: self.file.path().to_path_buf(),
                op: "import",
                offset: self.pos,
                len,
                size: self.file.size(),
            });
        }
        Ok(self.file.block_span(self.block).end)
    }

    /// Advances by `take` bytes (within the current block), finishing the block at its end.
    fn advance(&mut self, take: u64, end: u64) -> Result<(), StoreError> {
        self.pos += take;
        if self.pos == end {
            if let Some(sum) = self.current.take() {
                let span = self.file.block_span(self.block);
                self.written.push((self.block, sum.finish()?));
                self.bytes += span.end - span.start;
            }
            self.block += 1;
            self.begin_block()?;
        }
        Ok(())
    }

    fn data(&mut self, mut rest: &[u8]) -> Result<(), StoreError> {
        while !rest.is_empty() {
            let end = self.block_end(rest.len() as u64)?;
            let take = ((end - self.pos) as usize).min(rest.len());
            let (part, tail) = rest.split_at(take);
            if let Some(sum) = self.current.as_mut() {
                self.file.write_data(self.pos, part)?;
                sum.update(part);
            }
            rest = tail;
            self.advance(take as u64, end)?;
        }
        Ok(())
    }

    fn gap(&mut self, mut len: u64) -> Result<(), StoreError> {
        while len > 0 {
            let end = self.block_end(len)?;
            let take = (end - self.pos).min(len);
            self.current = None;
            len -= take;
            self.advance(take, end)?;
        }
        Ok(())
    }
}

/// Streams `src` into `file` (created for `id` with the source's size): writes every block
/// not already present that the source covers completely, and hashes the content.
pub fn copy_into(
    file: &BlobFile,
    id: &BlobId,
    src: &CacheSource,
) -> Result<Copied, StreamError<StoreError>> {
    let size = file.size();
    let mut hasher = Some(ContentHasher::new(id, size));
    let mut cursor = Cursor::new(file).map_err(StreamError::Sink)?;
    let mut sink = |piece: Piece<'_>| -> Result<(), StoreError> {
        match piece {
            Piece::Data(bytes) => {
                if let Some(h) = hasher.as_mut() {
                    h.update(bytes);
                }
                cursor.data(bytes)
            }
            Piece::Gap { len } => {
                hasher = None;
                cursor.gap(len)
            }
        }
    };
    let gaps = src.stream(&mut sink)?;
    if cursor.pos != size {
        return Err(StreamError::Source(SourceError::Invalid(format!(
            "streamed {} bytes of {size}",
            cursor.pos
        ))));
    }
    Ok(Copied {
        blocks: cursor.written,
        bytes: cursor.bytes,
        hash: hasher.map(ContentHasher::finish),
        gaps,
    })
}
