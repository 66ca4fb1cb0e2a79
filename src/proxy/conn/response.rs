//! The raw HTTP/1.1 answers written before Pingora has a session: refused heads, head
//! timeouts, connections over the limit. Same shape as every other hubcache error (the Hub's
//! JSON body and `X-Error-Message`), always with `Connection: close`.

use super::head::Refusal;
use crate::hf::HfError;

/// The complete response for `refusal`.
pub fn refusal_bytes(refusal: &Refusal) -> Vec<u8> {
    let error = HfError::new(refusal.status, None, refusal.reason);
    let body = error.body_json();
    let reason = http::StatusCode::from_u16(refusal.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", refusal.status);
    for (name, value) in error.headers() {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if refusal.status == 503 {
        out.push_str("Retry-After: 1\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_complete_http_answers_that_close() {
        let text = String::from_utf8(refusal_bytes(&Refusal {
            status: 431,
            reason: "too large",
        }))
        .unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains("\r\nX-Error-Message: too large"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(body, r#"{"error":"too large"}"#);
        let busy = String::from_utf8(refusal_bytes(&Refusal {
            status: 503,
            reason: "busy",
        }))
        .unwrap();
        assert!(busy.contains("\r\nRetry-After: 1\r\n"));
    }
}
