//! What webhook-style sinks share (feature `http-client`): an HTTP client that never follows
//! redirects (an alert goes where it was configured to, or nowhere) with bounded connect and
//! total time, and a JSON POST whose answer is read into a [`Delivery`] without ever naming
//! the URL (it may carry a key).

use std::time::Duration;

use crate::http::{body_excerpt, classify_status};
use crate::{Delivery, OptionError, Secret};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The client for one sink (errors name the `url` option).
pub fn http_client() -> Result<reqwest::Client, OptionError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CLIENT_TIMEOUT)
        .user_agent(concat!("hubcache-alerts/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OptionError::new("url", format!("cannot create an HTTP client: {e}")))
}

/// Why a request failed, with its causes but without the URL.
pub fn transport_error(error: reqwest::Error) -> Delivery {
    let error = error.without_url();
    let mut reason = format!("request failed: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Delivery::retry(reason)
}

/// A receiver's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// What [`classify_status`] makes of the status, `Retry-After` and the body's start.
    pub delivery: Delivery,
    /// The body, for sinks that look inside a 200 (WeCom's `errcode`).
    pub text: String,
}

/// POSTs `body` (JSON) to `url` with the extra `headers`; `excerpt`: how much of an error
/// body a failed delivery quotes.
pub async fn post_json(
    client: &reqwest::Client,
    url: &Secret,
    headers: &[(&str, String)],
    body: Vec<u8>,
    excerpt: usize,
) -> Answer {
    let mut request = client
        .post(url.expose())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) => {
            return Answer {
                delivery: transport_error(e),
                text: String::new(),
            }
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.unwrap_or_default();
    Answer {
        delivery: classify_status(
            status,
            retry_after.as_deref(),
            &body_excerpt(&text, excerpt),
        ),
        text,
    }
}
