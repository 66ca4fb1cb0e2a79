//! A plain file holding exactly a file's content: a blob of the huggingface_hub cache
//! (`models--org--name/blobs/{etag}`). It has no checksums of its own, so only the whole
//! content's hash can check it (a partial copy is never imported).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::source::{io_err, Missing, Piece, SourceError, StreamError};

/// Bytes read at a time.
const READ_CHUNK: usize = 1 << 20;

#[derive(Debug)]
pub struct PlainFile {
    file: File,
    size: u64,
}

impl PlainFile {
    /// Opens `path` without following a symlink in its last component (the caller checked
    /// that it is a regular file inside the import directory; a symlink swapped in since is
    /// refused, not followed).
    pub fn open(path: &Path) -> Result<PlainFile, SourceError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err("open"))?;
        let meta = file.metadata().map_err(io_err("stat"))?;
        if !meta.is_file() {
            return Err(SourceError::Invalid("not a regular file".into()));
        }
        Ok(PlainFile {
            file,
            size: meta.len(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn describe(&self) -> String {
        format!("plain file of {} B", self.size)
    }

    /// Streams the whole content; a file that shrinks meanwhile is an error.
    pub fn stream<E>(
        &self,
        sink: &mut dyn FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<Vec<Missing>, StreamError<E>> {
        let mut buf = vec![0u8; READ_CHUNK.min(self.size as usize)];
        let mut pos = 0u64;
        while pos < self.size {
            let n = (self.size - pos).min(buf.len() as u64) as usize;
            let got = self
                .file
                .read_at(&mut buf[..n], pos)
                .map_err(io_err("read"))?;
            if got == 0 {
                return Err(StreamError::Source(SourceError::Io {
                    op: "read",
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended at {pos} of {} bytes", self.size),
                    ),
                }));
            }
            sink(Piece::Data(&buf[..got])).map_err(StreamError::Sink)?;
            pos += got as u64;
        }
        Ok(Vec::new())
    }
}
