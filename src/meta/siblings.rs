//! Metadata once per cluster: in a cluster (`cluster:`), the metadata questions this layer
//! would send upstream (revisions, resolve `HEAD`s, repo info, tree, paths-info, refs) go
//! to the repo's owner node first (rendezvous over the repo id among the live nodes), which
//! answers from its own metadata layer. The owner's answer is handled like an upstream's,
//! with the trust the owner tagged it with. An owner that fails (no answer in time, an
//! untagged answer) is marked failed and the upstream chain answers, so losing a node never
//! blocks metadata; an owner whose own upstreams failed (a tagged 5xx), or that declines
//! (an untagged 4xx: a refused signature, a node without the route), is left live and the
//! chain answers too. A question asked *by* a sibling is never forwarded again: the task-local
//! [`answering_sibling`] scope says so, and single-flight calls carry it into their task.

use std::future::Future;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};

use super::Meta;
use crate::hf::Repo;
use crate::live::Live;
use crate::upstream::sibling::{Cluster, MetaReply, Owner, SiblingStats};
use crate::upstream::{HubRequest, HubResponse, UpstreamError};

tokio::task_local! {
    /// Set while this node answers a sibling's metadata question.
    static FOR_SIBLING: ();
}

/// Run `fut` as the answer to a sibling's question: nothing it asks goes to a sibling.
pub async fn answering_sibling<F: Future>(fut: F) -> F::Output {
    FOR_SIBLING.scope((), fut).await
}

/// Whether the current task answers a sibling's question.
pub fn is_answering_sibling() -> bool {
    FOR_SIBLING.try_with(|_| ()).is_ok()
}

/// `fut`, still marked as answering a sibling when run on another task (single-flight).
pub(super) fn keep_scope<F>(fut: F) -> BoxFuture<'static, F::Output>
where
    F: Future + Send + 'static,
{
    if is_answering_sibling() {
        FOR_SIBLING.scope((), fut).boxed()
    } else {
        fut.boxed()
    }
}

/// The key a repo's metadata owner is chosen by: `{type}s/{org}/{name}`.
pub fn owner_key(repo: &Repo) -> String {
    repo.to_string()
}

impl Meta {
    /// The cluster, once set (at start); `None` for a single node.
    pub fn set_cluster(&self, cluster: Live<Option<Arc<Cluster>>>) -> bool {
        self.inner.cluster.set(cluster).is_ok()
    }

    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.inner.cluster.get().and_then(Live::get)
    }

    /// Send a metadata question about `repo`: to its owner node first (see the module
    /// comment), else along the upstream chain.
    pub(super) async fn ask_upstream(
        &self,
        repo: &Repo,
        request: &HubRequest,
    ) -> Result<HubResponse, UpstreamError> {
        let chain = self.inner.upstream.get();
        if chain.is_offline() {
            return Err(UpstreamError::Offline);
        }
        if let Some(response) = self.ask_owner(repo, request).await {
            return Ok(response);
        }
        chain.send(request).await
    }

    /// The owner's answer, or `None` when this node asks its chain (it owns the repo, the
    /// question came from a sibling, cannot go to one, or the owner did not answer).
    async fn ask_owner(&self, repo: &Repo, request: &HubRequest) -> Option<HubResponse> {
        let askable = match request.method {
            reqwest::Method::GET | reqwest::Method::HEAD => true,
            reqwest::Method::POST => request.body.is_some(),
            _ => false,
        };
        if !askable || is_answering_sibling() {
            return None;
        }
        let cluster = self.cluster()?;
        let Owner::Peer(node) = cluster.owner(&owner_key(repo)) else {
            return None;
        };
        let stats = cluster.stats();
        match cluster.ask_meta(&node, request).await {
            Ok(MetaReply::Answer(response)) => {
                node.mark_live();
                SiblingStats::add(&stats.meta_asked_ok, 1);
                Some(*response)
            }
            Ok(MetaReply::Unanswered(status) | MetaReply::Declined(status)) => {
                SiblingStats::add(&stats.meta_fallback, 1);
                log::info!(
                    "{repo}: owner {} gave no answer ({status}) for {} {}; asking the chain",
                    node.origin(),
                    request.method,
                    request.path_and_query
                );
                None
            }
            Err(reason) => {
                SiblingStats::add(&stats.meta_fallback, 1);
                log::warn!(
                    "{repo}: owner {} failed for {} {}: {reason}; asking the chain",
                    node.origin(),
                    request.method,
                    request.path_and_query
                );
                node.mark_failed();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sibling_mark_follows_a_question_onto_another_task_and_nowhere_else() {
        assert!(!is_answering_sibling());
        let inside = answering_sibling(async {
            let here = is_answering_sibling();
            let spawned = tokio::spawn(keep_scope(async { is_answering_sibling() }));
            (here, spawned.await.unwrap())
        })
        .await;
        assert_eq!(inside, (true, true));
        let outside = tokio::spawn(keep_scope(async { is_answering_sibling() }));
        assert!(!outside.await.unwrap());
    }

    #[test]
    fn a_repo_is_owned_by_its_type_and_id() {
        let repo: Repo = "models/acme/tiny".parse().unwrap();
        let dataset: Repo = "datasets/acme/tiny".parse().unwrap();
        assert_eq!(owner_key(&repo), "models/acme/tiny");
        assert_ne!(owner_key(&repo), owner_key(&dataset));
    }
}
