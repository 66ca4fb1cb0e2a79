//! Fill settings changed by a config reload apply to work already waiting or running.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::fetch::testkit::{
    content, id_of, live_engine, run_bounded, settings, source, wait_until, FakeHub, HubFile,
};
use crate::fetch::{FillMode, FillSettings};

fn complete_one_slot() -> FillSettings {
    FillSettings {
        mode: FillMode::Complete,
        background_fills: 1,
        connections_per_file: 1,
        segment: 64 << 10, // one block per segment: many scheduling rounds
        ..settings()
    }
}

#[test]
fn more_background_slots_start_a_waiting_completion_at_once() {
    let hub = FakeHub::start();
    let data = content(8 * (64 << 10), 21);
    hub.add("waiting.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (engine, cell) = live_engine(dir.path(), &hub, complete_one_slot());
    run_bounded(Duration::from_secs(60), move || async move {
        let held = engine.take_background_slot().await;
        let fill = engine
            .open(
                &id_of(&data),
                source("waiting.bin", data.len() as u64, None),
            )
            .await
            .unwrap();
        fill.read(0, 10).await.unwrap();
        fill.want_completion();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!fill.is_complete(), "waits for the only slot");
        cell.store(Arc::new(FillSettings {
            background_fills: 2,
            ..complete_one_slot()
        }));
        engine.follow_settings();
        wait_until(
            "the completion to run in the new slot",
            Duration::from_secs(30),
            || fill.is_complete(),
        )
        .await;
        drop(held);
    });
}

#[test]
fn offline_pauses_background_completion_but_an_online_reader_gets_its_blocks() {
    let hub = FakeHub::start();
    let data = content(16 * (64 << 10), 22);
    let file = hub.add("paused.bin", HubFile::new(data.clone()).held());
    let dir = tempfile::tempdir().unwrap();
    let (engine, cell) = live_engine(dir.path(), &hub, complete_one_slot());
    run_bounded(Duration::from_secs(60), move || async move {
        let size = data.len() as u64;
        let fill = engine
            .open(&id_of(&data), source("paused.bin", size, None))
            .await
            .unwrap();
        fill.want_completion();
        wait_until(
            "the completion to ask upstream",
            Duration::from_secs(10),
            || file.gets.load(Ordering::SeqCst) >= 1,
        )
        .await;
        cell.store(Arc::new(FillSettings {
            offline: true,
            ..complete_one_slot()
        }));
        engine.follow_settings();
        hub.release("paused.bin");
        // The reader started online: it still gets a block nobody fetched yet.
        let tail = fill.read(size - 10, 10).await.unwrap();
        assert_eq!(&tail[..], &data[data.len() - 10..]);
        wait_until(
            "the paused completion to let go",
            Duration::from_secs(10),
            || !fill.is_completing(),
        )
        .await;
        assert!(
            !fill.is_complete(),
            "offline: the rest is not fetched in the background"
        );
    });
}
