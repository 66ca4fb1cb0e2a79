//! HTTPS at the edge: the certificate the TLS listener presents, re-read on every reload.
//!
//! Pingora's rustls listener takes a `ResolvesServerCert`; [`Certificates`] is one whose
//! certificate sits behind an `ArcSwap`. Every handshake takes the current pair, so a reload
//! that installs a renewed pair changes what new connections get, while connections already
//! up keep their session (TLS never re-reads a certificate mid-connection). A pair that fails
//! its checks ([`pair::load`]) is refused and the old one keeps serving.

pub mod listener;
pub mod pair;

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};

use crate::config::TlsConfig;
pub use pair::{Pair, TlsError};

/// The pair the TLS listener serves now.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<Pair>,
}

impl Certificates {
    /// Reads and checks the pair `tls` names (warnings are logged).
    pub fn load(tls: &TlsConfig) -> Result<Arc<Certificates>, TlsError> {
        let pair = pair::load(tls)?;
        log_pair(&pair, "serving");
        Ok(Arc::new(Certificates {
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// Reads and checks the pair `tls` names, without serving it yet.
    pub fn stage(&self, tls: &TlsConfig) -> Result<Pair, TlsError> {
        pair::load(tls)
    }

    /// Serves `pair` from the next handshake on. True when the certificate changed.
    pub fn install(&self, pair: Pair) -> bool {
        let renewed = self.current.load().end_entity() != pair.end_entity();
        if renewed {
            log_pair(&pair, "now serving");
        } else {
            for warning in &pair.warnings {
                log::warn!("{warning}");
            }
        }
        self.current.store(Arc::new(pair));
        renewed
    }

    /// Subject and validity of the certificate served now.
    pub fn summary(&self) -> String {
        self.current.load().summary.clone()
    }
}

fn log_pair(pair: &Pair, what: &str) {
    log::info!("tls: {what} the certificate of {}", pair.summary);
    for warning in &pair.warnings {
        log::warn!("{warning}");
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().key))
    }
}
