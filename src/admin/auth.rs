//! Who may call mutating admin routes: with `admin.token` set, requests carrying
//! `Authorization: Bearer <token>` (compared in constant time); without one, anyone who
//! reaches the listener. Either way a browser page of another site cannot make the call
//! (a cross-site `Origin`, or a `Host` that is not an address, as in DNS rebinding, is
//! refused).

use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Why a mutating call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No or a wrong token: 401.
    Unauthorized,
    /// A request a browser sent for another site: 403.
    CrossSite,
}

/// Equal in time independent of where the inputs differ (and of their lengths: both are
/// hashed first).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The bearer token of an `Authorization` header value (`Bearer` in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `host` (a `Host` header value) names the listener by address or as localhost.
fn host_is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Whether a mutating call with these headers may go ahead.
pub fn check_write(headers: &HeaderMap, token: Option<&str>) -> Result<(), Refusal> {
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        let same = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
        if !same {
            return Err(Refusal::CrossSite);
        }
    }
    match token {
        Some(expected) => match bearer(headers) {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(Refusal::Unauthorized),
        },
        // Without a token, a name that resolves to us (DNS rebinding) is not enough.
        None if host_is_address(host) => Ok(()),
        None => Err(Refusal::CrossSite),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn with_a_token_only_the_right_bearer_passes() {
        let token = Some("s3cret");
        let h = |auth: &str| headers(&[("host", "127.0.0.1:8091"), ("authorization", auth)]);
        assert_eq!(check_write(&h("Bearer s3cret"), token), Ok(()));
        assert_eq!(check_write(&h("bearer  s3cret "), token), Ok(()));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert_eq!(
                check_write(&h(wrong), token),
                Err(Refusal::Unauthorized),
                "{wrong}"
            );
        }
        assert_eq!(
            check_write(&headers(&[("host", "127.0.0.1:8091")]), token),
            Err(Refusal::Unauthorized)
        );
        // A hostname is fine when the caller proves it has the token.
        let named = headers(&[
            ("host", "admin.corp:8091"),
            ("authorization", "Bearer s3cret"),
        ]);
        assert_eq!(check_write(&named, token), Ok(()));
    }

    #[test]
    fn cross_site_browser_calls_are_refused() {
        let h = headers(&[
            ("host", "127.0.0.1:8091"),
            ("origin", "https://evil.example"),
            ("authorization", "Bearer s3cret"),
        ]);
        assert_eq!(check_write(&h, Some("s3cret")), Err(Refusal::CrossSite));
        let same = headers(&[
            ("host", "127.0.0.1:8091"),
            ("origin", "http://127.0.0.1:8091"),
        ]);
        assert_eq!(check_write(&same, None), Ok(()));
        let rebound = headers(&[("host", "evil.example:8091")]);
        assert_eq!(check_write(&rebound, None), Err(Refusal::CrossSite));
        for host in ["localhost:8091", "[::1]:8091", "10.0.0.5"] {
            assert_eq!(
                check_write(&headers(&[("host", host)]), None),
                Ok(()),
                "{host}"
            );
        }
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
