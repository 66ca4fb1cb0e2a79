//! Warm downloads with `sendfile(2)`: the kernel copies the blob file's bytes to the client's
//! socket once, instead of `pread` into a buffer and a socket write from it (Pingora's body
//! writer offers nothing else).
//!
//! Only where that is plainly the same answer: a `GET` without conditional headers, over
//! plain HTTP/1 (no TLS, no HTTP/2), for the whole file or one satisfiable range that spans
//! more than one checksum page, every block of it present and every page verified since the
//! file last changed (`store::verified`); `server.sendfile: false` turns it off. Anything
//! else is answered by the blob storage through Pingora, as before.
//!
//! The response header is the one Pingora's cache hit path builds (the blob storage's header,
//! Pingora's own range filter, `finish_response_header`), written through Pingora with the
//! request's method set to `HEAD` for that call: Pingora then expects no body (its body writer
//! counts 0 bytes, so finishing the response is clean and the connection stays reusable) and
//! flushes the header at once. The body then goes straight to the socket:
//!
//! 1. all but the range's last page by `sendfile`, in pieces, checking before and after each
//!    that the file still has the stamp its pages were verified under;
//! 2. then waiting until the client acknowledged every byte (queued `sendfile` bytes refer to
//!    the file's pages until then), checking the stamp again, and sending the last page
//!    through the checked read (`pread` and CRC32C).
//!
//! A file changed underneath is so never sent whole: the client gets a short body (an error),
//! and the connection is closed.
//!
//! A cold download of a blob the fill is writing into a file this process created and alone
//! changed (custody) takes this path too, its body sent as the blocks arrive ([`follow`]).

mod follow;
mod socket;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::Arc;

use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::proxy::{range_header_filter, RangeType};
use pingora::{Error, ErrorType, Result};

use super::conn::GuardedStream;
use super::RequestCtx;
use crate::app::App;
use crate::fetch::{BlobReader, FetchError, SendSource};
use socket::DirectSocket;

/// Bytes sent per `sendfile` piece between two checks of the file's stamp.
pub(super) const PIECE: u64 = 8 << 20;

/// Pingora's limit on ranges in one request (its default `range_header_filter`).
const MAX_RANGES: Option<usize> = Some(200);

/// Why a request is not for `sendfile` (`Ok` when its method and headers allow it).
pub(super) fn request_allows(req: &RequestHeader) -> Result<(), &'static str> {
    if req.method != Method::GET {
        return Err("not a GET");
    }
    if !matches!(req.version, http::Version::HTTP_10 | http::Version::HTTP_11) {
        return Err("not HTTP/1");
    }
    // If-None-Match, If-Modified-Since, If-Range, If-Match, If-Unmodified-Since: Pingora's
    // conditional and If-Range handling stays the only one.
    if req
        .headers
        .keys()
        .any(|name| name.as_str().starts_with("if-"))
    {
        return Err("a conditional request");
    }
    Ok(())
}

/// The response header the blob storage's hit gives `req` for a blob of `size` bytes whose
/// stored header is `stored` (before the HF headers), and the blob range it sends; `None` for
/// what this path leaves to Pingora (several ranges, an unsatisfiable one, an empty body).
pub(super) fn response_for(
    mut stored: ResponseHeader,
    size: u64,
    req: &RequestHeader,
) -> Option<(ResponseHeader, Range<u64>)> {
    stored.set_version(http::Version::HTTP_11);
    let range = match range_header_filter(req, &mut stored, MAX_RANGES) {
        RangeType::None => 0..size,
        RangeType::Single(r) => r.start as u64..r.end as u64,
        RangeType::Multi(_) | RangeType::Invalid => return None,
    };
    (range.start < range.end).then_some((stored, range))
}

/// Split `range` into the part sent with `sendfile` and its last page (or the part of it in
/// the range), which goes through the checked read; `None` when the range lies within one
/// page (nothing to gain).
pub(super) fn split_last_page(
    range: &Range<u64>,
    page_size: u64,
) -> Option<(Range<u64>, Range<u64>)> {
    if range.start >= range.end || page_size == 0 {
        return None;
    }
    let last_page_start = (range.end - 1) / page_size * page_size;
    let tail_start = last_page_start.max(range.start);
    (tail_start > range.start).then_some((range.start..tail_start, tail_start..range.end))
}

/// The client connection's socket, when it is plain HTTP/1 over TCP or a Unix socket.
fn plain_socket(session: &Session) -> Option<std::os::fd::RawFd> {
    let stream = session.as_downstream().stream()?;
    let io: &dyn pingora::protocols::IO = &**stream;
    io.as_any().downcast_ref::<GuardedStream>()?.plain_fd()
}

/// Where the body comes from.
enum Body {
    /// Every page of the range verified since the file last changed (warm).
    Verified(SendSource),
    /// The fill's own file, sent as the fill writes it ([`follow`]).
    Own {
        reader: Box<BlobReader>,
        page_size: u64,
    },
}

impl Body {
    fn page_size(&self) -> u64 {
        match self {
            Body::Verified(source) => source.page_size(),
            Body::Own { page_size, .. } => *page_size,
        }
    }
}

/// Answer a resolved file GET with `sendfile` when it qualifies (see the module docs).
/// `Ok(true)`: answered (the body went out whole); `Ok(false)`: leave it to the blob
/// storage; `Err`: the response broke off after its header (the connection is closed).
pub(super) async fn try_serve(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    if !ctx.settings.config.server.sendfile {
        return Ok(false);
    }
    let Some(served) = ctx.file.as_ref().map(|f| Arc::clone(&f.served)) else {
        return Ok(false);
    };
    let Some(fill) = served.fill.clone() else {
        return Ok(false);
    };
    if let Err(why) = request_allows(session.req_header()) {
        log::trace!("sendfile: not for {}: {why}", served.id);
        return Ok(false);
    }
    let Some(socket_fd) = plain_socket(session) else {
        return Ok(false);
    };
    let stored = served.response_header()?;
    let Some((mut header, range)) = response_for(stored, served.size, session.req_header()) else {
        return Ok(false);
    };
    let body = match app.fill.send_source(
        &fill,
        range.clone(),
        Arc::clone(&served.tally),
        served.download,
    ) {
        Some(source) => Body::Verified(source),
        None => match fill.file_custody() {
            (page_size, true) => Body::Own {
                reader: Box::new(served.reader()),
                page_size,
            },
            _ => {
                log::trace!("sendfile: {} {range:?} is not all verified", served.id);
                return Ok(false);
            }
        },
    };
    let Some((by_kernel, last_page)) = split_last_page(&range, body.page_size()) else {
        return Ok(false);
    };
    let socket = match DirectSocket::new(socket_fd, ctx.settings.config.server.send_timeout) {
        Ok(socket) => socket,
        Err(e) => {
            log::warn!("sendfile: cannot use the client socket: {e}");
            return Ok(false);
        }
    };
    super::finish_response_header(app, session, &mut header, ctx)?;
    write_header(session, header).await?;
    let sent = match body {
        Body::Verified(source) => {
            send_body(
                &source,
                &socket,
                by_kernel,
                last_page,
                &mut ctx.sent_directly,
            )
            .await
        }
        Body::Own { mut reader, .. } => {
            follow::send_body(
                &served.id,
                &mut reader,
                &socket,
                by_kernel,
                last_page,
                &mut ctx.sent_directly,
            )
            .await
        }
    };
    match &sent {
        Err(e) if e.esource() == &pingora::ErrorSource::Downstream => {
            log::debug!("{}: sendfile of {range:?} broke off: {e}", served.id);
        }
        Err(e) => log::warn!("{}: sendfile of {range:?} broke off: {e}", served.id),
        Ok(()) => {}
    }
    sent.map(|()| true)
}

/// Whether `error` ended a `sendfile` download on the client's side (it went away or stopped
/// reading): not hubcache's error, so not logged as one.
pub(super) fn client_left(ctx: &RequestCtx, error: &Error) -> bool {
    ctx.sent_directly > 0 && error.esource() == &pingora::ErrorSource::Downstream
}

/// Bytes read and written at a time once a transfer fell back to the checked path.
pub(super) const CHECKED_PIECE: u64 = 1 << 20;

/// Write the header through Pingora as if answering a HEAD (see the module docs).
async fn write_header(session: &mut Session, header: ResponseHeader) -> Result<()> {
    session.req_header_mut().set_method(Method::HEAD);
    let written = session.write_response_header(Box::new(header), false).await;
    session.req_header_mut().set_method(Method::GET);
    written
}

pub(super) fn socket_error(what: &'static str, e: std::io::Error) -> Box<Error> {
    let kind = match e.kind() {
        std::io::ErrorKind::TimedOut => ErrorType::WriteTimedout,
        _ => ErrorType::WriteError,
    };
    Error::because(kind, what, e).into_down()
}

pub(super) fn fetch_error(e: FetchError) -> Box<Error> {
    Error::because(ErrorType::InternalError, "sendfile", e)
}

/// Send `by_kernel` with `sendfile`, then `last_page` through the checked read, once the
/// client acknowledged the rest and the file is unchanged. `sent` counts body bytes written.
async fn send_body(
    source: &SendSource,
    socket: &DirectSocket,
    by_kernel: Range<u64>,
    last_page: Range<u64>,
    sent: &mut u64,
) -> Result<()> {
    let mut pos = by_kernel.start;
    while pos < by_kernel.end {
        if !source.unchanged() {
            return send_checked_after_change(
                source,
                socket,
                by_kernel.start..pos,
                pos..last_page.end,
                sent,
            )
            .await;
        }
        let n = (by_kernel.end - pos).min(PIECE);
        let mut piece = 0;
        let result = socket
            .send_file(source.fd(), source.file_offset(pos), n, &mut piece)
            .await;
        source.sent(piece);
        source.sent_by_kernel(piece);
        *sent += piece;
        result.map_err(|e| socket_error("sendfile to the client", e))?;
        pos += n;
    }
    socket
        .drained()
        .await
        .map_err(|e| socket_error("waiting for the client", e))?;
    if !source.unchanged() {
        return send_checked_after_change(source, socket, by_kernel, last_page, sent).await;
    }
    // `read_checked` refuses a file changed since its pages were verified: everything sent
    // by the kernel was acknowledged under the verified stamp.
    let len = (last_page.end - last_page.start) as usize;
    let bytes = source
        .read_checked(last_page.start, len)
        .await
        .map_err(fetch_error)?;
    socket
        .write_all(&bytes)
        .await
        .map_err(|e| socket_error("writing to the client", e))?;
    source.sent(len as u64);
    *sent += len as u64;
    Ok(())
}

/// The blob file changed during the transfer (often only its header: another process that
/// shares the cache marked the blob verified, or a `chmod`): once the client acknowledged
/// everything the kernel sent, check those bytes against their page checksums as the file is
/// now, and send `rest` the checked way. Bytes that no longer match cut the response short.
async fn send_checked_after_change(
    source: &SendSource,
    socket: &DirectSocket,
    sent_by_kernel: Range<u64>,
    rest: Range<u64>,
    sent: &mut u64,
) -> Result<()> {
    socket
        .drained()
        .await
        .map_err(|e| socket_error("waiting for the client", e))?;
    source.recheck(sent_by_kernel).await.map_err(fetch_error)?;
    let mut pos = rest.start;
    while pos < rest.end {
        let len = (rest.end - pos).min(CHECKED_PIECE) as usize;
        let bytes = source.read_now(pos, len).await.map_err(fetch_error)?;
        socket
            .write_all(&bytes)
            .await
            .map_err(|e| socket_error("writing to the client", e))?;
        source.sent(len as u64);
        *sent += len as u64;
        pos += len as u64;
    }
    Ok(())
}
