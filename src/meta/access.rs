//! Who may read what from the cache.
//!
//! Bytes and metadata of a gated or private repo are cached once and shared, but are served
//! only to a token the upstream authorised for that repo. A grant is learned from any
//! successful upstream answer to a request carrying that token, remembered for `auth_ttl`
//! (on disk, so a restart or an offline node keeps it), and identified by the sha256 of the
//! token: raw tokens are never written anywhere.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::disk::{hashed_name, MetaDir};
use super::table::{unix_now, RepoTable};
use crate::hf::{HfError, Repo};

/// What we know about a repo's visibility. `None` = not learned yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoAccess {
    pub private: Option<bool>,
    pub gated: Option<bool>,
    /// Token hash -> unix time the grant expires.
    #[serde(default)]
    pub grants: HashMap<String, u64>,
}

impl RepoAccess {
    fn files_public(&self) -> bool {
        self.private == Some(false) && self.gated == Some(false)
    }

    fn api_public(&self) -> bool {
        self.private == Some(false)
    }

    fn has_grant(&self, auth: Option<&str>, now: u64) -> bool {
        auth.map(token_id)
            .and_then(|id| self.grants.get(&id))
            .is_some_and(|expires| *expires > now)
    }
}

/// Which kind of cached content a request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// File bytes and file metadata: protected for gated and private repos.
    Files,
    /// API JSON (repo info, tree, paths-info, refs): protected for private repos.
    Api,
}

/// Identify a token without storing it: sha256 of the whole Authorization value.
fn token_id(auth: &str) -> String {
    hashed_name(auth)
}

pub struct AccessBook {
    ttl: Duration,
    repos: RepoTable<RepoAccess>,
}

impl AccessBook {
    pub fn new(dir: MetaDir, ttl: Duration) -> Self {
        Self {
            ttl,
            repos: RepoTable::new(dir, MetaDir::access_file, "access decisions"),
        }
    }

    /// May cached content of `scope` be served to this request without asking upstream?
    pub fn may_serve_cached(&self, repo: &Repo, scope: Scope, auth: Option<&str>) -> bool {
        let now = unix_now();
        self.repos.read(repo, |access| {
            let public = match scope {
                Scope::Files => access.files_public(),
                Scope::Api => access.api_public(),
            };
            public || access.has_grant(auth, now)
        })
    }

    /// Record the visibility reported by a repo-info answer.
    pub fn learn_visibility(&self, repo: &Repo, private: bool, gated: bool) {
        self.repos.update(repo, |access| {
            let changed = access.private != Some(private) || access.gated != Some(gated);
            access.private = Some(private);
            access.gated = Some(gated);
            changed
        });
    }

    /// The upstream answered a request of `scope` successfully. With a token, that token is
    /// granted the repo for `auth_ttl`; without one, the content is public.
    pub fn learn_success(&self, repo: &Repo, scope: Scope, auth: Option<&str>) {
        let expires = unix_now() + self.ttl.as_secs();
        self.repos.update(repo, |access| match auth {
            Some(auth) => {
                let previous = access.grants.insert(token_id(auth), expires);
                // Avoid rewriting the file on every request: only when a grant is new or
                // has used up more than a tenth of its lifetime.
                previous.is_none_or(|old| old + self.ttl.as_secs() / 10 < expires)
            }
            None => {
                let before = (access.private, access.gated);
                access.private = Some(false);
                if scope == Scope::Files {
                    access.gated = Some(false);
                }
                before != (access.private, access.gated)
            }
        });
    }

    /// Whether anyone may read the repo's files (known public: no token needed upstream).
    pub fn files_public(&self, repo: &Repo) -> bool {
        self.repos.read(repo, |access| access.files_public())
    }

    /// When the upstream cannot be asked and nothing cached may be served to this caller: the
    /// denial huggingface.co would give, if the repo is known to be protected for `scope` and
    /// this token never had a grant. `None` when that is unknown (the caller answers 5xx).
    pub fn denial_without_upstream(
        &self,
        repo: &Repo,
        scope: Scope,
        auth: Option<&str>,
    ) -> Option<HfError> {
        let (protected, had_grant) = self.repos.read(repo, |access| {
            let protected = access.private == Some(true)
                || (scope == Scope::Files && access.gated == Some(true));
            let had_grant = auth
                .map(token_id)
                .is_some_and(|id| access.grants.contains_key(&id));
            (protected, had_grant)
        });
        (protected && !had_grant).then(|| self.denial(repo, auth))
    }

    /// The answer hubcache gives when it cannot ask upstream (offline) and has no grant:
    /// the same codes huggingface.co uses.
    pub fn denial(&self, repo: &Repo, auth: Option<&str>) -> HfError {
        let gated = self.repos.read(repo, |access| access.gated == Some(true));
        match (gated, auth.is_some()) {
            (true, false) => HfError::gated_unauthenticated(repo),
            (true, true) => HfError::gated_forbidden(repo),
            (false, false) => HfError::repo_not_found_unauthenticated(),
            (false, true) => HfError::repo_not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{RepoId, RepoType};
    use crate::store::Durability;

    fn repo() -> Repo {
        Repo {
            kind: RepoType::Model,
            id: RepoId::new("acme/gated").unwrap(),
        }
    }

    fn book(dir: &std::path::Path) -> AccessBook {
        AccessBook::new(MetaDir::new(dir, Durability::Os), Duration::from_secs(3600))
    }

    #[test]
    fn unknown_repo_is_not_served_from_cache() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        assert!(!book.may_serve_cached(&repo(), Scope::Files, None));
    }

    #[test]
    fn gated_repo_files_need_a_grant_but_its_api_json_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.learn_visibility(&repo(), false, true);
        assert!(!book.may_serve_cached(&repo(), Scope::Files, None));
        assert!(!book.may_serve_cached(&repo(), Scope::Files, Some("Bearer other")));
        assert!(book.may_serve_cached(&repo(), Scope::Api, None));
        book.learn_success(&repo(), Scope::Files, Some("Bearer good"));
        assert!(book.may_serve_cached(&repo(), Scope::Files, Some("Bearer good")));
        assert!(!book.may_serve_cached(&repo(), Scope::Files, Some("Bearer other")));
        assert!(!book.may_serve_cached(&repo(), Scope::Files, None));
    }

    #[test]
    fn grants_survive_a_restart_and_tokens_are_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        book(dir.path()).learn_visibility(&repo(), true, false);
        book(dir.path()).learn_success(&repo(), Scope::Files, Some("Bearer hf_secret"));
        let again = book(dir.path());
        assert!(again.may_serve_cached(&repo(), Scope::Files, Some("Bearer hf_secret")));
        let stored =
            std::fs::read_to_string(MetaDir::new(dir.path(), Durability::Os).access_file(&repo()))
                .unwrap();
        assert!(!stored.contains("hf_secret"));
    }

    #[test]
    fn expired_grant_is_not_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let book = AccessBook::new(MetaDir::new(dir.path(), Durability::Os), Duration::ZERO);
        book.learn_visibility(&repo(), true, false);
        book.learn_success(&repo(), Scope::Files, Some("Bearer t"));
        assert!(!book.may_serve_cached(&repo(), Scope::Files, Some("Bearer t")));
    }

    #[test]
    fn anonymous_success_marks_files_public() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.learn_success(&repo(), Scope::Files, None);
        assert!(book.may_serve_cached(&repo(), Scope::Files, Some("Bearer anyone")));
    }

    #[test]
    fn without_upstream_a_protected_repo_is_denied_unless_the_token_once_had_a_grant() {
        let dir = tempfile::tempdir().unwrap();
        let book = AccessBook::new(MetaDir::new(dir.path(), Durability::Os), Duration::ZERO);
        assert!(book
            .denial_without_upstream(&repo(), Scope::Files, None)
            .is_none());
        book.learn_visibility(&repo(), false, true);
        let anon = book
            .denial_without_upstream(&repo(), Scope::Files, None)
            .unwrap();
        assert_eq!(anon.status, 401);
        assert!(book
            .denial_without_upstream(&repo(), Scope::Api, None)
            .is_none());
        book.learn_success(&repo(), Scope::Files, Some("Bearer expired"));
        assert!(book
            .denial_without_upstream(&repo(), Scope::Files, Some("Bearer expired"))
            .is_none());
    }

    #[test]
    fn offline_denial_uses_hub_error_codes() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.learn_visibility(&repo(), false, true);
        let anon = book.denial(&repo(), None);
        assert_eq!(anon.status, 401);
        assert_eq!(anon.code.map(|c| c.as_str()), Some("GatedRepo"));
        let wrong = book.denial(&repo(), Some("Bearer x"));
        assert_eq!(wrong.status, 403);
    }
}
