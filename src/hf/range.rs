//! Reading a `Range` header to learn which bytes a resolve GET needs first.
//!
//! This is only used to decide which blocks to fill first (so a ranged client on a cold file gets
//! its first byte fast); Pingora produces the actual 206/416 response. The forms clients send are
//! `bytes=N-` (resume), `bytes=a-b` (HfFileSystem, hf-hub, hf_transfer, with the last chunk
//! asking past EOF), `bytes=0-0` (hf-hub 0.4 metadata probe) and `bytes=-n` (suffix).

use std::ops::Range;

/// What a `Range` header asks of a representation of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// A single satisfiable range, as a half-open byte range clamped to the size
    /// (`bytes=0-0` → `0..1`, `bytes=10-` → `10..size`).
    Satisfiable(Range<u64>),
    /// Valid syntax but no byte of it exists: the answer is 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
    /// Not a single byte range (other unit, bad syntax, `a > b`, or several ranges): per RFC 9110
    /// an invalid Range is ignored and the whole representation is sent. Multi-range requests are
    /// also `Ignore` here — no Hub client sends them, and for picking the first needed bytes the
    /// caller then simply starts at byte 0.
    Ignore,
}

/// Interprets a `Range` header value against a representation of `size` bytes (RFC 9110 §14.1).
///
/// A last position past the end is clamped; a first position at or past the end is
/// unsatisfiable; a suffix longer than the size selects the whole representation; a suffix of 0
/// and any range on an empty representation are unsatisfiable.
pub fn parse_single_range(header_value: &str, size: u64) -> RangeRequest {
    let value = header_value.trim();
    let Some((unit, set)) = value.split_once('=') else {
        return RangeRequest::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeRequest::Ignore;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeRequest::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        // bytes=-n
        (true, false) => {
            let Some(n) = parse_pos(last) else {
                return RangeRequest::Ignore;
            };
            if n == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Satisfiable(size.saturating_sub(n)..size)
            }
        }
        // bytes=a-
        (false, true) => {
            let Some(a) = parse_pos(first) else {
                return RangeRequest::Ignore;
            };
            if a >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Satisfiable(a..size)
            }
        }
        // bytes=a-b
        (false, false) => {
            let (Some(a), Some(b)) = (parse_pos(first), parse_pos(last)) else {
                return RangeRequest::Ignore;
            };
            if a > b {
                RangeRequest::Ignore
            } else if a >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Satisfiable(a..b.min(size - 1) + 1)
            }
        }
        (true, true) => RangeRequest::Ignore,
    }
}

/// Digits only; values too large for u64 saturate (they are past any real end).
fn parse_pos(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Ignore, Satisfiable, Unsatisfiable};
    use super::*;

    #[test]
    fn closed_range_inside_file() {
        assert_eq!(parse_single_range("bytes=0-99", 1000), Satisfiable(0..100));
        assert_eq!(parse_single_range("bytes=10-19", 1000), Satisfiable(10..20));
        assert_eq!(
            parse_single_range("bytes=999-999", 1000),
            Satisfiable(999..1000)
        );
    }

    #[test]
    fn zero_zero_probe_is_first_byte() {
        assert_eq!(parse_single_range("bytes=0-0", 1000), Satisfiable(0..1));
        assert_eq!(parse_single_range("bytes=0-0", 1), Satisfiable(0..1));
    }

    #[test]
    fn end_past_eof_is_clamped() {
        assert_eq!(
            parse_single_range("bytes=500-1000", 1000),
            Satisfiable(500..1000)
        );
        assert_eq!(
            parse_single_range("bytes=0-99999999999999999999999", 1000),
            Satisfiable(0..1000)
        );
    }

    #[test]
    fn open_ended_resume() {
        assert_eq!(
            parse_single_range("bytes=100-", 1000),
            Satisfiable(100..1000)
        );
        assert_eq!(parse_single_range("bytes=0-", 1000), Satisfiable(0..1000));
    }

    #[test]
    fn suffix_ranges() {
        assert_eq!(
            parse_single_range("bytes=-100", 1000),
            Satisfiable(900..1000)
        );
        assert_eq!(
            parse_single_range("bytes=-5000", 1000),
            Satisfiable(0..1000)
        );
        assert_eq!(parse_single_range("bytes=-0", 1000), Unsatisfiable);
    }

    #[test]
    fn start_past_end_is_unsatisfiable() {
        assert_eq!(parse_single_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_single_range("bytes=1000-2000", 1000), Unsatisfiable);
        assert_eq!(
            parse_single_range("bytes=99999999999999999999999-", 1000),
            Unsatisfiable
        );
    }

    #[test]
    fn empty_representation() {
        assert_eq!(parse_single_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_single_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_single_range("bytes=-10", 0), Unsatisfiable);
    }

    #[test]
    fn invalid_or_multi_ranges_are_ignored() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=5-3",
            "bytes=a-b",
            "bytes=1-2x",
            "bytes=+1-2",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=0-1-2",
        ] {
            assert_eq!(parse_single_range(v, 1000), Ignore, "{v:?}");
        }
    }

    #[test]
    fn whitespace_and_unit_case_are_tolerated() {
        assert_eq!(parse_single_range(" Bytes = 1 - 2 ", 10), Satisfiable(1..3));
    }
}
