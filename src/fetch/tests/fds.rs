//! File descriptors held while blocks are claimed.

use std::path::Path;
use std::time::Duration;

use crate::fetch::testkit::{
    blob_path, content, engine, id_of, run_bounded, settings, source, wait_until, FakeHub, HubFile,
};
use crate::fetch::FillMode;

/// Descriptors of this process open on the inode at `path` (whatever name they were opened
/// by: blobs are created under a temporary name).
fn fds_on(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(path) else {
        return 0;
    };
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::metadata(e.path()).ok())
                .filter(|m| m.dev() == target.dev() && m.ino() == target.ino())
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn claiming_many_small_blocks_holds_a_constant_number_of_descriptors() {
    let hub = FakeHub::start();
    // 64 KiB blocks in 32 MiB segments: 512 claimed blocks per segment.
    let data = content(40 << 20, 3);
    let file = hub.add("small-blocks.bin", HubFile::new(data.clone()).held());
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings();
    settings.mode = FillMode::Complete;
    settings.segment = 32 << 20;
    settings.connections_per_file = 2;
    let engine = engine(dir.path(), &hub, settings);
    let store_dir = dir.path().to_path_buf();
    run_bounded(Duration::from_secs(120), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("small-blocks.bin", size, None))
            .await
            .unwrap();
        fill.want_completion();
        // Claims are taken before the GET: once both segments asked, every claim is held.
        wait_until(
            "both segments to ask upstream",
            Duration::from_secs(30),
            || file.gets.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        )
        .await;
        let path = blob_path(&store_dir, &id);
        let held = fds_on(&path);
        hub.release("small-blocks.bin");
        wait_until("the fill to complete", Duration::from_secs(60), || {
            fill.is_complete()
        })
        .await;
        assert!(
            held <= 4,
            "{held} descriptors open on the blob while claiming"
        );
        let bytes = fill.read(size - 100, 100).await.unwrap();
        assert_eq!(&bytes[..], &data[data.len() - 100..]);
    });
}
