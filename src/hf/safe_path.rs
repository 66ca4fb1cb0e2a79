//! Refusing request paths that could climb out of a directory or smuggle bytes to an upstream,
//! in any encoding, before the request is routed.
//!
//! The route parser validates the repo id, revision and file path of the routes it knows, but a
//! request it does not know is passed through to the upstream chain with its path as received.
//! [`check_request_path`] runs first, for every request: each raw segment is decoded up to
//! [`MAX_DECODE_ROUNDS`] times (so double- and triple-encoded forms such as `%252e%252e` are seen
//! for what they become) and every form is checked. Clients never send any of these forms for a
//! real file: `huggingface_hub` encodes with Python's `quote`, which never produces `.`/`..`
//! segments, backslashes, NUL or overlong UTF-8.

use std::borrow::Cow;

use percent_encoding::percent_decode;

/// Longest decoded path segment (a file or directory name) accepted: the Linux `NAME_MAX`.
pub const MAX_SEGMENT_LEN: usize = 255;

/// How many times a segment is decoded while looking for a hidden `..`, `\` or NUL.
pub const MAX_DECODE_ROUNDS: usize = 4;

/// Why a request path was refused; the proxy answers 400 with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits (or an IIS-style `%u` escape).
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
    /// A segment is `.` or `..`, literally or once decoded.
    #[error("the request path has a '.' or '..' segment")]
    DotSegment,
    /// A backslash, literally or once decoded.
    #[error("the request path contains a backslash")]
    Backslash,
    /// NUL, another control character or DEL, literally or once decoded.
    #[error("the request path contains NUL or a control character")]
    Control,
    /// Decoded bytes that are not UTF-8, or an overlong UTF-8 form (`%c0%ae` for `.`).
    #[error("the request path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    /// A decoded segment longer than [`MAX_SEGMENT_LEN`].
    #[error("a request path segment is longer than {MAX_SEGMENT_LEN} bytes")]
    LongSegment,
}

/// Checks a raw (still percent-encoded) request path, without its query string.
///
/// Refused: a path not starting with `/`; malformed escapes; any `.` or `..` segment, any
/// backslash, NUL or control character, in the raw path or in any of up to
/// [`MAX_DECODE_ROUNDS`] successive decodings of a segment (a decoded `%2F` splits it into
/// names that are each checked); decoded bytes that are not UTF-8, or the bytes `0xC0`/`0xC1`
/// of overlong UTF-8 at any depth; a decoded name longer than [`MAX_SEGMENT_LEN`] bytes. Empty
/// segments (`a//b`, a trailing `/`) are allowed: they climb nowhere.
pub fn check_request_path(raw_path: &str) -> Result<(), PathError> {
    let rest = raw_path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    for segment in rest.split('/') {
        check_segment(segment.as_bytes())?;
    }
    Ok(())
}

fn check_segment(raw: &[u8]) -> Result<(), PathError> {
    check_escapes(raw)?;
    check_names(raw, 0)?;
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(raw);
    for round in 1..=MAX_DECODE_ROUNDS {
        let decoded: Cow<'_, [u8]> = percent_decode(current.as_ref()).into();
        // The first decoding is the segment's real value: always checked (for its length).
        if round > 1 && decoded.as_ref() == current.as_ref() {
            break;
        }
        if round == 1 && std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::NotUtf8);
        }
        check_names(&decoded, round)?;
        current = Cow::Owned(decoded.into_owned());
    }
    Ok(())
}

/// Every `%` must start a two-hex-digit escape.
fn check_escapes(raw: &[u8]) -> Result<(), PathError> {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = |j: usize| raw.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(PathError::BadEscape);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Checks each `/`-separated name of one form of a segment (`round` 0 = raw).
fn check_names(form: &[u8], round: usize) -> Result<(), PathError> {
    for name in form.split(|&b| b == b'/') {
        if name == b"." || name == b".." {
            return Err(PathError::DotSegment);
        }
        for &b in name {
            match b {
                b'\\' => return Err(PathError::Backslash),
                0..=0x1f | 0x7f => return Err(PathError::Control),
                0xc0 | 0xc1 => return Err(PathError::NotUtf8),
                _ => {}
            }
        }
        if round >= 1 && name.len() > MAX_SEGMENT_LEN {
            return Err(PathError::LongSegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn refused(path: &str, expected: PathError) {
        assert_eq!(check_request_path(path), Err(expected), "{path}");
    }

    #[test]
    fn real_client_paths_pass() {
        for path in [
            "/",
            "/openai-community/gpt2/resolve/main/config.json",
            "/datasets/org/name/resolve/refs%2Fpr%2F1/data/train-00000-of-00001.parquet",
            "/org/name/resolve/main/weird%20name%20%2B%23%25%C3%A9.txt",
            "/api/models/org/name/tree/main/a%2Fb",
            "/api/models/org/name/tree/main/",
            "/api/models/org/name/revision/v1.0",
            "/api/whoami-v2",
            "/org/name/resolve/main/.gitattributes",
            "/org/name/resolve/main/dir/...three-dots",
            "/org/name/resolve/main/100%25.txt",
            "/a//b",
        ] {
            assert_eq!(check_request_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn dot_segments_are_refused_in_every_encoding() {
        for path in [
            "/org/name/resolve/main/../../etc/passwd",
            "/org/name/resolve/main/./config.json",
            "/org/name/resolve/main/%2e%2e/config.json",
            "/org/name/resolve/main/%2E%2E/config.json",
            "/org/name/resolve/main/.%2e/config.json",
            "/org/name/resolve/main/%2e./config.json",
            "/org/name/resolve/main/%2e/config.json",
            "/org/name/resolve/main/..%2Fetc%2Fpasswd",
            "/org/name/resolve/main/a%2F..%2F..%2Fb",
            "/org/name/resolve/main/%252e%252e/config.json",
            "/org/name/resolve/main/%25252E%25252E/config.json",
            "/api/models/org/name/tree/main/%2E%2E%2F%2E%2E",
            "/..",
        ] {
            refused(path, PathError::DotSegment);
        }
    }

    #[test]
    fn backslashes_are_refused_in_every_encoding() {
        for path in [
            "/org/name/resolve/main/..\\..\\etc",
            "/org/name/resolve/main/%5c",
            "/org/name/resolve/main/%5C..%5Cetc",
            "/org/name/resolve/main/%255c",
            "/org/name/resolve/main/a%255Cb",
        ] {
            refused(path, PathError::Backslash);
        }
    }

    #[test]
    fn nul_and_controls_are_refused_in_every_encoding() {
        for path in [
            "/org/name/resolve/main/%00.txt",
            "/org/name/resolve/main/a%2500b",
            "/org/name/resolve/main/a%0d%0aX-Injected:%201",
            "/org/name/resolve/main/a%7f",
            "/org/name/resolve/main/a\u{1}b",
        ] {
            refused(path, PathError::Control);
        }
    }

    #[test]
    fn overlong_utf8_and_invalid_utf8_are_refused() {
        refused("/org/name/resolve/main/%c0%ae%c0%ae/x", PathError::NotUtf8);
        refused("/org/name/resolve/main/%C1%9C", PathError::NotUtf8);
        refused("/org/name/resolve/main/%25c0%25ae", PathError::NotUtf8);
        refused("/org/name/resolve/main/%ff", PathError::NotUtf8);
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for path in [
            "/org/name/resolve/main/%ZZ",
            "/org/name/resolve/main/%",
            "/org/name/resolve/main/a%2",
            "/org/name/resolve/main/%u002e%u002e",
        ] {
            refused(path, PathError::BadEscape);
        }
    }

    #[test]
    fn over_long_segments_are_refused_after_decoding() {
        let ok = format!("/org/name/resolve/main/{}", "a".repeat(MAX_SEGMENT_LEN));
        assert_eq!(check_request_path(&ok), Ok(()));
        refused(
            &format!("/org/name/resolve/main/{}", "a".repeat(MAX_SEGMENT_LEN + 1)),
            PathError::LongSegment,
        );
        // Encoded: 86 three-byte characters are 258 bytes once decoded.
        refused(
            &format!("/org/name/resolve/main/{}", "%E2%82%AC".repeat(86)),
            PathError::LongSegment,
        );
        // A long tree sub-path in one %2F-encoded segment is fine: each name is short.
        let names = vec!["abcdefgh"; 100].join("%2F");
        assert_eq!(
            check_request_path(&format!("/api/models/o/n/tree/main/{names}")),
            Ok(())
        );
    }

    #[test]
    fn relative_paths_are_refused() {
        refused("", PathError::NotAbsolute);
        refused("*", PathError::NotAbsolute);
        refused("org/name", PathError::NotAbsolute);
    }
}
