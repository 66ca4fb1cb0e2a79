//! One access-log line per request. It carries what an operator needs and nothing secret: the
//! request path without query values (a signed URL's signature, a token in a query never
//! appear), no headers, no client address.

use std::time::Duration;

use serde_json::{json, Value};

/// What one request was and how it was answered.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord<'a> {
    pub method: &'a str,
    /// The route kind (`resolve`, `tree`, `other`, ...).
    pub route: &'a str,
    /// `models/org/name` when the route names a repo.
    pub repo: Option<&'a str>,
    /// The request path (no query).
    pub path: &'a str,
    /// The raw query string; only its parameter names are logged.
    pub query: Option<&'a str>,
    /// 0 when no response was sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    pub duration: Duration,
    /// `hit`, `partial`, `miss`, `pass` or `-`.
    pub cache: &'a str,
    /// The upstream's origin (`https://huggingface.co`) that answered or filled, if any.
    pub upstream: Option<&'a str>,
    /// What went wrong, if anything (already free of URLs' queries).
    pub error: Option<&'a str>,
}

/// `?a&b` for a query `a=1&b=2` (names only), empty without a query.
fn query_names(query: Option<&str>) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let names: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .collect();
    format!("?{}", names.join("&"))
}

/// Replace the query of every URL-like word in `text` (`...?x=y` up to the next space or
/// quote) by `?…`, so an error message that names a signed URL does not reveal it.
pub fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_query = false;
    for c in text.chars() {
        if in_query {
            if c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ',') {
                in_query = false;
                out.push(c);
            }
            continue;
        }
        if c == '?' {
            in_query = true;
            out.push_str("?…");
            continue;
        }
        out.push(c);
    }
    out
}

impl AccessRecord<'_> {
    fn millis(&self) -> f64 {
        (self.duration.as_secs_f64() * 1e4).round() / 10.0
    }

    /// `GET resolve models/acme/x /acme/x/resolve/main/a.bin 200 bytes=5 ms=1.2 cache=hit upstream=-`
    pub fn text(&self) -> String {
        let mut line = format!(
            "{} {} {} {}{} {} bytes={} ms={} cache={} upstream={}",
            self.method,
            self.route,
            self.repo.unwrap_or("-"),
            self.path,
            query_names(self.query),
            self.status,
            self.bytes,
            self.millis(),
            self.cache,
            self.upstream.unwrap_or("-"),
        );
        if let Some(error) = self.error {
            line.push_str(&format!(" error={error:?}"));
        }
        line
    }

    /// The line as one JSON object.
    pub fn json(&self, ts: &str) -> Value {
        let mut value = json!({
            "ts": ts,
            "level": "INFO",
            "target": super::ACCESS_TARGET,
            "method": self.method,
            "route": self.route,
            "repo": self.repo,
            "path": format!("{}{}", self.path, query_names(self.query)),
            "status": self.status,
            "bytes": self.bytes,
            "duration_ms": self.millis(),
            "cache": self.cache,
            "upstream": self.upstream,
        });
        if let (Some(error), Some(map)) = (self.error, value.as_object_mut()) {
            map.insert("error".into(), Value::from(error));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            method: "GET",
            route: "resolve",
            repo: Some("models/acme/gated"),
            path: "/acme/gated/resolve/main/model.safetensors",
            query: Some("Expires=123&Signature=abc%2Fdef&download"),
            status: 206,
            bytes: 1024,
            duration: Duration::from_micros(12_345),
            cache: "partial",
            upstream: Some("https://huggingface.co"),
            error: None,
        }
    }

    #[test]
    fn text_line_has_every_field_and_no_query_values() {
        let line = record().text();
        assert_eq!(
            line,
            "GET resolve models/acme/gated /acme/gated/resolve/main/model.safetensors\
             ?Expires&Signature&download 206 bytes=1024 ms=12.3 cache=partial \
             upstream=https://huggingface.co"
        );
        assert!(!line.contains("abc"), "{line}");
    }

    #[test]
    fn json_line_has_every_field_and_no_query_values() {
        let value = record().json("2026-12-01T00:00:00.000Z");
        assert_eq!(value["method"], "GET");
        assert_eq!(value["route"], "resolve");
        assert_eq!(value["repo"], "models/acme/gated");
        assert_eq!(value["status"], 206);
        assert_eq!(value["bytes"], 1024);
        assert_eq!(value["duration_ms"], 12.3);
        assert_eq!(value["cache"], "partial");
        assert_eq!(value["upstream"], "https://huggingface.co");
        assert!(value.get("error").is_none());
        let text = value.to_string();
        assert!(!text.contains("abc") && !text.contains("123"), "{text}");
    }

    #[test]
    fn errors_are_quoted_and_absent_fields_are_dashes() {
        let r = AccessRecord {
            method: "HEAD",
            route: "other",
            path: "/x",
            error: Some("boom here"),
            cache: "-",
            ..AccessRecord::default()
        };
        assert_eq!(
            r.text(),
            "HEAD other - /x 0 bytes=0 ms=0 cache=- upstream=- error=\"boom here\""
        );
        assert_eq!(r.json("t")["error"], "boom here");
        assert_eq!(r.json("t")["repo"], Value::Null);
    }

    #[test]
    fn queries_of_urls_in_messages_are_redacted() {
        assert_eq!(
            redact_queries("fetch https://cdn/x?Signature=s3cret&Expires=1 failed: 403"),
            "fetch https://cdn/x?… failed: 403"
        );
        assert_eq!(redact_queries("no query here"), "no query here");
        assert_eq!(redact_queries("\"u?a=b\" ok"), "\"u?…\" ok");
    }
}
