//! A segment's first try in a cluster: ask the blob's owner node for the blocks (a signed,
//! ranged request; the owner streams blocks still in flight), then the next live node ranked
//! above this one. When this node is the owner (or serves a sibling, and so must not make a
//! sibling fetch), it asks the other live nodes only for blocks they already have (a node
//! that returns finds there what was filled while it was away). Whatever they could not
//! deliver is left for the upstream chain, from the byte where they stopped.

use std::sync::Arc;

use super::writer::SegmentWriter;
use super::{check_response, Segment};
use crate::fetch::FetchError;
use crate::upstream::sibling::route::BlobQuery;
use crate::upstream::sibling::{Cluster, Node, SiblingStats};

/// Nodes asked for one segment before the upstream chain.
const MAX_NODES_ASKED: usize = 2;

/// How asking one node ended.
enum Asked {
    /// All bytes up to the segment's end are written.
    Done,
    /// The node failed (no answer, broke off): skip it, ask the next.
    NodeFailed(String),
    /// The node answered but will not deliver (busy, refused): go to the upstream chain.
    Declined(String),
}

/// Fetch as much of `[writer.pos, end)` as the owner nodes deliver. An error is a local one
/// (the store); a sibling's failure only leaves bytes for the upstream chain.
pub(super) async fn fetch_from_siblings(
    segment: &Segment,
    writer: &mut SegmentWriter,
    end: u64,
) -> Result<(), FetchError> {
    let Some(cluster) = segment.ctx.cluster() else {
        return Ok(());
    };
    let Some(source) = segment.locator.source() else {
        return Ok(());
    };
    let id = segment.sink.blob().as_str().to_string();
    let query = BlobQuery {
        repo: source.repo.to_string(),
        commit: source.commit.clone(),
        path: source.path.as_str().to_string(),
        size: source.size,
        verifiable: source.verifiable,
        cached_only: false,
    };
    let owners = cluster.owners_before_self(&id);
    let (owners, query) = if owners.is_empty() || !segment.locator.may_ask_siblings() {
        let query = BlobQuery {
            cached_only: true,
            ..query
        };
        (cluster.live_peers(&id), query)
    } else {
        (owners, query)
    };
    writer.from_sibling = true;
    let result = ask_owners(
        &cluster,
        owners,
        segment,
        writer,
        end,
        &id,
        &query,
        &source.auth,
    )
    .await;
    writer.from_sibling = false;
    result
}

#[allow(clippy::too_many_arguments)]
async fn ask_owners(
    cluster: &Arc<Cluster>,
    owners: Vec<Arc<Node>>,
    segment: &Segment,
    writer: &mut SegmentWriter,
    end: u64,
    id: &str,
    query: &BlobQuery,
    auth: &Option<String>,
) -> Result<(), FetchError> {
    for node in owners.into_iter().take(MAX_NODES_ASKED) {
        let start = writer.pos;
        let asked = ask(cluster, &node, segment, writer, end, id, query, auth).await;
        let stats = cluster.stats();
        match asked? {
            Asked::Done => {
                SiblingStats::add(&stats.asked_ok, 1);
                node.mark_live();
                return Ok(());
            }
            Asked::NodeFailed(reason) => {
                SiblingStats::add(&stats.asked_failed, 1);
                log::warn!(
                    "{id}: sibling {} failed at byte {} (asked from {start}): {reason}",
                    node.origin(),
                    writer.pos
                );
                node.mark_failed();
            }
            Asked::Declined(_) if query.cached_only => {
                SiblingStats::add(&stats.asked_not_cached, 1);
            }
            Asked::Declined(reason) => {
                SiblingStats::add(&stats.asked_failed, 1);
                log::info!(
                    "{id}: sibling {} declined bytes {}-{}: {reason}; using the upstream chain",
                    node.origin(),
                    writer.pos,
                    end - 1
                );
                return Ok(());
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ask(
    cluster: &Arc<Cluster>,
    node: &Node,
    segment: &Segment,
    writer: &mut SegmentWriter,
    end: u64,
    id: &str,
    query: &BlobQuery,
    auth: &Option<String>,
) -> Result<Asked, FetchError> {
    let start = writer.pos;
    let size = segment.sink.size();
    let mut response = match cluster
        .get_range(node, id, query, start, end - 1, auth.as_deref())
        .await
    {
        Ok(response) => response,
        Err(reason) => return Ok(Asked::NodeFailed(reason)),
    };
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    if let Err(reason) = check_response(status, content_range, start, end, size, false) {
        return Ok(if status >= 500 && status != 503 {
            Asked::NodeFailed(reason)
        } else {
            Asked::Declined(reason)
        });
    }
    let stats = cluster.stats();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                SiblingStats::add(&stats.received_bytes, chunk.len() as u64);
                writer.push(chunk, end).await?;
                if writer.received() >= end {
                    writer.flush().await?;
                    return Ok(Asked::Done);
                }
            }
            Ok(None) => {
                writer.flush().await?;
                return Ok(if writer.pos < end {
                    Asked::NodeFailed(format!("body ended at byte {} of {end}", writer.pos))
                } else {
                    Asked::Done
                });
            }
            Err(e) => {
                writer.flush().await?;
                return Ok(Asked::NodeFailed(format!(
                    "stream broke: {}",
                    e.without_url()
                )));
            }
        }
    }
}
