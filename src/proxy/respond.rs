//! Writing local answers (JSON, HF errors) to the client.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::hf::HfError;
use crate::meta::Failure;

/// Make a header value safe: printable ASCII only.
pub fn header_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Write a complete response. For HEAD only the header (with the body's length) is sent.
pub async fn respond(
    session: &mut Session,
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(headers.len() + 1))?;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        header.append_header(name.clone(), header_safe(value))?;
    }
    header.insert_header("content-length", body.len().to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

pub fn error_headers(error: &HfError) -> Vec<(String, String)> {
    error
        .headers()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// Write an HF protocol error.
pub async fn respond_hf(session: &mut Session, error: &HfError) -> Result<()> {
    let headers = error_headers(error);
    respond(
        session,
        error.status,
        &headers,
        Bytes::from(error.body_json()),
    )
    .await
}

/// Write the answer for a metadata failure: HF errors as decided, upstream errors replayed,
/// and "no upstream could answer" as 502/503/504 so clients fall back to their own cache.
pub async fn respond_failure(session: &mut Session, failure: &Failure) -> Result<()> {
    let (status, headers, body) = failure_answer(failure);
    respond(session, status, &headers, body).await
}

/// The status, headers and body [`respond_failure`] writes for `failure`.
pub fn failure_answer(failure: &Failure) -> (u16, Vec<(String, String)>, Bytes) {
    let hf = |error: &HfError| {
        (
            error.status,
            error_headers(error),
            Bytes::from(error.body_json()),
        )
    };
    match failure {
        Failure::Hf(error) => hf(error),
        Failure::Replay(answer) => {
            // Answers learned from an upstream HEAD have no body; give GETs the HF JSON one.
            let body = match (answer.body.is_empty(), answer.header("x-error-message")) {
                (true, Some(message)) => {
                    Bytes::from(serde_json::json!({ "error": message }).to_string())
                }
                _ => answer.body.clone(),
            };
            (answer.status, answer.headers.clone(), body)
        }
        Failure::Upstream(e) => {
            // The details (upstream origins, transport errors) are logged, never sent.
            log::warn!("no upstream answered: {e}");
            let error = HfError::new(
                e.gateway_status(),
                None,
                format!("hubcache: {}", e.client_message()),
            );
            let (status, mut headers, body) = hf(&error);
            if let Some(retry_after) = e.retry_after() {
                headers.push(("retry-after".into(), retry_after));
            }
            (status, headers, body)
        }
        Failure::BadGateway(reason) => hf(&HfError::upstream_unavailable(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_safe_replaces_non_ascii_and_controls() {
        assert_eq!(header_safe("ok é\nx"), "ok ??x");
    }
}
