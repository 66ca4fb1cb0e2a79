//! Test support for the fill engine: a tiny HTTP hub serving resolve URLs (HEAD, ranged GET)
//! on 127.0.0.1 with per-file faults, and helpers to build an engine over a temp store.
//!
//! The hub runs on a thread and runtime of its own, so a test runtime that stalls or spins
//! cannot take it down, and a test can watch what reached it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{BlobSource, FillEngine, FillMode, FillSettings};
use crate::config::{Trust, UpstreamConfig};
use crate::hf::{Repo, RepoPath};
use crate::store::{BlobId, Durability, Store, StoreOptions};
use crate::upstream::UpstreamChain;

/// The commit every test file lives at.
pub(crate) const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One file the hub serves, and what happened to it.
pub(crate) struct HubFile {
    pub(crate) data: Bytes,
    /// Authorization values accepted (`None`: public).
    tokens: Option<Vec<String>>,
    /// Ranged GETs wait until this is true before answering.
    open: watch::Receiver<bool>,
    open_tx: watch::Sender<bool>,
    /// Sent instead of the true `Content-Range`.
    content_range: Option<String>,
    /// GET requests received (whether answered or not).
    pub(crate) gets: AtomicU64,
    /// Body bytes sent to GETs.
    pub(crate) bytes_sent: AtomicU64,
    /// Each GET's body breaks off (the connection closes) after this many bytes.
    cut_after: Option<u64>,
    /// `(start, end)` (inclusive) of every ranged GET received, in order.
    pub(crate) ranges: Mutex<Vec<(u64, u64)>>,
}

impl HubFile {
    pub(crate) fn new(data: Bytes) -> Self {
        let (open_tx, open) = watch::channel(true);
        Self {
            data,
            tokens: None,
            open,
            open_tx,
            content_range: None,
            gets: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            cut_after: None,
            ranges: Mutex::new(Vec::new()),
        }
    }

    /// Every GET's body breaks off after `bytes` bytes.
    pub(crate) fn cut_after(mut self, bytes: u64) -> Self {
        self.cut_after = Some(bytes);
        self
    }

    /// Only these Authorization values may read the file; others get 401.
    pub(crate) fn tokens(mut self, tokens: &[&str]) -> Self {
        self.tokens = Some(tokens.iter().map(|t| t.to_string()).collect());
        self
    }

    /// Ranged GETs wait until [`FakeHub::release`].
    pub(crate) fn held(self) -> Self {
        self.open_tx.send_replace(false);
        self
    }

    /// Every `206` carries this `Content-Range`.
    pub(crate) fn content_range(mut self, value: &str) -> Self {
        self.content_range = Some(value.to_string());
        self
    }
}

#[derive(Default)]
struct HubState {
    files: Mutex<HashMap<String, Arc<HubFile>>>,
}

/// An HTTP/1.1 hub on 127.0.0.1 serving `/{repo}/resolve/{commit}/{path}`.
pub(crate) struct FakeHub {
    addr: SocketAddr,
    state: Arc<HubState>,
}

impl FakeHub {
    pub(crate) fn start() -> Self {
        let state = Arc::new(HubState::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let serving = Arc::clone(&state);
        std::thread::Builder::new()
            .name("fake-hub".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("hub runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    tx.send(listener.local_addr().expect("addr"))
                        .expect("report");
                    loop {
                        let Ok((conn, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(serve(conn, Arc::clone(&serving)));
                    }
                });
            })
            .expect("hub thread");
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("hub start");
        Self { addr, state }
    }

    pub(crate) fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("url")
    }

    /// Serve `file` at repo path `path`.
    pub(crate) fn add(&self, path: &str, file: HubFile) -> Arc<HubFile> {
        let file = Arc::new(file);
        self.state
            .files
            .lock()
            .insert(path.to_string(), Arc::clone(&file));
        file
    }

    /// Let the held GETs of `path` answer.
    pub(crate) fn release(&self, path: &str) {
        if let Some(file) = self.state.files.lock().get(path) {
            file.open_tx.send_replace(true);
        }
    }
}

async fn serve(mut conn: TcpStream, state: Arc<HubState>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let file = target
        .split_once("/resolve/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(_, path)| state.files.lock().get(path).cloned());
    let _ = answer(&mut conn, method, &headers, file).await;
}

async fn answer(
    conn: &mut TcpStream,
    method: &str,
    headers: &HashMap<String, String>,
    file: Option<Arc<HubFile>>,
) -> io::Result<()> {
    let Some(file) = file else {
        return conn.write_all(&status_only(404)).await;
    };
    if let Some(tokens) = &file.tokens {
        if !headers
            .get("authorization")
            .is_some_and(|a| tokens.contains(a))
        {
            return conn.write_all(&status_only(401)).await;
        }
    }
    let size = file.data.len() as u64;
    if method == "HEAD" {
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n");
        return conn.write_all(head.as_bytes()).await;
    }
    file.gets.fetch_add(1, Ordering::SeqCst);
    let range = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    if let Some(range) = range {
        file.ranges.lock().push(range);
    }
    let mut open = file.open.clone();
    if open.wait_for(|o| *o).await.is_err() {
        return Ok(());
    }
    let (start, end) = match range {
        Some((a, b)) if a < size => (a, (b + 1).min(size)),
        _ => (0, size),
    };
    let head = if range.is_some() {
        let content_range = file
            .content_range
            .clone()
            .unwrap_or_else(|| format!("bytes {start}-{}/{size}", end - 1));
        format!(
            "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: {content_range}\r\nconnection: close\r\n\r\n",
            end - start
        )
    } else {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n")
    };
    conn.write_all(head.as_bytes()).await?;
    let end = file.cut_after.map_or(end, |cut| end.min(start + cut));
    for chunk in file.data[start as usize..end as usize].chunks(64 << 10) {
        conn.write_all(chunk).await?;
        file.bytes_sent
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    conn.flush().await
}

fn status_only(status: u16) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
}

/// Deterministic test content.
pub(crate) fn content(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u64::from(seed)) as u8
                ^ (i >> 13) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The sha256 id of `data`.
pub(crate) fn id_of(data: &[u8]) -> BlobId {
    BlobId::parse(&hex::encode(Sha256::digest(data))).expect("sha256 id")
}

/// How to fetch `path` from the fake hub.
pub(crate) fn source(path: &str, size: u64, auth: Option<&str>) -> BlobSource {
    BlobSource {
        repo: Repo::parse("acme/model").expect("repo"),
        commit: COMMIT.to_string(),
        path: RepoPath::new(path).expect("path"),
        auth: auth.map(str::to_string),
        size,
        verifiable: true,
    }
}

/// Settings for tests: small blocks, on-demand, one background fill.
pub(crate) fn settings() -> FillSettings {
    FillSettings {
        mode: FillMode::OnDemand,
        segment: 1 << 20,
        connections_per_file: 2,
        connections_total: 8,
        read_ahead: 0,
        background_fills: 1,
        block_size: 64 << 10,
        offline: false,
    }
}

/// An engine over a store in `dir`, fetching from `hub`.
pub(crate) fn engine(dir: &Path, hub: &FakeHub, settings: FillSettings) -> FillEngine {
    let store = Arc::new(Store::open(dir, Durability::Os).expect("store"));
    engine_on(store, hub, settings)
}

/// An engine over `store`, fetching from `hub`, which plays the origin (it gets tokens).
pub(crate) fn engine_on(store: Arc<Store>, hub: &FakeHub, settings: FillSettings) -> FillEngine {
    let origin = UpstreamConfig {
        trust: Trust::Origin,
        ..UpstreamConfig::new(hub.url())
    };
    let upstream = UpstreamChain::new(&[origin], false).expect("chain");
    FillEngine::new(store, Arc::new(upstream), settings)
}

/// An engine over `store`, fetching from the chain `upstreams` (in order).
pub(crate) fn engine_chain(
    store: Arc<Store>,
    upstreams: &[UpstreamConfig],
    settings: FillSettings,
) -> FillEngine {
    let upstream = UpstreamChain::new(upstreams, false).expect("chain");
    FillEngine::new(store, Arc::new(upstream), settings)
}

/// An engine over a store in `dir` whose settings a test changes as a config reload does:
/// store new settings in the returned cell, then call `follow_settings`.
pub(crate) fn live_engine(
    dir: &Path,
    hub: &FakeHub,
    settings: FillSettings,
) -> (FillEngine, Arc<arc_swap::ArcSwap<FillSettings>>) {
    let store = Arc::new(Store::open(dir, Durability::Os).expect("store"));
    let origin = UpstreamConfig {
        trust: Trust::Origin,
        ..UpstreamConfig::new(hub.url())
    };
    let upstream = Arc::new(UpstreamChain::new(&[origin], false).expect("chain"));
    let cell = Arc::new(arc_swap::ArcSwap::from_pointee(settings));
    let read = Arc::clone(&cell);
    let engine = FillEngine::live(
        store,
        crate::live::Live::fixed(upstream),
        crate::live::Live::new(move || read.load_full()),
    );
    (engine, cell)
}

/// A store whose only root reports no free space: every new blob fails with no space.
pub(crate) fn full_store(dir: &Path) -> Arc<Store> {
    let mut options = StoreOptions::new(1, Durability::Os);
    options.space_probe = Some(Arc::new(|_| {
        Ok(crate::store::FsSpace {
            free: 0,
            total: 1 << 40,
        })
    }));
    Arc::new(Store::open_with(&[dir.to_path_buf()], options).expect("store"))
}

/// Run `test` on a current-thread runtime of its own thread, failing if it has not finished
/// within `limit` (a runtime that spins or blocks never gets there).
pub(crate) fn run_bounded<F, Fut>(limit: Duration, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(test());
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().expect("test thread"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {limit:?}: its runtime stalled or spun")
        }
    }
}

/// Poll `done` every 10 ms until it is true, failing after `limit`.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where blob `id` lives in a one-root store at `root`.
pub(crate) fn blob_path(root: &Path, id: &BlobId) -> std::path::PathBuf {
    let hex = id.as_str();
    root.join("blobs")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(hex)
}
