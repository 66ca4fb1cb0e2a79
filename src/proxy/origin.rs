//! The absolute base URL a client used to reach the mirror (for the links, redirects and home
//! page it writes): `public_url` when set; otherwise the request's own authority, with `https`
//! when it came over TLS (or through a TLS-terminating proxy that says so).

use pingora::proxy::Session;
use url::Url;

/// How a request reached us, as far as its base URL goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival<'a> {
    /// `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub authority: Option<&'a str>,
    /// The connection is TLS (our HTTPS listener).
    pub tls: bool,
    /// `X-Forwarded-Proto`, from a proxy in front of us.
    pub forwarded_proto: Option<&'a str>,
}

/// The base URL (no trailing `/`); `local` (the listener address) when the request names no
/// authority.
pub fn public_base(public_url: Option<&Url>, arrival: Arrival<'_>, local: &str) -> String {
    if let Some(url) = public_url {
        return url.as_str().trim_end_matches('/').to_string();
    }
    let forwarded_https = arrival
        .forwarded_proto
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let scheme = if arrival.tls || forwarded_https {
        "https"
    } else {
        "http"
    };
    let host = arrival.authority.filter(|a| !a.is_empty()).unwrap_or(local);
    format!("{scheme}://{host}")
}

/// [`public_base`] for a Pingora session.
pub fn session_base(session: &Session, public_url: Option<&Url>) -> String {
    let req = session.req_header();
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let authority = header("host").or_else(|| req.uri.authority().map(|a| a.as_str()));
    let arrival = Arrival {
        authority,
        tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        forwarded_proto: header("x-forwarded-proto"),
    };
    let local = session
        .server_addr()
        .map_or_else(|| "localhost".to_string(), ToString::to_string);
    public_base(public_url, arrival, &local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival<'a>(authority: Option<&'a str>, tls: bool, proto: Option<&'a str>) -> Arrival<'a> {
        Arrival {
            authority,
            tls,
            forwarded_proto: proto,
        }
    }

    #[test]
    fn a_request_over_tls_gets_https_links() {
        let base = public_base(None, arrival(Some("m.example:8443"), true, None), "x");
        assert_eq!(base, "https://m.example:8443");
    }

    #[test]
    fn plain_http_stays_http_unless_a_proxy_says_https() {
        let plain = arrival(Some("m:8090"), false, None);
        assert_eq!(public_base(None, plain, "x"), "http://m:8090");
        let proxied = arrival(Some("m"), false, Some("HTTPS"));
        assert_eq!(public_base(None, proxied, "x"), "https://m");
    }

    #[test]
    fn public_url_wins_over_how_the_request_arrived() {
        let url = Url::parse("http://mirror.internal:8090/hf/").unwrap();
        let base = public_base(Some(&url), arrival(Some("m:8443"), true, None), "x");
        assert_eq!(base, "http://mirror.internal:8090/hf");
    }

    #[test]
    fn without_an_authority_the_listener_address_is_used() {
        let base = public_base(None, arrival(None, true, None), "127.0.0.1:8443");
        assert_eq!(base, "https://127.0.0.1:8443");
        let empty = public_base(None, arrival(Some(""), false, None), "127.0.0.1:8090");
        assert_eq!(empty, "http://127.0.0.1:8090");
    }
}
