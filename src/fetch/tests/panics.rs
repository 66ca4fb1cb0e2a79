//! A segment task that panics, or an upstream whose answer once made one panic.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::fetch::blocks::{Block, Unclaimed};
use crate::fetch::segment::{CopyRef, SegmentSink};
use crate::fetch::testkit::{
    content, engine, id_of, run_bounded, settings, source, wait_until, FakeHub, HubFile,
};
use crate::fetch::{BlobFill, FetchError};
use crate::store::{BlobId, StoreError};

/// Reports on to the fill, but panics at the first block written.
struct PanicOnFirstWrite {
    fill: Arc<BlobFill>,
    armed: AtomicBool,
}

#[async_trait]
impl SegmentSink for PanicOnFirstWrite {
    fn blob(&self) -> &BlobId {
        self.fill.blob()
    }
    fn size(&self) -> u64 {
        SegmentSink::size(&*self.fill)
    }
    fn unclaimed(&self, copy: &CopyRef, blocks: &Unclaimed) {
        self.fill.unclaimed(copy, blocks)
    }
    fn progress(&self, copy: &CopyRef, block: u64, written: u64, committed: bool) {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected panic in a segment");
        }
        self.fill.progress(copy, block, written, committed)
    }
    fn failed(&self, copy: &CopyRef, blocks: Range<u64>, error: FetchError) {
        self.fill.failed(copy, blocks, error)
    }
    fn finished(&self) {
        self.fill.finished()
    }
    async fn disk_failed(&self, copy: &CopyRef, error: Arc<StoreError>) {
        self.fill.disk_failed(copy, error).await
    }
}

#[test]
fn a_panicking_segment_settles_its_blocks_and_they_are_fetched_again() {
    let hub = FakeHub::start();
    let data = content(8 * (64 << 10), 20);
    hub.add("panics.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("panics.bin", size, None))
            .await
            .unwrap();
        let run = fill.launch_for_test(0..4, |fill| {
            Arc::new(PanicOnFirstWrite {
                fill,
                armed: AtomicBool::new(true),
            })
        });
        assert_eq!(run, 0..4);
        wait_until("the segment to be settled", Duration::from_secs(10), || {
            fill.running_segments() == 0
        })
        .await;
        // The panic came right after block 0 was committed: it is on disk; the others of
        // the run failed (none is left in flight for readers to wait on).
        assert!(matches!(fill.block_state(0), Block::Present));
        for block in 1..4 {
            assert!(
                matches!(fill.block_state(block), Block::Failed { .. }),
                "block {block}: {:?}",
                fill.block_state(block)
            );
        }
        // A reader arriving now gets them fetched again.
        let at = 3 * (64 << 10);
        let bytes = fill.read(at, 1000).await.expect("refetched");
        assert_eq!(&bytes[..], &data[at as usize..at as usize + bytes.len()]);
    });
}

#[test]
fn an_upstream_range_ending_at_the_largest_integer_fails_the_read_promptly() {
    let hub = FakeHub::start();
    let data = content(4 * (64 << 10), 21);
    let bogus = format!("bytes 0-18446744073709551615/{}", data.len());
    hub.add(
        "bogus-range.bin",
        HubFile::new(data.clone()).content_range(&bogus),
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(40), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("bogus-range.bin", size, None))
            .await
            .unwrap();
        let err = fill.read(0, 100).await.expect_err("nothing valid to serve");
        assert!(matches!(err, FetchError::GaveUp { .. }), "{err}");
        assert_eq!(fill.running_segments(), 0);
    });
}
