//! The proxy as a Pingora service whose shutdown does not drop just-accepted connections.
//!
//! When Pingora shuts a service down it stops the accept loops, then at once aborts every
//! connection still waiting for its first request header (`HttpProxy::http_cleanup`). A client
//! that connected a moment before the shutdown, and whose request was still on the wire, sees
//! its connection closed without an answer. [`Draining`] waits [`FIRST_READ_GRACE`] before that
//! cleanup: the accept loops have stopped, so no new connection comes in, and the requests of
//! the last accepted ones are read and answered (with `Connection: close`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::{http_proxy, HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;

/// How long connections accepted before the shutdown may take to send their request.
pub const FIRST_READ_GRACE: Duration = Duration::from_secs(2);

/// An HTTP app whose cleanup waits [`FIRST_READ_GRACE`] first.
pub struct Draining<A> {
    inner: Arc<A>,
}

impl<A> Draining<A> {
    /// The wrapped app, to configure it before the service starts.
    pub fn inner_mut(&mut self) -> Option<&mut A> {
        Arc::get_mut(&mut self.inner)
    }
}

/// The hubcache proxy app (instead of `http_proxy`), for the connection gate to serve.
pub fn draining_proxy<SV>(conf: &Arc<ServerConf>, proxy: SV) -> Draining<HttpProxy<SV>>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    Draining {
        inner: Arc::new(http_proxy(conf, proxy)),
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Draining<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        tokio::time::sleep(FIRST_READ_GRACE).await;
        self.inner.http_cleanup().await;
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        Arc::clone(&self.inner)
            .process_custom_session(stream, shutdown)
            .await
    }
}
