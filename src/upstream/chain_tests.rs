//! The chain against small local HTTP servers: who receives the client's token, and which
//! answers count.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

use super::error::{classify, AttemptFailure, UpstreamError};
use super::{HubRequest, UpstreamChain};
use crate::config::{Trust, UpstreamConfig};

pub(super) const TOKEN: &str = "Bearer hf_secret_token";

/// One request as a fake upstream saw it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) path: String,
    pub(super) auth: Option<String>,
}

/// A local HTTP server answering every request with one canned response.
pub(super) struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    pub(super) async fn start(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let path = text.split(' ').nth(1).unwrap_or("").to_string();
                    let auth = text.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_string())
                    });
                    log.lock().push(Seen { path, auth });
                    let body = b"{\"ok\":true}";
                    let mut response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    for (name, value) in headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.write_all(body).await;
                });
            }
        });
        Fake { url, seen }
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub(super) fn config(&self, trust: Trust, forward_token: bool) -> UpstreamConfig {
        UpstreamConfig {
            trust,
            forward_token,
            timeout: Duration::from_secs(5),
            ..UpstreamConfig::new(Url::parse(&self.url).unwrap())
        }
    }
}

/// An origin that is down (503) in front of a mirror answering `status`.
async fn origin_then_mirror(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    forward_token: bool,
) -> (UpstreamChain, Fake, Fake) {
    let origin = Fake::start(503, &[]).await;
    let mirror = Fake::start(status, headers).await;
    let chain = UpstreamChain::new(
        &[
            origin.config(Trust::Origin, false),
            mirror.config(Trust::Mirror, forward_token),
        ],
        false,
    )
    .unwrap();
    (chain, origin, mirror)
}

fn get(path: &str, auth: Option<&str>) -> HubRequest {
    HubRequest::get(path.to_string(), auth.map(str::to_string))
}

#[tokio::test]
async fn failover_to_a_mirror_leaves_the_token_behind() {
    let (chain, origin, mirror) = origin_then_mirror(200, &[], false).await;
    let response = chain
        .send(&get("/api/models/acme/tiny", Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.upstream, chain.all()[1].id);
    assert!(!response.token_sent && !response.decides_access());
    assert_eq!(origin.seen()[0].auth.as_deref(), Some(TOKEN));
    let seen = mirror.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].auth, None, "{seen:?}");
}

#[tokio::test]
async fn a_mirror_with_forward_token_receives_it() {
    let (chain, _origin, mirror) = origin_then_mirror(200, &[], true).await;
    let response = chain
        .send(&get("/api/models/acme/tiny", Some(TOKEN)))
        .await
        .unwrap();
    assert!(response.token_sent && !response.decides_access());
    assert_eq!(mirror.seen()[0].auth.as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn a_protected_repo_is_never_asked_of_a_mirror() {
    let (chain, origin, mirror) = origin_then_mirror(200, &[], false).await;
    let request = get("/api/models/acme/gated", Some(TOKEN)).protected(true);
    let err = chain.send(&request).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err}");
    let asked = origin.seen();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].path, "/api/models/acme/gated");
    assert!(mirror.seen().is_empty());
}

#[tokio::test]
async fn a_401_from_a_mirror_that_never_saw_the_token_is_not_the_answer() {
    let (chain, _origin, _mirror) = origin_then_mirror(401, &[], false).await;
    let err = chain
        .send(&get("/api/models/acme/gated", Some(TOKEN)))
        .await
        .unwrap_err();
    match err {
        UpstreamError::Unavailable { attempts } => {
            assert!(matches!(
                attempts.last().map(|a| &a.failure),
                Some(AttemptFailure::Withheld { status: 401 })
            ));
        }
        other => panic!("{other}"),
    }
    // An anonymous client's 401 is its answer.
    let anonymous = chain
        .send(&get("/api/models/acme/gated", None))
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn a_repo_not_found_from_a_mirror_without_the_token_is_not_the_answer() {
    let (chain, _origin, _mirror) =
        origin_then_mirror(404, &[("x-error-code", "RepoNotFound")], false).await;
    assert!(chain
        .send(&get("/api/models/acme/private", Some(TOKEN)))
        .await
        .is_err());
    // But an EntryNotFound is: the repo was visible without a token.
    let (chain, _origin, _mirror) =
        origin_then_mirror(404, &[("x-error-code", "EntryNotFound")], false).await;
    let response = chain
        .send(&get("/acme/tiny/resolve/main/x", Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn a_location_on_a_mirror_carries_no_token() {
    let (chain, _origin, mirror) = origin_then_mirror(200, &[("etag", "\"abc\"")], false).await;
    let location = chain
        .locate("/acme/tiny/resolve/main/config.json", Some(TOKEN), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(location.upstream, chain.all()[1].id);
    assert!(location.auth.is_none());
    let response = chain.get_range(&location, 0, 1).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(mirror.seen().iter().all(|s| s.auth.is_none()));
}

#[tokio::test]
async fn transport_errors_do_not_carry_the_url() {
    // Nothing listens on port 1: the connection is refused, locally.
    let client = reqwest::Client::new();
    let err = client
        .get("http://127.0.0.1:1/repos/ab/cd/abcd?Expires=1&Signature=s3cr3t")
        .send()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("s3cr3t"), "reqwest shows the URL");
    let failure = classify(err);
    let text = format!("{failure:?}");
    assert!(
        !text.contains("s3cr3t") && !text.contains("Signature"),
        "{text}"
    );
}
