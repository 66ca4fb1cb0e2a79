//! Checks of an upstream answer to a ranged GET, before a byte of it is written. Pure.

/// Parse `Content-Range: bytes a-b/total`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// Check that a response carries exactly `[start, end)` of a `size`-byte file. Returns how
/// many leading body bytes to skip: 0, or `start` when a whole-file `200` is accepted for a
/// ranged request (`accept_whole`: an upstream that keeps ignoring Range still delivers, the
/// bytes before the range being read and dropped, never written at a wrong offset).
pub(in crate::fetch) fn check_response(
    status: u16,
    content_range: Option<&str>,
    start: u64,
    end: u64,
    size: u64,
    accept_whole: bool,
) -> Result<u64, String> {
    match status {
        206 => match content_range.and_then(parse_content_range) {
            Some((a, b, total)) if a == start && b.checked_add(1) == Some(end) && total == size => {
                Ok(0)
            }
            Some((a, b, total)) => Err(format!(
                "Content-Range {a}-{b}/{total} does not match the request {start}-{}/{size}",
                end - 1
            )),
            None => Err("206 without a valid Content-Range".into()),
        },
        200 if start == 0 && end == size => Ok(0),
        200 if accept_whole => Ok(start),
        200 => Err(format!(
            "200 (whole file) to a request for bytes {start}-{}",
            end - 1
        )),
        other => Err(format!("HTTP {other}")),
    }
}

/// Drop the first `skip` bytes of a body, chunk by chunk.
pub(in crate::fetch) fn skip_prefix(chunk: bytes::Bytes, skip: &mut u64) -> bytes::Bytes {
    let n = (*skip).min(chunk.len() as u64) as usize;
    *skip -= n as u64;
    chunk.slice(n..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_content_range_is_accepted() {
        assert_eq!(
            check_response(206, Some("bytes 100-199/1000"), 100, 200, 1000, false),
            Ok(0)
        );
    }

    #[test]
    fn shifted_content_range_is_rejected() {
        let err =
            check_response(206, Some("bytes 1100-1199/5000"), 100, 200, 5000, true).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn wrong_total_size_is_rejected() {
        assert!(check_response(206, Some("bytes 0-99/999"), 0, 100, 1000, true).is_err());
    }

    #[test]
    fn full_200_is_accepted_only_for_the_whole_file() {
        assert_eq!(check_response(200, None, 0, 1000, 1000, false), Ok(0));
        assert!(check_response(200, None, 0, 100, 1000, false).is_err());
        assert!(check_response(200, None, 500, 1000, 1000, false).is_err());
    }

    #[test]
    fn content_range_ending_at_the_largest_integer_is_rejected_not_overflowed() {
        let err = check_response(
            206,
            Some("bytes 0-18446744073709551615/1000"),
            0,
            1000,
            1000,
            false,
        )
        .unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn partial_without_content_range_is_rejected() {
        assert!(check_response(206, None, 0, 100, 1000, true).is_err());
    }

    #[test]
    fn whole_file_answer_is_accepted_after_a_rejection_by_skipping_to_the_offset() {
        assert_eq!(check_response(200, None, 500, 1000, 1000, true), Ok(500));
        let mut skip = 5;
        let first = skip_prefix(bytes::Bytes::from_static(b"abc"), &mut skip);
        let second = skip_prefix(bytes::Bytes::from_static(b"defgh"), &mut skip);
        assert_eq!(
            (first.as_ref(), second.as_ref(), skip),
            (&b""[..], &b"fgh"[..], 0)
        );
    }
}
