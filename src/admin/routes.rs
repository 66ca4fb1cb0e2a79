//! The built-in admin routes: the status page, `/metrics`, the status JSON, a liveness probe
//! and the log level. Each is listed in `docs/admin.md`.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::page;
use super::router::{error, json, with_body, AdminRequest, Response, Router};
use super::status;
use crate::app::App;
use crate::config::LogLevel;

/// Every built-in route on a new router.
pub fn builtin(app: &Arc<App>) -> Router {
    let mut router = Router::new();
    router.get("/", |_| async { page::response() });
    let a = Arc::clone(app);
    router.get("/metrics", move |_| {
        let a = Arc::clone(&a);
        async move {
            a.metrics.refresh().await;
            // statvfs and root probes may touch a slow disk: off the admin thread.
            match off_thread(move || a.metrics.render()).await {
                Ok(text) => with_body(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                ),
                Err(response) => response,
            }
        }
    });
    let a = Arc::clone(app);
    router.get("/api/status", move |_| {
        let a = Arc::clone(&a);
        async move {
            a.metrics.refresh().await;
            match off_thread(move || status::collect(&a)).await {
                Ok(status) => json(StatusCode::OK, &status),
                Err(response) => response,
            }
        }
    });
    router.get("/healthz", |_| async {
        json(StatusCode::OK, &json!({ "ok": true }))
    });
    router.get("/api/log-level", |_| async { log_level_answer() });
    router.post("/api/log-level", |req| async move { set_log_level(&req) });
    router
}

/// Run `f` on the blocking pool; a panic in it becomes a 500.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        log::error!("admin handler failed: {e}");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

fn log_level_answer() -> Response {
    json(
        StatusCode::OK,
        &json!({
            "level": crate::logging::level().as_str(),
            "overridden_by_rust_log": crate::logging::overridden_by_env(),
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelBody {
    level: String,
}

/// `POST /api/log-level` with `{"level": "debug"}` or `?level=debug`.
fn set_log_level(req: &AdminRequest) -> Response {
    let name = match req.query_param("level") {
        Some(name) => name,
        None => match req.json::<LevelBody>() {
            Ok(body) => body.level,
            Err(reject) => return reject.into(),
        },
    };
    match name.parse::<LogLevel>() {
        Ok(level) => {
            crate::logging::set_level(level);
            log::warn!("log level set to {level} through the admin API");
            log_level_answer()
        }
        Err(reason) => error(StatusCode::BAD_REQUEST, &reason),
    }
}
