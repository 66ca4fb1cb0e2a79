//! Who may read what from the cache.
//!
//! Bytes and metadata of a gated or private repo are cached once and shared, but are served
//! only to a token an origin authorised for that repo. A grant is learned from a successful
//! answer of an `origin` upstream to a request carrying that token, for the scope of that
//! request (an answer to an API call says nothing about the repo's files: the Hub shows a gated
//! repo's info to everyone). It is remembered for `auth_ttl` (on disk, so a restart or an
//! offline node keeps it), and identified by the sha256 of the token: raw tokens are never
//! written anywhere.
//!
//! Visibility (private, gated) is learned from an origin's repo info. A mirror's answer can
//! only make hubcache more careful: a mirror saying "private" or "gated" marks a repo no origin
//! has described as protected, and a mirror's silence never makes a repo public.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::disk::{hashed_name, MetaDir};
use super::store::MetaStore;
use super::table::{unix_now, RepoTable, TABLE_ENTRIES};
use crate::hf::{HfError, Repo};
use crate::live::Live;

/// An expired grant is kept this long: while no upstream answers, a token that once had a
/// grant gets a 5xx (its client falls back to its own cache) rather than a denial.
const EXPIRED_GRANT_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Grants kept per repo and scope; beyond it, the ones expiring first are dropped.
const MAX_GRANTS: usize = 1024;

/// Token hash -> unix time the grant expires.
type Grants = HashMap<String, u64>;

/// What we know about a repo's visibility. `None` = not learned yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoAccess {
    pub private: Option<bool>,
    pub gated: Option<bool>,
    /// Set when `private`/`gated` came from a mirror's claim, not from an origin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claimed: bool,
    /// Grants to read the repo's files (and its API answers).
    #[serde(default, rename = "file_grants")]
    pub files: Grants,
    /// Grants to read only its API answers.
    #[serde(default, rename = "api_grants")]
    pub api: Grants,
}

impl RepoAccess {
    fn files_public(&self) -> bool {
        self.private == Some(false) && self.gated == Some(false)
    }

    fn api_public(&self) -> bool {
        self.private == Some(false)
    }

    fn public(&self, scope: Scope) -> bool {
        match scope {
            Scope::Files => self.files_public(),
            Scope::Api => self.api_public(),
        }
    }

    fn protected(&self, scope: Scope) -> bool {
        self.private == Some(true) || (scope == Scope::Files && self.gated == Some(true))
    }

    /// The grants that allow `scope`: file grants allow everything.
    fn grants_for(&self, scope: Scope) -> impl Iterator<Item = &Grants> {
        let api = (scope == Scope::Api).then_some(&self.api);
        std::iter::once(&self.files).chain(api)
    }

    fn has_grant(&self, scope: Scope, auth: Option<&str>, now: u64) -> bool {
        let Some(id) = auth.map(token_id) else {
            return false;
        };
        self.grants_for(scope)
            .any(|g| g.get(&id).is_some_and(|expires| *expires > now))
    }

    fn had_grant(&self, scope: Scope, auth: Option<&str>) -> bool {
        let Some(id) = auth.map(token_id) else {
            return false;
        };
        self.grants_for(scope).any(|g| g.contains_key(&id))
    }
}

/// Drop grants expired long ago, and the soonest-expiring ones beyond [`MAX_GRANTS`].
fn prune(grants: &mut Grants, now: u64) {
    let horizon = now.saturating_sub(EXPIRED_GRANT_KEPT.as_secs());
    grants.retain(|_, expires| *expires > horizon);
    if grants.len() > MAX_GRANTS {
        let mut by_expiry: Vec<(u64, String)> =
            grants.iter().map(|(id, e)| (*e, id.clone())).collect();
        by_expiry.sort_unstable();
        for (_, id) in by_expiry.into_iter().take(grants.len() - MAX_GRANTS) {
            grants.remove(&id);
        }
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
    /// `auth_ttl`, as configured now.
    ttl: Live<Duration>,
    repos: RepoTable<RepoAccess>,
}

impl AccessBook {
    pub fn new(store: MetaStore, ttl: Live<Duration>) -> Self {
        Self {
            ttl,
            repos: RepoTable::new(store, MetaDir::access_file, TABLE_ENTRIES),
        }
    }

    /// May cached content of `scope` be served to this request without asking upstream?
    pub async fn may_serve_cached(&self, repo: &Repo, scope: Scope, auth: Option<&str>) -> bool {
        let now = unix_now();
        self.repos
            .read(repo, |access| {
                access.public(scope) || access.has_grant(scope, auth, now)
            })
            .await
    }

    /// Whether an origin said the repo is protected for `scope` (or a mirror claimed so and no
    /// origin said otherwise): then only upstreams trusted with tokens are asked about it.
    pub async fn is_protected(&self, repo: &Repo, scope: Scope) -> bool {
        self.repos
            .read(repo, |access| access.protected(scope))
            .await
    }

    /// Record the visibility reported by an origin's repo-info answer.
    pub async fn learn_visibility(&self, repo: &Repo, private: bool, gated: bool) {
        self.repos
            .update(repo, |access| set_visibility(access, private, gated))
            .await;
    }

    /// [`learn_visibility`](Self::learn_visibility) from a blocking thread (cache import).
    pub fn learn_visibility_blocking(&self, repo: &Repo, private: bool, gated: bool) {
        self.repos
            .update_blocking(repo, |access| set_visibility(access, private, gated));
    }

    /// The operator imported the repo's files from a cache that records no visibility (a
    /// huggingface_hub cache): treat it as public unless something already described it.
    /// Returns whether it was marked public (an origin's later repo info still wins).
    pub fn assume_public_blocking(&self, repo: &Repo) -> bool {
        let mut marked = false;
        self.repos.update_blocking(repo, |access| {
            if access.private.is_some() || access.gated.is_some() {
                return false;
            }
            access.private = Some(false);
            access.gated = Some(false);
            marked = true;
            true
        });
        marked
    }

    /// A mirror says the repo is private and/or gated. Believed only while no origin has
    /// described the repo, and only in the careful direction.
    pub async fn claim_protection(&self, repo: &Repo, private: bool, gated: bool) {
        if !private && !gated {
            return;
        }
        self.repos
            .update(repo, |access| {
                let mut changed = false;
                if private && (access.private.is_none() || access.claimed) {
                    changed |= access.private.replace(true) != Some(true);
                }
                if gated && (access.gated.is_none() || access.claimed) {
                    changed |= access.gated.replace(true) != Some(true);
                }
                access.claimed |= changed;
                changed
            })
            .await;
    }

    /// An origin answered a request of `scope` successfully. With a token, that token is
    /// granted the repo for `scope` and `auth_ttl`; without one, the content is public.
    pub async fn learn_success(&self, repo: &Repo, scope: Scope, auth: Option<&str>) {
        let now = unix_now();
        let ttl = self.ttl.get();
        let expires = now + ttl.as_secs();
        let refresh = ttl.as_secs() / 10;
        self.repos
            .update(repo, |access| match auth {
                // A grant on content anyone may read says nothing (and would outlive a later
                // change to gated).
                Some(_) if access.public(scope) => false,
                Some(auth) => {
                    let grants = match scope {
                        Scope::Files => &mut access.files,
                        Scope::Api => &mut access.api,
                    };
                    let previous = grants.insert(token_id(auth), expires);
                    prune(grants, now);
                    // Avoid rewriting the file on every request: only when a grant is new or
                    // has used up more than a tenth of its lifetime.
                    previous.is_none_or(|old| old + refresh < expires)
                }
                None => {
                    let before = (access.private, access.gated, access.claimed);
                    access.private = Some(false);
                    if scope == Scope::Files {
                        access.gated = Some(false);
                    }
                    access.claimed = false;
                    before != (access.private, access.gated, access.claimed)
                }
            })
            .await;
    }

    /// Whether anyone may read the repo's files (known public: no token needed upstream).
    pub async fn files_public(&self, repo: &Repo) -> bool {
        self.repos.read(repo, |access| access.files_public()).await
    }

    /// When the upstream cannot be asked and nothing cached may be served to this caller: the
    /// denial huggingface.co would give, if the repo is known to be protected for `scope` and
    /// this token never had a grant. `None` when that is unknown (the caller answers 5xx).
    pub async fn denial_without_upstream(
        &self,
        repo: &Repo,
        scope: Scope,
        auth: Option<&str>,
    ) -> Option<HfError> {
        let (protected, had_grant, gated) = self
            .repos
            .read(repo, |access| {
                (
                    access.protected(scope),
                    access.had_grant(scope, auth),
                    access.gated == Some(true),
                )
            })
            .await;
        (protected && !had_grant).then(|| denial(repo, gated, auth))
    }

    /// The answer hubcache gives when it cannot ask upstream (offline) and has no grant:
    /// the same codes huggingface.co uses.
    pub async fn denial(&self, repo: &Repo, auth: Option<&str>) -> HfError {
        let gated = self
            .repos
            .read(repo, |access| access.gated == Some(true))
            .await;
        denial(repo, gated, auth)
    }
}

fn set_visibility(access: &mut RepoAccess, private: bool, gated: bool) -> bool {
    let changed = access.private != Some(private) || access.gated != Some(gated) || access.claimed;
    access.private = Some(private);
    access.gated = Some(gated);
    access.claimed = false;
    changed
}

fn denial(repo: &Repo, gated: bool, auth: Option<&str>) -> HfError {
    match (gated, auth.is_some()) {
        (true, false) => HfError::gated_unauthenticated(repo),
        (true, true) => HfError::gated_forbidden(repo),
        (false, false) => HfError::repo_not_found_unauthenticated(),
        (false, true) => HfError::repo_not_found(),
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

    fn store(dir: &std::path::Path) -> MetaStore {
        MetaStore::new(MetaDir::new(dir, Durability::Os))
    }

    fn book_with_ttl(dir: &std::path::Path, ttl: Duration) -> AccessBook {
        AccessBook::new(store(dir), Live::fixed(ttl))
    }

    fn book(dir: &std::path::Path) -> AccessBook {
        book_with_ttl(dir, Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn unknown_repo_is_not_served_from_cache() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        assert!(!book.may_serve_cached(&repo(), Scope::Files, None).await);
    }

    #[tokio::test]
    async fn gated_repo_files_need_a_grant_but_its_api_json_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.learn_visibility(&repo(), false, true).await;
        assert!(!book.may_serve_cached(&repo(), Scope::Files, None).await);
        assert!(
            !book
                .may_serve_cached(&repo(), Scope::Files, Some("Bearer other"))
                .await
        );
        assert!(book.may_serve_cached(&repo(), Scope::Api, None).await);
        book.learn_success(&repo(), Scope::Files, Some("Bearer good"))
            .await;
        assert!(
            book.may_serve_cached(&repo(), Scope::Files, Some("Bearer good"))
                .await
        );
        assert!(
            !book
                .may_serve_cached(&repo(), Scope::Files, Some("Bearer other"))
                .await
        );
        assert!(!book.may_serve_cached(&repo(), Scope::Files, None).await);
    }

    #[tokio::test]
    async fn an_api_answer_grants_no_access_to_a_gated_repos_files() {
        // The Hub shows a gated repo's info, tree and refs to any valid token.
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.learn_success(&repo(), Scope::Api, Some("Bearer bob"))
            .await;
        book.learn_visibility(&repo(), false, true).await;
        book.learn_success(&repo(), Scope::Api, Some("Bearer bob"))
            .await;
        assert!(
            !book
                .may_serve_cached(&repo(), Scope::Files, Some("Bearer bob"))
                .await
        );
        assert!(book
            .denial_without_upstream(&repo(), Scope::Files, Some("Bearer bob"))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn grants_survive_a_restart_and_tokens_are_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        {
            let first = book(dir.path());
            first.learn_visibility(&repo(), true, false).await;
            first
                .learn_success(&repo(), Scope::Files, Some("Bearer hf_secret"))
                .await;
        }
        let again = book(dir.path());
        assert!(
            again
                .may_serve_cached(&repo(), Scope::Files, Some("Bearer hf_secret"))
                .await
        );
        let stored =
            std::fs::read_to_string(MetaDir::new(dir.path(), Durability::Os).access_file(&repo()))
                .unwrap();
        assert!(!stored.contains("hf_secret"));
    }

    #[tokio::test]
    async fn expired_grant_is_not_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let book = book_with_ttl(dir.path(), Duration::ZERO);
        book.learn_visibility(&repo(), true, false).await;
        book.learn_success(&repo(), Scope::Files, Some("Bearer t"))
            .await;
        assert!(
            !book
                .may_serve_cached(&repo(), Scope::Files, Some("Bearer t"))
                .await
        );
    }

    #[test]
    fn long_expired_grants_are_pruned_and_grants_are_bounded() {
        let now = 10 * EXPIRED_GRANT_KEPT.as_secs();
        let mut grants: Grants = HashMap::new();
        grants.insert("ancient".into(), now - EXPIRED_GRANT_KEPT.as_secs() - 1);
        grants.insert("recently-expired".into(), now - 60);
        prune(&mut grants, now);
        assert_eq!(grants.keys().collect::<Vec<_>>(), ["recently-expired"]);
        for i in 0..(MAX_GRANTS as u64 + 10) {
            grants.insert(format!("t{i}"), now + i);
        }
        prune(&mut grants, now);
        assert_eq!(grants.len(), MAX_GRANTS);
        assert!(grants.contains_key(&format!("t{}", MAX_GRANTS as u64 + 9)));
        assert!(!grants.contains_key("recently-expired"));
    }

    #[tokio::test]
    async fn anonymous_success_marks_files_public() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.learn_success(&repo(), Scope::Files, None).await;
        assert!(
            book.may_serve_cached(&repo(), Scope::Files, Some("Bearer anyone"))
                .await
        );
    }

    #[tokio::test]
    async fn a_mirror_can_make_a_repo_protected_but_never_public() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.claim_protection(&repo(), false, true).await;
        assert!(book.is_protected(&repo(), Scope::Files).await);
        assert!(!book.is_protected(&repo(), Scope::Api).await);
        assert!(!book.may_serve_cached(&repo(), Scope::Files, None).await);
        // An origin's word replaces the claim.
        book.learn_visibility(&repo(), false, false).await;
        assert!(!book.is_protected(&repo(), Scope::Files).await);
        // A mirror saying "private" protects the API answers too.
        let other = Repo {
            kind: RepoType::Model,
            id: RepoId::new("acme/private").unwrap(),
        };
        book.claim_protection(&other, true, false).await;
        assert!(book.is_protected(&other, Scope::Api).await);
        assert!(!book.may_serve_cached(&other, Scope::Api, None).await);
        // And a mirror cannot undo what an origin said.
        book.learn_visibility(&repo(), false, true).await;
        book.claim_protection(&repo(), true, true).await;
        assert!(!book.is_protected(&repo(), Scope::Api).await);
        assert!(book.is_protected(&repo(), Scope::Files).await);
    }

    #[tokio::test]
    async fn without_upstream_a_protected_repo_is_denied_unless_the_token_once_had_a_grant() {
        let dir = tempfile::tempdir().unwrap();
        let book = book_with_ttl(dir.path(), Duration::ZERO);
        assert!(book
            .denial_without_upstream(&repo(), Scope::Files, None)
            .await
            .is_none());
        book.learn_visibility(&repo(), false, true).await;
        let anon = book
            .denial_without_upstream(&repo(), Scope::Files, None)
            .await
            .unwrap();
        assert_eq!(anon.status, 401);
        assert!(book
            .denial_without_upstream(&repo(), Scope::Api, None)
            .await
            .is_none());
        book.learn_success(&repo(), Scope::Files, Some("Bearer expired"))
            .await;
        assert!(book
            .denial_without_upstream(&repo(), Scope::Files, Some("Bearer expired"))
            .await
            .is_none());
    }

    #[tokio::test]
    async fn offline_denial_uses_hub_error_codes() {
        let dir = tempfile::tempdir().unwrap();
        let book = book(dir.path());
        book.learn_visibility(&repo(), false, true).await;
        let anon = book.denial(&repo(), None).await;
        assert_eq!(anon.status, 401);
        assert_eq!(anon.code.map(|c| c.as_str()), Some("GatedRepo"));
        let wrong = book.denial(&repo(), Some("Bearer x")).await;
        assert_eq!(wrong.status, 403);
    }
}
