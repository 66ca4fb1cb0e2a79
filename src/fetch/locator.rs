//! Where a fill gets its bytes: the sources readers offered (the first one's repo, commit and
//! path; every reader's token), the last location found (a signed CDN URL, briefly), and the
//! upstreams whose streams kept breaking for this blob.
//!
//! A fill uses one reader's token at a time. When the upstream refuses it (expired, revoked),
//! the next token another reader offered is tried, so one reader's token never dooms a fill
//! that others are entitled to.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::context::FillContext;
use super::{BlobSource, FetchError};
use crate::store::BlobId;
use crate::upstream::{Location, UpstreamId};

/// A signed CDN location is reused for at most this long (they expire within minutes).
const LOCATION_TTL: Duration = Duration::from_secs(120);
/// Other readers' tokens kept in reserve.
const SPARE_TOKENS: usize = 8;
/// Files up to this size are first fetched with a GET of their resolve URL, without a `HEAD`
/// to locate them (one segment; nothing to reuse a located CDN URL for).
const NO_HEAD_MAX: u64 = 8 << 20;

#[derive(Default)]
struct Sources {
    /// How this blob is fetched now.
    current: Option<BlobSource>,
    /// Authorization values other readers offered, most recent last.
    spare: VecDeque<Option<String>>,
    /// Upstreams whose streams of this blob kept breaking off: asked last from now on.
    avoid: Vec<UpstreamId>,
}

pub(super) struct Locator {
    sources: Mutex<Sources>,
    /// The last location found; the async mutex makes one locate per blob at a time.
    cached: tokio::sync::Mutex<Option<(Location, Instant)>>,
    /// Index of the upstream the last location is on (`usize::MAX`: none yet), readable
    /// without waiting for a locate in progress.
    last_upstream: parking_lot::Mutex<Option<UpstreamId>>,
    /// A sibling asked for this blob: never ask a sibling for it in turn.
    no_siblings: std::sync::atomic::AtomicBool,
    /// The first locate may skip the `HEAD` (a small file); later ones (after a failure) not.
    skip_head: std::sync::atomic::AtomicBool,
}

impl Locator {
    pub(super) fn new(source: Option<BlobSource>) -> Self {
        let small = source.as_ref().is_some_and(|s| s.size <= NO_HEAD_MAX);
        Self {
            skip_head: std::sync::atomic::AtomicBool::new(small),
            sources: Mutex::new(Sources {
                current: source,
                ..Sources::default()
            }),
            cached: tokio::sync::Mutex::new(None),
            last_upstream: parking_lot::Mutex::new(None),
            no_siblings: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The upstream the bytes were last located on.
    pub(super) fn last_upstream(&self) -> Option<UpstreamId> {
        *self.last_upstream.lock()
    }

    /// The repo (`models/org/name`) and path the bytes are fetched as, for status pages.
    pub(super) fn describe(&self) -> Option<(String, String)> {
        let sources = self.sources.lock();
        let source = sources.current.as_ref()?;
        Some((source.repo.to_string(), source.path.as_str().to_string()))
    }

    /// How the bytes are fetched now (the first reader's file, the token in use).
    pub(super) fn source(&self) -> Option<BlobSource> {
        self.sources.lock().current.clone()
    }

    /// From now on the fill never asks a sibling (it serves one).
    pub(super) fn forbid_siblings(&self) {
        self.no_siblings
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the fill may ask a sibling for bytes.
    pub(super) fn may_ask_siblings(&self) -> bool {
        !self.no_siblings.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn has_source(&self) -> bool {
        self.sources.lock().current.is_some()
    }

    /// A reader offers how to fetch this blob: kept if there was none; its token is kept in
    /// reserve otherwise.
    pub(super) fn offer(&self, source: BlobSource) {
        let mut sources = self.sources.lock();
        let Some(current) = &sources.current else {
            sources.current = Some(source);
            return;
        };
        if current.auth == source.auth || sources.spare.contains(&source.auth) {
            return;
        }
        if sources.spare.len() >= SPARE_TOKENS {
            sources.spare.pop_front();
        }
        sources.spare.push_back(source.auth);
    }

    /// Where to fetch the bytes: the last location while fresh, otherwise ask the upstream
    /// chain (one HEAD of the resolve URL), trying the other readers' tokens on a refusal.
    pub(super) async fn locate(
        &self,
        ctx: &FillContext,
        blob: &BlobId,
    ) -> Result<Location, FetchError> {
        let mut cached = self.cached.lock().await;
        if let Some((location, at)) = cached.as_ref() {
            // A location on an upstream that went down (or is owed answers) is looked up
            // again: the chain then prefers the next upstream.
            if at.elapsed() < LOCATION_TTL && ctx.upstream().is_ready(location.upstream) {
                return Ok(location.clone());
            }
        }
        loop {
            let (source, avoid) = {
                let sources = self.sources.lock();
                (sources.current.clone(), sources.avoid.clone())
            };
            let source = source.ok_or_else(|| FetchError::NotCached {
                blob: blob.to_string(),
                block: 0,
            })?;
            let path = source.resolve_path()?;
            if self
                .skip_head
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                let found =
                    ctx.upstream()
                        .locate_without_head(&path, source.auth.as_deref(), &avoid);
                if let Some(location) = found {
                    *self.last_upstream.lock() = Some(location.upstream);
                    *cached = Some((location.clone(), Instant::now()));
                    return Ok(location);
                }
            }
            match ctx
                .upstream()
                .locate(&path, source.auth.as_deref(), &avoid)
                .await?
            {
                Ok(location) => {
                    *self.last_upstream.lock() = Some(location.upstream);
                    *cached = Some((location.clone(), Instant::now()));
                    return Ok(location);
                }
                Err(response)
                    if FetchError::is_refusal(response.status) && self.next_token(&source.auth) =>
                {
                    log::info!(
                        "{blob}: upstream refused a reader's token (HTTP {}); trying another reader's",
                        response.status
                    );
                }
                Err(response) => {
                    return Err(FetchError::Refused {
                        what: path,
                        status: response.status,
                    })
                }
            }
        }
    }

    /// The token `refused` was refused: use the next spare one. False when there is none.
    fn next_token(&self, refused: &Option<String>) -> bool {
        let mut sources = self.sources.lock();
        let Sources { current, spare, .. } = &mut *sources;
        let Some(current) = current.as_mut() else {
            return false;
        };
        if &current.auth != refused {
            return true; // another segment switched already
        }
        match spare.pop_front() {
            Some(auth) => {
                current.auth = auth;
                true
            }
            None => false,
        }
    }

    /// Forget `used` (expired, or its host failed) so the next attempt locates again.
    pub(super) async fn forget(&self, ctx: &FillContext, used: &Location) {
        ctx.upstream().forget_location(&used.url);
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(l, _)| l.url == used.url) {
            *cached = None;
        }
    }

    /// Ask `upstream` last for this blob from now on (its streams keep breaking off).
    pub(super) fn avoid(&self, upstream: UpstreamId, blob: &BlobId) {
        let mut sources = self.sources.lock();
        if !sources.avoid.contains(&upstream) {
            log::warn!("{blob}: upstream {upstream} keeps failing; trying the next one");
            sources.avoid.push(upstream);
        }
    }
}
