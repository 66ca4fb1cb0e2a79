//! Text helpers for sinks: timestamps and byte-limited truncation.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-12-01T04:54:21Z` (RFC 3339, UTC, whole seconds). Times before 1970 print as the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `text` cut to at most `max_bytes` bytes of UTF-8, on a character boundary; when cut,
/// `marker` is appended within the limit (e.g. "\n…(truncated)").
pub fn truncate_utf8(text: &str, max_bytes: usize, marker: &str) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let budget = max_bytes.saturating_sub(marker.len());
    let mut end = budget.min(text.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(max_bytes);
    out.push_str(&text[..end]);
    if marker.len() <= max_bytes {
        out.push_str(marker);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29 01:01:01
        assert_eq!(rfc3339(t), "2000-02-29T01:01:01Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_083_199); // 2026-11-30T23:59:59
        assert_eq!(rfc3339(t), "2026-11-30T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn truncation_respects_the_byte_limit_and_char_boundaries() {
        assert_eq!(truncate_utf8("short", 10, "…"), "short");
        let cut = truncate_utf8("ééééé", 7, "~");
        assert_eq!(cut, "ééé~");
        assert!(cut.len() <= 7);
        let cjk = "磁盘已满".repeat(1000);
        let cut = truncate_utf8(&cjk, 4096, "\n…(truncated)");
        assert!(cut.len() <= 4096, "{}", cut.len());
        assert!(cut.ends_with("…(truncated)"));
    }
}
