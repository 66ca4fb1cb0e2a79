//! The warm-up routes of the admin API (`docs/admin.md`):
//!
//! - `POST /api/jobs` `{repo, type, revision, include, exclude, rate_limit}`: start a job
//!   (201 with the job; 400 naming the field that is wrong);
//! - `GET /api/jobs`: every job; `GET /api/jobs/{id}`: one job's progress;
//! - `DELETE /api/jobs/{id}`: cancel it;
//! - `POST /api/pins` `{"pins": [spec, ...]}`: pin (kept warm, out of eviction) and start
//!   their jobs (201 with the jobs); `GET /api/pins`: every pin with its last job.
//!
//! Writes need the admin token when one is set (the router checks it before the handler).

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use serde::Deserialize;

use super::{JobSpec, Warmup};
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
            let spec = match req.json::<JobSpec>() {
                Ok(spec) => spec,
                Err(reject) => return reject.into(),
            };
            match w.submit(spec) {
                Ok(job) => json(StatusCode::CREATED, &job),
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
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
            match w.add_pins(body.pins) {
                Ok(jobs) => json(StatusCode::CREATED, &json!({ "jobs": jobs })),
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
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
    pins: Vec<JobSpec>,
}
