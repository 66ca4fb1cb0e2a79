//! Cold downloads with `sendfile(2)`: the body of a file this process is filling (or filled)
//! into a blob file it created and has written alone since (custody, `store::custody`) is
//! sent by the kernel from that file as the blocks arrive, instead of being read into a
//! buffer and written to the socket. Bytes the fill has not written itself (a file opened
//! from disk, an uncached stream when the cache is full, a file someone else changed) are
//! read and written the normal way on the same socket.
//!
//! As for warm downloads (the module above), the range's last page is held back: once the
//! client acknowledged everything the kernel sent, each file it was sent from must still be
//! in custody (so the kernel sent the bytes the fill wrote), or what was sent must still
//! match its page checksums; only then is the last page read (as any read: in custody, or
//! checked) and sent. Otherwise the response is cut short.

use std::ops::Range;

use pingora::Result;

use super::socket::DirectSocket;
use super::{fetch_error, socket_error, CHECKED_PIECE, PIECE};
use crate::fetch::{BlobReader, OwnSent, Piece};
use crate::store::BlobId;

/// Send `by_kernel` as it becomes available (runs of the fill's own file by `sendfile`, the
/// rest written), then `last_page` read once the kernel's part is confirmed.
/// `sent` counts body bytes written.
pub(super) async fn send_body(
    id: &BlobId,
    reader: &mut BlobReader,
    socket: &DirectSocket,
    by_kernel: Range<u64>,
    last_page: Range<u64>,
    sent: &mut u64,
) -> Result<()> {
    reader
        .seek(by_kernel.start, Some(by_kernel.end))
        .map_err(fetch_error)?;
    let mut own = OwnSent::default();
    while let Some(piece) = reader.next_piece(PIECE).await.map_err(fetch_error)? {
        match piece {
            Piece::Own {
                file,
                offset,
                len,
                invalidations,
            } => {
                own.add(&file, offset..offset + len, invalidations);
                let mut piece_sent = 0;
                let result = socket
                    .send_file(
                        file.raw_fd(),
                        file.file_offset(offset),
                        len,
                        &mut piece_sent,
                    )
                    .await;
                *sent += piece_sent;
                result.map_err(|e| socket_error("sendfile to the client", e))?;
            }
            Piece::Bytes(bytes) => {
                socket
                    .write_all(&bytes)
                    .await
                    .map_err(|e| socket_error("writing to the client", e))?;
                *sent += bytes.len() as u64;
            }
        }
    }
    socket
        .drained()
        .await
        .map_err(|e| socket_error("waiting for the client", e))?;
    own.confirm(id).await.map_err(fetch_error)?;
    reader
        .seek(last_page.start, Some(last_page.end))
        .map_err(fetch_error)?;
    while let Some(bytes) = reader
        .next(CHECKED_PIECE as usize)
        .await
        .map_err(fetch_error)?
    {
        socket
            .write_all(&bytes)
            .await
            .map_err(|e| socket_error("writing to the client", e))?;
        *sent += bytes.len() as u64;
    }
    Ok(())
}
