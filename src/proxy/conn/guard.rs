//! [`GuardedStream`]: the client connection as Pingora sees it, with the checks Pingora lacks.
//!
//! It wraps the accepted stream and, on the way in, runs every request head through a
//! [`HeadScanner`] under a whole-head deadline; on the way out, it fails a write that makes no
//! progress for `send_timeout`. A refused or timed-out head is answered here, in raw HTTP/1.1
//! (`Connection: close`), then the connection is closed gracefully (write side shut, the
//! client's remaining bytes drained for a moment) so the client reads the answer instead of a
//! reset. Pingora then sees the end of the stream and drops the connection.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head::{HeadScanner, Progress, Refusal};
use super::response::refusal_bytes;

/// How long a refused connection is kept to deliver the answer and drain the client's bytes.
const LINGER: Duration = Duration::from_secs(2);
/// At most this many bytes of a refused client are read and discarded before closing.
const LINGER_BYTES: usize = 1 << 20;

/// The per-connection limits (`server.*` in the config).
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Whole-head deadline, from the first byte (from the accept for the first request).
    pub header_timeout: Duration,
    /// A write that makes no progress for this long fails.
    pub send_timeout: Duration,
}

enum Phase {
    /// Reading a head: `armed` once its deadline runs.
    Head { scanner: HeadScanner, armed: bool },
    /// The head was accepted: bytes pass through until the next request starts.
    Body,
    /// Answering a refused head, then draining until EOF, [`LINGER`] or [`LINGER_BYTES`].
    Refusing {
        answer: Vec<u8>,
        written: usize,
        shut: bool,
        drained: usize,
    },
    /// Finished: reads report the end of the stream.
    Closed,
}

/// The accepted client stream with head checks, a head deadline and a send-stall timeout.
pub struct GuardedStream {
    inner: Stream,
    limits: StreamLimits,
    phase: Phase,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_armed: bool,
    /// Answer with this once a head is complete (a connection over `server.max_connections`).
    refuse_when_complete: Option<Refusal>,
}

impl GuardedStream {
    /// Wraps a freshly accepted stream: the first head must arrive within `header_timeout`.
    pub fn new(inner: Stream, limits: StreamLimits) -> GuardedStream {
        let deadline = Instant::now() + limits.header_timeout;
        GuardedStream {
            inner,
            limits,
            phase: Phase::Head {
                scanner: HeadScanner::new(),
                armed: true,
            },
            read_timer: Box::pin(tokio::time::sleep_until(deadline)),
            write_timer: Box::pin(tokio::time::sleep_until(deadline)),
            write_armed: false,
            refuse_when_complete: None,
        }
    }

    /// Wraps a stream that carries no HTTP/1 heads (HTTP/2): only the send-stall timeout.
    pub fn unchecked(inner: Stream, limits: StreamLimits) -> GuardedStream {
        GuardedStream {
            phase: Phase::Body,
            ..GuardedStream::new(inner, limits)
        }
    }

    /// Like [`new`](Self::new), but any complete head is answered with `refusal`.
    pub fn refusing(inner: Stream, limits: StreamLimits, refusal: Refusal) -> GuardedStream {
        GuardedStream {
            refuse_when_complete: Some(refusal),
            ..GuardedStream::new(inner, limits)
        }
    }

    /// Called between two requests of a keep-alive connection: the next bytes are a new head,
    /// whose deadline starts with its first byte (the idle wait is Pingora's keep-alive timeout).
    pub fn start_next_request(&mut self) {
        if matches!(self.phase, Phase::Body) {
            self.phase = Phase::Head {
                scanner: HeadScanner::new(),
                armed: false,
            };
        }
    }

    /// The socket of a plain TCP (or Unix) connection, for writing to it directly
    /// (`sendfile`); `None` for TLS and anything else that is not Pingora's L4 stream.
    pub fn plain_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let inner: &dyn pingora::protocols::IO = &*self.inner;
        inner
            .as_any()
            .downcast_ref::<pingora::protocols::l4::stream::Stream>()
            .map(AsRawFd::as_raw_fd)
    }

    fn peer(&self) -> String {
        self.inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(ToString::to_string))
            .unwrap_or_else(|| "unknown peer".to_string())
    }

    fn refuse(&mut self, refusal: &Refusal) {
        log::info!("refused {} from {}", refusal, self.peer());
        self.phase = Phase::Refusing {
            answer: refusal_bytes(refusal),
            written: 0,
            shut: false,
            drained: 0,
        };
        self.read_timer.as_mut().reset(Instant::now() + LINGER);
    }

    /// The head deadline passed: 408 if part of a head arrived, else just close.
    fn head_timed_out(&mut self, started: bool) {
        if started {
            self.refuse(&Refusal {
                status: 408,
                reason: "the request head did not arrive within server.header_timeout",
            });
        } else {
            self.phase = Phase::Closed;
        }
    }

    fn poll_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Phase::Head { scanner, armed } = &mut self.phase else {
            return Poll::Ready(Ok(()));
        };
        if *armed && self.read_timer.as_mut().poll(cx).is_ready() {
            let started = scanner.started();
            self.head_timed_out(started);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() == before {
            return Poll::Ready(Ok(())); // end of stream
        }
        if !*armed {
            *armed = true;
            let deadline = Instant::now() + self.limits.header_timeout;
            self.read_timer.as_mut().reset(deadline);
        }
        let verdict = match scanner.feed(&buf.filled()[before..]) {
            Progress::NeedMore => None,
            Progress::Complete(_) => match self.refuse_when_complete.clone() {
                Some(refusal) => Some(refusal),
                None => {
                    self.phase = Phase::Body;
                    None
                }
            },
            Progress::Refused(refusal) => Some(refusal),
        };
        if let Some(refusal) = verdict {
            // The bytes of a refused head never reach Pingora.
            buf.set_filled(before);
            self.refuse(&refusal);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the answer, shuts the write side, drains; `Ready` once the stream is done.
    fn poll_refusing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let expired = self.read_timer.as_mut().poll(cx).is_ready();
        let Phase::Refusing {
            answer,
            written,
            shut,
            drained,
        } = &mut self.phase
        else {
            return Poll::Ready(());
        };
        if expired {
            return Poll::Ready(());
        }
        while *written < answer.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        if !*shut {
            match Pin::new(&mut self.inner).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => *shut = true,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut scratch = [0u8; 8192];
        while *drained < LINGER_BYTES {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => *drained += rb.filled().len(),
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// A write is pending: fail it once no progress was made for `send_timeout`.
    fn poll_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.write_armed {
            self.write_armed = true;
            let deadline = Instant::now() + self.limits.send_timeout;
            self.write_timer.as_mut().reset(deadline);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        log::info!(
            "disconnecting {}: it accepted no data for {:?} (server.send_timeout)",
            self.peer(),
            self.limits.send_timeout
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client accepted no data within server.send_timeout",
        )))
    }

    fn progress<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(r) => {
                self.write_armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stalled(cx),
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.phase {
                Phase::Body => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Head { .. } => {
                    let before = buf.filled().len();
                    ready!(this.poll_head(cx, buf))?;
                    let refused = matches!(this.phase, Phase::Refusing { .. } | Phase::Closed);
                    if refused && buf.filled().len() == before {
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                Phase::Refusing { .. } => {
                    ready!(this.poll_refusing(cx));
                    this.phase = Phase::Closed;
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(result, cx)
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        let send_timeout = self.limits.send_timeout;
        let inner: &mut dyn pingora::protocols::IO = &mut *self.inner;
        if tokio::time::timeout(send_timeout, inner.shutdown())
            .await
            .is_err()
        {
            log::debug!("shutting down a client connection timed out");
        }
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest);
    }
}

#[async_trait]
impl Peek for GuardedStream {
    // Not delegated: peeked bytes would bypass the head checks. Only h2c peeks, and hubcache
    // has no h2c (HTTP/2 only over TLS, chosen by ALPN).
}

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
