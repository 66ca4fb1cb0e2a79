//! Background completion (`fill.mode: complete`) with a bounded number of slots.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::fetch::testkit::{
    content, engine, id_of, run_bounded, settings, source, wait_until, FakeHub, HubFile,
};
use crate::fetch::{FillMode, FillSettings};

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: a zeroed rusage is valid, and getrusage only writes it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn one_slot() -> FillSettings {
    let mut settings = settings();
    settings.mode = FillMode::Complete;
    settings.background_fills = 1;
    settings.connections_per_file = 1;
    settings.segment = 64 << 10; // one block per segment: many scheduling rounds
    settings
}

#[test]
fn a_partial_file_waiting_for_a_slot_taken_by_someone_else_completes_when_it_is_freed() {
    let hub = FakeHub::start();
    let data = content(16 * (64 << 10), 7);
    hub.add("waiting.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, one_slot());
    // The test runs on one thread: a completion that spins would take all of it.
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        // A new download took the only background slot first.
        let taken = engine.take_background_slot().await;
        let fill = engine
            .open(&id, source("waiting.bin", size, None))
            .await
            .unwrap();
        fill.read(0, 100).await.unwrap();
        fill.want_completion();
        let cpu = thread_cpu();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spent = thread_cpu() - cpu;
        assert!(
            spent < Duration::from_millis(100),
            "waiting for a slot used {spent:?} of CPU"
        );
        assert!(!fill.is_complete(), "completed without a slot");
        assert!(fill.is_completing(), "still waiting for its slot");
        // Whoever held the slot frees it: the waiting file takes it and completes.
        drop(taken);
        wait_until(
            "the waiting file to complete",
            Duration::from_secs(30),
            || fill.is_complete(),
        )
        .await;
        wait_until("the slot to be given back", Duration::from_secs(10), || {
            !fill.is_completing()
        })
        .await;
        let _slot = tokio::time::timeout(Duration::from_secs(5), engine.take_background_slot())
            .await
            .expect("the slot is free again");
        let tail = fill.read(size - 10, 10).await.unwrap();
        assert_eq!(&tail[..], &data[data.len() - 10..]);
        // Done, the completion lets go of the fill: nothing stays in memory.
        drop(fill);
        wait_until("the fill to be dropped", Duration::from_secs(10), || {
            engine.live_fills() == 0
        })
        .await;
    });
}

#[test]
fn queued_completions_take_the_slot_in_turn_and_all_finish() {
    let hub = FakeHub::start();
    let files: Vec<_> = (0..3u8)
        .map(|i| {
            let data = content(8 * (64 << 10), 10 + i);
            let name = format!("queued-{i}.bin");
            let file = hub.add(&name, HubFile::new(data.clone()).held());
            (name, data, file)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, one_slot());
    run_bounded(Duration::from_secs(90), move || async move {
        let mut fills = Vec::new();
        for (name, data, _) in &files {
            let fill = engine
                .open(&id_of(data), source(name, data.len() as u64, None))
                .await
                .unwrap();
            fill.want_completion();
            fills.push(fill);
        }
        // The first one holds the slot; its upstream answers only when released.
        wait_until(
            "the first completion to ask upstream",
            Duration::from_secs(10),
            || files[0].2.gets.load(Ordering::SeqCst) >= 1,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            files[1].2.gets.load(Ordering::SeqCst),
            0,
            "second waits for the slot"
        );
        assert_eq!(
            files[2].2.gets.load(Ordering::SeqCst),
            0,
            "third waits for the slot"
        );
        for (name, _, _) in &files {
            hub.release(name);
        }
        for fill in &fills {
            wait_until(
                "every queued file to complete",
                Duration::from_secs(60),
                || fill.is_complete(),
            )
            .await;
        }
        for (fill, (_, data, _)) in fills.iter().zip(&files) {
            let size = data.len() as u64;
            assert_eq!(
                &fill.read(size - 5, 5).await.unwrap()[..],
                &data[data.len() - 5..]
            );
        }
    });
}
