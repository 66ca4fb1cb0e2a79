//! The one rule every metadata question follows: serve from the cache if access allows, else
//! one upstream call (single-flight), a stale answer when no upstream answers, else an HF error.
//!
//! What differs between questions is explicit: what is cached and whether it is still fresh
//! ([`Cached`]; a stale fallback is a cached value that is not fresh), and what "nothing cached"
//! means offline (`offline_miss`). [`decide`] and [`settle`] are the rule itself, pure and
//! tested without I/O; [`Meta::cached_or_fetch`] applies it.

use std::future::Future;
use std::sync::Arc;

use super::{Failure, Meta, Scope};
use crate::hf::{HfError, Repo};
use crate::upstream::UpstreamError;

/// A cached answer, and whether it may be served without asking upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cached<T> {
    pub value: T,
    /// Still fresh (immutable answers always are). A cached answer that is not fresh is only
    /// served offline, or when no upstream answers.
    pub fresh: bool,
}

impl<T> Cached<T> {
    pub fn fresh(value: T) -> Self {
        Self { value, fresh: true }
    }

    pub fn stale(value: T) -> Self {
        Self {
            value,
            fresh: false,
        }
    }
}

/// The circumstances of one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Policy {
    /// This caller may be served cached content of the repo (public, or granted).
    pub servable: bool,
    /// Never ask an upstream.
    pub offline: bool,
}

/// What to do before asking upstream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step<T> {
    Serve(T),
    /// Offline, and what is cached may not be served to this caller.
    Deny,
    /// Offline, and nothing is cached.
    OfflineMiss,
    /// Ask upstream; serve `stale` if no upstream answers.
    Fetch {
        stale: Option<T>,
    },
}

/// Serve what is cached when it is fresh (or offline) and the caller may have it.
pub(super) fn decide<T>(policy: Policy, cached: Option<Cached<T>>) -> Step<T> {
    match cached {
        Some(c) if policy.servable && (c.fresh || policy.offline) => Step::Serve(c.value),
        Some(_) if policy.offline => Step::Deny,
        None if policy.offline => Step::OfflineMiss,
        cached => Step::Fetch {
            stale: cached.filter(|_| policy.servable).map(|c| c.value),
        },
    }
}

/// How a question ends after asking upstream.
#[derive(Debug)]
pub(super) enum Outcome<T> {
    /// The upstream's answer (or its error answer, or an unusable one).
    Answer(Result<T, Failure>),
    /// No upstream answered; this stale answer is served.
    Stale(T, Arc<UpstreamError>),
    /// No upstream answered and nothing can be served: a denial if the repo is known to be
    /// protected, else a 5xx.
    Unreachable(Arc<UpstreamError>),
}

pub(super) fn settle<T>(fetched: Result<T, Failure>, stale: Option<T>) -> Outcome<T> {
    match (fetched, stale) {
        (Err(Failure::Upstream(e)), Some(stale)) => Outcome::Stale(stale, e),
        (Err(Failure::Upstream(e)), None) => Outcome::Unreachable(e),
        (answer, _) => Outcome::Answer(answer),
    }
}

/// Who asks about what.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asker<'a> {
    pub repo: &'a Repo,
    pub scope: Scope,
    pub auth: Option<&'a str>,
}

impl Meta {
    /// Answer a question by the rule above. `fetch` is the (single-flight) upstream call,
    /// which also persists what it learns; `offline_miss` is the error for "offline, nothing
    /// cached"; `what` names the question in log lines.
    pub(super) async fn cached_or_fetch<T, M, MF, F, FF>(
        &self,
        asker: Asker<'_>,
        what: &str,
        cached: Option<Cached<T>>,
        offline_miss: M,
        fetch: F,
    ) -> Result<T, Failure>
    where
        M: FnOnce() -> MF,
        MF: Future<Output = HfError>,
        F: FnOnce() -> FF,
        FF: Future<Output = Result<T, Failure>>,
    {
        let access = &self.inner.access;
        let policy = Policy {
            servable: access
                .may_serve_cached(asker.repo, asker.scope, asker.auth)
                .await,
            offline: self.inner.settings.get().offline,
        };
        match decide(policy, cached) {
            Step::Serve(value) => Ok(value),
            Step::Deny => Err(Failure::Hf(access.denial(asker.repo, asker.auth).await)),
            Step::OfflineMiss => Err(Failure::Hf(offline_miss().await)),
            Step::Fetch { stale } => match settle(fetch().await, stale) {
                Outcome::Answer(answer) => answer,
                Outcome::Stale(value, e) => {
                    log::warn!("serving the last known {what} of {}: {e}", asker.repo);
                    Ok(value)
                }
                Outcome::Unreachable(e) => Err(access
                    .denial_without_upstream(asker.repo, asker.scope, asker.auth)
                    .await
                    .map(Failure::Hf)
                    .unwrap_or(Failure::Upstream(e))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONLINE: Policy = Policy {
        servable: true,
        offline: false,
    };
    const OFFLINE: Policy = Policy {
        servable: true,
        offline: true,
    };

    fn denied(p: Policy) -> Policy {
        Policy {
            servable: false,
            ..p
        }
    }

    fn down() -> Failure {
        Failure::Upstream(Arc::new(UpstreamError::Unavailable { attempts: vec![] }))
    }

    #[test]
    fn fresh_cached_answers_are_served_only_to_callers_who_may_have_them() {
        assert_eq!(decide(ONLINE, Some(Cached::fresh(1))), Step::Serve(1));
        assert_eq!(
            decide(denied(ONLINE), Some(Cached::fresh(1))),
            Step::Fetch { stale: None }
        );
    }

    #[test]
    fn a_stale_answer_is_asked_again_and_kept_as_the_fallback() {
        assert_eq!(
            decide(ONLINE, Some(Cached::stale(1))),
            Step::Fetch { stale: Some(1) }
        );
        assert_eq!(
            decide(ONLINE, None::<Cached<u8>>),
            Step::Fetch { stale: None }
        );
    }

    #[test]
    fn offline_serves_stale_answers_denies_others_and_reports_misses() {
        assert_eq!(decide(OFFLINE, Some(Cached::stale(1))), Step::Serve(1));
        assert_eq!(decide(denied(OFFLINE), Some(Cached::fresh(1))), Step::Deny);
        assert_eq!(decide(OFFLINE, None::<Cached<u8>>), Step::OfflineMiss);
        assert_eq!(
            decide(denied(OFFLINE), None::<Cached<u8>>),
            Step::OfflineMiss
        );
    }

    #[test]
    fn only_an_unreachable_upstream_falls_back_to_the_stale_answer() {
        assert!(matches!(settle(Ok(2), Some(1)), Outcome::Answer(Ok(2))));
        assert!(matches!(settle(Err(down()), Some(1)), Outcome::Stale(1, _)));
        assert!(matches!(
            settle::<u8>(Err(down()), None),
            Outcome::Unreachable(_)
        ));
        // The upstream's own answer (a 404, a denial) is the truth, never hidden by the cache.
        let replay = Failure::Hf(HfError::repo_not_found());
        assert!(matches!(
            settle(Err(replay), Some(1)),
            Outcome::Answer(Err(Failure::Hf(_)))
        ));
    }
}
