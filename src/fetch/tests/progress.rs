//! What fills report about themselves: progress, waiting readers, how much of a range was
//! cached when a request arrived, and where each byte a reader read came from.

use std::sync::Arc;
use std::time::Duration;

use crate::fetch::testkit::{
    content, engine, id_of, run_bounded, settings, source, wait_until, FakeHub, HubFile,
};
use crate::fetch::{FillStats, ReadTally};

const BLOCK: u64 = 64 << 10;

#[test]
fn bytes_count_as_cached_only_from_blocks_present_when_the_request_arrived() {
    let hub = FakeHub::start();
    let data = content(4 * BLOCK as usize, 5);
    hub.add("four.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let src = || Some(source("four.bin", size, None));
        // A first request fills blocks 0 and 1.
        let mut first = engine.reader(id.clone(), size, src(), None);
        first.seek(0, Some(2 * BLOCK)).unwrap();
        while first.next(1 << 20).await.unwrap().is_some() {}
        let fill = engine.open(&id, src().unwrap()).await.unwrap();
        let share = fill.cached_share(BLOCK / 2, size);
        assert_eq!((share.present, share.total), (2, 4));
        assert_eq!(share.cached, vec![0..2 * BLOCK]);
        assert_eq!(share.outcome(), "partial");
        assert_eq!(fill.cached_share(0, BLOCK).outcome(), "hit");
        assert_eq!(fill.cached_share(3 * BLOCK, size).outcome(), "miss");
        // A second request over the whole file: half from the cache, half fetched for it.
        let tally = Arc::new(ReadTally::default());
        let mut second = engine
            .reader(id.clone(), size, src(), Some(fill))
            .with_tally(Some(Arc::clone(&tally)), Some(Arc::new(share.cached)));
        let mut read = Vec::new();
        while let Some(chunk) = second.next(1 << 20).await.unwrap() {
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, data);
        assert_eq!(tally.get(), (2 * BLOCK, 2 * BLOCK));
        let stats = engine.stats();
        assert_eq!(FillStats::get(&stats.served_cache_bytes), 2 * BLOCK);
        assert_eq!(FillStats::get(&stats.served_upstream_bytes), 2 * BLOCK);
        // The cached half was read from committed blocks, their checksums checked.
        assert!(FillStats::get(&stats.verified_read_bytes) >= 2 * BLOCK);
    });
}

#[test]
fn a_fill_in_flight_reports_its_progress_and_waiting_readers() {
    let hub = FakeHub::start();
    let data = content(4 * BLOCK as usize, 6);
    hub.add("held.bin", HubFile::new(data.clone()).held());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("held.bin", size, None))
            .await
            .unwrap();
        assert!(engine.active_fills().is_empty(), "nothing asked yet");
        let reader = Arc::clone(&fill);
        let waiting = tokio::spawn(async move { reader.read(0, 1024).await });
        wait_until(
            "a reader waiting on the held fill",
            Duration::from_secs(30),
            || {
                engine.active_fills().first().is_some_and(|f| {
                    // The segment records where it located the file once the hub answered.
                    f.readers_waiting == 1 && f.segments >= 1 && f.upstream.is_some()
                })
            },
        )
        .await;
        let progress = engine.active_fills().remove(0);
        assert_eq!(progress.blob, id);
        assert_eq!(progress.repo.as_deref(), Some("models/acme/model"));
        assert_eq!(progress.path.as_deref(), Some("held.bin"));
        assert_eq!((progress.size, progress.present_bytes), (size, 0));
        assert_eq!(FillStats::get(&engine.stats().readers_waiting), 1);
        hub.release("held.bin");
        assert_eq!(waiting.await.unwrap().unwrap(), data.slice(0..1024));
        assert_eq!(FillStats::get(&engine.stats().readers_waiting), 0);
        wait_until("the fill to settle", Duration::from_secs(30), || {
            engine.active_fills().is_empty()
        })
        .await;
        let done = fill.snapshot();
        assert!(
            done.present_bytes >= BLOCK && done.fetched_bytes >= BLOCK,
            "{done:?}"
        );
    });
}
