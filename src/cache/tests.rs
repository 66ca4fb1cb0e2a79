//! The blob storage as Pingora drives it: lookup, seek, read_body.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pingora::cache::key::CacheKey;
use pingora::cache::trace::Span;
use pingora::cache::Storage;

use super::{ServedBlob, BLOB_STORAGE};
use crate::fetch::testkit::{
    content, engine_on, full_store, id_of, run_bounded, settings, source, FakeHub, HubFile,
};

#[test]
fn a_seek_after_falling_back_to_an_uncached_stream_serves_the_new_range() {
    let hub = FakeHub::start();
    let data = content(600_000, 6);
    hub.add("full.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    // The cache is full: every byte is streamed from upstream without caching.
    let engine = engine_on(full_store(dir.path()), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let served = Arc::new(ServedBlob {
            id,
            size,
            etag: "x".into(),
            engine,
            source: Some(source("full.bin", size, None)),
            fill: None,
            download: None,
            tally: Default::default(),
            cached_at_open: None,
        });
        let mut key = CacheKey::new("", "full.bin");
        key.extensions.insert(Arc::clone(&served));
        let span = Span::inactive();
        let (_, mut hit) = BLOB_STORAGE
            .lookup(&key, &span.handle())
            .await
            .unwrap()
            .expect("a hit");
        // Pingora serves a multipart range as seek + reads, once per part.
        let mut parts = Vec::new();
        for (start, end) in [(1000usize, 2000usize), (500_000, 500_100)] {
            hit.seek(start, Some(end)).unwrap();
            let mut body = BytesMut::new();
            while let Some(chunk) = hit.read_body().await.unwrap() {
                body.extend_from_slice(&chunk);
            }
            parts.push((start, end, body));
        }
        for (start, end, body) in parts {
            assert_eq!(&body[..], &data[start..end], "bytes {start}-{end}");
        }
    });
}
