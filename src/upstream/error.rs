//! Errors of the upstream layer. The interesting one is [`UpstreamError::Unavailable`]: no
//! upstream in the chain gave an answer, which the proxy reports as 502/503/504 (never a 4xx,
//! so clients fall back to their own cache).
//!
//! No error here carries a URL: a CDN URL is signed (whoever holds it can fetch a gated file
//! for as long as it is valid), and these messages reach logs. Errors name an upstream by its
//! configured origin only; clients get [`UpstreamError::client_message`], which names none.

use std::fmt;
use std::time::Duration;

/// Why one upstream attempt did not produce an answer.
#[derive(Debug, Clone)]
pub enum AttemptFailure {
    /// Connection refused, DNS failure, TLS failure, reset.
    Connect(String),
    /// No response (or no progress) within the timeout.
    Timeout,
    /// The upstream answered with a status that means "try elsewhere" (5xx, 429).
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// The upstream was not given the client's token and answered "authenticate": not an
    /// answer for this client.
    Withheld { status: u16 },
}

/// One failed attempt against one upstream.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub origin: String,
    pub failure: AttemptFailure,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            AttemptFailure::Connect(reason) => write!(f, "{}: {reason}", self.origin),
            AttemptFailure::Timeout => write!(f, "{}: timed out", self.origin),
            AttemptFailure::Status { status, .. } => {
                write!(f, "{}: answered {status}", self.origin)
            }
            AttemptFailure::Withheld { status } => write!(
                f,
                "{}: answered {status} without the client's token (not trusted with it)",
                self.origin
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("offline mode: no upstream is contacted")]
    Offline,
    #[error("no upstream answered ({})", describe(.attempts))]
    Unavailable { attempts: Vec<Attempt> },
    #[error("too many redirects at {origin}")]
    TooManyRedirects { origin: String },
    #[error("{origin} sent an unusable redirect Location")]
    BadRedirect { origin: String },
    #[error("{origin} sent a body larger than {limit} bytes")]
    BodyTooLarge { origin: String, limit: usize },
    #[error("invalid upstream configuration: {0}")]
    Config(String),
}

fn describe(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no upstream may be asked".to_string();
    }
    attempts
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl UpstreamError {
    /// The status hubcache answers with when this error means "no upstream could answer":
    /// 504 when every attempt timed out, 503 when upstreams answered with overload statuses,
    /// 502 otherwise.
    pub fn gateway_status(&self) -> u16 {
        match self {
            UpstreamError::Unavailable { attempts } if !attempts.is_empty() => {
                if attempts
                    .iter()
                    .all(|a| matches!(a.failure, AttemptFailure::Timeout))
                {
                    504
                } else if attempts
                    .iter()
                    .any(|a| matches!(a.failure, AttemptFailure::Status { .. }))
                {
                    503
                } else {
                    502
                }
            }
            UpstreamError::Offline => 503,
            _ => 502,
        }
    }

    /// What a client is told: the kind of failure, never an upstream's address or a URL.
    pub fn client_message(&self) -> &'static str {
        match self {
            UpstreamError::Offline => "hubcache is offline and this is not cached",
            UpstreamError::Unavailable { .. } => match self.gateway_status() {
                504 => "no upstream hub answered in time",
                503 => "the upstream hubs are unavailable or overloaded",
                _ => "no upstream hub could be reached",
            },
            _ => "an upstream hub sent an unusable answer",
        }
    }

    /// A `Retry-After` an upstream asked for, to pass on to the client.
    pub fn retry_after(&self) -> Option<String> {
        match self {
            UpstreamError::Unavailable { attempts } => {
                attempts.iter().find_map(|a| match &a.failure {
                    AttemptFailure::Status { retry_after, .. } => retry_after.clone(),
                    _ => None,
                })
            }
            _ => None,
        }
    }
}

/// Classify a transport error from reqwest. Its URL (for a CDN: a signed one) is dropped,
/// and any URL in its causes masked.
pub(crate) fn classify(err: reqwest::Error) -> AttemptFailure {
    if err.is_timeout() {
        return AttemptFailure::Timeout;
    }
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    AttemptFailure::Connect(mask_urls(&message))
}

/// Replace every `scheme://...` in `text` by `<url>` (up to the next space, quote or bracket).
pub(crate) fn mask_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !c.is_ascii_alphanumeric() && !matches!(c, '+' | '-' | '.'))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ']'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str("<url>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Default timeout for a whole metadata exchange when the config gives none.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(failure: AttemptFailure) -> Attempt {
        Attempt {
            origin: "http://up".into(),
            failure,
        }
    }

    #[test]
    fn all_timeouts_map_to_gateway_timeout() {
        let err = UpstreamError::Unavailable {
            attempts: vec![attempt(AttemptFailure::Timeout)],
        };
        assert_eq!(err.gateway_status(), 504);
    }

    #[test]
    fn overloaded_upstream_maps_to_service_unavailable_with_retry_after() {
        let err = UpstreamError::Unavailable {
            attempts: vec![
                attempt(AttemptFailure::Connect("refused".into())),
                attempt(AttemptFailure::Status {
                    status: 429,
                    retry_after: Some("7".into()),
                }),
            ],
        };
        assert_eq!(err.gateway_status(), 503);
        assert_eq!(err.retry_after().as_deref(), Some("7"));
    }

    #[test]
    fn urls_are_masked_in_messages() {
        assert_eq!(
            mask_urls("error sending request for url (http://cdn:1/x?Signature=abc): reset"),
            "error sending request for url (<url>): reset"
        );
        assert_eq!(mask_urls("a https://h/p b"), "a <url> b");
        assert_eq!(mask_urls("no url here"), "no url here");
    }

    #[test]
    fn client_messages_name_no_upstream() {
        let err = UpstreamError::Unavailable {
            attempts: vec![attempt(AttemptFailure::Connect("refused".into()))],
        };
        assert!(err.to_string().contains("http://up"));
        assert!(!err.client_message().contains("http"));
        let withheld = UpstreamError::Unavailable {
            attempts: vec![attempt(AttemptFailure::Withheld { status: 401 })],
        };
        assert_eq!(withheld.gateway_status(), 502);
    }

    #[test]
    fn refused_connections_map_to_bad_gateway() {
        let err = UpstreamError::Unavailable {
            attempts: vec![attempt(AttemptFailure::Connect("refused".into()))],
        };
        assert_eq!(err.gateway_status(), 502);
    }
}
