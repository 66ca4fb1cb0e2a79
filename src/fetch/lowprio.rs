//! Work that must not slow down downloads (hashing a completed file, copying replicas) runs
//! on threads of its own at the lowest CPU priority (nice 19).
//!
//! Not on tokio's blocking pool: a pool thread set to nice 19 cannot be set back without
//! `CAP_SYS_NICE` (which a service normally lacks), so every read it later served would run
//! at nice 19 too. These threads are started on first use and stay at nice 19.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;

use super::FetchError;

/// Thread name (at most 15 bytes, the kernel's limit).
pub(super) const THREAD_NAME: &str = "hubcache-lowpri";

type Job = Box<dyn FnOnce() + Send>;

/// A small pool of low-priority threads. Dropping it lets the threads end once their queue
/// is empty.
pub(super) struct LowPriority {
    threads: usize,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
}

impl LowPriority {
    pub(super) fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            queue: Mutex::new(None),
        }
    }

    /// Run `f` on a low-priority thread and wait for its result.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, FetchError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.sender()?
            .send(job)
            .map_err(|_| FetchError::Internal("low-priority threads are gone".into()))?;
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(FetchError::Internal("low-priority task panicked".into())),
            Err(_) => Err(FetchError::Internal("low-priority task was dropped".into())),
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>, FetchError> {
        let mut queue = self.queue.lock();
        if let Some(sender) = queue.as_ref() {
            return Ok(sender.clone());
        }
        let (sender, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..self.threads {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || work(&jobs))
                .map_err(|e| {
                    FetchError::Internal(format!("cannot start a low-priority thread: {e}"))
                })?;
        }
        *queue = Some(sender.clone());
        Ok(sender)
    }
}

fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    lower_own_priority();
    loop {
        let job = jobs.lock().recv();
        match job {
            Ok(job) => job(),
            Err(_) => return, // the pool was dropped
        }
    }
}

/// Set the calling thread to nice 19 (a thread may always lower its own priority).
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id only changes its scheduling weight.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
            log::debug!(
                "cannot lower the priority of a background thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_named_threads_at_nice_19() {
        let pool = LowPriority::new(2);
        let (name, nice) = pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_string);
                // SAFETY: getpriority of this thread only reads.
                let nice =
                    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
                (name, nice)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert_eq!(nice, 19);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_keeps_working() {
        let pool = LowPriority::new(1);
        assert!(pool.run(|| panic!("boom")).await.is_err());
        assert_eq!(pool.run(|| 40 + 2).await.unwrap(), 42);
    }
}
