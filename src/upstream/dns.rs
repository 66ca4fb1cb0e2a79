//! Asynchronous DNS with a small cache, for Pingora peers.
//!
//! `HttpPeer::new("host:port", ..)` resolves with blocking `getaddrinfo` and panics when it
//! fails, so peers are always built from a `SocketAddr` resolved here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const TTL: Duration = Duration::from_secs(60);

/// `(host, port)` -> the address and when it was resolved.
type DnsCache = HashMap<(String, u16), (SocketAddr, Instant)>;

static CACHE: LazyLock<Mutex<DnsCache>> = LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}:{port}: {reason}")]
pub struct DnsError {
    pub host: String,
    pub port: u16,
    pub reason: String,
}

/// Resolve `host:port` to one address, from the cache when fresh.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, DnsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let key = (host.to_string(), port);
    if let Some((addr, at)) = CACHE.lock().get(&key) {
        if at.elapsed() < TTL {
            return Ok(*addr);
        }
    }
    let error = |reason: String| DnsError {
        host: host.to_string(),
        port,
        reason,
    };
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("no address".to_string()))?;
    CACHE.lock().insert(key, (addr, Instant::now()));
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_resolve_without_lookup() {
        let addr = resolve("127.0.0.1", 8090).await.unwrap();
        assert_eq!(addr, "127.0.0.1:8090".parse().unwrap());
        let v6 = resolve("[::1]", 80).await.unwrap();
        assert_eq!(v6, "[::1]:80".parse().unwrap());
    }

    #[tokio::test]
    async fn localhost_resolves_and_is_cached() {
        let first = resolve("localhost", 1234).await.unwrap();
        assert_eq!(first.port(), 1234);
        assert!(CACHE.lock().contains_key(&("localhost".to_string(), 1234)));
    }
}
