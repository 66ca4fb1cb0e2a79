//! Pass-through requests through an outbound HTTP proxy (`upstreams[].proxy`, explicit or
//! from the environment): Pingora's own CONNECT support only speaks to proxies on Unix
//! sockets, so an HTTPS destination is reached through a `CONNECT host:port` tunnel opened by
//! this custom L4 connector (Pingora then runs TLS inside it), and a plain-HTTP destination
//! by sending the request in absolute form to the proxy (see `passthrough`), as curl does.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::upstream::{dns, ProxyHop};

/// Longest proxy answer head read.
const MAX_HEAD: usize = 16 << 10;

/// Opens a TCP connection to the proxy and a `CONNECT` tunnel through it to `target`.
pub struct ConnectTunnel {
    hop: ProxyHop,
    /// `host:port` of the destination, as the `CONNECT` target.
    target: String,
    timeout: Duration,
}

impl std::fmt::Debug for ConnectTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectTunnel")
            .field("hop", &self.hop)
            .field("target", &self.target)
            .finish()
    }
}

impl ConnectTunnel {
    pub fn new(hop: ProxyHop, host: &str, port: u16, timeout: Duration) -> Self {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Self {
            hop,
            target: format!("{host}:{port}"),
            timeout,
        }
    }

    /// A key that keeps pooled tunnels to different destinations apart (the peer address is
    /// the proxy's for all of them).
    pub fn group_key(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.target.hash(&mut hasher);
        hasher.finish()
    }

    async fn open(&self) -> std::result::Result<TcpStream, String> {
        let addr = dns::resolve(&self.hop.host, self.hop.port)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the proxy {addr}: {e}"))?;
        let mut request = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n",
            target = self.target
        );
        if let Some(auth) = self
            .hop
            .authorization
            .as_ref()
            .and_then(|v| v.to_str().ok())
        {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("proxy {addr}: {e}"))?;
        let head = read_head(&mut stream)
            .await
            .map_err(|e| format!("proxy {addr}: {e}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("proxy {addr} sent no HTTP status"))?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "proxy {addr} refused CONNECT to {} with {status}",
                self.target
            ));
        }
        Ok(stream)
    }
}

/// The proxy's answer head, up to the blank line. Reads one byte at a time so nothing after
/// the head (the tunnelled server's first bytes) is consumed.
async fn read_head(stream: &mut TcpStream) -> std::result::Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err("answer head too long".into());
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("closed the connection during CONNECT".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[async_trait]
impl L4Connect for ConnectTunnel {
    async fn connect(&self, _addr: &SocketAddr) -> Result<Stream> {
        match tokio::time::timeout(self.timeout, self.open()).await {
            Ok(Ok(stream)) => Ok(stream.into()),
            Ok(Err(reason)) => Error::e_explain(ErrorType::ConnectError, reason),
            Err(_) => Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("CONNECT to {} through the proxy timed out", self.target),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use tokio::net::TcpListener;

    /// A proxy that answers one CONNECT with `status` and then echoes what it receives.
    async fn fake_proxy(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let head = read_head(&mut conn).await.unwrap();
            conn.write_all(format!("HTTP/1.1 {status} X\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            if status == 200 && conn.read_exact(&mut buf).await.is_ok() {
                conn.write_all(&buf).await.unwrap();
            }
            head
        });
        (port, task)
    }

    fn hop(port: u16, auth: Option<&'static str>) -> ProxyHop {
        ProxyHop {
            host: "127.0.0.1".into(),
            port,
            authorization: auth.map(HeaderValue::from_static),
        }
    }

    #[tokio::test]
    async fn a_tunnel_sends_connect_with_credentials_and_then_carries_bytes() {
        let (port, proxy) = fake_proxy(200).await;
        let tunnel = ConnectTunnel::new(
            hop(port, Some("Basic dTpw")),
            "hub.example",
            443,
            Duration::from_secs(5),
        );
        let mut stream = tunnel.open().await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");
        let head = proxy.await.unwrap();
        assert!(
            head.starts_with("CONNECT hub.example:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error_naming_the_status() {
        let (port, _proxy) = fake_proxy(403).await;
        let tunnel = ConnectTunnel::new(hop(port, None), "::1", 8443, Duration::from_secs(5));
        assert_eq!(tunnel.target, "[::1]:8443");
        let err = tunnel.open().await.unwrap_err();
        assert!(err.contains("403"), "{err}");
    }

    #[test]
    fn tunnels_to_different_ports_do_not_share_connections() {
        let a = ConnectTunnel::new(hop(1, None), "h", 1, Duration::from_secs(1));
        let b = ConnectTunnel::new(hop(1, None), "h", 2, Duration::from_secs(1));
        assert_ne!(a.group_key(), b.group_key());
    }
}
