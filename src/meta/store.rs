//! Metadata files off the request path: reads run on Tokio's blocking pool, writes go to a
//! write-behind queue drained by one writer thread.
//!
//! Metadata can always be derived again from an upstream, so a request never waits for it to
//! reach the disk: `save` serialises the value, puts it in the queue (replacing an older
//! version of the same file) and returns. The writer writes each file with temp file + rename
//! (never half a JSON file), on every root, honouring `cache.durability`; a crash loses at most
//! what was still queued. Reads see queued values first, so a request always reads what an
//! earlier one wrote. The queue is bounded: when the disk cannot keep up, new writes are
//! dropped (and counted) rather than held in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::disk::MetaDir;

/// Files waiting to be written before new writes are dropped.
const MAX_QUEUED: usize = 20_000;
/// Files the writer takes from the queue at a time.
const BATCH: usize = 256;

#[derive(Clone)]
enum Op {
    Write(Bytes),
    Remove,
}

struct Job {
    op: Op,
    /// Distinguishes a newer version of the same file queued while an older one is written.
    generation: u64,
}

#[derive(Default)]
struct QueueState {
    jobs: HashMap<PathBuf, Job>,
    next_generation: u64,
    /// Jobs taken by the writer and not yet finished.
    writing: usize,
    stop: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when jobs arrive, when a batch is done, and on stop.
    changed: Condvar,
    dropped: AtomicU64,
    /// Held by the writer while it writes a batch (a test holds it to stall the writer).
    gate: Mutex<()>,
}

/// The metadata files of all cache roots. Cheap to clone; the writer stops (after writing
/// everything queued) when the last clone is dropped.
#[derive(Clone)]
pub struct MetaStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: MetaDir,
    queue: Arc<Queue>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl MetaStore {
    pub fn new(dir: MetaDir) -> Self {
        let queue = Arc::new(Queue::default());
        let writer = {
            let (dir, queue) = (dir.clone(), Arc::clone(&queue));
            std::thread::Builder::new()
                .name("hubcache-meta-writer".into())
                .spawn(move || write_behind(&dir, &queue))
                .map_err(|e| log::error!("cannot start the metadata writer: {e}"))
                .ok()
        };
        Self {
            shared: Arc::new(Shared {
                dir,
                queue,
                writer: Mutex::new(writer),
            }),
        }
    }

    pub fn dir(&self) -> &MetaDir {
        &self.shared.dir
    }

    /// A queued version of `path`: `Some(None)` when its removal is queued.
    fn queued(&self, path: &Path) -> Option<Option<Bytes>> {
        let state = self.shared.queue.state.lock();
        state.jobs.get(path).map(|job| match &job.op {
            Op::Write(bytes) => Some(bytes.clone()),
            Op::Remove => None,
        })
    }

    /// Read a JSON file (the queued version if there is one) on the blocking pool. `None`
    /// when it does not exist or does not parse.
    pub async fn load<T: DeserializeOwned + Send + 'static>(&self, path: PathBuf) -> Option<T> {
        if let Some(queued) = self.queued(&path) {
            return queued.and_then(|bytes| parse(&path, &bytes));
        }
        let dir = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || dir.load::<T>(&path).ok().flatten())
            .await
            .unwrap_or_else(|e| {
                log::warn!("metadata read task failed: {e}");
                None
            })
    }

    /// [`load`](Self::load) for callers on a blocking thread (cache import).
    pub fn load_blocking<T: DeserializeOwned>(&self, path: &Path) -> Option<T> {
        if let Some(queued) = self.queued(path) {
            return queued.and_then(|bytes| parse(path, &bytes));
        }
        self.shared.dir.load::<T>(path).ok().flatten()
    }

    /// Whether `dir` exists on some root or a file under it is queued, on the blocking pool.
    pub async fn has_dir(&self, dir: PathBuf) -> bool {
        let queued = {
            let state = self.shared.queue.state.lock();
            state.jobs.keys().any(|p| p.starts_with(&dir))
        };
        if queued {
            return true;
        }
        let meta = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || meta.exists_dir(&dir))
            .await
            .unwrap_or(false)
    }

    /// Queue `value` to be written to `path`; returns at once.
    pub fn save<T: Serialize>(&self, path: PathBuf, value: &T) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.enqueue(path, Op::Write(Bytes::from(bytes))),
            Err(e) => log::warn!("cannot encode {}: {e}", path.display()),
        }
    }

    /// Queue the removal of `path` (on every root); returns at once.
    pub fn remove(&self, path: PathBuf) {
        self.enqueue(path, Op::Remove);
    }

    fn enqueue(&self, path: PathBuf, op: Op) {
        let queue = &self.shared.queue;
        let mut state = queue.state.lock();
        if state.jobs.len() >= MAX_QUEUED && !state.jobs.contains_key(&path) {
            drop(state);
            let dropped = queue.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_multiple_of(1000) {
                log::warn!(
                    "metadata writes fall behind ({MAX_QUEUED} queued): not persisting {} \
                     (it is fetched again when needed; {} dropped so far)",
                    path.display(),
                    dropped + 1
                );
            }
            return;
        }
        state.next_generation += 1;
        let generation = state.next_generation;
        state.jobs.insert(path, Job { op, generation });
        drop(state);
        queue.changed.notify_all();
    }

    /// Hold the writer back for `duration` (from a thread of its own): a disk that does not
    /// answer. Returns once the writer is held.
    #[cfg(test)]
    pub fn stall_writer_for(&self, duration: std::time::Duration) {
        let queue = Arc::clone(&self.shared.queue);
        let (held, is_held) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let gate = queue.gate.lock();
            let _ = held.send(());
            std::thread::sleep(duration);
            drop(gate);
        });
        let _ = is_held.recv();
    }

    /// Files waiting to be written.
    #[cfg(test)]
    pub fn queued_count(&self) -> usize {
        let state = self.shared.queue.state.lock();
        state.jobs.len() + state.writing
    }

    /// Wait (blocking) until everything queued so far is written. For tests and the end of a
    /// cache import; never called on a request path.
    pub fn flush(&self) {
        let queue = &self.shared.queue;
        let mut state = queue.state.lock();
        while !state.jobs.is_empty() || state.writing > 0 {
            if self.shared.writer.lock().is_none() {
                return;
            }
            queue
                .changed
                .wait_for(&mut state, std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.queue.state.lock().stop = true;
        self.queue.changed.notify_all();
        if let Some(writer) = self.writer.lock().take() {
            if writer.join().is_err() {
                log::warn!("the metadata writer panicked");
            }
        }
    }
}

fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| log::warn!("queued metadata {} does not parse: {e}", path.display()))
        .ok()
}

/// The writer thread: take batches of queued files, write them, and forget each one unless a
/// newer version was queued meanwhile. Writes everything queued before it stops.
fn write_behind(dir: &MetaDir, queue: &Queue) {
    loop {
        let batch: Vec<(PathBuf, Op, u64)> = {
            let mut state = queue.state.lock();
            while state.jobs.is_empty() && !state.stop {
                queue.changed.wait(&mut state);
            }
            if state.jobs.is_empty() {
                return;
            }
            let batch: Vec<_> = state
                .jobs
                .iter()
                .take(BATCH)
                .map(|(path, job)| (path.clone(), job.op.clone(), job.generation))
                .collect();
            state.writing = batch.len();
            batch
        };
        let gate = queue.gate.lock();
        for (path, op, _) in &batch {
            let result = match op {
                Op::Write(bytes) => dir.save_bytes(path, bytes),
                Op::Remove => dir.remove(path),
            };
            if let Err(e) = result {
                log::warn!("cannot persist metadata: {e}");
            }
        }
        drop(gate);
        let mut state = queue.state.lock();
        for (path, _, generation) in batch {
            if state
                .jobs
                .get(&path)
                .is_some_and(|j| j.generation == generation)
            {
                state.jobs.remove(&path);
            }
        }
        state.writing = 0;
        drop(state);
        queue.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    fn store(dir: &Path) -> MetaStore {
        MetaStore::new(MetaDir::new(dir, Durability::Os))
    }

    #[tokio::test]
    async fn a_saved_value_is_read_back_before_and_after_it_reaches_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let path = store.dir().root().join("models/-/x/refs.json");
        store.save(path.clone(), &serde_json::json!({"v": 1}));
        let read: serde_json::Value = store.load(path.clone()).await.unwrap();
        assert_eq!(read["v"], 1);
        store.flush();
        assert_eq!(store.queued_count(), 0);
        assert!(path.is_file());
        let again = super::MetaStore::new(MetaDir::new(tmp.path(), Durability::Os));
        let read: serde_json::Value = again.load(path.clone()).await.unwrap();
        assert_eq!(read["v"], 1);
        store.remove(path.clone());
        assert!(store
            .load::<serde_json::Value>(path.clone())
            .await
            .is_none());
        store.flush();
        assert!(!path.exists());
    }

    #[test]
    fn dropping_the_last_handle_writes_what_is_queued() {
        let tmp = tempfile::tempdir().unwrap();
        let path = {
            let store = store(tmp.path());
            let path = store.dir().root().join("models/a/b/access.json");
            for i in 0..50 {
                store.save(path.clone(), &serde_json::json!({ "v": i }));
            }
            path
        };
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, r#"{"v":49}"#);
    }

    // Holding the writer's gate across the awaits is the point: the disk "does not answer".
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn save_and_load_do_not_wait_for_a_stuck_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let path = store.dir().root().join("models/a/b/refs.json");
        // The writer cannot finish a batch while the gate is held: a disk that does not answer.
        let gate = store.shared.queue.gate.lock();
        store.save(path.clone(), &serde_json::json!({"v": 1}));
        store.save(path.clone(), &serde_json::json!({"v": 2}));
        let read: serde_json::Value = store.load(path.clone()).await.unwrap();
        assert_eq!(read["v"], 2);
        assert!(store.has_dir(path.parent().unwrap().to_path_buf()).await);
        assert!(!path.exists());
        drop(gate);
        store.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"v":2}"#);
    }
}
