//! Header names the Hub and its clients use, and ETag helpers.
//!
//! Names are given in the Hub's own spelling; HTTP header names compare case-insensitively.

/// Full commit sha a resolve (or error) answer is bound to. Required by every client.
pub const X_REPO_COMMIT: &str = "X-Repo-Commit";
/// ETag of the LFS/Xet object behind a pointer: `"<sha256>"`. Preferred over `ETag` by clients.
pub const X_LINKED_ETAG: &str = "X-Linked-Etag";
/// Real size of the LFS/Xet object behind a pointer (the only size clients trust on a redirect).
pub const X_LINKED_SIZE: &str = "X-Linked-Size";
/// Machine-readable Hub error code (see [`super::errors::ErrorCode`]).
pub const X_ERROR_CODE: &str = "X-Error-Code";
/// Human-readable Hub error message; clients show it and match "Access to this resource is disabled.".
pub const X_ERROR_MESSAGE: &str = "X-Error-Message";
/// Request id the Hub attaches; clients print it in errors.
pub const X_REQUEST_ID: &str = "X-Request-Id";
/// Random per-request id sent by huggingface_hub.
pub const X_AMZN_TRACE_ID: &str = "X-Amzn-Trace-Id";
/// Sent by huggingface_hub on requests made inside a download.
pub const X_HF_DOWNLOAD_COUNTER: &str = "X-HF-Download-Counter";
/// `topic; message` warnings printed once per topic by the client.
pub const X_HF_WARNING: &str = "X-HF-Warning";
/// Total count on some paginated API answers.
pub const X_TOTAL_COUNT: &str = "X-Total-Count";
/// Entity tag: git blob sha1 for regular files, sha256 for LFS/Xet files, always quoted.
pub const ETAG: &str = "ETag";
/// Pagination (`rel="next"`) and Xet (`rel="xet-auth"`, `rel="xet-reconstruction-info"`) links.
pub const LINK: &str = "Link";
/// Redirect target.
pub const LOCATION: &str = "Location";
/// Body length; on a resolve 200/206 the file (or range) size.
pub const CONTENT_LENGTH: &str = "Content-Length";
/// `bytes a-b/total` on a 206, `bytes */total` on a 416.
pub const CONTENT_RANGE: &str = "Content-Range";
/// Content type.
pub const CONTENT_TYPE: &str = "Content-Type";
/// Content encoding; never set on `/resolve` answers.
pub const CONTENT_ENCODING: &str = "Content-Encoding";
/// Optional download file name.
pub const CONTENT_DISPOSITION: &str = "Content-Disposition";
/// `bytes` on resolve answers.
pub const ACCEPT_RANGES: &str = "Accept-Ranges";
/// Byte range request.
pub const RANGE: &str = "Range";
/// Conditional range.
pub const IF_RANGE: &str = "If-Range";
/// Conditional GET/HEAD.
pub const IF_NONE_MATCH: &str = "If-None-Match";
/// Bearer token; never forwarded to hosts it was not meant for.
pub const AUTHORIZATION: &str = "Authorization";
/// Seconds to wait before retrying (429/503).
pub const RETRY_AFTER: &str = "Retry-After";
/// Hub rate-limit state, e.g. `"resolvers";r=2998;t=172`.
pub const RATELIMIT: &str = "RateLimit";
/// Hub rate-limit policy, e.g. `"fixed window";"resolvers";q=3000;w=300`.
pub const RATELIMIT_POLICY: &str = "RateLimit-Policy";
/// CORS: which headers browser clients may read.
pub const ACCESS_CONTROL_EXPOSE_HEADERS: &str = "Access-Control-Expose-Headers";
/// The Hub's value of [`ACCESS_CONTROL_EXPOSE_HEADERS`] without `X-Xet-Hash`.
pub const EXPOSE_HEADERS_VALUE: &str = "X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag";

/// Xet content hash of a file (64 hex). Its presence switches clients to the Xet path.
pub const X_XET_HASH: &str = "X-Xet-Hash";
/// Xet token refresh route (alternative to `Link rel="xet-auth"`).
pub const X_XET_REFRESH_ROUTE: &str = "X-Xet-Refresh-Route";
/// Xet CAS base URL, from the token endpoint.
pub const X_XET_CAS_URL: &str = "X-Xet-Cas-Url";
/// Xet CAS access token, from the token endpoint.
pub const X_XET_ACCESS_TOKEN: &str = "X-Xet-Access-Token";
/// Xet token expiry (unix seconds), from the token endpoint.
pub const X_XET_TOKEN_EXPIRATION: &str = "X-Xet-Token-Expiration";
/// Every Xet header the Hub is known to send.
pub const XET_HEADERS: [&str; 5] = [
    X_XET_HASH,
    X_XET_REFRESH_ROUTE,
    X_XET_CAS_URL,
    X_XET_ACCESS_TOKEN,
    X_XET_TOKEN_EXPIRATION,
];

/// True for any Xet header (`X-Xet-*`, case-insensitive), which a strip-Xet mirror removes.
pub fn is_xet_header(name: &str) -> bool {
    name.len() >= 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"x-xet-")
}

/// The bare value of an entity tag: surrounding whitespace, a `W/` prefix and the quotes removed,
/// exactly as the client does before naming its blob (`W/"abc"` → `abc`).
pub fn normalize_etag(raw: &str) -> String {
    let s = raw.trim();
    let s = s
        .strip_prefix("W/")
        .or_else(|| s.strip_prefix("w/"))
        .unwrap_or(s);
    s.trim_matches('"').to_string()
}

/// A strong, quoted entity tag for `value` (normalised first, so quoting twice is harmless).
pub fn quote_etag(value: &str) -> String {
    format!("\"{}\"", normalize_etag(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xet_headers_are_detected_case_insensitively() {
        for name in XET_HEADERS {
            assert!(is_xet_header(name));
            assert!(is_xet_header(&name.to_ascii_lowercase()));
            assert!(is_xet_header(&name.to_ascii_uppercase()));
        }
        assert!(is_xet_header("x-xet-something-new"));
        for name in [
            "X-Repo-Commit",
            "X-Linked-Etag",
            "x-xet",
            "xet-hash",
            "X-Xetra",
            "",
        ] {
            assert!(!is_xet_header(name), "{name}");
        }
    }

    #[test]
    fn normalize_etag_strips_weak_prefix_and_quotes() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("  \"abc\" "), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
        assert_eq!(normalize_etag(""), "");
    }

    #[test]
    fn quote_etag_is_idempotent() {
        assert_eq!(quote_etag("abc"), "\"abc\"");
        assert_eq!(quote_etag("\"abc\""), "\"abc\"");
        assert_eq!(quote_etag("W/\"abc\""), "\"abc\"");
    }

    #[test]
    fn expose_headers_value_has_no_xet() {
        assert!(!EXPOSE_HEADERS_VALUE.to_ascii_lowercase().contains("xet"));
    }
}
