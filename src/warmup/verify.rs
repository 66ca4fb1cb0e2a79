//! A job with a hub token starts only once the hub accepted the token for its repo, checked as
//! a client's token is: the revision asked with it (the repo's metadata, which a private repo,
//! or a gated one on hubs that gate it, refuses), then the metadata of one file of the root
//! (huggingface.co shows a gated repo's info to anyone, but not its files). A 401 or 403 (or
//! any other refusal) refuses the job with the hub's own error.

use std::sync::Arc;

use http::StatusCode;

use super::job::{SpecError, Target};
use super::token::JobRequest;
use super::{JobView, Warmup};
use crate::hf::{RepoPath, Revision};
use crate::meta::Failure;

/// Why a job request was not started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The hub refused the token for the repo.
    #[error("the hub refused this token for {repo}: {hub}")]
    Refused {
        repo: String,
        status: u16,
        hub: String,
    },
    /// The token could not be checked (no upstream answered).
    #[error("cannot check the token for {repo}: {reason}")]
    Unchecked { repo: String, reason: String },
}

impl SubmitError {
    /// The admin API's status for it: 403 when the hub refused the token (401 is kept for a
    /// missing admin token), 502 when it could not be checked.
    pub fn status(&self) -> StatusCode {
        match self {
            SubmitError::Spec(_) => StatusCode::BAD_REQUEST,
            SubmitError::Refused { status: 404, .. } => StatusCode::NOT_FOUND,
            SubmitError::Refused { .. } => StatusCode::FORBIDDEN,
            SubmitError::Unchecked { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The hub's answer as one line: `401 GatedRepo: Access to model ... is restricted ...`.
fn hub_error(failure: &Failure) -> Option<(u16, String)> {
    match failure {
        Failure::Replay(answer) => {
            let message = answer
                .header("x-error-message")
                .map(str::to_string)
                .or_else(|| {
                    serde_json::from_slice::<serde_json::Value>(&answer.body)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                })
                .unwrap_or_default();
            let code = answer
                .error_code()
                .map(|c| format!(" {c}"))
                .unwrap_or_default();
            Some((answer.status, format!("{}{code}: {message}", answer.status)))
        }
        Failure::Hf(e) => {
            let code = e.code.map(|c| format!(" {c}")).unwrap_or_default();
            Some((e.status, format!("{}{code}: {}", e.status, e.message)))
        }
        Failure::Upstream(_) | Failure::BadGateway(_) => None,
    }
}

impl Warmup {
    /// Start the job of `request` once its token (if any) is accepted by the hub.
    pub async fn submit_checked(
        self: &Arc<Self>,
        request: JobRequest,
    ) -> Result<JobView, SubmitError> {
        let target = request.spec.target()?;
        if let Some(token) = &request.token {
            if let Err(e) = self.check_token(&target, token.authorization()).await {
                log::warn!("warm-up job not started: {e}");
                return Err(e);
            }
        }
        Ok(self.submit_with(request.spec, request.token)?)
    }

    pub(super) async fn check_token(&self, target: &Target, auth: &str) -> Result<(), SubmitError> {
        let repo = &target.repo;
        let fail = |failure: Failure| match hub_error(&failure) {
            Some((status, hub)) => SubmitError::Refused {
                repo: repo.to_string(),
                status,
                hub,
            },
            None => SubmitError::Unchecked {
                repo: repo.to_string(),
                reason: failure.to_string(),
            },
        };
        let meta = &self.meta;
        let commit = meta
            .commit_for(repo, Some(&target.revision), Some(auth))
            .await
            .map_err(fail)?;
        let Ok(commit_rev) = Revision::new(&commit) else {
            return Ok(());
        };
        let listing = meta
            .tree(repo, &commit_rev, None, None, Some(auth))
            .await
            .map_err(fail)?;
        let first = super::run::tree_files(&listing.body)
            .ok()
            .and_then(|files| files.into_iter().next())
            .and_then(|f| RepoPath::new(&f.path).ok());
        if let Some(path) = first {
            meta.file_at(repo, &commit, &path, Some(auth))
                .await
                .map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::UpstreamAnswer;

    fn answer(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> Failure {
        Failure::Replay(UpstreamAnswer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: bytes::Bytes::from_static(body),
        })
    }

    #[test]
    fn the_hubs_refusal_is_told_with_its_status_code_and_message() {
        let gated = answer(
            403,
            &[
                ("x-error-code", "GatedRepo"),
                ("x-error-message", "Access to model acme/g is restricted"),
            ],
            b"{}",
        );
        assert_eq!(
            hub_error(&gated),
            Some((
                403,
                "403 GatedRepo: Access to model acme/g is restricted".into()
            ))
        );
        let bare = answer(401, &[], br#"{"error": "Invalid credentials"}"#);
        assert_eq!(
            hub_error(&bare),
            Some((401, "401: Invalid credentials".into()))
        );
        assert_eq!(hub_error(&Failure::BadGateway("x".into())), None);
    }

    #[test]
    fn refusals_map_to_admin_statuses_that_are_not_the_admin_tokens_401() {
        let refused = |status| SubmitError::Refused {
            repo: "models/acme/g".into(),
            status,
            hub: String::new(),
        };
        assert_eq!(refused(401).status(), StatusCode::FORBIDDEN);
        assert_eq!(refused(403).status(), StatusCode::FORBIDDEN);
        assert_eq!(refused(404).status(), StatusCode::NOT_FOUND);
        let unchecked = SubmitError::Unchecked {
            repo: "models/acme/g".into(),
            reason: "no upstream answered".into(),
        };
        assert_eq!(unchecked.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            SubmitError::Spec(SpecError::ZeroRate).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
