//! Reading and checking a certificate/key pair (`tls.cert`, `tls.key`).
//!
//! Errors name the key they are about and the file; an expired (or not yet valid) certificate
//! is a warning, not an error: it is still served, and clients decide.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, CryptoProvider, PrivateKeyDer, RusTlsError};
use rustls_pemfile::Item;

use crate::config::TlsConfig;

/// Why a certificate/key pair cannot be served. Displays as `tls.cert: ...` or `tls.key: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsError {
    /// The config key at fault: `tls.cert` or `tls.key`.
    pub key: &'static str,
    pub reason: String,
}

impl TlsError {
    fn new(key: &'static str, reason: impl Into<String>) -> TlsError {
        TlsError {
            key,
            reason: reason.into(),
        }
    }
}

/// A pair that was read and checked, ready to be served.
#[derive(Debug, Clone)]
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// Subject and validity of the server certificate, for logs.
    pub summary: String,
    /// Problems that do not stop it being served (expired, not yet valid).
    pub warnings: Vec<String>,
}

impl Pair {
    /// The server certificate's DER bytes (to tell a renewed certificate from the same one).
    pub fn end_entity(&self) -> &[u8] {
        self.key.cert.first().map_or(&[], |c| c.as_ref())
    }
}

/// Reads `tls.cert` and `tls.key` and checks that they belong together.
pub fn load(tls: &TlsConfig) -> Result<Pair, TlsError> {
    let chain = read_chain(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let (summary, warnings) = describe(&tls.cert, &chain[0], unix_now())?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or_else(|| {
        TlsError::new(
            "tls.key",
            "no TLS crypto provider is installed (a hubcache bug)",
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        RusTlsError::InconsistentKeys(_) => TlsError::new(
            "tls.key",
            format!(
                "{} does not match the certificate in tls.cert ({}): give the private key of \
                 that certificate",
                tls.key.display(),
                tls.cert.display()
            ),
        ),
        other => TlsError::new(
            "tls.key",
            format!("{} cannot be used: {other}", tls.key.display()),
        ),
    })?;
    Ok(Pair {
        key: Arc::new(key),
        summary,
        warnings,
    })
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<Item>, TlsError> {
    let file = std::fs::File::open(path)
        .map_err(|e| TlsError::new(key, format!("cannot read {}: {e}", path.display())))?;
    rustls_pemfile::read_all(&mut BufReader::new(file))
        .collect::<Result<Vec<Item>, _>>()
        .map_err(|e| TlsError::new(key, format!("{} is not valid PEM: {e}", path.display())))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let items = read_pem("tls.cert", path)?;
    let holds_key = items.iter().any(is_key);
    let chain: Vec<CertificateDer<'static>> = items
        .into_iter()
        .filter_map(|item| match item {
            Item::X509Certificate(der) => Some(der),
            _ => None,
        })
        .collect();
    if chain.is_empty() {
        let hint = if holds_key {
            " (it holds a private key: that file belongs in tls.key)"
        } else {
            ""
        };
        return Err(TlsError::new(
            "tls.cert",
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----){hint}",
                path.display()
            ),
        ));
    }
    Ok(chain)
}

fn is_key(item: &Item) -> bool {
    matches!(
        item,
        Item::Pkcs1Key(_) | Item::Pkcs8Key(_) | Item::Sec1Key(_)
    )
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let items = read_pem("tls.key", path)?;
    let holds_cert = items.iter().any(|i| matches!(i, Item::X509Certificate(_)));
    let key = items.into_iter().find_map(|item| match item {
        Item::Pkcs1Key(k) => Some(PrivateKeyDer::from(k)),
        Item::Pkcs8Key(k) => Some(PrivateKeyDer::from(k)),
        Item::Sec1Key(k) => Some(PrivateKeyDer::from(k)),
        _ => None,
    });
    key.ok_or_else(|| {
        let hint = if holds_cert {
            " (it holds a certificate: that file belongs in tls.cert)"
        } else {
            ""
        };
        TlsError::new(
            "tls.key",
            format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC; an encrypted key \
                 must be decrypted first){hint}",
                path.display()
            ),
        )
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The server certificate's subject and validity, and warnings about its dates at `now`.
fn describe(
    path: &Path,
    cert: &CertificateDer<'_>,
    now: i64,
) -> Result<(String, Vec<String>), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
        TlsError::new(
            "tls.cert",
            format!(
                "{}: the first certificate cannot be parsed: {e}",
                path.display()
            ),
        )
    })?;
    let validity = parsed.validity();
    let summary = format!(
        "{} (valid {} to {})",
        parsed.subject(),
        validity.not_before,
        validity.not_after
    );
    let mut warnings = Vec::new();
    if validity.not_after.timestamp() < now {
        warnings.push(format!(
            "tls.cert: the certificate in {} expired on {}: clients will refuse it; renew it \
             and reload",
            path.display(),
            validity.not_after
        ));
    } else if validity.not_before.timestamp() > now {
        warnings.push(format!(
            "tls.cert: the certificate in {} is not valid before {}: clients will refuse it \
             until then",
            path.display(),
            validity.not_before
        ));
    }
    Ok((summary, warnings))
}

#[cfg(test)]
#[path = "pair_tests.rs"]
mod tests;
