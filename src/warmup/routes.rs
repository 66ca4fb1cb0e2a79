//! The warm-up routes of the admin API (`docs/admin.md`):
//!
//! - `POST /api/jobs` `{repo, type, revision, include, exclude, rate_limit, token}`: start a
//!   job (201 with the job; 400 naming the field that is wrong; with a hub `token`, 403 with
//!   the hub's error when the hub refuses it for the repo);
//! - `GET /api/jobs`: every job; `GET /api/jobs/{id}`: one job's progress;
//! - `DELETE /api/jobs/{id}`: cancel it;
//! - `POST /api/pins` `{"pins": [spec (with its token perhaps), ...]}`: pin (kept warm, out of eviction) and start
//!   their jobs (201 with the jobs); `GET /api/pins`: every pin with its last job.
//!
//! Writes need the admin token when one is set (the router checks it before the handler).

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use serde::Deserialize;

use super::{token, Warmup};
use crate::admin::router::{error, json, Router};

pub fn add(router: &mut Router, warmup: &Arc<Warmup>) {
    let w = Arc::clone(warmup);
    router.get("/api/jobs", move |_| {
        let w = Arc::clone(&w);
        async move { json(StatusCode::OK, &json!({ "jobs": w.list() })) }
    });
    let w = Arc::clone(warmup);
    router.post("/api/jobs", move |req| {
        let w = Arc::clone(&w);
        async move {
            let body = match req.json::<serde_json::Value>() {
                Ok(body) => body,
                Err(reject) => return reject.into(),
            };
            let request = match token::from_json(body) {
                Ok(request) => request,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match w.submit_checked(request).await {
                Ok(job) => json(StatusCode::CREATED, &job),
                Err(e) => error(e.status(), &e.to_string()),
            }
        }
    });
    let w = Arc::clone(warmup);
    router.get("/api/jobs/{id}", move |req| {
        let w = Arc::clone(&w);
        async move {
            match req.param("id").and_then(|id| w.get(id)) {
                Some(job) => json(StatusCode::OK, &job),
                None => error(StatusCode::NOT_FOUND, "no such warm-up job"),
            }
        }
    });
    let w = Arc::clone(warmup);
    router.get("/api/pins", move |_| {
        let w = Arc::clone(&w);
        async move { json(StatusCode::OK, &json!({ "pins": w.pin_views() })) }
    });
    let w = Arc::clone(warmup);
    router.post("/api/pins", move |req| {
        let w = Arc::clone(&w);
        async move {
            let body = match req.json::<PinsBody>() {
                Ok(body) => body,
                Err(reject) => return reject.into(),
            };
            let requests: Result<Vec<_>, _> = body.pins.into_iter().map(token::from_json).collect();
            let requests = match requests {
                Ok(requests) => requests,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match w.add_pins(requests).await {
                Ok(jobs) => json(StatusCode::CREATED, &json!({ "jobs": jobs })),
                Err(e) => error(e.status(), &e.to_string()),
            }
        }
    });
    let w = Arc::clone(warmup);
    router.delete("/api/jobs/{id}", move |req| {
        let w = Arc::clone(&w);
        async move {
            match req.param("id").and_then(|id| w.cancel(id)) {
                Some(job) => json(StatusCode::OK, &job),
                None => error(StatusCode::NOT_FOUND, "no such warm-up job"),
            }
        }
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsBody {
    /// Job requests (a spec, and a hub token perhaps).
    pins: Vec<serde_json::Value>,
}
