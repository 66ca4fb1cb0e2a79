//! The few repo-info JSON fields the mirror itself relies on.
//!
//! Repo-info bodies (`GET /api/{type}s/{repo}[/revision/{rev}]`) are passed to clients in the
//! upstream's shape; only `sha` (the commit a mutable revision resolves to), `private` and
//! `gated` (for access control) are read here.

use serde_json::Value;

use super::repo::is_commit_sha;

/// A repo's gating mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Gated {
    /// Not gated (`false`, missing or `null`).
    #[default]
    No,
    /// Gated with automatic approval (`"auto"`).
    Auto,
    /// Gated with manual approval (`"manual"`; also any other truthy value, so access is
    /// always checked when in doubt).
    Manual,
}

impl Gated {
    /// True unless [`Gated::No`].
    pub fn is_gated(self) -> bool {
        self != Gated::No
    }
}

/// Why a repo-info body could not be summarised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// The body is not a JSON object.
    #[error("repo info is not a JSON object: {0}")]
    NotAnObject(String),
    /// `sha` is missing or not 40 hex characters.
    #[error("repo info has no valid 40-hex \"sha\": {0}")]
    Sha(String),
    /// A field has the wrong type.
    #[error("repo info field {field:?} has unexpected value {value}")]
    Field {
        /// The field name.
        field: &'static str,
        /// The value found.
        value: String,
    },
}

/// What the mirror needs from a repo-info answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfoSummary {
    /// The commit the answer is bound to (40 lowercase hex).
    pub sha: String,
    /// Whether the repo is private (missing → false).
    pub private: bool,
    /// Gating mode (missing → [`Gated::No`]).
    pub gated: Gated,
}

impl RepoInfoSummary {
    /// Reads `sha`, `private` and `gated` from a repo-info JSON value. `sha` must be 40 hex
    /// characters (normalised to lowercase); `private` must be a boolean if present; `gated`
    /// may be `false`, `true`, `"auto"`, `"manual"` or missing.
    pub fn from_json(value: &Value) -> Result<RepoInfoSummary, InfoError> {
        let obj = value
            .as_object()
            .ok_or_else(|| InfoError::NotAnObject(truncate(&value.to_string())))?;
        let sha = match obj.get("sha") {
            Some(Value::String(s)) if is_commit_sha(&s.to_ascii_lowercase()) => {
                s.to_ascii_lowercase()
            }
            Some(other) => return Err(InfoError::Sha(truncate(&other.to_string()))),
            None => return Err(InfoError::Sha("missing".to_string())),
        };
        let private = match obj.get("private") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(InfoError::Field {
                    field: "private",
                    value: truncate(&other.to_string()),
                })
            }
        };
        let gated = match obj.get("gated") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Gated::No,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("auto") => Gated::Auto,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => Gated::No,
            Some(Value::String(_)) | Some(Value::Bool(true)) => Gated::Manual,
            Some(other) => {
                return Err(InfoError::Field {
                    field: "gated",
                    value: truncate(&other.to_string()),
                })
            }
        };
        Ok(RepoInfoSummary {
            sha,
            private,
            gated,
        })
    }

    /// Parses a repo-info body and summarises it.
    pub fn from_slice(body: &[u8]) -> Result<RepoInfoSummary, InfoError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| InfoError::NotAnObject(format!("invalid JSON: {e}")))?;
        RepoInfoSummary::from_json(&value)
    }
}

/// Keeps error messages short when the offending value is a large JSON document.
fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "098765c7aa3b3f3c0f0a34f7a7a45f6dc8e9a0b1";

    #[test]
    fn summary_of_a_public_dataset() {
        let v = json!({"_id":"63a3","id":"akariasai/PopQA","author":"akariasai","sha":SHA,
            "private":false,"gated":false,"disabled":false,"siblings":[{"rfilename":"README.md"}]});
        assert_eq!(
            RepoInfoSummary::from_json(&v).unwrap(),
            RepoInfoSummary {
                sha: SHA.into(),
                private: false,
                gated: Gated::No
            }
        );
    }

    #[test]
    fn gated_values() {
        for (g, want) in [
            (json!(false), Gated::No),
            (json!(null), Gated::No),
            (json!("auto"), Gated::Auto),
            (json!("manual"), Gated::Manual),
            (json!(true), Gated::Manual),
            (json!("something-new"), Gated::Manual),
        ] {
            let v = json!({"sha": SHA, "gated": g});
            assert_eq!(RepoInfoSummary::from_json(&v).unwrap().gated, want, "{g}");
        }
        assert!(Gated::Auto.is_gated());
        assert!(!Gated::No.is_gated());
        assert!(RepoInfoSummary::from_json(&json!({"sha": SHA, "gated": 3})).is_err());
    }

    #[test]
    fn missing_fields_default() {
        let s = RepoInfoSummary::from_json(&json!({"sha": SHA})).unwrap();
        assert!(!s.private);
        assert_eq!(s.gated, Gated::No);
        let s = RepoInfoSummary::from_json(&json!({"sha": SHA, "private": true})).unwrap();
        assert!(s.private);
    }

    #[test]
    fn sha_is_required_and_normalised() {
        let upper = SHA.to_ascii_uppercase();
        assert_eq!(
            RepoInfoSummary::from_json(&json!({ "sha": upper }))
                .unwrap()
                .sha,
            SHA
        );
        for bad in [
            json!({}),
            json!({"sha": null}),
            json!({"sha": "abc"}),
            json!({"sha": "g".repeat(40)}),
            json!({"sha": 5}),
        ] {
            let err = RepoInfoSummary::from_json(&bad).unwrap_err();
            assert!(matches!(err, InfoError::Sha(_)), "{bad}: {err}");
        }
        assert!(RepoInfoSummary::from_json(&json!([])).is_err());
        assert!(RepoInfoSummary::from_json(&json!({"sha": SHA, "private": "no"})).is_err());
    }

    #[test]
    fn from_slice_parses_bytes() {
        let body = format!(r#"{{"sha":"{SHA}","private":false,"gated":"auto"}}"#);
        let s = RepoInfoSummary::from_slice(body.as_bytes()).unwrap();
        assert_eq!(s.gated, Gated::Auto);
        assert!(RepoInfoSummary::from_slice(b"<html>").is_err());
    }
}
