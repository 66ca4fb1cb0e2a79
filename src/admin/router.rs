//! A small router for the admin API: routes are (method, path pattern, access, handler);
//! a pattern's `{name}` segment matches one path segment and is handed to the handler as a
//! parameter. Later features add their routes with [`Router::get`], [`Router::post`],
//! [`Router::delete`].
//!
//! ```text
//! router.get("/api/status", |req| async move { json(200, &status) });
//! router.delete("/api/jobs/{id}", move |req| async move { cancel(req.param("id")) });
//! ```
//!
//! `Access::Write` routes (every POST, PUT and DELETE added with these helpers) need the admin
//! token when one is configured; `Access::Read` routes never do.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An admin answer (built in memory: admin answers are small).
pub type Response = http::Response<Vec<u8>>;

type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;
pub type Handler = Arc<dyn Fn(AdminRequest) -> BoxFuture + Send + Sync>;

/// Whether a route only reads, or changes something (and so needs the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One admin request, body read.
#[derive(Debug, Clone)]
pub struct AdminRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    params: HashMap<String, String>,
}

impl AdminRequest {
    pub fn new(method: Method, path: &str, query: Option<&str>, headers: HeaderMap) -> Self {
        Self {
            method,
            path: path.to_string(),
            query: query.map(str::to_string),
            headers,
            body: Bytes::new(),
            params: HashMap::new(),
        }
    }

    /// A `{name}` segment of the route's pattern (percent-decoded).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The first value of query parameter `name` (percent-decoded, `+` as a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref()?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The body as JSON of type `T`, or a 400 saying why not.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Reject> {
        serde_json::from_slice(&self.body).map_err(|e| Reject {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid JSON body: {e}"),
        })
    }
}

/// A request refused before its handler's work: becomes a JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    pub message: String,
}

impl From<Reject> for Response {
    fn from(reject: Reject) -> Response {
        error(reject.status, &reject.message)
    }
}

/// A JSON answer.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    with_body(status, "application/json", body)
}

/// A JSON error answer: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// An answer with a body of `content_type`.
pub fn with_body(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

enum Segment {
    Literal(String),
    Param(String),
}

fn parse_pattern(pattern: &str) -> Vec<Segment> {
    pattern
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Segment::Param(name.to_string()),
                None => Segment::Literal(s.to_string()),
            },
        )
        .collect()
}

struct Route {
    method: Method,
    pattern: Vec<Segment>,
    access: Access,
    handler: Handler,
}

impl Route {
    /// The parameters if `path` matches the pattern.
    fn matches(&self, segments: &[String]) -> Option<HashMap<String, String>> {
        if segments.len() != self.pattern.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (want, got) in self.pattern.iter().zip(segments) {
            match want {
                Segment::Literal(text) if text == got => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), got.clone());
                }
            }
        }
        Some(params)
    }
}

/// What a lookup found.
pub enum Found<'a> {
    Route {
        access: Access,
        handler: &'a Handler,
        params: HashMap<String, String>,
    },
    /// The path exists with other methods (for `Allow`).
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// The admin routes.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a route. A later route with the same method and pattern is never reached.
    pub fn route<F, Fut>(&mut self, method: Method, pattern: &str, access: Access, handler: F)
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        self.routes.push(Route {
            method,
            pattern: parse_pattern(pattern),
            access,
            handler: Arc::new(move |req| Box::pin(handler(req))),
        });
    }

    /// A read-only `GET` route.
    pub fn get<F, Fut>(&mut self, pattern: &str, handler: F)
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        self.route(Method::GET, pattern, Access::Read, handler);
    }

    /// A mutating `POST` route.
    pub fn post<F, Fut>(&mut self, pattern: &str, handler: F)
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        self.route(Method::POST, pattern, Access::Write, handler);
    }

    /// A mutating `DELETE` route.
    pub fn delete<F, Fut>(&mut self, pattern: &str, handler: F)
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        self.route(Method::DELETE, pattern, Access::Write, handler);
    }

    /// The route for `method` and `path` (`path` percent-decoded segment by segment).
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(params) = route.matches(&segments) {
                if route.method == *method {
                    return Found::Route {
                        access: route.access,
                        handler: &route.handler,
                        params,
                    };
                }
                allowed.push(route.method.clone());
            }
        }
        if allowed.is_empty() {
            Found::NotFound
        } else {
            Found::MethodNotAllowed(allowed)
        }
    }

    /// Run the handler of a found route.
    pub async fn call(
        handler: &Handler,
        mut request: AdminRequest,
        params: HashMap<String, String>,
    ) -> Response {
        request.params = params;
        handler(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut r = Router::new();
        r.get("/api/status", |_| async { json(StatusCode::OK, &"status") });
        r.get("/api/jobs/{id}", |req| async move {
            json(StatusCode::OK, &req.param("id").unwrap_or("?").to_string())
        });
        r.delete("/api/jobs/{id}", |_| async { error(StatusCode::GONE, "x") });
        r
    }

    async fn run(router: &Router, method: Method, path: &str) -> Option<(Access, Response)> {
        match router.find(&method, path) {
            Found::Route {
                access,
                handler,
                params,
            } => {
                let req = AdminRequest::new(method, path, None, HeaderMap::new());
                Some((access, Router::call(handler, req, params).await))
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn routes_match_literals_and_parameters() {
        let r = router();
        let (access, resp) = run(&r, Method::GET, "/api/status").await.unwrap();
        assert_eq!(access, Access::Read);
        assert_eq!(resp.body(), b"\"status\"");
        let (_, resp) = run(&r, Method::GET, "/api/jobs/a%20b").await.unwrap();
        assert_eq!(resp.body(), b"\"a b\"");
        let (access, resp) = run(&r, Method::DELETE, "/api/jobs/7/").await.unwrap();
        assert_eq!(access, Access::Write);
        assert_eq!(resp.status(), StatusCode::GONE);
    }

    #[test]
    fn unknown_paths_and_methods_are_told_apart() {
        let r = router();
        assert!(matches!(r.find(&Method::GET, "/api/nope"), Found::NotFound));
        assert!(matches!(r.find(&Method::GET, "/api/jobs"), Found::NotFound));
        match r.find(&Method::POST, "/api/jobs/1") {
            Found::MethodNotAllowed(allowed) => {
                assert_eq!(allowed, [Method::GET, Method::DELETE])
            }
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn query_parameters_and_json_bodies_are_read() {
        let mut req = AdminRequest::new(
            Method::POST,
            "/x",
            Some("repo=acme%2Fx&a=1&repo=second"),
            HeaderMap::new(),
        );
        assert_eq!(req.query_param("repo").as_deref(), Some("acme/x"));
        assert_eq!(req.query_param("b"), None);
        req.body = Bytes::from_static(b"{\"level\": \"debug\"}");
        let value: serde_json::Value = req.json().unwrap();
        assert_eq!(value["level"], "debug");
        req.body = Bytes::from_static(b"{nope");
        let reject = req.json::<serde_json::Value>().unwrap_err();
        assert_eq!(reject.status, StatusCode::BAD_REQUEST);
        assert_eq!(Response::from(reject).status(), StatusCode::BAD_REQUEST);
    }
}
