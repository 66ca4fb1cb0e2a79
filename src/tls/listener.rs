//! The HTTPS listener: rustls with [`Certificates`] as its certificate resolver, ALPN `h2`
//! then `http/1.1`, and a clean answer to a plain-HTTP request sent to it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Peek;
use pingora::{Error, ErrorType, OrErr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Certificates;
use crate::proxy::conn::head::Refusal;
use crate::proxy::conn::response::refusal_bytes;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a plain-HTTP client gets to send its head (it is read, then answered).
const PLAIN_HEAD_WAIT: Duration = Duration::from_secs(2);
/// At most this much of a plain-HTTP client's request is read and discarded.
const PLAIN_HEAD_MAX: usize = 16 << 10;

/// The refusal a plain-HTTP request on the TLS port gets.
pub const PLAIN_HTTP_REFUSAL: Refusal = Refusal {
    status: 400,
    reason: "this is hubcache's HTTPS port (tls.listen) and the request was plain HTTP: use an \
             https:// URL",
};

/// The TLS listener settings: `certs` picks the certificate of every handshake; HTTP/2 is
/// offered first, HTTP/1.1 is the fallback.
pub fn tls_settings(certs: Arc<Certificates>) -> pingora::Result<TlsSettings> {
    // The paths are unused: a resolver is set.
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(certs);
    settings.enable_h2();
    Ok(settings)
}

/// Runs before the TLS handshake: a connection whose first byte cannot start a TLS record but
/// can start an HTTP method is answered `400` in plain HTTP/1.1 and closed, instead of being
/// dropped mid-handshake with no explanation.
#[derive(Debug, Default)]
pub struct PlainHttpRefusal;

#[async_trait]
impl PreTlsProcess for PlainHttpRefusal {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let mut first = [0u8; 1];
        // Reads one byte and puts it back for the handshake.
        stream
            .try_peek(&mut first)
            .await
            .or_err(ErrorType::HandshakeError, "the client sent nothing")?;
        if first[0] == TLS_HANDSHAKE_RECORD || !first[0].is_ascii_uppercase() {
            return Ok(());
        }
        answer_plain_http(stream).await;
        Error::e_explain(
            ErrorType::HandshakeError,
            "a plain-HTTP request on the TLS port was answered 400",
        )
    }
}

/// Reads the request head (bounded in size and time), answers 400, closes gracefully.
async fn answer_plain_http(stream: &mut L4Stream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let read_head = async {
        while head.len() < PLAIN_HEAD_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(PLAIN_HEAD_WAIT, read_head).await;
    let answer = refusal_bytes(&PLAIN_HTTP_REFUSAL);
    let write = async {
        stream.write_all(&answer).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(PLAIN_HEAD_WAIT, write).await.is_err() {
        return;
    }
    // Let the client read the answer before the close (unread bytes would make it a reset).
    let drain = async {
        let mut drained = 0;
        while drained < PLAIN_HEAD_MAX {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
