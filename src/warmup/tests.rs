//! The job manager without a hub: an offline mirror with an empty cache, where every job fails
//! to resolve its revision. Filling real repos is covered end to end (tests/e2e/test_warmup.py).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;
use crate::admin::router::AdminRequest;
use crate::admin::service::BodySource;
use crate::admin::AdminApp;
use crate::config::{AdminToken, Config};
use crate::hf::RepoType;

fn app(dir: &std::path::Path, token: Option<&str>) -> Arc<App> {
    let mut config = Config::from_yaml_str("offline: true\nupstreams: []\n").unwrap();
    config.cache.dir = Some(dir.to_path_buf());
    config.admin.token = token.map(|t| AdminToken::new(t.to_string()));
    App::new(config).unwrap()
}

async fn wait_finished(warmup: &Warmup, id: &str) -> JobView {
    for _ in 0..500 {
        let job = warmup.get(id).expect("job");
        if job.record.state.is_finished() {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} did not finish");
}

#[tokio::test]
async fn a_job_that_cannot_resolve_its_revision_fails_with_the_reason_and_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    let job = warmup
        .submit(JobSpec::whole("acme/nothing", RepoType::Model))
        .unwrap();
    assert_eq!(job.record.repo, "models/acme/nothing");
    let done = wait_finished(&warmup, &job.record.id).await;
    assert_eq!(done.record.state, JobState::Failed);
    let error = done.record.error.clone().unwrap_or_default();
    assert!(
        error.contains("cannot resolve models/acme/nothing"),
        "{error}"
    );
    assert_eq!(done.eta_seconds, None);
    let saved = JobStore::new(dir.path()).load_all();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].state, JobState::Failed);
    assert_eq!(saved[0].runs, 1);
}

#[tokio::test]
async fn unfinished_saved_jobs_resume_and_finished_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::new(dir.path());
    let spec = JobSpec::whole("acme/x", RepoType::Dataset);
    let target = spec.target().unwrap();
    let mut running = JobRecord::new("r1".into(), &target, spec.clone(), 1);
    running.state = JobState::Running;
    running.runs = 1;
    store.save(&running).unwrap();
    let mut done = JobRecord::new("d1".into(), &target, spec, 2);
    done.state = JobState::Done;
    done.runs = 1;
    store.save(&done).unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    warmup.resume();
    let resumed = wait_finished(&warmup, "r1").await;
    assert_eq!(resumed.record.runs, 2, "ran again after the restart");
    assert_eq!(warmup.get("d1").unwrap().record.runs, 1, "left alone");
    let ids: Vec<String> = warmup.list().into_iter().map(|j| j.record.id).collect();
    assert_eq!(ids, ["r1", "d1"]);
}

#[tokio::test]
async fn a_queued_job_can_be_cancelled_and_stays_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    // Hold every job slot: the next job waits, queued.
    let held = Arc::clone(&warmup.slots)
        .acquire_many_owned(JOBS_AT_ONCE as u32)
        .await
        .unwrap();
    let job = warmup
        .submit(JobSpec::whole("acme/x", RepoType::Model))
        .unwrap();
    assert_eq!(job.record.state, JobState::Queued);
    let cancelled = warmup.cancel(&job.record.id).unwrap();
    assert_eq!(cancelled.record.state, JobState::Cancelled);
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = warmup.get(&job.record.id).unwrap();
    assert_eq!(after.record.state, JobState::Cancelled);
    assert_eq!(after.record.runs, 0, "never started");
    assert!(warmup.cancel("nope").is_none());
    let saved = JobStore::new(dir.path()).load_all();
    assert_eq!(saved[0].state, JobState::Cancelled);
}

#[tokio::test]
async fn only_the_newest_finished_jobs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    let mut last = String::new();
    for _ in 0..FINISHED_KEPT + 3 {
        last = warmup
            .submit(JobSpec::whole("acme/x", RepoType::Model))
            .unwrap()
            .record
            .id;
        wait_finished(&warmup, &last).await;
    }
    let jobs = warmup.list();
    assert_eq!(jobs.len(), FINISHED_KEPT);
    assert_eq!(jobs.last().unwrap().record.id, last);
    assert_eq!(JobStore::new(dir.path()).load_all().len(), FINISHED_KEPT);
}

fn request(method: Method, path: &str, token: Option<&str>) -> AdminRequest {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8091"));
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert("authorization", value);
    }
    AdminRequest::new(method, path, None, headers)
}

#[tokio::test]
async fn the_admin_api_starts_lists_shows_and_cancels_jobs_and_writes_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), Some("s3cret"));
    let _warmup = Warmup::start(&app);
    let admin = AdminApp::new(Arc::clone(&app));
    let body = |b: &'static [u8]| BodySource::Bytes(bytes::Bytes::from_static(b));
    let spec = br#"{"repo": "acme/x", "include": ["*.json"]}"#;
    let denied = admin
        .answer(request(Method::POST, "/api/jobs", None), body(spec))
        .await;
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let bad = admin
        .answer(
            request(Method::POST, "/api/jobs", Some("s3cret")),
            body(br#"{"repo": "acme/x", "rate_limit": 0}"#),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let created = admin
        .answer(
            request(Method::POST, "/api/jobs", Some("s3cret")),
            body(spec),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let job: serde_json::Value = serde_json::from_slice(created.body()).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["spec"]["include"], serde_json::json!(["*.json"]));
    let empty = || BodySource::Bytes(bytes::Bytes::new());
    let list = admin
        .answer(request(Method::GET, "/api/jobs", None), empty())
        .await;
    let list: serde_json::Value = serde_json::from_slice(list.body()).unwrap();
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    let one = admin
        .answer(
            request(Method::GET, &format!("/api/jobs/{id}"), None),
            empty(),
        )
        .await;
    assert_eq!(one.status(), StatusCode::OK);
    let one: serde_json::Value = serde_json::from_slice(one.body()).unwrap();
    for field in [
        "state",
        "files_done",
        "files_total",
        "bytes_done",
        "bytes_total",
    ] {
        assert!(one.get(field).is_some(), "{field} missing: {one}");
    }
    assert!(one.get("rate_bytes_per_sec").is_some() && one.get("eta_seconds").is_some());
    let cancel = request(Method::DELETE, &format!("/api/jobs/{id}"), None);
    assert_eq!(
        admin.answer(cancel, empty()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let cancel = request(Method::DELETE, &format!("/api/jobs/{id}"), Some("s3cret"));
    assert_eq!(admin.answer(cancel, empty()).await.status(), StatusCode::OK);
    let missing = request(Method::GET, "/api/jobs/zzz", None);
    assert_eq!(
        admin.answer(missing, empty()).await.status(),
        StatusCode::NOT_FOUND
    );
    let status = crate::admin::status::collect(&app);
    assert_eq!(status["jobs"][0]["id"], id.as_str());
}

#[test]
fn docs_list_the_warmup_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let _warmup = Warmup::start(&app);
    let text = String::from_utf8(app.metrics.render()).unwrap();
    let docs = include_str!("../../docs/metrics.md");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE hubcache_warmup"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(names.len(), 3, "{text}");
    for name in names {
        let name = format!("hubcache_warmup{name}");
        assert!(
            docs.contains(&format!("| `{name}` |")),
            "{name} not in docs"
        );
    }
    assert!(
        text.contains("hubcache_warmup_jobs{state=\"queued\"} 0"),
        "{text}"
    );
    assert!(text.contains("hubcache_warmup_files_total{outcome=\"failed\"} 0"));
}

#[test]
fn tree_pages_give_files_and_the_next_cursor() {
    let body = bytes::Bytes::from_static(
        br#"[{"type": "directory", "path": "d"},
             {"type": "file", "path": "d/a.bin", "size": 5, "oid": "x"},
             {"type": "file", "path": "b.json", "size": 7}]"#,
    );
    let files = run::tree_files(&body).unwrap();
    assert_eq!(
        files,
        [
            run::Listed {
                path: "d/a.bin".into(),
                size: 5
            },
            run::Listed {
                path: "b.json".into(),
                size: 7
            }
        ]
    );
    assert!(run::tree_files(&bytes::Bytes::from_static(b"{")).is_err());
    let link = "<http://hub/api/models/a/b/tree/x?recursive=True&cursor=abc>; rel=\"next\"";
    assert_eq!(
        run::next_page_query(link).as_deref(),
        Some("recursive=True&cursor=abc")
    );
    assert_eq!(
        run::next_page_query("<http://hub/x?c=1>; rel=\"prev\""),
        None
    );
}

#[test]
fn pins_and_pin_refresh_are_read_and_checked() {
    let c = Config::from_yaml_str("pins: [a.yaml, /b.yaml]\npin_refresh: 30s\n").unwrap();
    assert_eq!(c.pins.len(), 2);
    assert_eq!(c.pin_refresh, Duration::from_secs(30));
    assert_eq!(Config::default().pin_refresh, Duration::from_secs(600));
    let zero = Config::from_yaml_str("pin_refresh: 0s\n").unwrap_err();
    assert!(zero.to_string().contains("pin_refresh"), "{zero}");
    let empty = Config::from_yaml_str("pins: ['']\n").unwrap_err();
    assert!(empty.to_string().contains("pins"), "{empty}");
}

#[tokio::test]
async fn pins_added_through_the_api_are_kept_and_start_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    let spec = JobSpec::whole("acme/pinned", RepoType::Dataset);
    let request = |spec: &JobSpec| JobRequest {
        spec: spec.clone(),
        token: None,
    };
    let jobs = warmup
        .add_pins(vec![request(&spec), request(&spec)])
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    let bad = JobSpec::whole("../x", RepoType::Model);
    assert!(warmup.add_pins(vec![request(&bad)]).await.is_err());
    let views = warmup.pin_views();
    assert_eq!(views.len(), 1, "the same pin once");
    assert_eq!(views[0].source, "api");
    assert!(views[0].job.is_some());
    // Kept across a restart of the node.
    let again = Warmup::new(
        app.meta.clone(),
        app.fill.clone(),
        JobStore::new(dir.path()),
    );
    assert_eq!(again.pin_views()[0].spec, spec);
}

const HUB_TOKEN: &str = "hf_WarmGatedS3cret";

#[tokio::test]
async fn a_job_with_a_token_is_saved_and_listed_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    let token = HubToken::new(HUB_TOKEN).unwrap();
    let job = warmup
        .submit_with(JobSpec::whole("acme/gated", RepoType::Model), Some(token))
        .unwrap();
    assert!(job.record.needs_token);
    wait_finished(&warmup, &job.record.id).await;
    let listed = serde_json::to_string(&warmup.list()).unwrap();
    assert!(!listed.contains(HUB_TOKEN), "{listed}");
    assert!(listed.contains("\"needs_token\":true"), "{listed}");
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("WarmGatedS3cret"), "{}", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    // Bounded by the files the test made.
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test]
async fn a_restarted_job_that_needs_its_token_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::new(dir.path());
    let spec = JobSpec::whole("acme/gated", RepoType::Model);
    let target = spec.target().unwrap();
    let mut gated = JobRecord::new("g1".into(), &target, spec, 1);
    gated.state = JobState::Running;
    gated.runs = 1;
    gated.needs_token = true;
    store.save(&gated).unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    warmup.resume();
    let job = warmup.get("g1").unwrap();
    assert_eq!(job.record.state, JobState::Failed);
    assert_eq!(job.record.runs, 1, "not run without its token");
    let error = job.record.error.unwrap_or_default();
    assert!(error.contains("needs its hub token again"), "{error}");
    let saved = store.load_all();
    assert_eq!(saved[0].state, JobState::Failed);
}

#[tokio::test]
async fn the_jobs_route_checks_the_token_and_never_echoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let warmup = Warmup::start(&app);
    let admin = AdminApp::new(Arc::clone(&app));
    let post = |body: serde_json::Value| {
        let bytes = bytes::Bytes::from(serde_json::to_vec(&body).unwrap());
        admin.answer(
            request(Method::POST, "/api/jobs", None),
            BodySource::Bytes(bytes),
        )
    };
    let malformed = post(serde_json::json!({"repo": "acme/gated", "token": "hf_bad tok"})).await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(malformed.body()).to_string();
    assert!(
        text.contains("token must be") && !text.contains("hf_bad"),
        "{text}"
    );
    // Offline with nothing cached: the hub cannot vouch for the token, so no job starts.
    let refused = post(serde_json::json!({"repo": "acme/gated", "token": HUB_TOKEN})).await;
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let text = String::from_utf8_lossy(refused.body()).to_string();
    assert!(
        text.contains("refused this token for models/acme/gated"),
        "{text}"
    );
    assert!(!text.contains("S3cret"), "{text}");
    assert!(warmup.list().is_empty());
}
