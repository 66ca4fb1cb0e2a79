//! Stable upstream ids: an upstream is named by where requests go (its base URL and its
//! outbound proxy), never by its position in the chain, so work started before a reload that
//! reorders, adds or removes upstreams still points at the host it was started on.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::config::{UpstreamConfig, UpstreamProxy};

/// Identifies one upstream across config reloads: equal for the same base URL and proxy.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamId(u64);

impl UpstreamId {
    /// The id of the upstream `cfg` describes.
    pub fn of(cfg: &UpstreamConfig) -> Self {
        let mut hash = Sha256::new();
        hash.update(cfg.base().as_bytes());
        hash.update([0]);
        match &cfg.proxy {
            None => {}
            Some(UpstreamProxy::Env) => hash.update(b"env"),
            Some(UpstreamProxy::Url(url)) => hash.update(url.as_str().as_bytes()),
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }

    /// The id of answers a sibling node gave (its metadata route): no upstream of this
    /// node's chain, so nothing is remembered against it.
    pub const SIBLING: UpstreamId = UpstreamId(0);

    /// An id for tests that need one without a config.
    #[cfg(test)]
    pub(crate) const fn from_raw(n: u64) -> Self {
        Self(n)
    }
}

impl fmt::Debug for UpstreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream#{:08x}", self.0 >> 32)
    }
}

impl fmt::Display for UpstreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(url: &str, proxy: Option<&str>) -> UpstreamConfig {
        UpstreamConfig {
            proxy: proxy.map(|p| UpstreamProxy::Url(url::Url::parse(p).unwrap())),
            ..UpstreamConfig::new(url::Url::parse(url).unwrap())
        }
    }

    #[test]
    fn the_id_depends_on_url_and_proxy_only() {
        let a = cfg("https://huggingface.co", None);
        let slower = UpstreamConfig {
            timeout: Duration::from_secs(1),
            forward_token: true,
            ..a.clone()
        };
        assert_eq!(UpstreamId::of(&a), UpstreamId::of(&slower));
        let proxied = cfg("https://huggingface.co", Some("http://proxy:3128"));
        assert_ne!(UpstreamId::of(&a), UpstreamId::of(&proxied));
        assert_ne!(
            UpstreamId::of(&a),
            UpstreamId::of(&cfg("https://hf-mirror.com", None))
        );
    }
}
