//! Content ids of blobs.

use std::fmt;
use std::str::FromStr;

/// A string that is not a valid content id (40 or 64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blob id {id:?}: {reason}")]
pub struct InvalidBlobId {
    /// The offending input (truncated to 80 characters).
    pub id: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// The content id of a blob: the lowercase hex of a sha256 (64 digits; LFS files, the
/// `lfs.oid`) or of a git blob sha1 (40 digits; regular files, the git `oid`).
///
/// Blobs are deduplicated by this id across all repositories and revisions: two files with the
/// same id have the same bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(Box<str>);

impl BlobId {
    /// Parses a 40- or 64-digit hex id. Uppercase digits are accepted and normalised to
    /// lowercase; anything else is [`InvalidBlobId`].
    pub fn parse(s: &str) -> Result<Self, InvalidBlobId> {
        let invalid = |reason| InvalidBlobId {
            id: s.chars().take(80).collect(),
            reason,
        };
        if s.len() != 40 && s.len() != 64 {
            return Err(invalid(
                "expected 40 (git blob sha1) or 64 (sha256) hex digits",
            ));
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("not hexadecimal"));
        }
        Ok(BlobId(s.to_ascii_lowercase().into_boxed_str()))
    }

    /// The id as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a 64-digit id (sha256 of the content).
    pub fn is_sha256(&self) -> bool {
        self.0.len() == 64
    }

    /// True for a 40-digit id (git blob sha1: `sha1("blob {size}\0" + content)`).
    pub fn is_git_sha1(&self) -> bool {
        self.0.len() == 40
    }

    /// The two directory levels of the blob path: `hex[0..2]` and `hex[2..4]`.
    pub(crate) fn shard(&self) -> (&str, &str) {
        (&self.0[0..2], &self.0[2..4])
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.0)
    }
}

impl FromStr for BlobId {
    type Err = InvalidBlobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlobId::parse(s)
    }
}

impl AsRef<str> for BlobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256_and_git_sha1_ids() {
        let a = BlobId::parse(&"ab".repeat(32)).unwrap();
        assert!(a.is_sha256());
        assert!(!a.is_git_sha1());
        let b = BlobId::parse(&"0c".repeat(20)).unwrap();
        assert!(b.is_git_sha1());
        assert_eq!(b.shard(), ("0c", "0c"));
        assert_eq!(b.to_string(), "0c".repeat(20));
    }

    #[test]
    fn normalises_uppercase_to_lowercase() {
        let a = BlobId::parse(&"AB".repeat(32)).unwrap();
        assert_eq!(a.as_str(), "ab".repeat(32));
        assert_eq!(a, BlobId::parse(&"ab".repeat(32)).unwrap());
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert!(BlobId::parse("").is_err());
        assert!(BlobId::parse(&"a".repeat(63)).is_err());
        assert!(BlobId::parse(&"a".repeat(65)).is_err());
        assert!(BlobId::parse(&"g".repeat(64)).is_err());
        assert!(BlobId::parse(&format!("../{}", "a".repeat(37))).is_err());
        // Multi-byte characters must not panic the length check or the error message.
        assert!(BlobId::parse(&"é".repeat(20)).is_err());
        let err = BlobId::parse("xyz").unwrap_err();
        assert_eq!(err.id, "xyz");
        assert!(
            err.to_string().contains("40 (git blob sha1) or 64"),
            "{err}"
        );
    }
}
