//! The chain's health-driven selection against small local HTTP servers: a hanging upstream
//! costs one timeout, concurrent requests skip an upstream that owes answers, `Retry-After`
//! is honoured, probes bring an upstream back only after `recover_after` passes, and every
//! change is reported once to the events sink and the metrics.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

use super::events::UpstreamEvents;
use super::{HubRequest, UpstreamChain, UpstreamError};
use crate::config::{HealthConfig, Trust, UpstreamConfig};

/// What a fake hub does with a request.
#[derive(Debug, Clone)]
enum Mode {
    Answer(u16, &'static [(&'static str, &'static str)]),
    /// Read the request and never answer.
    Hang,
}

/// A local HTTP server whose behaviour can be switched; it records `METHOD path` of every
/// request it read.
struct Hub {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Hub {
    async fn start(mode: Mode) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(mode));
        let (log, current) = (Arc::clone(&seen), Arc::clone(&mode));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (log, current) = (Arc::clone(&log), Arc::clone(&current));
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
                    let mut words = text.split(' ');
                    let method = words.next().unwrap_or("").to_string();
                    let path = words.next().unwrap_or("").to_string();
                    log.lock().push(format!("{method} {path}"));
                    let mode = current.lock().clone();
                    match mode {
                        Mode::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                        Mode::Answer(status, headers) => {
                            let body: &[u8] = if method == "HEAD" { b"" } else { b"{}" };
                            let mut response = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                                if method == "HEAD" { 2 } else { body.len() }
                            );
                            for (name, value) in headers {
                                response.push_str(&format!("{name}: {value}\r\n"));
                            }
                            response.push_str("\r\n");
                            let _ = conn.write_all(response.as_bytes()).await;
                            let _ = conn.write_all(body).await;
                        }
                    }
                });
            }
        });
        Hub { url, seen, mode }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().clone()
    }

    fn config(&self, timeout: Duration, health: HealthConfig) -> UpstreamConfig {
        UpstreamConfig {
            trust: Trust::Origin,
            timeout,
            health,
            ..UpstreamConfig::new(Url::parse(&self.url).unwrap())
        }
    }

    fn origin(&self) -> String {
        self.url.clone()
    }
}

fn health() -> HealthConfig {
    HealthConfig {
        fail_after: 2,
        slow_threshold: Duration::from_millis(300),
        slow_after: 3,
        probe_every: Duration::from_millis(50),
        probe_path: "/probe".into(),
        recover_after: 3,
    }
}

/// Events as a sink saw them.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl UpstreamEvents for Recorder {
    fn down(&self, upstream: &str, _reason: &str) {
        self.0.lock().push(format!("down {upstream}"));
    }
    fn recovered(&self, upstream: &str) {
        self.0.lock().push(format!("recovered {upstream}"));
    }
    fn all_down(&self) {
        self.0.lock().push("all_down".into());
    }
    fn all_recovered(&self) {
        self.0.lock().push("all_recovered".into());
    }
}

fn chain(configs: &[UpstreamConfig]) -> (Arc<UpstreamChain>, Arc<Recorder>) {
    let events = Arc::new(Recorder::default());
    let chain = UpstreamChain::new(configs, false)
        .unwrap()
        .with_events(Arc::clone(&events) as Arc<dyn UpstreamEvents>);
    (Arc::new(chain), events)
}

fn get(path: &str) -> HubRequest {
    HubRequest::get(path.to_string(), None)
}

#[tokio::test]
async fn a_hanging_upstream_costs_one_timeout_then_requests_go_straight_to_the_next() {
    let hanging = Hub::start(Mode::Hang).await;
    let good = Hub::start(Mode::Answer(200, &[])).await;
    let timeout = Duration::from_millis(400);
    let (chain, events) = chain(&[
        hanging.config(timeout, health()),
        good.config(timeout, health()),
    ]);
    for n in 0..5 {
        let response = chain
            .send(&get(&format!("/api/models/a/b?n={n}")))
            .await
            .unwrap();
        assert_eq!(response.upstream, chain.all()[1].id);
    }
    assert_eq!(
        hanging.seen(),
        ["GET /api/models/a/b?n=0"],
        "only the first request waited"
    );
    assert_eq!(good.seen().len(), 5);
    assert_eq!(*events.0.lock(), [format!("down {}", hanging.origin())]);
}

#[tokio::test]
async fn a_request_owed_too_long_makes_concurrent_requests_skip_the_upstream() {
    let hanging = Hub::start(Mode::Hang).await;
    let good = Hub::start(Mode::Answer(200, &[])).await;
    // The timeout is long; slow_threshold (300 ms) marks the owing upstream suspect.
    let timeout = Duration::from_secs(5);
    let (chain, _events) = chain(&[
        hanging.config(timeout, health()),
        good.config(timeout, health()),
    ]);
    let first = {
        let chain = Arc::clone(&chain);
        tokio::spawn(async move { chain.send(&get("/first")).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..3 {
        let response = chain.send(&get(&format!("/next{n}"))).await.unwrap();
        assert_eq!(response.upstream, chain.all()[1].id);
    }
    assert_eq!(hanging.seen(), ["GET /first"]);
    first.abort();
}

#[tokio::test]
async fn retry_after_keeps_requests_away_until_then() {
    let busy = Hub::start(Mode::Answer(429, &[("retry-after", "30")])).await;
    let good = Hub::start(Mode::Answer(200, &[])).await;
    let timeout = Duration::from_secs(5);
    let (chain, events) = chain(&[
        busy.config(timeout, health()),
        good.config(timeout, health()),
    ]);
    for _ in 0..3 {
        assert_eq!(
            chain.send(&get("/x")).await.unwrap().upstream,
            chain.all()[1].id
        );
    }
    assert_eq!(busy.seen().len(), 1, "asked again before Retry-After");
    assert!(
        events.0.lock().is_empty(),
        "a throttled upstream is not down"
    );
    // Alone in the chain, it is not asked at all, and the client hears when to retry.
    let (alone, _) = super::select_tests::chain(&[busy.config(timeout, health())]);
    let _ = alone.send(&get("/y")).await;
    let err = alone.send(&get("/z")).await.unwrap_err();
    assert_eq!(err.gateway_status(), 503);
    let retry = err.retry_after().unwrap().parse::<u64>().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(busy.seen().len(), 2);
}

#[tokio::test]
async fn probes_bring_an_upstream_back_only_after_recover_after_passes() {
    let flaky = Hub::start(Mode::Answer(503, &[])).await;
    let good = Hub::start(Mode::Answer(200, &[])).await;
    let timeout = Duration::from_secs(5);
    let (chain, events) = chain(&[
        flaky.config(timeout, health()),
        good.config(timeout, health()),
    ]);
    // fail_after = 2 failures open the circuit.
    chain.send(&get("/a")).await.unwrap();
    chain.send(&get("/b")).await.unwrap();
    assert!(!chain.all()[0].health().is_up());
    chain.send(&get("/c")).await.unwrap();
    assert_eq!(flaky.seen(), ["GET /a", "GET /b"]);
    // Probes fail while it still answers 503; then it recovers.
    let probe_until = |n: usize| {
        let chain = Arc::clone(&chain);
        let seen = Arc::clone(&flaky.seen);
        async move {
            for _ in 0..200 {
                chain.start_due_probes();
                tokio::time::sleep(Duration::from_millis(10)).await;
                if seen
                    .lock()
                    .iter()
                    .filter(|s| s.starts_with("HEAD /probe"))
                    .count()
                    >= n
                {
                    return;
                }
            }
            panic!("fewer than {n} probes");
        }
    };
    probe_until(2).await;
    assert!(!chain.all()[0].health().is_up());
    let before = flaky.seen().len();
    flaky.set(Mode::Answer(200, &[]));
    for _ in 0..200 {
        chain.start_due_probes();
        tokio::time::sleep(Duration::from_millis(10)).await;
        if chain.all()[0].health().is_up() {
            break;
        }
    }
    assert!(chain.all()[0].health().is_up(), "never recovered");
    // recover_after (3) passes: at most one of them may have been read just before the switch.
    let passes = flaky.seen()[before..]
        .iter()
        .filter(|s| s.starts_with("HEAD /probe"))
        .count();
    assert!(passes >= 2, "recovered after {passes} passing probes");
    assert_eq!(
        chain.send(&get("/d")).await.unwrap().upstream,
        chain.all()[0].id
    );
    assert_eq!(
        *events.0.lock(),
        [
            format!("down {}", flaky.origin()),
            format!("recovered {}", flaky.origin())
        ]
    );
}

#[tokio::test]
async fn all_down_and_all_recovered_are_reported_once() {
    let a = Hub::start(Mode::Answer(500, &[])).await;
    let b = Hub::start(Mode::Answer(502, &[])).await;
    let timeout = Duration::from_secs(5);
    let (chain, events) = chain(&[a.config(timeout, health()), b.config(timeout, health())]);
    for _ in 0..3 {
        assert!(matches!(
            chain.send(&get("/x")).await,
            Err(UpstreamError::Unavailable { .. })
        ));
    }
    b.set(Mode::Answer(200, &[]));
    // Open upstreams are still asked last: the answers count like probes.
    for _ in 0..3 {
        chain.send(&get("/y")).await.unwrap();
    }
    let seen = events.0.lock().clone();
    assert_eq!(
        seen,
        [
            format!("down {}", a.origin()),
            format!("down {}", b.origin()),
            "all_down".to_string(),
            format!("recovered {}", b.origin()),
            "all_recovered".to_string(),
        ]
    );
}

#[tokio::test]
async fn metrics_show_state_requests_and_errors_per_upstream() {
    let a = Hub::start(Mode::Answer(503, &[])).await;
    let b = Hub::start(Mode::Answer(200, &[])).await;
    let timeout = Duration::from_secs(5);
    let (chain, _) = chain(&[a.config(timeout, health()), b.config(timeout, health())]);
    for _ in 0..3 {
        chain.send(&get("/m")).await.unwrap();
    }
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(super::metrics_collector()))
        .unwrap();
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    let (ao, bo) = (a.origin(), b.origin());
    for line in [
        format!("hubcache_upstream_up{{upstream=\"{ao}\"}} 0"),
        format!("hubcache_upstream_up{{upstream=\"{bo}\"}} 1"),
        format!("hubcache_upstream_requests_total{{upstream=\"{ao}\"}} 2"),
        format!("hubcache_upstream_requests_total{{upstream=\"{bo}\"}} 3"),
        format!("hubcache_upstream_errors_total{{kind=\"5xx\",upstream=\"{ao}\"}} 2"),
        format!("hubcache_upstream_state_changes_total{{state=\"down\",upstream=\"{ao}\"}} 1"),
        format!("hubcache_upstream_latency_seconds_count{{upstream=\"{bo}\"}} 3"),
        format!("hubcache_upstream_bytes_total{{upstream=\"{bo}\"}} 6"),
    ] {
        assert!(text.contains(&line), "missing {line}");
    }
    drop(chain);
    let text = {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(
        !text.contains(&format!("hubcache_upstream_up{{upstream=\"{ao}\"}}")),
        "a dropped upstream's up series remains"
    );
}
