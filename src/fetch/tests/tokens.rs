//! Which reader's token a fill uses.

use std::sync::Arc;
use std::time::Duration;

use crate::fetch::testkit::{
    content, engine, id_of, run_bounded, settings, source, FakeHub, HubFile,
};

#[test]
fn a_refused_token_is_replaced_by_another_readers_token() {
    let hub = FakeHub::start();
    let data = content(300_000, 1);
    hub.add(
        "gated.bin",
        HubFile::new(data.clone()).tokens(&["Bearer good"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        // The first reader's token has expired since it was authorised; the second is good.
        let first = engine
            .open(&id, source("gated.bin", size, Some("Bearer expired")))
            .await
            .unwrap();
        let second = engine
            .open(&id, source("gated.bin", size, Some("Bearer good")))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &second), "one fill per blob");
        let bytes = second
            .read(0, 1000)
            .await
            .expect("the fill retries with the token that works");
        assert_eq!(&bytes[..], &data[..bytes.len()]);
        let tail = first.read(size - 10, 10).await.expect("and keeps using it");
        assert_eq!(&tail[..], &data[data.len() - 10..]);
    });
}

#[test]
fn a_fill_with_only_refused_tokens_reports_the_refusal() {
    let hub = FakeHub::start();
    let data = content(100_000, 2);
    hub.add(
        "gated.bin",
        HubFile::new(data.clone()).tokens(&["Bearer good"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("gated.bin", size, Some("Bearer expired")))
            .await
            .unwrap();
        let err = fill.read(0, 10).await.expect_err("no token works");
        assert_eq!(err.gateway_status(), 401, "{err}");
    });
}
