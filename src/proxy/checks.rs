//! Request checks that run before any routing (Pingora's `early_request_filter`), on the
//! parsed head. The framing and size checks on the raw bytes happened earlier, in
//! [`conn::head`](super::conn::head).
//!
//! The mirror is read-only: it answers `GET` and `HEAD`, and `POST` only on the one Hub route
//! that reads with a POST (`paths-info`, a form of paths). Everything else is 405, before it
//! could be passed through to an upstream with the client's token. A `GET`/`HEAD` carrying a
//! body is 400 (a body where none belongs is how requests are smuggled past a front proxy).

use pingora::http::RequestHeader;

use crate::hf::{self, HfError, Route};

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Route it.
    Pass,
    /// `GET /` or `HEAD /`: answer the mirror's own page.
    Home,
    /// Answer with this error (and these extra headers), then close the connection.
    Refuse(HfError, Vec<(String, String)>),
}

/// The `Allow` value for every path but paths-info.
pub const ALLOW: &str = "GET, HEAD";

/// Checks method, body and path of a request head.
pub fn check_request(req: &RequestHeader) -> Check {
    let path = req.uri.path();
    let method = req.method.as_str();
    let read = matches!(method, "GET" | "HEAD");
    if !read {
        // The same question asked by a sibling node (`docs/cluster.md`, "Metadata once").
        let hub_path = path
            .strip_prefix(crate::upstream::sibling::route::META_PREFIX)
            .unwrap_or(path);
        let paths_info = method == "POST"
            && matches!(
                hf::parse_route(method, hub_path),
                Ok(Route::PathsInfo { .. })
            );
        if !paths_info {
            let error = HfError::new(
                405,
                None,
                format!(
                    "method {} is not allowed: hubcache is a read-only mirror \
                     (GET and HEAD; POST only for paths-info)",
                    hf_method(method)
                ),
            );
            return Check::Refuse(error, vec![("allow".to_string(), ALLOW.to_string())]);
        }
    }
    if let Err(e) = hf::check_request_path(path) {
        return Check::Refuse(HfError::bad_request(e.to_string()), Vec::new());
    }
    if read && carries_body(req) {
        return Check::Refuse(
            HfError::bad_request(format!("a {method} request must not carry a body")),
            Vec::new(),
        );
    }
    if read && path == "/" {
        return Check::Home;
    }
    Check::Pass
}

/// True when the head announces a body: chunked, or a non-zero length.
fn carries_body(req: &RequestHeader) -> bool {
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return true;
    }
    req.headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes().iter().any(|&b| b != b'0'))
}

/// The method for a message: a token, shortened if long.
fn hf_method(method: &str) -> &str {
    method.get(..32).unwrap_or(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn status(check: Check) -> Option<u16> {
        match check {
            Check::Refuse(e, _) => Some(e.status),
            _ => None,
        }
    }

    #[test]
    fn reads_pass_and_the_root_is_the_home_page() {
        let resolve = "/org/name/resolve/main/config.json";
        assert_eq!(check_request(&req("GET", resolve, &[])), Check::Pass);
        assert_eq!(
            check_request(&req("HEAD", resolve, &[("content-length", "0")])),
            Check::Pass
        );
        assert_eq!(check_request(&req("GET", "/", &[])), Check::Home);
        assert_eq!(check_request(&req("HEAD", "/?x=1", &[])), Check::Home);
        assert_eq!(
            check_request(&req("GET", "/api/whoami-v2", &[])),
            Check::Pass
        );
    }

    #[test]
    fn only_paths_info_takes_a_post() {
        let pi = "/api/models/org/name/paths-info/main";
        let form = [("content-length", "20")];
        assert_eq!(check_request(&req("POST", pi, &form)), Check::Pass);
        let by_sibling = format!("/_hubcache/sibling/meta{pi}");
        assert_eq!(check_request(&req("POST", &by_sibling, &form)), Check::Pass);
        let not_paths_info = "/_hubcache/sibling/meta/org/name/resolve/main/config.json";
        assert!(matches!(
            check_request(&req("POST", not_paths_info, &form)),
            Check::Refuse(..)
        ));
        assert_eq!(
            check_request(&req(
                "POST",
                "/api/datasets/o/n/paths-info/refs%2Fpr%2F1",
                &form
            )),
            Check::Pass
        );
        for (method, path) in [
            ("POST", "/api/repos/create"),
            ("POST", "/org/name/resolve/main/config.json"),
            ("PUT", pi),
            ("DELETE", "/api/repos/delete"),
            ("PATCH", "/"),
            ("OPTIONS", "/"),
            ("TRACE", "/"),
            ("PROPFIND", "/"),
        ] {
            let check = check_request(&req(method, path, &form));
            let Check::Refuse(error, headers) = check else {
                panic!("{method} {path} passed");
            };
            assert_eq!(error.status, 405, "{method} {path}");
            assert_eq!(headers, vec![("allow".to_string(), ALLOW.to_string())]);
        }
    }

    #[test]
    fn reads_with_a_body_are_refused() {
        let p = "/org/name/resolve/main/config.json";
        assert_eq!(
            status(check_request(&req("GET", p, &[("content-length", "5")]))),
            Some(400)
        );
        assert_eq!(
            status(check_request(&req(
                "HEAD",
                p,
                &[("transfer-encoding", "chunked")]
            ))),
            Some(400)
        );
    }

    #[test]
    fn hostile_paths_are_refused_before_routing() {
        for path in [
            "/org/name/resolve/main/%2e%2e/%2e%2e/etc/passwd",
            "/api/%2e%2e/admin",
            "/whatever/%5c..%5c",
            "/x/%00",
            "/x/%252e%252e",
        ] {
            assert_eq!(
                status(check_request(&req("GET", path, &[]))),
                Some(400),
                "{path}"
            );
        }
    }
}
