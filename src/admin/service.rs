//! The admin listener: a Pingora listening service of its own (its socket is handed over in a
//! graceful upgrade like the public one) that answers the [`Router`]'s routes.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH};
use http::{HeaderValue, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use super::auth::{check_write, Refusal};
use super::router::{error, Access, AdminRequest, Found, Reject, Response, Router};
use super::routes;
use crate::app::App;

/// Largest admin request body.
pub const MAX_BODY: usize = 1 << 20;

/// The admin listener's HTTP application.
pub struct AdminApp {
    router: Router,
    /// `admin.token` as the process started (the admin listener is not reloaded live).
    token: Option<String>,
}

impl AdminApp {
    /// The app with the built-in routes (metrics, status page, status JSON, log level).
    pub fn new(app: Arc<App>) -> Self {
        let mut router = routes::builtin(&app);
        if let Some(warmup) = app.warmup.get() {
            crate::warmup::routes::add(&mut router, warmup);
        }
        let token = app
            .settings()
            .config
            .admin
            .token
            .as_ref()
            .map(|t| t.expose().to_string());
        Self { router, token }
    }

    /// Add more routes (warm-up jobs, cache maintenance, ...).
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }

    /// The configured admin token, if any.
    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Answer one request (also used by tests without a socket).
    pub async fn answer(&self, mut request: AdminRequest, body: BodySource<'_>) -> Response {
        let (access, handler, params) = match self.router.find(&request.method, &request.path) {
            Found::Route {
                access,
                handler,
                params,
            } => (access, handler, params),
            Found::MethodNotAllowed(allowed) => {
                let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                let allow: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                    response.headers_mut().insert(http::header::ALLOW, value);
                }
                return response;
            }
            Found::NotFound => return error(StatusCode::NOT_FOUND, "no such admin route"),
        };
        if access == Access::Write {
            match check_write(&request.headers, self.token()) {
                Ok(()) => {}
                Err(Refusal::Unauthorized) => {
                    let mut response = error(
                        StatusCode::UNAUTHORIZED,
                        "this admin call needs Authorization: Bearer <admin.token>",
                    );
                    response.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"hubcache admin\""),
                    );
                    return response;
                }
                Err(Refusal::CrossSite) => {
                    return error(
                        StatusCode::FORBIDDEN,
                        "refused: a mutating admin call from another site (Origin), or to a \
                         host name without admin.token set",
                    )
                }
            }
        }
        request.body = match body.read().await {
            Ok(body) => body,
            Err(reject) => return reject.into(),
        };
        Router::call(handler, request, params).await
    }
}

/// Where a request's body comes from.
pub enum BodySource<'a> {
    Session(&'a mut ServerSession),
    Bytes(Bytes),
}

impl BodySource<'_> {
    async fn read(self) -> Result<Bytes, Reject> {
        let session = match self {
            BodySource::Bytes(bytes) => return Ok(bytes),
            BodySource::Session(session) => session,
        };
        let mut body = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(Reject {
                            status: StatusCode::PAYLOAD_TOO_LARGE,
                            message: format!("the body is over {MAX_BODY} bytes"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => {
                    return Err(Reject {
                        status: StatusCode::BAD_REQUEST,
                        message: format!("cannot read the body: {}", e.etype().as_str()),
                    })
                }
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response {
        let header = session.req_header();
        let request = AdminRequest::new(
            header.method.clone(),
            header.uri.path(),
            header.uri.query(),
            header.headers.clone(),
        );
        let mut response = self.answer(request, BodySource::Session(session)).await;
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        let len = response.body().len();
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
        response
    }
}

/// The admin listening service for `app` (its listener at `admin.listen`), or `None` when
/// `admin.listen` is null.
pub fn service(app: &Arc<App>) -> Option<Service<HttpServer<AdminApp>>> {
    let settings = app.settings();
    let admin = &settings.config.admin;
    let listen = admin.listen?;
    if admin.token.is_none() && !listen.ip().is_loopback() {
        log::warn!(
            "admin listener on {listen} without admin.token: anyone who reaches it can call \
             mutating admin routes"
        );
    }
    let mut service = Service::new(
        "hubcache admin".to_string(),
        HttpServer::new_app(AdminApp::new(Arc::clone(app))),
    );
    service.add_tcp(&listen.to_string());
    service.threads = Some(1);
    log::info!("admin listener on {listen} (metrics, status page, admin API)");
    Some(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminToken, Config};
    use http::{HeaderMap, Method};

    fn app(dir: &std::path::Path, token: Option<&str>) -> Arc<App> {
        let mut config = Config::from_yaml_str("offline: true\nupstreams: []\n").unwrap();
        config.cache.dir = Some(dir.to_path_buf());
        config.admin.token = token.map(|t| AdminToken::new(t.to_string()));
        App::new(config).unwrap()
    }

    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> AdminRequest {
        let mut map = HeaderMap::new();
        map.insert("host", HeaderValue::from_static("127.0.0.1:8091"));
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        AdminRequest::new(method, path, query, map)
    }

    #[tokio::test]
    async fn the_token_guards_writes_and_never_reads() {
        let dir = tempfile::tempdir().unwrap();
        let admin = AdminApp::new(app(dir.path(), Some("t0ken")));
        let body = || BodySource::Bytes(Bytes::from_static(b"{\"level\":\"info\"}"));
        let post = |headers: &[(&str, &str)]| request(Method::POST, "/api/log-level", headers);
        let denied = admin.answer(post(&[]), body()).await;
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert!(denied
            .headers()
            .contains_key(http::header::WWW_AUTHENTICATE));
        let wrong = admin
            .answer(post(&[("authorization", "Bearer t0ke")]), body())
            .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let ok = admin
            .answer(post(&[("authorization", "Bearer t0ken")]), body())
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
        for path in ["/metrics", "/api/status", "/", "/healthz", "/api/log-level"] {
            let read = admin
                .answer(
                    request(Method::GET, path, &[]),
                    BodySource::Bytes(Bytes::new()),
                )
                .await;
            assert_eq!(read.status(), StatusCode::OK, "{path}");
        }
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_404_and_405() {
        let dir = tempfile::tempdir().unwrap();
        let admin = AdminApp::new(app(dir.path(), None));
        let empty = || BodySource::Bytes(Bytes::new());
        let missing = admin
            .answer(request(Method::GET, "/nope", &[]), empty())
            .await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let wrong = admin
            .answer(request(Method::DELETE, "/metrics", &[]), empty())
            .await;
        assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.headers()[http::header::ALLOW], "GET");
        let status = admin
            .answer(request(Method::GET, "/api/status", &[]), empty())
            .await;
        let json: serde_json::Value = serde_json::from_slice(status.body()).unwrap();
        assert_eq!(json["offline"], true);
        assert_eq!(json["jobs"], serde_json::json!([]));
    }
}
