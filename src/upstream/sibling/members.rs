//! The cluster's nodes and who owns what: a blob's (or repo's) owner is the first live node
//! in rendezvous order of its key over `self` and the peers (the scheme the store uses for
//! roots: `docs/storage-format.md`). A peer that fails is skipped for [`DOWN_FOR`], then
//! probed (one light signed request) before it owns anything again, so a node that returns
//! regains its keys without any data being copied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use url::Url;

use super::sign::Signer;
use super::stats::{SiblingStats, STATS};
use crate::config::ClusterConfig;

/// How long a peer that failed is skipped before it is probed.
pub const DOWN_FOR: Duration = Duration::from_secs(5);
/// Sibling streams this node serves at once; more are answered 503.
pub const MAX_SERVED_STREAMS: usize = 32;

/// One peer node and its health as this node sees it.
pub struct Node {
    url: Url,
    /// Until when the peer is skipped (`None`: live).
    down_until: Mutex<Option<Instant>>,
    /// A probe is running.
    probing: AtomicBool,
}

impl Node {
    fn new(url: Url) -> Self {
        Self {
            url,
            down_until: Mutex::new(None),
            probing: AtomicBool::new(false),
        }
    }

    /// The node's base URL (ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The node's origin, for logs.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// Whether the peer is believed to answer.
    pub fn is_live(&self) -> bool {
        self.down_until.lock().is_none()
    }

    /// Whether the peer is down and its probe is due.
    fn probe_due(&self) -> bool {
        self.down_until
            .lock()
            .is_some_and(|until| Instant::now() >= until)
    }

    /// The peer failed to answer (or broke off): skip it for [`DOWN_FOR`].
    pub fn mark_failed(&self) {
        let mut down = self.down_until.lock();
        if down.is_none() {
            log::warn!(
                "sibling {} failed; skipping it for {}s",
                self.origin(),
                DOWN_FOR.as_secs()
            );
        }
        *down = Some(Instant::now() + DOWN_FOR);
    }

    /// The peer answered.
    pub fn mark_live(&self) {
        if self.down_until.lock().take().is_some() {
            log::info!("sibling {} is back", self.origin());
        }
    }
}

/// Who owns a key.
#[derive(Clone)]
pub enum Owner {
    /// This node.
    Local,
    Peer(Arc<Node>),
}

/// The cluster as configured now: this node, its peers (with their health, kept across
/// reloads for the peers that stay) and the signer.
pub struct Cluster {
    self_url: Url,
    peers: Vec<Arc<Node>>,
    signer: Option<Signer>,
    pub(super) client: reqwest::Client,
    /// Sibling streams served now (shared across reloads).
    served: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("self", &self.self_url.as_str())
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// The rendezvous weight of `node` for `key`.
fn weight(node: &Url, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"hubcache-rendezvous-v1\0");
    h.update(node.as_str().as_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl Cluster {
    /// Builds the cluster of `config`, keeping the health, counters and stream budget of
    /// `previous` (a reload).
    pub fn new(config: &ClusterConfig, previous: Option<&Cluster>) -> Result<Self, String> {
        let peers = config
            .peers
            .iter()
            .map(|url| {
                previous
                    .and_then(|p| p.peers.iter().find(|n| n.url == *url))
                    .map(Arc::clone)
                    .unwrap_or_else(|| Arc::new(Node::new(url.clone())))
            })
            .collect();
        let client = match previous {
            Some(p) => p.client.clone(),
            None => reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .read_timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("cannot build the sibling HTTP client: {e}"))?,
        };
        Ok(Self {
            self_url: config.self_url.clone(),
            peers,
            signer: config.secret.clone().map(Signer::new),
            client,
            served: previous.map_or_else(
                || Arc::new(tokio::sync::Semaphore::new(MAX_SERVED_STREAMS)),
                |p| Arc::clone(&p.served),
            ),
        })
    }

    /// This node's URL.
    pub fn self_url(&self) -> &Url {
        &self.self_url
    }

    pub fn peers(&self) -> &[Arc<Node>] {
        &self.peers
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// The process's sibling counters.
    pub fn stats(&self) -> &'static SiblingStats {
        &STATS
    }

    /// Every node in rendezvous order of `key` (`None` is this node), whatever its health.
    pub fn order(&self, key: &str) -> Vec<Option<Arc<Node>>> {
        let mut ranked: Vec<(u64, &str, Option<Arc<Node>>)> = self
            .peers
            .iter()
            .map(|n| (weight(&n.url, key), n.url.as_str(), Some(Arc::clone(n))))
            .collect();
        ranked.push((weight(&self.self_url, key), self.self_url.as_str(), None));
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        ranked.into_iter().map(|(_, _, n)| n).collect()
    }

    /// The live peers ranked above this node for `key`, best first: whom to ask before the
    /// upstream chain. Peers that are down are skipped (and probed when their time is up).
    pub fn owners_before_self(&self, key: &str) -> Vec<Arc<Node>> {
        let mut out = Vec::new();
        for node in self.order(key) {
            let Some(node) = node else { break };
            if node.is_live() {
                out.push(node);
            } else if node.probe_due() {
                self.probe(&node);
            }
        }
        out
    }

    /// Every live peer in rendezvous order of `key` (this node left out): whom to ask for
    /// blocks they already have when this node owns `key` (or serves a sibling).
    pub fn live_peers(&self, key: &str) -> Vec<Arc<Node>> {
        self.order(key)
            .into_iter()
            .flatten()
            .filter(|node| node.is_live())
            .collect()
    }

    /// Another node owns `key` when every node is live (first in rendezvous order, health
    /// left out): copies this node keeps of such blobs are evicted first.
    pub fn owned_by_peer(&self, key: &str) -> bool {
        matches!(self.order(key).first(), Some(Some(_)))
    }

    /// The owner of `key`: the first live node in rendezvous order.
    pub fn owner(&self, key: &str) -> Owner {
        match self.owners_before_self(key).into_iter().next() {
            Some(node) => Owner::Peer(node),
            None => Owner::Local,
        }
    }

    /// A permit to serve one sibling stream, waiting up to `wait`; `None` when this node
    /// serves [`MAX_SERVED_STREAMS`] already.
    pub async fn serve_permit(&self, wait: Duration) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let served = Arc::clone(&self.served);
        match tokio::time::timeout(wait, served.acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }

    /// Probe `node` in the background (one at a time per node): it is live again if it
    /// answers the signed ping.
    fn probe(&self, node: &Arc<Node>) {
        if node.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            node.probing.store(false, Ordering::Release);
            return;
        };
        let request = self.ping_request(node);
        let node = Arc::clone(node);
        runtime.spawn(async move {
            let answered = match request {
                Some(request) => {
                    matches!(tokio::time::timeout(Duration::from_secs(3), request.send()).await,
                        Ok(Ok(r)) if r.status().is_success())
                }
                None => false,
            };
            if answered {
                node.mark_live();
            } else {
                node.mark_failed();
            }
            node.probing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterSecret;

    fn cluster(me: &str, peers: &[&str]) -> Cluster {
        let config = ClusterConfig {
            self_url: Url::parse(me).unwrap(),
            peers: peers.iter().map(|p| Url::parse(p).unwrap()).collect(),
            secret: Some(ClusterSecret::new("0123456789abcdef".into())),
        };
        Cluster::new(&config, None).unwrap()
    }

    const NODES: [&str; 3] = ["http://a:1/", "http://b:1/", "http://c:1/"];

    fn owner_url(c: &Cluster, key: &str) -> String {
        match c.owner(key) {
            Owner::Local => c.self_url().to_string(),
            Owner::Peer(n) => n.url().to_string(),
        }
    }

    #[test]
    fn every_node_agrees_on_each_owner() {
        let views: Vec<Cluster> = (0..3)
            .map(|i| {
                let peers: Vec<&str> = (0..3).filter(|&j| j != i).map(|j| NODES[j]).collect();
                cluster(NODES[i], &peers)
            })
            .collect();
        let mut owned = [0usize; 3];
        for k in 0..300 {
            let key = format!("{k:064x}");
            let owners: Vec<String> = views.iter().map(|v| owner_url(v, &key)).collect();
            assert!(owners.iter().all(|o| *o == owners[0]), "{key}: {owners:?}");
            owned[NODES.iter().position(|n| *n == owners[0]).unwrap()] += 1;
        }
        // Rendezvous spreads keys over all nodes.
        assert!(owned.iter().all(|&n| n > 60), "{owned:?}");
    }

    #[test]
    fn a_blob_is_owned_by_a_peer_by_configured_order_even_while_that_peer_is_down() {
        let c = cluster(NODES[0], &NODES[1..]);
        let keys: Vec<String> = (0..100).map(|k| format!("{k:064x}")).collect();
        let by_peer: Vec<bool> = keys.iter().map(|k| c.owned_by_peer(k)).collect();
        for (key, peer) in keys.iter().zip(&by_peer) {
            assert_eq!(*peer, owner_url(&c, key) != NODES[0], "{key}");
        }
        assert!(by_peer.iter().any(|p| *p) && by_peer.iter().any(|p| !*p));
        c.peers()[0].mark_failed();
        c.peers()[1].mark_failed();
        let while_down: Vec<bool> = keys.iter().map(|k| c.owned_by_peer(k)).collect();
        assert_eq!(by_peer, while_down);
    }

    #[test]
    fn a_failed_owner_is_skipped_and_its_keys_move_to_the_next_node_only() {
        let c = cluster(NODES[0], &NODES[1..]);
        let keys: Vec<String> = (0..200).map(|k| format!("{k:064x}")).collect();
        let before: Vec<String> = keys.iter().map(|k| owner_url(&c, k)).collect();
        c.peers()[0].mark_failed();
        for (key, was) in keys.iter().zip(&before) {
            let now = owner_url(&c, key);
            if was == NODES[1] {
                assert_ne!(now, NODES[1]);
            } else {
                assert_eq!(&now, was, "{key} moved although its owner is live");
            }
        }
        // Back: it owns its keys again.
        c.peers()[0].mark_live();
        let after: Vec<String> = keys.iter().map(|k| owner_url(&c, k)).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn live_peers_are_every_other_live_node_in_rendezvous_order() {
        let c = cluster(NODES[0], &NODES[1..]);
        let key = "ab".repeat(32);
        let order: Vec<String> = c
            .order(&key)
            .into_iter()
            .flatten()
            .map(|n| n.url().to_string())
            .collect();
        let live: Vec<String> = c
            .live_peers(&key)
            .iter()
            .map(|n| n.url().to_string())
            .collect();
        assert_eq!(live, order);
        assert_eq!(live.len(), 2);
        c.peers()[0].mark_failed();
        let live: Vec<String> = c
            .live_peers(&key)
            .iter()
            .map(|n| n.url().to_string())
            .collect();
        assert_eq!(live, [NODES[2]]);
    }

    #[test]
    fn rendezvous_weight_is_the_documented_sha256_prefix() {
        // docs/cluster.md: first 8 bytes of sha256("hubcache-rendezvous-v1" 0 url 0 key).
        let url = Url::parse("http://a:1").unwrap();
        let mut h = Sha256::new();
        h.update(b"hubcache-rendezvous-v1\0http://a:1/\0k");
        let d = h.finalize();
        let expected = u64::from_be_bytes(d[..8].try_into().unwrap());
        assert_eq!(weight(&url, "k"), expected);
    }

    #[tokio::test]
    async fn sibling_streams_beyond_the_cap_are_refused_until_one_ends() {
        let c = cluster(NODES[0], &NODES[1..]);
        let wait = Duration::from_millis(20);
        let mut held = Vec::new();
        for _ in 0..MAX_SERVED_STREAMS {
            held.push(c.serve_permit(wait).await.expect("a slot"));
        }
        assert!(c.serve_permit(wait).await.is_none());
        held.pop();
        assert!(c.serve_permit(wait).await.is_some());
    }

    #[test]
    fn a_reload_keeps_the_health_of_peers_that_stay() {
        let c = cluster(NODES[0], &NODES[1..]);
        c.peers()[1].mark_failed();
        let config = ClusterConfig {
            self_url: Url::parse(NODES[0]).unwrap(),
            peers: vec![
                Url::parse(NODES[2]).unwrap(),
                Url::parse("http://d:1/").unwrap(),
            ],
            secret: None,
        };
        let next = Cluster::new(&config, Some(&c)).unwrap();
        assert!(!next.peers()[0].is_live(), "c keeps its failure");
        assert!(next.peers()[1].is_live());
    }
}
