//! Pure helpers for sinks that speak HTTP: how a status code classifies, what `Retry-After`
//! means. No client here; sinks bring their own.

use std::time::{Duration, SystemTime};

use crate::options::OptionError;
use crate::secret::Secret;
use crate::sink::Delivery;

/// The longest `Retry-After` honoured; longer values are capped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads a `Retry-After` value: delay-seconds (`120`) or an HTTP date, relative to `now`.
/// A date in the past is zero; anything unreadable is `None`. Capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The usual meaning of a webhook receiver's status code: 2xx delivered; 429, 408 and 5xx
/// retried (after `Retry-After` if given); any other status permanent. `detail` (a short,
/// secret-free excerpt of the body) goes into the reason.
pub fn classify_status(status: u16, retry_after: Option<&str>, detail: &str) -> Delivery {
    let reason = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    match status {
        200..=299 => Delivery::Delivered,
        408 | 429 | 500..=599 => Delivery::Retry {
            after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
            reason,
        },
        _ => Delivery::Permanent { reason },
    }
}

/// Checks that the option `key` is an absolute `http://` or `https://` URL with a host. The
/// message never repeats the value (it may carry a key).
pub fn check_http_url(key: &str, url: &Secret) -> Result<(), OptionError> {
    let text = url.expose();
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(OptionError::new(
            key,
            "is not an absolute http:// or https:// URL",
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        let shown: String = scheme.chars().take(16).collect();
        return Err(OptionError::new(
            key,
            format!("scheme \"{shown}\" is not supported (use http or https)"),
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || text.chars().any(char::is_whitespace) {
        return Err(OptionError::new(
            key,
            "is not a valid URL (no host, or spaces)",
        ));
    }
    Ok(())
}

/// The first `max` characters of a response body on one line, for error reasons.
pub fn body_excerpt(body: &str, max: usize) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    one_line.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn statuses_classify_as_delivered_retry_or_permanent() {
        assert_eq!(classify_status(200, None, ""), Delivery::Delivered);
        assert_eq!(classify_status(204, None, ""), Delivery::Delivered);
        assert_eq!(
            classify_status(429, Some("7"), "slow down"),
            Delivery::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 429: slow down".into()
            }
        );
        for status in [408, 500, 502, 503, 504] {
            assert!(
                matches!(
                    classify_status(status, None, ""),
                    Delivery::Retry { after: None, .. }
                ),
                "{status}"
            );
        }
        for status in [301, 400, 401, 403, 404, 410, 413] {
            assert!(
                matches!(
                    classify_status(status, None, ""),
                    Delivery::Permanent { .. }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn http_urls_are_checked_without_echoing_them() {
        let ok = |u: &str| check_http_url("url", &Secret::new(u));
        assert!(ok("https://hooks.slack.com/services/T/B/x").is_ok());
        assert!(ok("http://127.0.0.1:8080/hook?key=1").is_ok());
        assert!(ok("HTTPS://h").is_ok());
        let err = ok("ftp://h/SECRET").unwrap_err();
        assert_eq!(
            err.reason,
            "scheme \"ftp\" is not supported (use http or https)"
        );
        for bad in [
            "SECRET-token",
            "https:///SECRET",
            "https://:80/SECRET",
            "http://a b/SECRET",
        ] {
            let err = ok(bad).unwrap_err();
            assert_eq!(err.key, "url");
            assert!(!err.reason.contains("SECRET"), "{bad}: {err}");
        }
    }

    #[test]
    fn body_excerpt_is_one_bounded_line() {
        assert_eq!(body_excerpt("no_service\n", 100), "no_service");
        assert_eq!(body_excerpt("a\r\nb", 100), "a  b");
        assert_eq!(body_excerpt("abcdef", 3), "abc");
    }
}
