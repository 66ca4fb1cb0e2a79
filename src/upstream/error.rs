//! Errors of the upstream layer. The interesting one is [`UpstreamError::Unavailable`]: no
//! upstream in the chain gave an answer, which the proxy reports as 502/503/504 (never a 4xx,
//! so clients fall back to their own cache).

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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("offline mode: no upstream is contacted")]
    Offline,
    #[error("no upstream answered ({})", describe(.attempts))]
    Unavailable { attempts: Vec<Attempt> },
    #[error("too many redirects starting at {url}")]
    TooManyRedirects { url: String },
    #[error("upstream {url} sent an unusable redirect Location {location:?}")]
    BadRedirect { url: String, location: String },
    #[error("upstream {url} sent a body larger than {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("invalid upstream configuration: {0}")]
    Config(String),
}

fn describe(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no upstream configured".to_string();
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

/// Classify a transport error from reqwest.
pub(crate) fn classify(err: &reqwest::Error) -> AttemptFailure {
    if err.is_timeout() {
        AttemptFailure::Timeout
    } else {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        AttemptFailure::Connect(message)
    }
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
    fn refused_connections_map_to_bad_gateway() {
        let err = UpstreamError::Unavailable {
            attempts: vec![attempt(AttemptFailure::Connect("refused".into()))],
        };
        assert_eq!(err.gateway_status(), 502);
    }
}
