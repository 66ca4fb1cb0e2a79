//! The YAML shape of the operator's keys (`admin:`, `log:`) and their checks; see `raw`.

use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::env;
use super::raw::{deserialize_parsed, Named, NamedEnum};
use super::schema::{AdminConfig, AdminToken, LogFormat, LogLevel};

/// Keys whose explicit `null` means "off" rather than "the default" (the config loader keeps
/// these nulls; every other one is dropped).
pub(crate) const NULL_MEANS_OFF: &[&str] = &["admin.listen", "listen"];

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of admin settings (listen, token)"
)]
pub(super) struct RawAdmin {
    #[serde(default)]
    listen: AdminListen,
    token: Option<TokenValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of log settings (format, level)"
)]
pub(super) struct RawLog {
    pub(super) format: Option<Named<LogFormat>>,
    pub(super) level: Option<Named<LogLevel>>,
}

impl RawAdmin {
    pub(super) fn into_config(self) -> AdminConfig {
        AdminConfig {
            listen: match self.listen {
                AdminListen::Default => AdminConfig::default().listen,
                AdminListen::Off => None,
                AdminListen::At(addr) => Some(addr),
            },
            token: self.token.map(|t| AdminToken::new(t.0)),
        }
    }
}

/// `admin.listen`: left out (the default address), `null` (no admin listener), or an address.
#[derive(Debug, Default)]
enum AdminListen {
    #[default]
    Default,
    Off,
    At(SocketAddr),
}

impl<'de> Deserialize<'de> for AdminListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AdminListenVisitor;
        impl Visitor<'_> for AdminListenVisitor {
            type Value = AdminListen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ip:port address such as 127.0.0.1:8091, or null for none")
            }
            fn visit_unit<E: de::Error>(self) -> Result<AdminListen, E> {
                Ok(AdminListen::Off)
            }
            fn visit_none<E: de::Error>(self) -> Result<AdminListen, E> {
                Ok(AdminListen::Off)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<AdminListen, E> {
                text.parse::<SocketAddr>()
                    .map(AdminListen::At)
                    .map_err(|_| {
                        E::custom(format!(
                            "\"{text}\" is not an ip:port socket address (e.g. 127.0.0.1:8091; \
                         null for no admin listener)"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<AdminListen, E> {
                Err(E::custom(format!(
                    "expected an ip:port address such as 127.0.0.1:8091, found {n}"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<AdminListen, E> {
                Err(E::custom(format!(
                    "expected an ip:port address such as 127.0.0.1:8091, found {n}"
                )))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<AdminListen, E> {
                Err(E::custom(format!(
                    "expected an ip:port address such as 127.0.0.1:8091 (or null), found {b}"
                )))
            }
        }
        d.deserialize_any(AdminListenVisitor)
    }
}

/// `admin.token`: `${ENV}` references expanded; the result must be usable in an
/// `Authorization: Bearer` header. Errors never show the value.
#[derive(Debug)]
struct TokenValue(String);

impl<'de> Deserialize<'de> for TokenValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a token string", |text| {
            let token = env::expand_from_process(text)?;
            if token.is_empty() {
                return Err("is empty (give a token, or null for none)".to_string());
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(
                    "must be printable ASCII without spaces (it is sent in an HTTP header)"
                        .to_string(),
                );
            }
            Ok(TokenValue(token))
        })
    }
}

impl NamedEnum for LogFormat {
    const EXPECTING: &'static str = "text or json";
}

impl NamedEnum for LogLevel {
    const EXPECTING: &'static str = "error, warn, info, debug or trace";
}

#[cfg(test)]
mod tests {
    use crate::config::{AdminConfig, LogConfig, LogFormat, LogLevel};

    use crate::config::testing::{assert_rejected, parse};

    #[test]
    fn admin_listen_null_disables_the_admin_listener() {
        assert_eq!(parse("admin:\n  listen: null\n").admin.listen, None);
        assert_eq!(parse("admin: {listen: ~}").admin.listen, None);
        // Leaving the key out (or the whole section empty) keeps the default.
        let default = AdminConfig::default().listen;
        assert_eq!(parse("admin:\n").admin.listen, default);
        assert_eq!(parse("admin: {token: abc}").admin.listen, default);
        assert_eq!(
            parse("admin: {listen: '[::1]:9100'}").admin.listen,
            Some("[::1]:9100".parse().unwrap())
        );
    }

    #[test]
    fn bad_admin_keys_are_rejected_with_path_and_reason() {
        assert_rejected(
            "admin: {listen: localhost:8091}",
            "admin.listen",
            "not an ip:port",
        );
        assert_rejected("admin: {listen: 8091}", "admin.listen", "found 8091");
        assert_rejected("admin: {token: ''}", "admin.token", "is empty");
        assert_rejected("admin: {token: 'a b'}", "admin.token", "printable ASCII");
        assert_rejected("admin: {tokn: x}", "admin.tokn", "unknown key");
        assert_rejected(
            "admin: {token: '${HUBCACHE_TEST_SURELY_UNSET_VARIABLE}'}",
            "admin.token",
            "environment variable HUBCACHE_TEST_SURELY_UNSET_VARIABLE is not set",
        );
    }

    #[test]
    fn admin_token_expands_environment_references() {
        // PATH is set in every environment the tests run in (and has no spaces here).
        let path = std::env::var("PATH").unwrap();
        let c = parse("admin: {token: 'x${PATH}'}");
        assert_eq!(c.admin.token.unwrap().expose(), format!("x{path}"));
        let c = parse("admin: {token: 'lit$${PATH}'}");
        assert_eq!(c.admin.token.unwrap().expose(), "lit${PATH}");
    }

    #[test]
    fn log_keys_parse_and_bad_values_are_named() {
        let c = parse("log: {format: json, level: debug}");
        assert_eq!(
            c.log,
            LogConfig {
                format: LogFormat::Json,
                level: LogLevel::Debug
            }
        );
        assert_rejected("log: {format: xml}", "log.format", "use text or json");
        assert_rejected("log: {level: verbose}", "log.level", "use error, warn");
    }
}
