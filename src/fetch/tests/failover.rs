//! A fill whose upstream breaks off resumes at the byte offset it reached, on the next
//! upstream of the chain, without fetching again what it already has.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{HealthConfig, Trust, UpstreamConfig};
use crate::fetch::testkit::{
    content, engine_chain, id_of, run_bounded, settings, source, FakeHub, HubFile,
};
use crate::store::{Durability, Store};

fn origin(hub: &FakeHub, fail_after: u32) -> UpstreamConfig {
    UpstreamConfig {
        trust: Trust::Origin,
        timeout: Duration::from_secs(5),
        health: HealthConfig {
            fail_after,
            ..HealthConfig::default()
        },
        ..UpstreamConfig::new(hub.url())
    }
}

#[test]
fn a_fill_resumes_at_its_byte_offset_on_the_next_upstream() {
    let (first, second) = (FakeHub::start(), FakeHub::start());
    let data = content(1 << 20, 7);
    let cut = 200_000u64;
    let broken = first.add("big.bin", HubFile::new(data.clone()).cut_after(cut));
    let whole = second.add("big.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Durability::Os).unwrap());
    let mut fill_settings = settings();
    fill_settings.segment = 1 << 20;
    fill_settings.connections_per_file = 1;
    fill_settings.read_ahead = 1 << 20;
    // One broken stream takes the first upstream out of use.
    let engine = engine_chain(
        store,
        &[origin(&first, 1), origin(&second, 3)],
        fill_settings,
    );
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("big.bin", size, None))
            .await
            .unwrap();
        let mut bytes = Vec::new();
        while (bytes.len() as u64) < size {
            let part = fill
                .read(bytes.len() as u64, data.len())
                .await
                .expect("the fill fails over");
            bytes.extend_from_slice(&part);
        }
        assert!(bytes[..] == data[..], "wrong bytes");
        assert_eq!(*broken.ranges.lock(), [(0, size - 1)]);
        let resumed = whole.ranges.lock().clone();
        assert_eq!(resumed, [(cut, size - 1)], "not resumed at the break");
        let sent =
            broken.bytes_sent.load(Ordering::SeqCst) + whole.bytes_sent.load(Ordering::SeqCst);
        assert_eq!(sent, size, "bytes fetched twice");
    });
}
