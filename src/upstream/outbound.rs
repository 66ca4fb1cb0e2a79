//! How requests reach an upstream: directly, through an explicit HTTP proxy
//! (`proxy: http://host:port`), or through the proxy the standard environment variables name
//! (`proxy: env`: `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` by the destination's scheme,
//! lower-case forms too, unless `NO_PROXY` names the destination host).
//!
//! The metadata and fill client (reqwest) and the pass-through (Pingora, see
//! `proxy::tunnel`) decide with the same matcher (hyper-util's, which reqwest uses itself), so
//! every route of one upstream takes the same way out. The environment is read when the
//! upstream is built (at start and on reload).

use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::client::proxy::matcher::Matcher;
use url::Url;

use super::error::UpstreamError;
use crate::config::{UpstreamConfig, UpstreamProxy};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = concat!("hubcache/", env!("CARGO_PKG_VERSION"));

/// The HTTP proxy a request to one destination goes through.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyHop {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value (`Basic ...`) from the proxy URL's credentials.
    pub authorization: Option<HeaderValue>,
}

impl fmt::Debug for ProxyHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHop")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The way out of one upstream.
pub struct Outbound {
    setting: Option<UpstreamProxy>,
    matcher: Option<Matcher>,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let setting = match &self.setting {
            None => "direct",
            Some(UpstreamProxy::Env) => "env",
            Some(UpstreamProxy::Url(_)) => "explicit proxy",
        };
        f.debug_struct("Outbound")
            .field("setting", &setting)
            .finish()
    }
}

impl Outbound {
    pub fn new(setting: Option<&UpstreamProxy>) -> Self {
        let matcher = match setting {
            None => None,
            Some(UpstreamProxy::Env) => Some(Matcher::from_env()),
            Some(UpstreamProxy::Url(url)) => Some(Matcher::builder().all(url.to_string()).build()),
        };
        Self {
            setting: setting.cloned(),
            matcher,
        }
    }

    /// `proxy: env` with the variables given here instead of the process environment.
    #[cfg(test)]
    pub(crate) fn env_from(http: &str, https: &str, no_proxy: &str) -> Self {
        Self {
            setting: Some(UpstreamProxy::Env),
            matcher: Some(
                Matcher::builder()
                    .http(http.to_string())
                    .https(https.to_string())
                    .no(no_proxy.to_string())
                    .build(),
            ),
        }
    }

    /// The proxy a request to `url` goes through; `None`: straight to it. An error when the
    /// proxy the environment names cannot be used (only `http://` proxies are supported).
    pub fn proxy_for(&self, url: &Url) -> Result<Option<ProxyHop>, UpstreamError> {
        let Some(matcher) = &self.matcher else {
            return Ok(None);
        };
        let uri: http::Uri = url
            .as_str()
            .parse()
            .map_err(|_| UpstreamError::Config("a destination URL is not a valid URI".into()))?;
        let Some(intercept) = matcher.intercept(&uri) else {
            return Ok(None);
        };
        let proxy = intercept.uri();
        if proxy.scheme_str() != Some("http") {
            return Err(UpstreamError::Config(format!(
                "proxy scheme {} is not supported (use an http:// proxy)",
                proxy.scheme_str().unwrap_or("(none)")
            )));
        }
        let host = proxy
            .host()
            .ok_or_else(|| UpstreamError::Config("the proxy URL has no host".into()))?;
        Ok(Some(ProxyHop {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: proxy.port_u16().unwrap_or(80),
            authorization: intercept.basic_auth().cloned(),
        }))
    }

    /// The reqwest client for metadata calls and fills of the upstream `cfg`.
    pub(crate) fn http_client(
        &self,
        cfg: &UpstreamConfig,
    ) -> Result<reqwest::Client, UpstreamError> {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(cfg.timeout))
            // A body that stops moving for as long as a request may wait is a hung upstream.
            .read_timeout(cfg.timeout)
            .user_agent(USER_AGENT);
        let builder = match &self.setting {
            None => builder.no_proxy(),
            // reqwest reads the same variables with the same matcher.
            Some(UpstreamProxy::Env) => builder,
            Some(UpstreamProxy::Url(url)) => {
                let proxy = reqwest::Proxy::all(url.as_str()).map_err(|e| {
                    UpstreamError::Config(format!(
                        "proxy of {}: {}",
                        cfg.base(),
                        super::error::mask_urls(&e.to_string())
                    ))
                })?;
                builder.no_proxy().proxy(proxy)
            }
        };
        builder
            .build()
            .map_err(|e| UpstreamError::Config(format!("HTTP client: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn env_proxies_follow_the_scheme_and_no_proxy() {
        let out = Outbound::env_from(
            "http://plain.proxy:3128",
            "http://user:pw@tls.proxy:8080",
            "internal.corp, 10.0.0.0/8",
        );
        let hop = out
            .proxy_for(&url("https://huggingface.co/api/models/x"))
            .unwrap()
            .unwrap();
        assert_eq!((hop.host.as_str(), hop.port), ("tls.proxy", 8080));
        assert_eq!(
            hop.authorization.as_ref().and_then(|v| v.to_str().ok()),
            Some("Basic dXNlcjpwdw==")
        );
        let hop = out
            .proxy_for(&url("http://hub.example:81/x"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (hop.host.as_str(), hop.port, hop.authorization),
            ("plain.proxy", 3128, None)
        );
        for direct in [
            "https://mirror.internal.corp/x",
            "https://internal.corp/",
            "http://10.1.2.3:8080/x",
        ] {
            assert_eq!(out.proxy_for(&url(direct)).unwrap(), None, "{direct}");
        }
    }

    #[test]
    fn an_explicit_proxy_takes_every_destination_and_no_setting_none() {
        let explicit = Outbound::new(Some(&UpstreamProxy::Url(url("http://proxy.corp:3128"))));
        for dest in [
            "https://huggingface.co/x",
            "http://127.0.0.1:9/x",
            "https://cdn-lfs.hf.co/a",
        ] {
            let hop = explicit.proxy_for(&url(dest)).unwrap().unwrap();
            assert_eq!(
                (hop.host.as_str(), hop.port),
                ("proxy.corp", 3128),
                "{dest}"
            );
        }
        let direct = Outbound::new(None);
        assert_eq!(
            direct.proxy_for(&url("https://huggingface.co/")).unwrap(),
            None
        );
    }

    #[test]
    fn a_socks_proxy_from_the_environment_is_refused_by_name() {
        let out = Outbound::env_from("", "socks5://127.0.0.1:1080", "");
        let err = out.proxy_for(&url("https://huggingface.co/")).unwrap_err();
        assert!(err.to_string().contains("socks5"), "{err}");
    }

    #[test]
    fn debug_output_hides_proxy_credentials() {
        let out = Outbound::new(Some(&UpstreamProxy::Url(url("http://u:s3cret@p:1"))));
        let hop = out.proxy_for(&url("https://h/")).unwrap();
        let text = format!("{out:?} {hop:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("dTpzM2NyZXQ"),
            "{text}"
        );
    }
}
