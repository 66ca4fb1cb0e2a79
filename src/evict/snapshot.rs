//! The index on disk: a compact binary snapshot, checksummed, replaced atomically.
//!
//! ```text
//! "HCEVIDX1"                                   magic and version
//! str policy kind, u64 policy state
//! u32 repos, then each: str repo id
//! u64 blobs, then each:
//!   u8 id length, id (hex), u64 size, first_fill, last_read, hits, policy_key,
//!   u8 copies, then each: u16 root, u64 allocated
//!   u16 repos, then each: u32 repo index
//! u32 CRC32C of everything before
//! ```
//!
//! Integers are little-endian; `str` is a u16 length and UTF-8. A snapshot that fails any
//! check is rejected whole ([`SnapshotError::Corrupt`]); the index is then rebuilt from the
//! disk listing.

use std::io::Write;
use std::path::Path;

use super::Copy;
use crate::store::BlobId;

const MAGIC: &[u8; 8] = b"HCEVIDX1";

/// Why a snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot")]
    Missing,
    #[error("cannot read or write the snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt snapshot: {0}")]
    Corrupt(&'static str),
}

/// One blob as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SnapshotBlob {
    pub id: BlobId,
    pub size: u64,
    pub first_fill: u64,
    pub last_read: u64,
    pub hits: u64,
    pub policy_key: u64,
    pub copies: Vec<Copy>,
    pub repos: Vec<u32>,
}

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub policy: String,
    pub policy_state: u64,
    pub repos: Vec<String>,
    pub blobs: Vec<SnapshotBlob>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes a snapshot.
pub(super) fn encode<'a>(
    policy: &str,
    policy_state: u64,
    repos: &[Box<str>],
    blobs: impl ExactSizeIterator<Item = SnapshotBlob> + 'a,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + blobs.len() * 120);
    out.extend_from_slice(MAGIC);
    put_str(&mut out, policy);
    out.extend_from_slice(&policy_state.to_le_bytes());
    out.extend_from_slice(&(repos.len() as u32).to_le_bytes());
    for repo in repos {
        put_str(&mut out, repo);
    }
    out.extend_from_slice(&(blobs.len() as u64).to_le_bytes());
    for blob in blobs {
        let id = blob.id.as_str().as_bytes();
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        for n in [
            blob.size,
            blob.first_fill,
            blob.last_read,
            blob.hits,
            blob.policy_key,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let copies = &blob.copies[..blob.copies.len().min(u8::MAX as usize)];
        out.push(copies.len() as u8);
        for copy in copies {
            out.extend_from_slice(&copy.root.to_le_bytes());
            out.extend_from_slice(&copy.allocated.to_le_bytes());
        }
        let repos = &blob.repos[..blob.repos.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(repos.len() as u16).to_le_bytes());
        for repo in repos {
            out.extend_from_slice(&repo.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A bounds-checked reader over the snapshot bytes.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or(SnapshotError::Corrupt("truncated"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| SnapshotError::Corrupt("bad text"))
    }

    /// A count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, n: u64, min_size: usize) -> Result<usize, SnapshotError> {
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(SnapshotError::Corrupt("count larger than the file"));
        }
        Ok(n as usize)
    }
}

/// Decodes a snapshot, checking the magic, the checksum and every length.
pub(super) fn decode(data: &[u8]) -> Result<Snapshot, SnapshotError> {
    if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::Corrupt("not an eviction index snapshot"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(SnapshotError::Corrupt("checksum mismatch"));
    }
    let mut r = Reader {
        data: body,
        pos: MAGIC.len(),
    };
    let policy = r.str()?.to_string();
    let policy_state = r.u64()?;
    let repo_count = r.u32()?;
    let repo_count = r.count(u64::from(repo_count), 2)?;
    let repos = (0..repo_count)
        .map(|_| r.str().map(str::to_string))
        .collect::<Result<Vec<_>, _>>()?;
    let blob_count = r.u64()?;
    let blob_count = r.count(blob_count, 1 + 40 + 40 + 1 + 2)?;
    let mut blobs = Vec::with_capacity(blob_count);
    for _ in 0..blob_count {
        let id_len = r.u8()? as usize;
        let id = std::str::from_utf8(r.take(id_len)?)
            .ok()
            .and_then(|s| BlobId::parse(s).ok())
            .ok_or(SnapshotError::Corrupt("bad blob id"))?;
        let mut numbers = [0u64; 5];
        for n in &mut numbers {
            *n = r.u64()?;
        }
        let copy_count = r.u8()?;
        let copies = (0..copy_count)
            .map(|_| {
                Ok(Copy {
                    root: r.u16()?,
                    allocated: r.u64()?,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let repo_refs = r.u16()?;
        let refs = (0..repo_refs)
            .map(|_| r.u32())
            .collect::<Result<Vec<_>, _>>()?;
        if refs.iter().any(|&i| i as usize >= repos.len()) {
            return Err(SnapshotError::Corrupt("repo index out of range"));
        }
        let [size, first_fill, last_read, hits, policy_key] = numbers;
        blobs.push(SnapshotBlob {
            id,
            size,
            first_fill,
            last_read,
            hits,
            policy_key,
            copies,
            repos: refs,
        });
    }
    if r.pos != body.len() {
        return Err(SnapshotError::Corrupt("trailing bytes"));
    }
    Ok(Snapshot {
        policy,
        policy_state,
        repos,
        blobs,
    })
}

/// Reads and decodes the snapshot at `path`.
pub(super) fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotError::Missing),
        Err(e) => return Err(e.into()),
    };
    decode(&data)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed,
/// renamed over `path`.
pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(SnapshotError::Io)
}
