//! One run of a job: wait for a job slot, resolve the revision, list the files (the repo info
//! and the recursive tree listing, as `snapshot_download` asks for them), then fill the files
//! the filter takes, [`FILES_AT_ONCE`] at a time, each read whole through the fill engine like
//! a client's download.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::{now_ms, Job, JobState, Warmup, FILES_AT_ONCE};
use crate::fetch::{BlobFill, BlobSource, FetchError};
use crate::hf::{Repo, RepoPath, Revision};
use crate::meta::Failure;
use crate::store::BlobId;

/// Bytes read per step of a file (and per rate-cap accounting).
const CHUNK: usize = 1 << 20;
/// Tree listing pages followed at most (1000 entries each on the Hub).
const MAX_PAGES: usize = 1000;
/// How long a file read to its end may take to be complete on disk (its last blocks
/// committed and verified).
const COMPLETE_WAIT: Duration = Duration::from_secs(120);
/// The job's record is saved at most this often while files progress.
const SAVE_EVERY: Duration = Duration::from_secs(2);

/// A file of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub path: String,
    pub size: u64,
}

/// How one file ended.
enum Outcome {
    /// It was complete in the cache already.
    Present,
    Fetched,
    Failed(String),
    Cancelled,
}

/// Resolves when `cancel` is set (never if its sender is gone without setting it).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    // Bounded: each turn waits for a change; the flag changes once.
    while !*cancel.borrow_and_update() {
        if cancel.changed().await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

/// A byte-rate cap shared by the files of one job.
struct RateCap {
    bytes_per_sec: u64,
    start: Instant,
    taken: parking_lot::Mutex<u64>,
}

impl RateCap {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            start: Instant::now(),
            taken: parking_lot::Mutex::new(0),
        }
    }

    /// Wait until `n` more bytes are within the cap.
    async fn take(&self, n: u64) {
        let total = {
            let mut taken = self.taken.lock();
            *taken += n;
            *taken
        };
        let due = self.start + Duration::from_secs_f64(total as f64 / self.bytes_per_sec as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Replay(answer) => {
            let said = answer
                .header("x-error-message")
                .map(|m| format!(": {}", m.chars().take(300).collect::<String>()))
                .unwrap_or_default();
            match answer.error_code() {
                Some(code) => format!("the upstream answered {} ({code}){said}", answer.status),
                None => format!("the upstream answered {}{said}", answer.status),
            }
        }
        other => other.to_string(),
    }
}

/// For a job without a token that the hub refused (401/403): how to give it one.
fn token_hint(failure: &Failure, auth: Option<&str>) -> &'static str {
    let status = match failure {
        Failure::Replay(answer) => answer.status,
        Failure::Hf(e) => e.status,
        _ => 0,
    };
    if auth.is_none() && matches!(status, 401 | 403) {
        " (a gated or private repo: warm it with a hub token, hubcache warm --hf-token or HF_TOKEN)"
    } else {
        ""
    }
}

/// Why fetching a file's bytes failed, worded as [`describe`] words a metadata failure.
fn describe_fetch(error: &FetchError) -> String {
    match error {
        FetchError::Refused { status, .. } => format!("the upstream answered {status}"),
        other => other.to_string(),
    }
}

pub(super) async fn run(warmup: Arc<Warmup>, job: Arc<Job>) {
    let mut cancel = job.cancel.subscribe();
    let slot = tokio::select! {
        slot = Arc::clone(&warmup.slots).acquire_owned() => slot.ok(),
        _ = cancelled(&mut cancel) => None,
    };
    let Some(_slot) = slot else {
        return;
    };
    if job.is_cancelled() {
        return;
    }
    job.update(|r| {
        r.reset_progress();
        r.runs += 1;
        r.state = JobState::Listing;
    });
    *job.clock.lock() = super::RunClock {
        started: Some(Instant::now()),
        ..Default::default()
    };
    warmup.save(&job);
    let listing = tokio::select! {
        listing = list(&warmup, &job) => listing,
        _ = cancelled(&mut cancel) => return,
    };
    let (commit, files) = match listing {
        Ok(listing) => listing,
        Err(reason) => {
            log::warn!("warm-up job {}: {reason}", job.id);
            finish(&warmup, &job, |r| {
                r.error = Some(reason);
                JobState::Failed
            });
            return;
        }
    };
    job.update(|r| {
        r.commit = Some(commit.clone());
        r.files_total = files.len() as u64;
        r.bytes_total = files.iter().map(|f| f.size).sum();
        r.state = JobState::Running;
    });
    warmup.save(&job);
    let cap = job.record.lock().spec.rate_limit.map(RateCap::new);
    let cap = cap.as_ref();
    let (warm, repo, commit) = (&warmup, &job.target.repo, commit.as_str());
    futures::stream::iter(files)
        .map(|file| {
            let job = &job;
            async move {
                let outcome = fill_file(warm, job, repo, commit, &file, cap).await;
                record(warm, job, &file, outcome);
            }
        })
        .buffer_unordered(FILES_AT_ONCE)
        .for_each(|()| async {})
        .await;
    finish(&warmup, &job, |r| {
        if r.files_failed > 0 {
            JobState::Failed
        } else {
            JobState::Done
        }
    });
}

/// End the run (unless it was cancelled meanwhile) in the state `decide` gives.
fn finish(warmup: &Warmup, job: &Job, decide: impl FnOnce(&mut super::JobRecord) -> JobState) {
    let ended = job.update(|r| {
        if r.state == JobState::Cancelled {
            return None;
        }
        r.state = decide(r);
        r.finished_ms = Some(now_ms());
        Some((r.state, r.files_done, r.files_total, r.files_failed))
    });
    job.clock.lock().ended = Some(Instant::now());
    if let Some((state, done, total, failed)) = ended {
        log::info!(
            "warm-up job {}: {} ({done}/{total} files cached, {failed} failed)",
            job.id,
            state.as_str()
        );
    }
    warmup.save(job);
    warmup.prune();
}

/// Count one file's outcome in the job and the metrics.
fn record(warmup: &Warmup, job: &Job, file: &Listed, outcome: Outcome) {
    let stats = &warmup.stats;
    job.update(|r| match outcome {
        Outcome::Present => {
            r.files_done += 1;
            r.files_present += 1;
            r.bytes_done += file.size;
            stats.count_file("present");
        }
        Outcome::Fetched => {
            r.files_done += 1;
            stats.count_file("fetched");
        }
        Outcome::Failed(reason) => {
            log::warn!("warm-up job {}: {}: {reason}", job.id, file.path);
            r.add_failure(&file.path, reason);
            stats.count_file("failed");
        }
        Outcome::Cancelled => {}
    });
    warmup.save(job);
}

/// Bytes of a file read (fetched or not): counted in the job, saved now and then.
fn progress(warmup: &Warmup, job: &Job, n: u64, fetched: bool) {
    job.update(|r| r.bytes_done += n);
    let save = {
        let mut clock = job.clock.lock();
        if fetched {
            clock.fetched += n;
        }
        clock.last_saved.is_none_or(|at| at.elapsed() >= SAVE_EVERY)
    };
    if fetched {
        warmup.stats.add_bytes(n);
    }
    if save {
        warmup.save(job);
    }
}

/// The commit and the files of the job's revision the filter takes.
async fn list(warmup: &Warmup, job: &Job) -> Result<(String, Vec<Listed>), String> {
    let (repo, revision) = (&job.target.repo, &job.target.revision);
    let (meta, auth) = (&warmup.meta, job.auth());
    let commit = meta
        .commit_for(repo, Some(revision), auth)
        .await
        .map_err(|e| {
            format!(
                "cannot resolve {repo} at {}: {}{}",
                revision.as_str(),
                describe(&e),
                token_hint(&e, auth)
            )
        })?;
    // What `snapshot_download` asks first: cached for the clients that come later.
    if let Err(e) = meta.repo_info(repo, Some(revision), None, auth).await {
        log::warn!(
            "warm-up job {}: repo info of {repo}: {}",
            job.id,
            describe(&e)
        );
    }
    let commit_rev = Revision::new(&commit).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let mut query = "recursive=True&expand=False".to_string();
    for _ in 0..MAX_PAGES {
        let answer = meta
            .tree(repo, &commit_rev, None, Some(&query), auth)
            .await
            .map_err(|e| {
                format!(
                    "cannot list {repo} at {commit}: {}{}",
                    describe(&e),
                    token_hint(&e, auth)
                )
            })?;
        files.extend(tree_files(&answer.body)?);
        match answer.link.as_deref().and_then(next_page_query) {
            Some(next) => query = next,
            None => break,
        }
    }
    files.retain(|f: &Listed| job.target.filter.wants(&f.path));
    Ok((commit, files))
}

/// The files of one tree listing page.
pub(super) fn tree_files(body: &Bytes) -> Result<Vec<Listed>, String> {
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("the tree listing is not JSON: {e}"))?;
    Ok(entries
        .iter()
        .filter(|e| e["type"] == "file")
        .filter_map(|e| {
            Some(Listed {
                path: e["path"].as_str()?.to_string(),
                size: e["size"].as_u64().unwrap_or(0),
            })
        })
        .collect())
}

/// The query of the `rel="next"` URL of a `Link` header.
pub(super) fn next_page_query(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.replace(' ', "").contains("rel=\"next\"") {
            return None;
        }
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        url.split_once('?').map(|(_, q)| q.to_string())
    })
}

/// Make one file complete in the cache.
async fn fill_file(
    warmup: &Warmup,
    job: &Job,
    repo: &Repo,
    commit: &str,
    file: &Listed,
    cap: Option<&RateCap>,
) -> Outcome {
    let mut cancel = job.cancel.subscribe();
    if job.is_cancelled() {
        return Outcome::Cancelled;
    }
    let work = async {
        let path = RepoPath::new(&file.path).map_err(|e| e.to_string())?;
        let meta = warmup
            .meta
            .file_at(repo, commit, &path, job.auth())
            .await
            .map_err(|e| describe(&e))?;
        if meta.size == 0 {
            // Served from its metadata alone.
            return Ok(false);
        }
        let id = BlobId::parse(&meta.blob).map_err(|e| e.to_string())?;
        if warmup.meta.is_offline() {
            return match warmup.fill.open_cached(&id).await {
                Ok(Some(fill)) if fill.is_complete() => Ok(false),
                _ => Err("hubcache is offline and the file is not cached".to_string()),
            };
        }
        // Public files are fetched without the token, as a client's download is.
        let auth = if warmup.meta.files_public(repo).await {
            None
        } else {
            job.auth().map(str::to_string)
        };
        let source = BlobSource {
            repo: repo.clone(),
            commit: commit.to_string(),
            path,
            auth,
            size: meta.size,
            verifiable: meta.verifiable,
        };
        let fill = warmup
            .fill
            .open(&id, source.clone())
            .await
            .map_err(|e| e.to_string())?;
        if fill.is_complete() {
            return Ok(false);
        }
        if cap.is_none() {
            // Every missing block at once, on the engine's connections per file.
            fill.want_completion();
        }
        let mut reader = warmup
            .fill
            .reader(id, meta.size, Some(source), Some(Arc::clone(&fill)));
        let mut read = 0u64;
        // Only a file read to its end waits for its last blocks to be committed.
        let result = match read_through(warmup, job, &mut reader, cap, &mut read).await {
            Ok(()) => wait_complete(&fill).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            // The bytes of a failed file do not count as done.
            job.update(|r| r.bytes_done = r.bytes_done.saturating_sub(read));
            return Err(describe_fetch(&e));
        }
        Ok(true)
    };
    tokio::select! {
        result = work => match result {
            Ok(true) => Outcome::Fetched,
            Ok(false) => Outcome::Present,
            Err(reason) => Outcome::Failed(reason),
        },
        _ = cancelled(&mut cancel) => Outcome::Cancelled,
    }
}

/// Read the whole file, as a client's download would, within the rate cap.
async fn read_through(
    warmup: &Warmup,
    job: &Job,
    reader: &mut crate::fetch::BlobReader,
    cap: Option<&RateCap>,
    read: &mut u64,
) -> Result<(), FetchError> {
    while let Some(bytes) = reader.next(CHUNK).await? {
        let n = bytes.len() as u64;
        *read += n;
        progress(warmup, job, n, true);
        if let Some(cap) = cap {
            cap.take(n).await;
        }
    }
    Ok(())
}

/// Wait until every block of a file read to its end is committed (the last ones may still
/// be in flight when their bytes were read).
async fn wait_complete(fill: &Arc<BlobFill>) -> Result<(), FetchError> {
    let deadline = Instant::now() + COMPLETE_WAIT;
    // Bounded: at most COMPLETE_WAIT / 20 ms turns.
    while !fill.is_complete() {
        if Instant::now() >= deadline {
            return Err(FetchError::Stalled {
                blob: fill.id().to_string(),
                secs: COMPLETE_WAIT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rate_cap_paces_bytes_shared_by_parallel_files() {
        let cap = Arc::new(RateCap::new(100_000));
        let start = Instant::now();
        let a = {
            let cap = Arc::clone(&cap);
            tokio::spawn(async move { cap.take(10_000).await })
        };
        cap.take(10_000).await;
        a.await.unwrap();
        let elapsed = start.elapsed();
        // 20 000 bytes at 100 000 per second: 200 ms, whoever took them.
        assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
}
