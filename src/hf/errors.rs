//! The Hub's error answers: `X-Error-Code` values and the standard error responses.
//!
//! Clients decide what to do from the status and `X-Error-Code` (see `hf_raise_for_status`):
//! `RevisionNotFound` and `EntryNotFound` are final (a 404 `EntryNotFound` *with* `X-Repo-Commit`
//! is cached by the client as a known-missing file), `RepoNotFound`/`GatedRepo` fall back to the
//! local cache, and 5xx is retried. So a mirror that cannot reach upstream answers 5xx, never 4xx.

use std::fmt;

use super::headers::{CONTENT_TYPE, X_ERROR_CODE, X_ERROR_MESSAGE, X_REPO_COMMIT};
use super::repo::{Repo, RepoType};

/// Message the client matches to raise `DisabledRepoError`.
pub const DISABLED_MESSAGE: &str = "Access to this resource is disabled.";

/// A value of the `X-Error-Code` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The repo does not exist or the caller may not see it.
    RepoNotFound,
    /// The revision does not exist in the repo.
    RevisionNotFound,
    /// The file (or tree path) does not exist at the revision.
    EntryNotFound,
    /// The repo is gated and the caller has no (approved) access.
    GatedRepo,
}

impl ErrorCode {
    /// The header value, e.g. `"EntryNotFound"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RepoNotFound => "RepoNotFound",
            ErrorCode::RevisionNotFound => "RevisionNotFound",
            ErrorCode::EntryNotFound => "EntryNotFound",
            ErrorCode::GatedRepo => "GatedRepo",
        }
    }

    /// Parses a header value (exact, after trimming whitespace); `None` for unknown codes.
    pub fn parse(value: &str) -> Option<ErrorCode> {
        match value.trim() {
            "RepoNotFound" => Some(ErrorCode::RepoNotFound),
            "RevisionNotFound" => Some(ErrorCode::RevisionNotFound),
            "EntryNotFound" => Some(ErrorCode::EntryNotFound),
            "GatedRepo" => Some(ErrorCode::GatedRepo),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer in the Hub's shape: status, `X-Error-Code`, `X-Error-Message`, optional
/// `X-Repo-Commit`, and a JSON body `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfError {
    /// HTTP status.
    pub status: u16,
    /// `X-Error-Code`, if any.
    pub code: Option<ErrorCode>,
    /// `X-Error-Message` and the body's `error`.
    pub message: String,
    /// `X-Repo-Commit`, for answers bound to a commit (notably `EntryNotFound`).
    pub repo_commit: Option<String>,
}

impl HfError {
    /// An error with the given parts and no commit.
    pub fn new(status: u16, code: Option<ErrorCode>, message: impl Into<String>) -> HfError {
        HfError {
            status,
            code,
            message: message.into(),
            repo_commit: None,
        }
    }

    /// 404 `EntryNotFound` "Entry not found", carrying `X-Repo-Commit` when the commit is known
    /// (the client then records the file as missing and stops asking).
    pub fn entry_not_found(commit: Option<&str>) -> HfError {
        HfError {
            repo_commit: commit.map(str::to_string),
            ..HfError::new(404, Some(ErrorCode::EntryNotFound), "Entry not found")
        }
    }

    /// 404 `RevisionNotFound` "Invalid rev id: {rev}".
    pub fn revision_not_found(revision: &str) -> HfError {
        HfError::new(
            404,
            Some(ErrorCode::RevisionNotFound),
            format!("Invalid rev id: {revision}"),
        )
    }

    /// 404 `RepoNotFound` "Repository not found" (what an authenticated caller sees).
    pub fn repo_not_found() -> HfError {
        HfError::new(404, Some(ErrorCode::RepoNotFound), "Repository not found")
    }

    /// 401 `RepoNotFound` "Invalid username or password." — the Hub's answer to an anonymous
    /// caller for a private or missing repo (it does not tell them apart).
    pub fn repo_not_found_unauthenticated() -> HfError {
        HfError::new(
            401,
            Some(ErrorCode::RepoNotFound),
            "Invalid username or password.",
        )
    }

    /// 401 `GatedRepo`: the repo is gated and the caller sent no token.
    pub fn gated_unauthenticated(repo: &Repo) -> HfError {
        HfError::new(
            401,
            Some(ErrorCode::GatedRepo),
            format!(
                "Access to {} {} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                kind_word(repo.kind),
                repo.id
            ),
        )
    }

    /// 403 `GatedRepo`: the caller's token is not in the repo's authorized list.
    pub fn gated_forbidden(repo: &Repo) -> HfError {
        HfError::new(
            403,
            Some(ErrorCode::GatedRepo),
            format!(
                "Access to {} {} is restricted and you are not in the authorized list. Visit https://huggingface.co/{}{} to ask for access.",
                kind_word(repo.kind),
                repo.id,
                repo.kind.url_prefix(),
                repo.id
            ),
        )
    }

    /// 403 "Access to this resource is disabled." (no code; the client matches the message).
    pub fn disabled() -> HfError {
        HfError::new(403, None, DISABLED_MESSAGE)
    }

    /// 400 with `message` (e.g. a [`super::route::RouteError`]'s text).
    pub fn bad_request(message: impl Into<String>) -> HfError {
        HfError::new(400, None, message)
    }

    /// 502: the upstream could not be reached or answered garbage. Clients retry and fall back
    /// to their local cache.
    pub fn upstream_unavailable(detail: &str) -> HfError {
        HfError::new(502, None, format!("Upstream unavailable: {detail}"))
    }

    /// 504: the upstream did not answer in time.
    pub fn upstream_timeout(detail: &str) -> HfError {
        HfError::new(504, None, format!("Upstream timed out: {detail}"))
    }

    /// 503: the mirror will not ask upstream right now (offline mode, circuit open, overload).
    /// The caller may add `Retry-After`.
    pub fn service_unavailable(detail: &str) -> HfError {
        HfError::new(503, None, format!("Service unavailable: {detail}"))
    }

    /// Sets `X-Repo-Commit`.
    pub fn with_commit(mut self, commit: impl Into<String>) -> HfError {
        self.repo_commit = Some(commit.into());
        self
    }

    /// Response headers: `Content-Type: application/json`, `X-Error-Code` (if any),
    /// `X-Error-Message` (made header-safe: control and non-ASCII characters become `?`) and
    /// `X-Repo-Commit` (if any). `Content-Length` is left to the caller.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![(CONTENT_TYPE, "application/json".to_string())];
        if let Some(code) = self.code {
            out.push((X_ERROR_CODE, code.as_str().to_string()));
        }
        out.push((X_ERROR_MESSAGE, header_safe(&self.message)));
        if let Some(commit) = &self.repo_commit {
            out.push((X_REPO_COMMIT, header_safe(commit)));
        }
        out
    }

    /// The body: `{"error": message}`.
    pub fn body_json(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

impl fmt::Display for HfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} {}: {}", self.status, code, self.message),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}

impl std::error::Error for HfError {}

fn kind_word(kind: RepoType) -> &'static str {
    kind.as_str()
}

/// Visible ASCII and spaces only, so the value is a valid header value everywhere.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::repo::RepoId;
    use super::*;

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn error_codes_round_trip() {
        for code in [
            ErrorCode::RepoNotFound,
            ErrorCode::RevisionNotFound,
            ErrorCode::EntryNotFound,
            ErrorCode::GatedRepo,
        ] {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(
            ErrorCode::parse(" EntryNotFound "),
            Some(ErrorCode::EntryNotFound)
        );
        assert_eq!(ErrorCode::parse("entrynotfound"), None);
        assert_eq!(ErrorCode::parse("Whatever"), None);
    }

    #[test]
    fn entry_not_found_carries_commit() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let e = HfError::entry_not_found(Some(sha));
        assert_eq!(e.status, 404);
        let h = e.headers();
        assert_eq!(header(&h, "x-error-code"), Some("EntryNotFound"));
        assert_eq!(header(&h, "x-error-message"), Some("Entry not found"));
        assert_eq!(header(&h, "x-repo-commit"), Some(sha));
        assert_eq!(e.body_json(), r#"{"error":"Entry not found"}"#);
        assert_eq!(
            header(&HfError::entry_not_found(None).headers(), "x-repo-commit"),
            None
        );
    }

    #[test]
    fn revision_and_repo_not_found_use_hub_texts() {
        let e = HfError::revision_not_found("nope");
        assert_eq!((e.status, e.code), (404, Some(ErrorCode::RevisionNotFound)));
        assert_eq!(e.message, "Invalid rev id: nope");
        let e = HfError::repo_not_found();
        assert_eq!((e.status, e.code), (404, Some(ErrorCode::RepoNotFound)));
        let e = HfError::repo_not_found_unauthenticated();
        assert_eq!(e.status, 401);
        assert_eq!(e.message, "Invalid username or password.");
    }

    #[test]
    fn gated_messages_name_the_repo() {
        let repo = Repo::new(RepoType::Dataset, RepoId::new("org/name").unwrap());
        let e = HfError::gated_unauthenticated(&repo);
        assert_eq!((e.status, e.code), (401, Some(ErrorCode::GatedRepo)));
        assert_eq!(
            e.message,
            "Access to dataset org/name is restricted. You must have access to it and be authenticated to access it. Please log in."
        );
        let e = HfError::gated_forbidden(&repo);
        assert_eq!((e.status, e.code), (403, Some(ErrorCode::GatedRepo)));
        assert!(e
            .message
            .ends_with("Visit https://huggingface.co/datasets/org/name to ask for access."));
        let model = Repo::new(RepoType::Model, RepoId::new("org/m").unwrap());
        assert!(HfError::gated_forbidden(&model).message.starts_with(
            "Access to model org/m is restricted and you are not in the authorized list."
        ));
    }

    #[test]
    fn upstream_failures_are_5xx_without_code() {
        for e in [
            HfError::upstream_unavailable("connect refused"),
            HfError::upstream_timeout("10s"),
            HfError::service_unavailable("offline"),
        ] {
            assert!((500..600).contains(&e.status));
            assert_eq!(e.code, None);
            assert_eq!(header(&e.headers(), "x-error-code"), None);
        }
        assert_eq!(HfError::upstream_unavailable("x").status, 502);
        assert_eq!(HfError::service_unavailable("x").status, 503);
        assert_eq!(HfError::upstream_timeout("x").status, 504);
    }

    #[test]
    fn disabled_matches_client_text() {
        let e = HfError::disabled();
        assert_eq!(e.message, "Access to this resource is disabled.");
        assert_eq!(e.status, 403);
    }

    #[test]
    fn header_message_is_made_safe_but_body_keeps_text() {
        let e = HfError::revision_not_found("é\r\nx");
        assert_eq!(
            header(&e.headers(), "x-error-message"),
            Some("Invalid rev id: ???x")
        );
        let body: serde_json::Value = serde_json::from_str(&e.body_json()).unwrap();
        assert_eq!(body["error"], "Invalid rev id: é\r\nx");
    }
}
