//! `GET /` on the admin listener: the live status page. One HTML file with its CSS and
//! JavaScript inline (no build step, no external assets); it polls `/api/status`.

use http::{HeaderValue, StatusCode};

use super::router::{with_body, Response};

/// The page (`src/admin/page.html`).
pub const PAGE_HTML: &str = include_str!("page.html");

/// Only the page's own inline code and same-origin requests (the status JSON).
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub fn response() -> Response {
    let mut response = with_body(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE_HTML.as_bytes().to_vec(),
    );
    response
        .headers_mut()
        .insert("content-security-policy", HeaderValue::from_static(CSP));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_polls_the_status_json() {
        assert!(PAGE_HTML.contains("/api/status"));
        for external in ["http://", "https://", "src=\"//", "<link"] {
            assert!(
                !PAGE_HTML.contains(external),
                "the page refers to {external}"
            );
        }
        for section in ["upstreams", "roots", "fills", "jobs", "top-repos", "errors"] {
            assert!(
                PAGE_HTML.contains(&format!("id=\"{section}\"")),
                "no section {section}"
            );
        }
    }
}
