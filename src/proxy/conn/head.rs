//! Checking an HTTP/1 request head on its raw bytes, as they arrive, before Pingora parses it.
//!
//! Pingora accepts heads up to 1 MiB, bare-LF line endings, both `Content-Length` and
//! `Transfer-Encoding` (it drops the length), identical duplicate lengths, and percent-escapes a
//! request line with spaces or control characters instead of refusing it; it answers every
//! error with 400, never 414 or 431 (`shared/notes/pingora-ops.md` §3). [`HeadScanner`] sees the
//! bytes first and refuses all of these with the right status, so a request that reaches
//! Pingora's parser has one unambiguous framing.

use std::fmt;

/// Longest request line (method, target, version) accepted; longer gets 414. The Hub's own CDN
/// refuses URLs over 8 KiB, so no client sends longer ones.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Longest header line (name, colon, value) accepted; longer gets 431.
pub const MAX_HEADER_LINE: usize = 8 * 1024;
/// Largest request head (request line and every header line, with line ends); larger gets 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines accepted; more gets 431.
pub const MAX_HEADERS: usize = 100;

/// Why a head is refused: the status to answer with (before the connection is closed) and
/// what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

impl Refusal {
    const fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

/// What one chunk of bytes did to the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The head is not complete yet, and nothing is wrong so far.
    NeedMore,
    /// The head ended at this index of the chunk (bytes after it are body or a pipelined
    /// request, not examined).
    Complete(usize),
    /// The head is refused.
    Refused(Refusal),
}

/// A streaming checker of one request head. Feed it every byte read until it reports
/// [`Progress::Complete`] or [`Progress::Refused`]; make a new one for the next request.
#[derive(Debug, Default)]
pub struct HeadScanner {
    /// Bytes of the head seen so far.
    total: usize,
    /// The current line, without its line end (bounded by the line limits).
    line: Vec<u8>,
    /// The previous byte was a CR.
    cr: bool,
    /// The request line has been seen.
    started: bool,
    headers: usize,
    http10: bool,
    content_lengths: usize,
    transfer_encodings: usize,
    chunked: bool,
    hosts: usize,
}

impl HeadScanner {
    pub fn new() -> HeadScanner {
        HeadScanner::default()
    }

    /// True once any byte of this head has been seen.
    pub fn started(&self) -> bool {
        self.total > 0
    }

    /// Examines the next bytes of the head.
    pub fn feed(&mut self, chunk: &[u8]) -> Progress {
        for (i, &b) in chunk.iter().enumerate() {
            self.total += 1;
            if self.total > MAX_HEAD {
                return Progress::Refused(TOO_LARGE);
            }
            if self.cr {
                self.cr = false;
                if b != b'\n' {
                    return Progress::Refused(BARE_CR);
                }
                match self.end_line() {
                    Ok(true) => return Progress::Complete(i + 1),
                    Ok(false) => continue,
                    Err(refusal) => return Progress::Refused(refusal),
                }
            }
            match b {
                b'\r' => self.cr = true,
                b'\n' => return Progress::Refused(BARE_LF),
                _ => {
                    let (limit, refusal) = if self.started {
                        (MAX_HEADER_LINE, LONG_HEADER)
                    } else {
                        (MAX_REQUEST_LINE, LONG_URI)
                    };
                    if self.line.len() >= limit {
                        return Progress::Refused(refusal);
                    }
                    self.line.push(b);
                }
            }
        }
        Progress::NeedMore
    }

    /// A CRLF ended the current line. Returns whether the head is complete.
    fn end_line(&mut self) -> Result<bool, Refusal> {
        let line = std::mem::take(&mut self.line);
        let result = if !self.started {
            if line.is_empty() {
                // RFC 9112 §2.2: empty lines before the request line are ignored.
                return Ok(false);
            }
            self.started = true;
            self.request_line(&line).map(|()| false)
        } else if line.is_empty() {
            self.final_checks().map(|()| true)
        } else {
            self.header_line(&line).map(|()| false)
        };
        self.line = line;
        self.line.clear();
        result
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), Refusal> {
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BAD_REQUEST_LINE);
        };
        if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
            return Err(BAD_METHOD);
        }
        if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
            return Err(BAD_TARGET);
        }
        let origin_form = target[0] == b'/';
        let absolute_form = starts_with_ignore_case(target, b"http://")
            || starts_with_ignore_case(target, b"https://");
        if !(origin_form || absolute_form || target == b"*") {
            return Err(BAD_TARGET);
        }
        match version {
            b"HTTP/1.1" => {}
            b"HTTP/1.0" => self.http10 = true,
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                return Err(BAD_VERSION)
            }
            _ => return Err(BAD_REQUEST_LINE),
        }
        Ok(())
    }

    fn header_line(&mut self, line: &[u8]) -> Result<(), Refusal> {
        self.headers += 1;
        if self.headers > MAX_HEADERS {
            return Err(TOO_MANY_HEADERS);
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(OBS_FOLD);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(BAD_HEADER_LINE)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(BAD_HEADER_NAME);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(CONTROL_IN_VALUE);
        }
        let value = trim_ows(value);
        if name.eq_ignore_ascii_case(b"content-length") {
            self.content_lengths += 1;
            if self.content_lengths > 1 {
                return Err(DUPLICATE_LENGTH);
            }
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(BAD_LENGTH);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encodings += 1;
            self.chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
            if self.hosts > 1 {
                return Err(DUPLICATE_HOST);
            }
        }
        Ok(())
    }

    fn final_checks(&self) -> Result<(), Refusal> {
        if self.transfer_encodings > 0 {
            if self.content_lengths > 0 {
                return Err(LENGTH_AND_CHUNKED);
            }
            if self.http10 {
                return Err(CHUNKED_IN_HTTP10);
            }
            if self.transfer_encodings > 1 || !self.chunked {
                return Err(BAD_TRANSFER_ENCODING);
            }
        }
        if !self.http10 && self.hosts == 0 {
            return Err(NO_HOST);
        }
        Ok(())
    }
}

const TOO_LARGE: Refusal = Refusal::new(431, "the request headers are larger than 64 KiB");
const LONG_URI: Refusal = Refusal::new(414, "the request line is longer than 8 KiB");
const LONG_HEADER: Refusal = Refusal::new(431, "a request header line is longer than 8 KiB");
const TOO_MANY_HEADERS: Refusal = Refusal::new(431, "the request has more than 100 headers");
const BARE_CR: Refusal = Refusal::new(400, "a CR not followed by LF in the request head");
const BARE_LF: Refusal = Refusal::new(
    400,
    "a line of the request head ends in a bare LF (use CRLF)",
);
const BAD_REQUEST_LINE: Refusal = Refusal::new(
    400,
    "malformed request line (expected METHOD SP target SP HTTP/1.x)",
);
const BAD_METHOD: Refusal = Refusal::new(400, "the request method is not a valid token");
const BAD_TARGET: Refusal = Refusal::new(
    400,
    "the request target must be a path of visible ASCII characters",
);
const BAD_VERSION: Refusal = Refusal::new(505, "only HTTP/1.0 and HTTP/1.1 are supported");
const OBS_FOLD: Refusal = Refusal::new(400, "obsolete line folding in the request headers");
const BAD_HEADER_LINE: Refusal = Refusal::new(400, "a request header line has no colon");
const BAD_HEADER_NAME: Refusal = Refusal::new(400, "a request header name is not a valid token");
const CONTROL_IN_VALUE: Refusal = Refusal::new(
    400,
    "a request header value contains NUL or a control character",
);
const DUPLICATE_LENGTH: Refusal = Refusal::new(400, "more than one Content-Length header");
const BAD_LENGTH: Refusal = Refusal::new(400, "invalid Content-Length value");
const DUPLICATE_HOST: Refusal = Refusal::new(400, "more than one Host header");
const LENGTH_AND_CHUNKED: Refusal = Refusal::new(
    400,
    "both Content-Length and Transfer-Encoding (request smuggling)",
);
const CHUNKED_IN_HTTP10: Refusal = Refusal::new(400, "Transfer-Encoding in an HTTP/1.0 request");
const BAD_TRANSFER_ENCODING: Refusal = Refusal::new(
    400,
    "Transfer-Encoding other than a single chunked is not supported",
);
const NO_HOST: Refusal = Refusal::new(400, "an HTTP/1.1 request without a Host header");

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
