//! Signing requests between sibling nodes: an HMAC-SHA256 of the cluster secret over the
//! method, path (with query), range, a timestamp and the digest of the client token the
//! request carries. A signature is accepted within [`MAX_SKEW`] of its timestamp.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::ClusterSecret;

/// Header carrying the signing time (unix seconds).
pub const HEADER_TIME: &str = "x-hubcache-sibling-time";
/// Header carrying the signature (lowercase hex).
pub const HEADER_SIGNATURE: &str = "x-hubcache-sibling-signature";
/// Largest accepted difference between a signature's time and the receiver's clock, seconds.
pub const MAX_SKEW: u64 = 30;

type HmacSha256 = Hmac<Sha256>;

/// Why a sibling request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("this node is not in a cluster (no cluster.secret)")]
    NoSecret,
    #[error("the request is not signed")]
    Missing,
    #[error("the signature headers are malformed")]
    Malformed,
    #[error("the signature is more than {MAX_SKEW} s away from this node's clock")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub path_and_query: &'a str,
    /// The `Range` header, if any.
    pub range: Option<&'a str>,
    /// The client's `Authorization` value the request is made for, if any.
    pub auth: Option<&'a str>,
}

/// Signs and checks sibling requests with the cluster secret.
#[derive(Clone)]
pub struct Signer {
    secret: ClusterSecret,
}

impl Signer {
    pub fn new(secret: ClusterSecret) -> Self {
        Self { secret }
    }

    fn mac(&self, what: &Signed<'_>, time: u64) -> HmacSha256 {
        // The key length is never rejected by HMAC (keys of any length are hashed or padded).
        let mut mac = match HmacSha256::new_from_slice(self.secret.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        let auth = what
            .auth
            .map(|a| hex::encode(Sha256::digest(a.as_bytes())))
            .unwrap_or_else(|| "-".to_string());
        let message = format!(
            "hubcache-sibling-v1\n{}\n{}\n{}\n{time}\n{auth}",
            what.method,
            what.path_and_query,
            what.range.unwrap_or("-"),
        );
        mac.update(message.as_bytes());
        mac
    }

    /// The signature of `what` at `time` (unix seconds), lowercase hex.
    pub fn sign(&self, what: &Signed<'_>, time: u64) -> String {
        hex::encode(self.mac(what, time).finalize().into_bytes())
    }

    /// Checks the time and signature headers of a request against `what`, at `now`.
    pub fn verify(
        &self,
        what: &Signed<'_>,
        time: Option<&str>,
        signature: Option<&str>,
        now: u64,
    ) -> Result<(), SignatureError> {
        let (Some(time), Some(signature)) = (time, signature) else {
            return Err(SignatureError::Missing);
        };
        let time: u64 = time.parse().map_err(|_| SignatureError::Malformed)?;
        let signature = hex::decode(signature).map_err(|_| SignatureError::Malformed)?;
        if time.abs_diff(now) > MAX_SKEW {
            return Err(SignatureError::Stale);
        }
        self.mac(what, time)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// Seconds since the unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(secret: &str) -> Signer {
        Signer::new(ClusterSecret::new(secret.to_string()))
    }

    const WHAT: Signed<'static> = Signed {
        method: "GET",
        path_and_query: "/_hubcache/sibling/blob/abc?size=3",
        range: Some("bytes=0-2"),
        auth: None,
    };

    #[test]
    fn a_signature_verifies_within_the_skew() {
        let s = signer("0123456789abcdef");
        let sig = s.sign(&WHAT, 1000);
        assert_eq!(s.verify(&WHAT, Some("1000"), Some(&sig), 1000), Ok(()));
        assert_eq!(s.verify(&WHAT, Some("1000"), Some(&sig), 1030), Ok(()));
        assert_eq!(s.verify(&WHAT, Some("1000"), Some(&sig), 970), Ok(()));
    }

    #[test]
    fn stale_missing_malformed_and_forged_signatures_are_refused() {
        let s = signer("0123456789abcdef");
        let sig = s.sign(&WHAT, 1000);
        let verify = |time: Option<&str>, sig: Option<&str>, now| s.verify(&WHAT, time, sig, now);
        assert_eq!(
            verify(Some("1000"), Some(&sig), 1031),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some("1000"), Some(&sig), 969),
            Err(SignatureError::Stale)
        );
        assert_eq!(verify(None, Some(&sig), 1000), Err(SignatureError::Missing));
        assert_eq!(
            verify(Some("1000"), None, 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("x"), Some(&sig), 1000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some("1000"), Some("zz"), 1000),
            Err(SignatureError::Malformed)
        );
        // Another secret, another time, another range, path or token: no match.
        let other = signer("fedcba9876543210").sign(&WHAT, 1000);
        assert_eq!(
            verify(Some("1000"), Some(&other), 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some("1001"), Some(&sig), 1000),
            Err(SignatureError::Mismatch)
        );
        for changed in [
            Signed {
                range: Some("bytes=0-3"),
                ..WHAT
            },
            Signed {
                path_and_query: "/_hubcache/sibling/blob/abd?size=3",
                ..WHAT
            },
            Signed {
                method: "HEAD",
                ..WHAT
            },
            Signed {
                auth: Some("Bearer hf_x"),
                ..WHAT
            },
        ] {
            assert_eq!(
                s.verify(&changed, Some("1000"), Some(&sig), 1000),
                Err(SignatureError::Mismatch)
            );
        }
    }
}
