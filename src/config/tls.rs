//! `tls:` (HTTPS and HTTP/2 on a second listener) and the top-level `listen`, which may be
//! `null` (no plain-HTTP listener) when `tls` is set. The files themselves are read and checked
//! by `crate::tls` (at start, by `check-config` and on every reload).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::ConfigError;
use super::raw::deserialize_parsed;

impl super::Config {
    /// Where clients connect, for logs and the status page: `0.0.0.0:8090`,
    /// `0.0.0.0:8090 + https 0.0.0.0:8443` or `https 0.0.0.0:8443`.
    pub fn listen_summary(&self) -> String {
        let tls = self.tls.as_ref().map(|t| format!("https {}", t.listen));
        match (self.listen, tls) {
            (Some(plain), Some(tls)) => format!("{plain} + {tls}"),
            (Some(plain), None) => plain.to_string(),
            (None, Some(tls)) => tls,
            (None, None) => "nothing".to_string(),
        }
    }
}

/// `tls:` — where HTTPS is served and the certificate it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The HTTPS listener (HTTP/2 and HTTP/1.1, chosen by ALPN).
    pub listen: SocketAddr,
    /// PEM certificate chain: the server certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of the certificate.
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with listen, cert and key")]
pub(super) struct RawTls {
    listen: Option<TlsListen>,
    cert: Option<PemPath>,
    key: Option<PemPath>,
}

impl RawTls {
    pub(super) fn into_config(self) -> Result<TlsConfig, ConfigError> {
        let missing = |key: &str, what: &str| {
            ConfigError::invalid(
                format!("tls.{key}"),
                format!("is missing: {what} (tls needs listen, cert and key)"),
            )
        };
        Ok(TlsConfig {
            listen: self
                .listen
                .ok_or_else(|| missing("listen", "the HTTPS address, e.g. 0.0.0.0:8443"))?
                .0,
            cert: self
                .cert
                .ok_or_else(|| missing("cert", "the PEM certificate chain file"))?
                .0,
            key: self
                .key
                .ok_or_else(|| missing("key", "the PEM private key file"))?
                .0,
        })
    }
}

/// The top-level `listen`: left out (the default address), `null` (no plain-HTTP listener;
/// only with `tls`), or an address.
#[derive(Debug, Default)]
pub(super) enum PlainListen {
    #[default]
    Default,
    Off,
    At(SocketAddr),
}

impl<'de> Deserialize<'de> for PlainListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PlainListenVisitor;
        impl Visitor<'_> for PlainListenVisitor {
            type Value = PlainListen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an ip:port address such as 0.0.0.0:8090, or null for no plain-HTTP listener",
                )
            }
            fn visit_unit<E: de::Error>(self) -> Result<PlainListen, E> {
                Ok(PlainListen::Off)
            }
            fn visit_none<E: de::Error>(self) -> Result<PlainListen, E> {
                Ok(PlainListen::Off)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<PlainListen, E> {
                text.parse::<SocketAddr>()
                    .map(PlainListen::At)
                    .map_err(|_| {
                        E::custom(format!(
                            "\"{text}\" is not an ip:port socket address (e.g. 0.0.0.0:8090, \
                         127.0.0.1:8090 or [::]:8090; host names are not accepted; null for \
                         no plain-HTTP listener)"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PlainListen, E> {
                Err(E::custom(format!(
                    "expected an ip:port address such as 0.0.0.0:8090, found {n}"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PlainListen, E> {
                Err(E::custom(format!(
                    "expected an ip:port address such as 0.0.0.0:8090, found {n}"
                )))
            }
        }
        d.deserialize_any(PlainListenVisitor)
    }
}

/// Applies the default to `listen` and checks it against `tls` and `admin.listen`.
pub(super) fn listeners(
    listen: PlainListen,
    tls: Option<RawTls>,
    default: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) -> Result<(Option<SocketAddr>, Option<TlsConfig>), ConfigError> {
    let tls = tls.map(RawTls::into_config).transpose()?;
    let listen = match listen {
        PlainListen::Default => default,
        PlainListen::At(addr) => Some(addr),
        PlainListen::Off if tls.is_none() => {
            return Err(ConfigError::invalid(
                "listen",
                "is null (no plain-HTTP listener), which needs tls: set tls.listen, tls.cert \
                 and tls.key, or give listen an address",
            ))
        }
        PlainListen::Off => None,
    };
    if let Some(tls) = &tls {
        if listen == Some(tls.listen) {
            return Err(ConfigError::invalid(
                "tls.listen",
                format!(
                    "{} is also listen (plain HTTP): give HTTPS its own port",
                    tls.listen
                ),
            ));
        }
        if admin == Some(tls.listen) {
            return Err(ConfigError::invalid(
                "tls.listen",
                format!(
                    "{} is also admin.listen: give HTTPS its own port",
                    tls.listen
                ),
            ));
        }
    }
    Ok((listen, tls))
}

/// `tls.listen`.
#[derive(Debug)]
struct TlsListen(SocketAddr);

impl<'de> Deserialize<'de> for TlsListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "an ip:port address such as 0.0.0.0:8443", |text| {
            text.parse::<SocketAddr>().map(TlsListen).map_err(|_| {
                format!(
                    "\"{text}\" is not an ip:port socket address (e.g. 0.0.0.0:8443 or \
                     [::]:8443; host names are not accepted)"
                )
            })
        })
    }
}

/// `tls.cert` / `tls.key`: a non-empty path.
#[derive(Debug)]
struct PemPath(PathBuf);

impl<'de> Deserialize<'de> for PemPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a path to a PEM file", |text| {
            if text.is_empty() {
                Err("is empty (give the path of a PEM file)".to_string())
            } else {
                Ok(PemPath(PathBuf::from(text)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(yaml: &str) -> Config {
        Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn rejected(yaml: &str, key: &str, needle: &str) {
        let err = Config::from_yaml_str(yaml).expect_err(yaml);
        assert_eq!(err.key_path(), Some(key), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }

    #[test]
    fn tls_is_off_by_default_and_listen_keeps_its_default() {
        let c = parse("offline: true");
        assert_eq!(c.tls, None);
        assert_eq!(c.listen, Some("0.0.0.0:8090".parse().unwrap()));
    }

    #[test]
    fn tls_takes_listen_cert_and_key() {
        let c = parse("tls: {listen: '127.0.0.1:8443', cert: /etc/c.pem, key: k.pem}");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(tls.cert, std::path::PathBuf::from("/etc/c.pem"));
        assert_eq!(tls.key, std::path::PathBuf::from("k.pem"));
        assert!(c.listen.is_some());
    }

    #[test]
    fn listen_null_turns_plain_http_off_only_with_tls() {
        let c = parse("listen: null\ntls: {listen: '0.0.0.0:8443', cert: c, key: k}");
        assert_eq!(c.listen, None);
        assert!(c.tls.is_some());
        rejected("listen: null", "listen", "needs tls");
        rejected("listen: ~\noffline: true", "listen", "needs tls");
    }

    #[test]
    fn incomplete_or_bad_tls_sections_name_the_key() {
        rejected("tls: {cert: c, key: k}", "tls.listen", "is missing");
        rejected(
            "tls: {listen: '0.0.0.0:8443', key: k}",
            "tls.cert",
            "is missing",
        );
        rejected(
            "tls: {listen: '0.0.0.0:8443', cert: c}",
            "tls.key",
            "is missing",
        );
        rejected(
            "tls: {listen: 'localhost:8443', cert: c, key: k}",
            "tls.listen",
            "not an ip:port",
        );
        rejected(
            "tls: {listen: '0.0.0.0:8443', cert: '', key: k}",
            "tls.cert",
            "is empty",
        );
        rejected(
            "tls: {listen: '0.0.0.0:8443', cert: c, key: k, ciphers: x}",
            "tls.ciphers",
            "unknown key",
        );
        rejected(
            "listen: 0.0.0.0:8443\ntls: {listen: '0.0.0.0:8443', cert: c, key: k}",
            "tls.listen",
            "also listen",
        );
        rejected(
            "admin: {listen: '127.0.0.1:9'}\ntls: {listen: '127.0.0.1:9', cert: c, key: k}",
            "tls.listen",
            "also admin.listen",
        );
    }
}
