//! Writing to the client's socket directly, beside Pingora: `sendfile(2)` from a blob file,
//! plain writes, and waiting until the client acknowledged everything sent.
//!
//! The socket is a duplicate of the connection's descriptor (same open file, so it is
//! non-blocking like the original), registered with tokio for writability. Every wait is
//! bounded by the idle timeout: no progress for that long fails with `TimedOut`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

/// Bytes one `sendfile` call is asked for at most (the kernel's limit is about 2 GiB).
const MAX_PER_CALL: u64 = 1 << 30;

/// How often the unacknowledged bytes are looked at while waiting for them to drain.
const DRAIN_POLL_MAX: Duration = Duration::from_millis(20);

pub(super) struct DirectSocket {
    fd: AsyncFd<OwnedFd>,
    idle: Duration,
}

fn timed_out(what: &str, idle: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: no progress for {}s", idle.as_secs_f64()),
    )
}

impl DirectSocket {
    /// A writer on (a duplicate of) `socket`, which must stay open while this lives.
    pub(super) fn new(socket: RawFd, idle: Duration) -> io::Result<Self> {
        // SAFETY: the caller's session owns `socket` and keeps it open for the whole request;
        // it is only borrowed here to be duplicated (the duplicate is owned and closed by us).
        let borrowed = unsafe { BorrowedFd::borrow_raw(socket) };
        let owned = borrowed.try_clone_to_owned()?;
        // SAFETY: `owned` is a valid descriptor this `AsyncFd` owns until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::WRITABLE)? };
        Ok(Self { fd, idle })
    }

    async fn writable(&self, what: &str) -> io::Result<AsyncFdReadyGuard<'_, OwnedFd>> {
        match tokio::time::timeout(self.idle, self.fd.writable()).await {
            Ok(ready) => ready,
            Err(_) => Err(timed_out(what, self.idle)),
        }
    }

    /// Send exactly `len` bytes of `file` from file offset `offset`, adding what was sent to
    /// `sent` as it goes (so a failure still says how much the client got).
    pub(super) async fn send_file(
        &self,
        file: RawFd,
        offset: u64,
        len: u64,
        sent: &mut u64,
    ) -> io::Result<()> {
        let mut offset = offset;
        let mut left = len;
        while left > 0 {
            let mut ready = self.writable("sendfile").await?;
            let count = left.min(MAX_PER_CALL);
            match ready.try_io(|socket| send_once(socket.as_raw_fd(), file, &mut offset, count)) {
                Ok(Ok(0)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob file ended early (truncated underneath)",
                    ))
                }
                Ok(Ok(n)) => {
                    left -= n;
                    *sent += n;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Write all of `buf`.
    pub(super) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut ready = self.writable("write").await?;
            match ready.try_io(|socket| write_once(socket.as_raw_fd(), buf)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Wait until the client acknowledged every byte written so far (nothing left in the
    /// socket's send queue): bytes `sendfile` queued may refer to the file's pages until then.
    pub(super) async fn drained(&self) -> io::Result<()> {
        let mut left = unacknowledged(self.fd.as_raw_fd())?;
        let mut progress_at = Instant::now();
        let mut pause = Duration::from_micros(200);
        while left > 0 {
            if progress_at.elapsed() >= self.idle {
                return Err(timed_out(
                    "waiting for the client's acknowledgements",
                    self.idle,
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(DRAIN_POLL_MAX);
            let now = unacknowledged(self.fd.as_raw_fd())?;
            if now < left {
                progress_at = Instant::now();
            }
            left = now;
        }
        Ok(())
    }
}

fn send_once(socket: RawFd, file: RawFd, offset: &mut u64, count: u64) -> io::Result<u64> {
    let mut off = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    // SAFETY: both descriptors are open (owned by the caller for the call's duration), `off`
    // is a valid off_t the kernel updates, and `count` is bounded.
    let n = unsafe { libc::sendfile(socket, file, &mut off, count as usize) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(n as u64)
}

fn write_once(socket: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid slice for its length; the descriptor is open.
    let n = unsafe { libc::write(socket, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Bytes in the socket's send queue: not yet sent, or sent and not yet acknowledged.
fn unacknowledged(socket: RawFd) -> io::Result<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer.
    let rc = unsafe { libc::ioctl(socket, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(queued.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;

    #[tokio::test]
    async fn sendfile_write_and_drain_deliver_the_exact_bytes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let socket = DirectSocket::new(stream.as_raw_fd(), Duration::from_secs(10)).unwrap();
        let mut sent = 0;
        socket
            .send_file(file.as_raw_fd(), 1000, 2_000_000, &mut sent)
            .await
            .unwrap();
        assert_eq!(sent, 2_000_000);
        socket.write_all(b"tail").await.unwrap();
        socket.drained().await.unwrap();
        drop(socket);
        drop(stream);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 2_000_004);
        assert_eq!(&got[..2_000_000], &data[1000..2_001_000]);
        assert_eq!(&got[2_000_000..], b"tail");
        // The file itself was only read.
        let mut first = [0u8; 4];
        file.read_exact_at(&mut first, 1000).unwrap();
        assert_eq!(first, data[1000..1004]);
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_times_out_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 64 << 20]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (held, _) = listener.accept().unwrap();
        let socket = DirectSocket::new(stream.as_raw_fd(), Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        let mut sent = 0;
        let err = socket
            .send_file(file.as_raw_fd(), 0, 64 << 20, &mut sent)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            sent > 0 && sent < 64 << 20,
            "the socket buffers took {sent} bytes"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut held = held;
        held.write_all(b"x").unwrap();
    }

    #[tokio::test]
    async fn a_client_that_went_away_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 16 << 20]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (gone, _) = listener.accept().unwrap();
        drop(gone);
        let socket = DirectSocket::new(stream.as_raw_fd(), Duration::from_secs(10)).unwrap();
        let mut result = Ok(());
        // The first write may still be accepted; the reset shows within a few.
        for _ in 0..20 {
            result = socket
                .send_file(file.as_raw_fd(), 0, 16 << 20, &mut 0)
                .await;
            if result.is_err() {
                break;
            }
        }
        let err = result.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{err}"
        );
    }
}
