//! Values that must never reach a log, an error message or a metric.

use std::fmt;

/// A credential: a webhook URL that embeds a key, a signing secret. `Debug` and `Display`
/// print `***`; [`expose`](Secret::expose) gives the value to the code that sends it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself. Use it only to send it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL safe to show: scheme, host and port, the rest replaced by `/***`
/// (`https://hooks.slack.com/services/T0/B0/xyz` → `https://hooks.slack.com/***`). Webhook
/// URLs carry their credential in the path or query, so nothing after the authority is kept;
/// user info is dropped too. A value that is not a URL shows as `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return "***".to_string();
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() {
        return "***".to_string();
    }
    let tail = if rest.len() > authority.len() {
        "/***"
    } else {
        ""
    };
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("whsec_c2VjcmV0");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(&s)).contains("whsec"));
        assert_eq!(s.expose(), "whsec_c2VjcmV0");
    }

    #[test]
    fn redact_url_keeps_only_scheme_host_and_port() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/xyz"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            redact_url("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-123"),
            "https://qyapi.weixin.qq.com/***"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8080/hook"),
            "http://127.0.0.1:8080/***"
        );
        assert_eq!(redact_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(redact_url("http://h?key=1"), "http://h/***");
        assert_eq!(redact_url("693axxx6-7aoc-4bc4"), "***");
        assert_eq!(redact_url("://x"), "***");
    }
}
