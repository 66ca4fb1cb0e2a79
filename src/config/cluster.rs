//! `cluster:` — sibling hubcache nodes (`self`, `peers`, `secret`; the key names are fixed).
//!
//! Every node lists the same set of nodes: itself as `self` and the others as `peers`. The
//! shared `secret` signs the requests nodes send each other; it is required as soon as there
//! are peers. Peers may change on a reload.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::env;
use super::error::ConfigError;
use super::raw::{deserialize_parsed, parse_url, reject_credentials};

/// Shortest accepted `cluster.secret`, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// `cluster:` — this node and its siblings.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `cluster.self`: how the other nodes reach this one.
    pub self_url: url::Url,
    /// `cluster.peers`: the other nodes (never `self`, each once).
    pub peers: Vec<url::Url>,
    /// `cluster.secret`: signs sibling requests (`None` only without peers).
    pub secret: Option<ClusterSecret>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("self_url", &self.self_url.as_str())
            .field(
                "peers",
                &self.peers.iter().map(url::Url::as_str).collect::<Vec<_>>(),
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The shared secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(String);

impl ClusterSecret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of cluster settings (self, peers, secret)"
)]
pub(super) struct RawCluster {
    #[serde(rename = "self")]
    self_url: Option<NodeUrl>,
    peers: Option<Vec<NodeUrl>>,
    secret: Option<SecretValue>,
}

impl RawCluster {
    pub(super) fn into_config(self) -> Result<ClusterConfig, ConfigError> {
        let self_url = self
            .self_url
            .ok_or_else(|| {
                ConfigError::invalid(
                    "cluster.self",
                    "is required: the URL the other nodes reach this one at",
                )
            })?
            .0;
        let mut peers: Vec<url::Url> = Vec::new();
        for (i, peer) in self.peers.unwrap_or_default().into_iter().enumerate() {
            let peer = peer.0;
            if peer == self_url {
                return Err(ConfigError::invalid(
                    format!("cluster.peers[{i}]"),
                    format!("\"{peer}\" is cluster.self (list only the other nodes)"),
                ));
            }
            if let Some(first) = peers.iter().position(|p| *p == peer) {
                return Err(ConfigError::invalid(
                    format!("cluster.peers[{i}]"),
                    format!("\"{peer}\" is already cluster.peers[{first}] (list each node once)"),
                ));
            }
            peers.push(peer);
        }
        let secret = self.secret.map(|s| ClusterSecret(s.0));
        if !peers.is_empty() && secret.is_none() {
            return Err(ConfigError::invalid(
                "cluster.secret",
                "is required when cluster.peers are set (the same on every node)",
            ));
        }
        Ok(ClusterConfig {
            self_url,
            peers,
            secret,
        })
    }
}

/// `cluster.self` and `cluster.peers[i]`: an http(s) URL without credentials, query or path.
#[derive(Debug)]
struct NodeUrl(url::Url);

impl<'de> Deserialize<'de> for NodeUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "an http:// or https:// URL", |text| {
            let url = parse_url(text, &["http", "https"], "use http or https")?;
            reject_credentials(&url, text)?;
            if url.path() != "/" {
                return Err(format!(
                    "\"{text}\" has a path; give the node's base URL (scheme, host, port)"
                ));
            }
            Ok(NodeUrl(url))
        })
    }
}

/// `cluster.secret`: `${ENV}` references expanded; at least [`MIN_SECRET_LEN`] bytes.
struct SecretValue(String);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a secret string", |text| {
            let secret = env::expand_from_process(text)?;
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "is too short: use at least {MIN_SECRET_LEN} characters (the same on every node)"
                ));
            }
            Ok(SecretValue(secret))
        })
    }
}

#[cfg(test)]
mod tests {

    const SECRET: &str = "0123456789abcdef0123";

    use crate::config::testing::parse;

    #[track_caller]
    fn assert_rejected(yaml: &str, path: &str, reason_part: &str) {
        let text = crate::config::testing::assert_rejected(yaml, path, reason_part);
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }

    #[test]
    fn no_cluster_section_means_a_single_node() {
        assert_eq!(parse("listen: 127.0.0.1:1\n").cluster, None);
    }

    #[test]
    fn cluster_section_is_parsed_with_normalised_urls() {
        let config = parse(&format!(
            "cluster:\n  self: http://node-a:8090/\n  peers: [http://node-b:8090, https://node-c]\n  secret: {SECRET}\n"
        ));
        let cluster = config.cluster.expect("cluster");
        assert_eq!(cluster.self_url.as_str(), "http://node-a:8090/");
        let peers: Vec<&str> = cluster.peers.iter().map(url::Url::as_str).collect();
        assert_eq!(peers, ["http://node-b:8090/", "https://node-c/"]);
        assert_eq!(
            cluster.secret.expect("secret").as_bytes(),
            SECRET.as_bytes()
        );
    }

    #[test]
    fn cluster_secret_expands_environment_references() {
        std::env::set_var("HUBCACHE_TEST_CLUSTER_SECRET", SECRET);
        let config = parse(
            "cluster:\n  self: http://a:1\n  peers: [http://b:1]\n  secret: ${HUBCACHE_TEST_CLUSTER_SECRET}\n",
        );
        let secret = config.cluster.and_then(|c| c.secret).expect("secret");
        assert_eq!(secret.as_bytes(), SECRET.as_bytes());
        assert!(!format!("{secret:?}").contains(SECRET));
    }

    #[test]
    fn cluster_errors_name_the_key() {
        assert_rejected(
            &format!("cluster:\n  peers: [http://b:1]\n  secret: {SECRET}\n"),
            "cluster.self",
            "required",
        );
        assert_rejected(
            "cluster:\n  self: http://a:1\n  peers: [http://b:1]\n",
            "cluster.secret",
            "required when cluster.peers",
        );
        assert_rejected(
            &format!("cluster:\n  self: http://a:1\n  peers: [http://b:1, http://a:1/]\n  secret: {SECRET}\n"),
            "cluster.peers[1]",
            "is cluster.self",
        );
        assert_rejected(
            &format!("cluster:\n  self: http://a:1\n  peers: [http://b:1, http://b:1]\n  secret: {SECRET}\n"),
            "cluster.peers[1]",
            "already cluster.peers[0]",
        );
        assert_rejected(
            &format!("cluster:\n  self: ftp://a:1\n  secret: {SECRET}\n"),
            "cluster.self",
            "scheme",
        );
        assert_rejected(
            &format!("cluster:\n  self: http://a:1/x\n  secret: {SECRET}\n"),
            "cluster.self",
            "has a path",
        );
        assert_rejected(
            "cluster:\n  self: http://a:1\n  peers: [http://b:1]\n  secret: short\n",
            "cluster.secret",
            "too short",
        );
        assert_rejected(
            &format!("cluster:\n  self: http://a:1\n  secret: {SECRET}\n  members: []\n"),
            "cluster.members",
            "unknown key",
        );
    }

    #[test]
    fn a_cluster_of_one_needs_no_secret() {
        let cluster = parse("cluster:\n  self: http://a:1\n")
            .cluster
            .expect("cluster");
        assert!(cluster.peers.is_empty());
        assert!(cluster.secret.is_none());
    }
}
