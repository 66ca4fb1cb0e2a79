//! What the engine tells its observer (the eviction service), eviction through the engine, and
//! making room when the disk is full.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::fetch::testkit::{
    blob_path, content, engine, engine_on, id_of, run_bounded, settings, source, wait_until,
    FakeHub, HubFile,
};
use crate::fetch::{FetchError, FillObserver, FillStats, Room};
use crate::hf::Repo;
use crate::store::{BlobFile, BlobId, Durability, FsSpace, Removal, Store, StoreOptions};

/// Records every notification; `make_room` runs `on_room` and answers what it returns.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    rooms: AtomicU64,
    on_room: Mutex<Option<Box<dyn Fn() -> bool + Send + Sync>>>,
}

impl Recorder {
    fn entries(&self, prefix: &str) -> Vec<String> {
        let log = self.log.lock();
        log.iter()
            .filter(|e| e.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl FillObserver for Recorder {
    fn opened(&self, _id: &BlobId, repo: Option<&Repo>, _copy: &BlobFile) {
        let repo = repo.map_or("-".to_string(), |r| r.to_string());
        self.log.lock().push(format!("opened {repo}"));
    }
    fn stored(&self, _id: &BlobId, copy: &BlobFile) {
        self.log
            .lock()
            .push(format!("stored {}", copy.allocated_estimate()));
    }
    fn read(&self, _id: &BlobId, download: u64) {
        self.log.lock().push(format!("read {download}"));
    }
    fn released(&self, _id: &BlobId) {
        self.log.lock().push("released".into());
    }
    fn make_room(&self, _id: &BlobId, _room: Room) -> BoxFuture<'static, bool> {
        self.rooms.fetch_add(1, Ordering::SeqCst);
        let made = self.on_room.lock().as_ref().is_some_and(|f| f());
        Box::pin(async move { made })
    }
}

#[test]
fn the_observer_hears_opened_stored_one_read_per_reader_and_released() {
    let hub = FakeHub::start();
    let data = content(4 * (64 << 10), 11);
    hub.add("seen.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    let recorder = Arc::new(Recorder::default());
    assert!(engine.set_observer(recorder.clone()));
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let mut reader =
            engine.reader(id.clone(), size, Some(source("seen.bin", size, None)), None);
        reader.count_as(42);
        let mut got = Vec::new();
        while let Some(bytes) = reader.next(100_000).await.unwrap() {
            got.extend_from_slice(&bytes);
        }
        assert_eq!(got, data);
        assert_eq!(recorder.entries("opened"), ["opened models/acme/model"]);
        assert_eq!(recorder.entries("read"), ["read 42"], "one read per reader");
        let stored = recorder.entries("stored");
        assert_eq!(stored.len(), 4, "one per committed block: {stored:?}");
        assert!(engine.is_live(&id));
        drop(reader);
        wait_until("the release", Duration::from_secs(10), || {
            !recorder.entries("released").is_empty()
        })
        .await;
        assert!(!engine.is_live(&id));
    });
}

#[test]
fn a_blob_with_a_live_fill_is_not_evicted_and_once_released_is_refetched_exact() {
    let hub = FakeHub::start();
    let data = content(6 * (64 << 10), 12);
    let file = hub.add("evicted.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    let path = blob_path(dir.path(), &id_of(&data));
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("evicted.bin", size, None))
            .await
            .unwrap();
        assert_eq!(&fill.read(0, 1000).await.unwrap()[..], &data[..1000]);
        let (e, i) = (engine.clone(), id.clone());
        let removal = tokio::task::spawn_blocking(move || e.evict_blocking(&i))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(removal, Removal::InUse { .. }), "{removal:?}");
        assert!(path.exists(), "a blob being read was deleted");
        drop(fill);
        let (e, i) = (engine.clone(), id.clone());
        let removal = tokio::task::spawn_blocking(move || e.evict_blocking(&i))
            .await
            .unwrap()
            .unwrap();
        assert!(removal.freed() > 0, "{removal:?}");
        assert!(!path.exists());
        // The released fill's read-ahead may still be finishing a block it asked for: let the
        // hub's count settle before measuring the refetch (bounded: at most 5 s).
        let mut before = file.bytes_sent.load(Ordering::SeqCst);
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = file.bytes_sent.load(Ordering::SeqCst);
            if now == before {
                break;
            }
            before = now;
        }
        let mut reader = engine.reader(id, size, Some(source("evicted.bin", size, None)), None);
        let mut got = Vec::new();
        while let Some(bytes) = reader.next(1 << 20).await.unwrap() {
            got.extend_from_slice(&bytes);
        }
        assert_eq!(got, data, "the evicted file came back different");
        assert_eq!(file.bytes_sent.load(Ordering::SeqCst) - before, size);
    });
}

/// A store whose free space the test sets.
fn store_with_space(dir: &std::path::Path, free: Arc<AtomicU64>) -> Arc<Store> {
    let mut options = StoreOptions::new(1, Durability::Os);
    options.reserve_min_bytes = 0;
    options.reserve_percent = 0;
    options.space_probe = Some(Arc::new(move |_| {
        Ok(FsSpace {
            free: free.load(Ordering::SeqCst),
            total: 1 << 40,
        })
    }));
    Arc::new(Store::open_with(&[dir.to_path_buf()], options).unwrap())
}

#[test]
fn a_full_disk_at_creation_asks_for_room_once_and_creates_the_blob_when_made() {
    let hub = FakeHub::start();
    let data = content(3 * (64 << 10), 13);
    hub.add("full.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(0));
    let engine = engine_on(store_with_space(dir.path(), free.clone()), &hub, settings());
    let recorder = Arc::new(Recorder::default());
    engine.set_observer(recorder.clone());
    let refuse = Arc::new(AtomicBool::new(true));
    let (r, f) = (refuse.clone(), free.clone());
    *recorder.on_room.lock() = Some(Box::new(move || {
        if r.load(Ordering::SeqCst) {
            return false;
        }
        f.store(1 << 30, Ordering::SeqCst); // eviction freed space
        true
    }));
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let refused = engine.open(&id, source("full.bin", size, None)).await;
        assert!(matches!(refused, Err(FetchError::NoSpace(_))));
        assert_eq!(recorder.rooms.load(Ordering::SeqCst), 1);
        refuse.store(false, Ordering::SeqCst);
        let fill = engine
            .open(&id, source("full.bin", size, None))
            .await
            .unwrap();
        assert_eq!(recorder.rooms.load(Ordering::SeqCst), 2);
        assert_eq!(&fill.read(0, 100).await.unwrap()[..], &data[..100]);
    });
}

#[test]
fn a_write_that_finds_the_disk_full_asks_for_room_and_is_retried_once() {
    let hub = FakeHub::start();
    let data = content(4 * (64 << 10), 14);
    hub.add("write.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    let recorder = Arc::new(Recorder::default());
    engine.set_observer(recorder.clone());
    *recorder.on_room.lock() = Some(Box::new(|| true));
    let blobs = dir.path().join("blobs");
    crate::store::faults::fail_next_write_under(&blobs, "write block data", libc::ENOSPC);
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let mut reader = engine.reader(id, size, Some(source("write.bin", size, None)), None);
        let mut got = Vec::new();
        while let Some(bytes) = reader.next(1 << 20).await.unwrap() {
            got.extend_from_slice(&bytes);
        }
        assert_eq!(got, data);
        assert_eq!(recorder.rooms.load(Ordering::SeqCst), 1, "room asked once");
        let stats = engine.stats();
        assert_eq!(
            FillStats::get(&stats.no_space),
            0,
            "the retried write worked"
        );
        assert_eq!(FillStats::get(&stats.uncached_streams), 0);
    });
}
