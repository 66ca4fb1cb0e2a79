//! The prefetcher: when the hub lists a commit's files, fetch the small regular files of the
//! listing before any client asks (`fill.prefetch`).
//!
//! - Only regular (non-LFS) files of at most `max_file_size` bytes: a listing is not a request
//!   for the weights, so an LFS file nobody asked for is never fetched.
//! - Only repos whose files are known to be public; fetched without any client's token.
//! - At most `parallel` files at a time, from one bounded queue shared by every listing, by
//!   workers that exist only while there is work; the most recently listed files first. A client asking for a file being prefetched
//!   joins its fill (nothing is fetched twice); other client requests take their own
//!   connections from `fill.connections_total` as before, so prefetching holds at most
//!   `parallel` of them.
//! - Fetched bytes are counted (`hubcache_prefetched_bytes_total`).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::Settings;
use crate::fetch::{BlobSource, FillEngine};
use crate::hf::{Repo, RepoPath};
use crate::meta::{FileMeta, ListingObserver, Meta};
use crate::store::BlobId;

/// Files waiting to be prefetched, at most (more are dropped: clients fetch them).
const MAX_QUEUED: usize = 20_000;

struct Job {
    repo: Repo,
    file: FileMeta,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    workers: usize,
}

pub(super) struct Prefetcher {
    this: Weak<Prefetcher>,
    settings: Arc<ArcSwap<Settings>>,
    meta: Meta,
    fill: FillEngine,
    queue: Mutex<Queue>,
}

/// Whether a listed file is worth fetching ahead: regular, not empty, small enough.
fn wanted(file: &FileMeta, max_file_size: u64) -> bool {
    !file.lfs && file.size > 0 && file.size <= max_file_size
}

impl Prefetcher {
    pub(super) fn new(settings: Arc<ArcSwap<Settings>>, meta: Meta, fill: FillEngine) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            settings,
            meta,
            fill,
            queue: Mutex::new(Queue::default()),
        })
    }

    /// The next job, or `None` (and this worker is gone) when there is none.
    fn next_job(&self) -> Option<Job> {
        let mut queue = self.queue.lock();
        // Newest first: a client walks a listing from its start once it has every page, so
        // the prefetcher meets it from the other end instead of joining the same fetches.
        let job = queue.jobs.pop_back();
        if job.is_none() {
            queue.workers -= 1;
        }
        job
    }

    async fn work(self: Arc<Self>) {
        while let Some(job) = self.next_job() {
            let settings = self.settings.load();
            if settings.config.offline || !settings.config.fill.prefetch.enabled {
                continue;
            }
            if !self.meta.files_public(&job.repo).await {
                continue;
            }
            if let Err(e) = self.fetch(job).await {
                log::debug!("prefetch: {e}");
            }
        }
    }

    async fn fetch(&self, job: Job) -> Result<bool, String> {
        let Job { repo, file } = job;
        let id = BlobId::parse(&file.blob).map_err(|e| e.to_string())?;
        let path = RepoPath::new(&file.path).map_err(|e| e.to_string())?;
        let source = BlobSource {
            repo: repo.clone(),
            commit: file.commit,
            path,
            auth: None,
            size: file.size,
            verifiable: file.verifiable,
        };
        self.fill
            .prefetch(&id, source)
            .await
            .map_err(|e| format!("{repo}/{}: {e}", file.path))
    }
}

impl ListingObserver for Prefetcher {
    fn listed(&self, repo: &Repo, _commit: &str, files: &[FileMeta], _auth: Option<&str>) {
        let settings = self.settings.load();
        let prefetch = &settings.config.fill.prefetch;
        if !prefetch.enabled || settings.config.offline {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let mut queue = self.queue.lock();
        for file in files.iter().filter(|f| wanted(f, prefetch.max_file_size)) {
            if queue.jobs.len() >= MAX_QUEUED {
                break;
            }
            queue.jobs.push_back(Job {
                repo: repo.clone(),
                file: file.clone(),
            });
        }
        while queue.workers < prefetch.parallel.min(queue.jobs.len()) {
            queue.workers += 1;
            runtime.spawn(Arc::clone(&this).work());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, lfs: bool) -> FileMeta {
        FileMeta {
            path: "f".into(),
            commit: "c".repeat(40),
            size,
            etag: "e".repeat(40),
            lfs,
            blob: "e".repeat(40),
            verifiable: true,
        }
    }

    #[test]
    fn only_small_non_empty_regular_files_are_prefetched() {
        assert!(wanted(&file(100, false), 1 << 20));
        assert!(wanted(&file(1 << 20, false), 1 << 20));
        assert!(!wanted(&file((1 << 20) + 1, false), 1 << 20));
        assert!(!wanted(&file(100, true), 1 << 20), "never an LFS file");
        assert!(!wanted(&file(0, false), 1 << 20));
    }
}
