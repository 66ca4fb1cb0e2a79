//! Client connections: how many are served at once, and the checks every byte goes through.
//!
//! [`Gate`] is the Pingora `ServerApp` of the public listener, in front of the proxy. For each
//! accepted connection it takes a slot (`server.max_connections`; past it the client gets a
//! clean 503 and the connection is closed), wraps the stream in a [`GuardedStream`] (raw head
//! checks, a whole-head deadline, a send-stall timeout), and runs Pingora's HTTP/1 keep-alive
//! loop over it, the same loop as Pingora's own `ServerApp` for HTTP apps, with two changes:
//! between requests it restarts the head checks, and it sets the idle keep-alive time
//! (`server.idle_timeout`), which Pingora would otherwise leave infinite after the first
//! request. HTTP/2 exists only on the TLS listener (ALPN `h2`, no h2c): such a connection is
//! handed to Pingora's own HTTP/2 loop, under the same slot.

mod guard;
pub mod head;
pub(crate) mod response;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

pub use guard::{GuardedStream, StreamLimits};
use head::Refusal;

/// Connections over the limit that are being answered 503 at once; beyond, they are just
/// closed (each costs a descriptor and a task for up to `header_timeout` plus the linger).
const MAX_REFUSING: usize = 256;
/// An over-limit client gets at most this long to send its head before it is closed.
const REFUSE_HEAD_WAIT: Duration = Duration::from_secs(5);

/// The connection settings of the public listener (`server.*`).
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub max_connections: usize,
    pub idle_timeout_secs: u64,
    pub limits: StreamLimits,
}

/// One taken place in a counter, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(Arc::clone(counter)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The public listener's `ServerApp`: connection limit and guarded streams around `app`.
pub struct Gate<A> {
    app: Arc<A>,
    settings: ConnSettings,
    open: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
    /// Unix second of the last "over the limit" warning (at most one every 10 s).
    last_warning: AtomicU64,
}

impl<A> Gate<A> {
    pub fn new(app: A, settings: ConnSettings) -> Gate<A> {
        Gate {
            app: Arc::new(app),
            settings,
            open: Arc::new(AtomicUsize::new(0)),
            refusing: Arc::new(AtomicUsize::new(0)),
            last_warning: AtomicU64::new(0),
        }
    }

    /// Client connections being served now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn warn_over_limit(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "{} client connections open (server.max_connections): refusing new ones with 503",
                self.settings.max_connections
            );
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Gate<A> {
    async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 (negotiated on the TLS listener): Pingora's own HTTP/2 loop, which the h2
            // crate bounds (header list size, concurrent streams); the head checks are for
            // HTTP/1 bytes, so only the send-stall timeout applies.
            let stream: Stream = Box::new(GuardedStream::unchecked(stream, self.settings.limits));
            ServerApp::process_new(&self.app, stream, shutdown).await;
            return;
        }
        let idle = Some(self.settings.idle_timeout_secs);
        let stream: Stream = Box::new(GuardedStream::new(stream, self.settings.limits));
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { idle });
        session.set_keepalive_reuses_remaining(
            self.app
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut result = self.app.process_new_http(session, shutdown).await;
        while let Some(reused) = result {
            let (stream, persistent) = reused.consume();
            let Some(stream) = next_request(stream) else {
                return;
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(persistent) = persistent {
                persistent.apply_to_session(&mut session);
            }
            if session.get_keepalive().is_some() {
                session.set_keepalive(idle);
            }
            result = self.app.process_new_http(session, shutdown).await;
        }
    }

    /// Answers a connection over the limit with 503 once its head is in, then closes it.
    async fn refuse(&self, stream: Stream) {
        self.warn_over_limit();
        let Some(_busy) = Slot::take(&self.refusing, MAX_REFUSING) else {
            return;
        };
        let limits = StreamLimits {
            header_timeout: self.settings.limits.header_timeout.min(REFUSE_HEAD_WAIT),
            ..self.settings.limits
        };
        let refusal = Refusal {
            status: 503,
            reason: "hubcache is serving as many connections as it may (server.max_connections); \
                     try again",
        };
        let mut guarded = GuardedStream::refusing(stream, limits, refusal);
        let mut scratch = [0u8; 4096];
        let drain = async {
            // The guard answers once the head is complete, then reports the end of the stream.
            while let Ok(n) = guarded.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(limits.header_timeout + Duration::from_secs(5), drain).await;
    }
}

/// Restarts the head checks of a connection that is reused for another request.
fn next_request(stream: Stream) -> Option<Stream> {
    if !stream.as_any().is::<GuardedStream>() {
        return Some(stream);
    }
    let mut guarded = stream.into_any().downcast::<GuardedStream>().ok()?;
    guarded.start_next_request();
    Some(guarded)
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Gate<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        match Slot::take(&self.open, self.settings.max_connections) {
            Some(_slot) => self.serve(stream, shutdown).await,
            // An HTTP/2 client cannot read a raw HTTP/1 answer: it is just closed.
            None if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) => {
                self.warn_over_limit();
            }
            None => self.refuse(stream).await,
        }
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_given_back_on_drop() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&counter, 2);
        let b = Slot::take(&counter, 2);
        assert!(a.is_some() && b.is_some());
        assert!(Slot::take(&counter, 2).is_none());
        assert_eq!(counter.load(Ordering::Acquire), 2);
        drop(a);
        assert!(Slot::take(&counter, 2).is_some());
        drop(b);
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }
}
