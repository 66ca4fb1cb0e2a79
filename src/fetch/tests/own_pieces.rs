//! Pieces for senders that hand file bytes to the kernel (`sendfile` of a cold download):
//! committed blocks of the fill's own file come as file runs, and what was sent is confirmed
//! once the client has it (see `fetch/send.rs`).

use std::fs::OpenOptions;
use std::future::Future;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::fetch::testkit::{
    blob_path, content, engine, id_of, run_bounded, settings, source, FakeHub, HubFile,
};
use crate::fetch::{BlobFill, OwnSent, Piece};
use crate::store::BlobFile;

const BLOCK: u64 = 64 << 10;
/// Longer than the kernel's timestamp tick, so a later change gets a later `ctime`.
const TICK: Duration = Duration::from_millis(20);

/// The file run `fill` hands out at `offset`, noted in `sent` as if sent; panics on bytes.
async fn own_run(fill: &Arc<BlobFill>, offset: u64, sent: &mut OwnSent) -> Arc<BlobFile> {
    match fill.piece_from(offset, u64::MAX).await.unwrap().0 {
        Piece::Own {
            file,
            offset: at,
            len,
            invalidations,
        } => {
            assert_eq!(at, offset);
            assert_eq!(len, BLOCK - offset % BLOCK, "a run ends at its block's end");
            sent.add(&file, at..at + len, invalidations);
            file
        }
        Piece::Bytes(_) => panic!("the fill's own committed block came as bytes"),
    }
}

/// Read the fill's whole blob (fetching it).
async fn read_whole(fill: &Arc<BlobFill>) {
    let mut at = 0;
    while at < fill.size() {
        at += fill.read(at, usize::MAX).await.unwrap().len() as u64;
    }
}

fn flip(file: &BlobFile, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file.path())
        .unwrap();
    let at = file.layout().data_offset() + offset;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

type Test =
    Box<dyn FnOnce(Arc<BlobFill>, Bytes, PathBuf) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A hub with one 4-block file, an engine, and the file fetched whole through it; then `test`
/// with the fill, the content and the blob file's path.
fn with_fetched_file(test: Test) {
    let hub = FakeHub::start();
    let data = content(4 * BLOCK as usize, 21);
    hub.add("own.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let (id, size) = (id_of(&data), data.len() as u64);
        let fill = engine
            .open(&id, source("own.bin", size, None))
            .await
            .unwrap();
        read_whole(&fill).await;
        let path = blob_path(dir.path(), &id);
        test(fill, data, path).await;
        drop(hub);
    });
}

#[test]
fn committed_blocks_of_the_fills_own_file_are_file_runs_confirmed_while_in_custody() {
    with_fetched_file(Box::new(|fill, _data, _path| {
        Box::pin(async move {
            let mut sent = OwnSent::default();
            own_run(&fill, 0, &mut sent).await;
            own_run(&fill, BLOCK + 100, &mut sent).await;
            sent.confirm(fill.id()).await.unwrap();
        })
    }));
}

#[test]
fn a_file_changed_only_in_its_status_still_confirms_what_was_sent() {
    with_fetched_file(Box::new(|fill, _data, path| {
        Box::pin(async move {
            let mut sent = OwnSent::default();
            let file = own_run(&fill, 0, &mut sent).await;
            std::thread::sleep(TICK);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(!file.in_custody());
            // Nothing was invalidated and the bytes sent still match their checksums.
            sent.confirm(fill.id()).await.unwrap();
            // From now on the file's bytes are read, not handed to the kernel.
            let (piece, _) = fill.piece_from(2 * BLOCK, u64::MAX).await.unwrap();
            assert!(matches!(piece, Piece::Bytes(_)));
        })
    }));
}

#[test]
fn a_byte_changed_in_what_was_sent_fails_the_confirmation() {
    with_fetched_file(Box::new(|fill, _data, _path| {
        Box::pin(async move {
            let mut sent = OwnSent::default();
            let file = own_run(&fill, 0, &mut sent).await;
            std::thread::sleep(TICK);
            flip(&file, 10);
            let error = sent.confirm(fill.id()).await.unwrap_err().to_string();
            assert!(error.contains("changed while being sent"), "{error}");
        })
    }));
}

#[test]
fn a_block_invalidated_and_fetched_again_since_it_was_sent_fails_the_confirmation() {
    with_fetched_file(Box::new(|fill, data, _path| {
        Box::pin(async move {
            let mut sent = OwnSent::default();
            let file = own_run(&fill, 0, &mut sent).await;
            std::thread::sleep(TICK);
            // Someone else corrupts block 0 and a checked read finds it: it is invalidated and
            // fetched again, so the file is whole again. The client may have got the bad byte.
            flip(&file, 10);
            let again = fill.read(0, 100).await.unwrap();
            assert_eq!(&again[..], &data[..100]);
            assert!(file.invalidations() >= 1);
            let error = sent.confirm(fill.id()).await.unwrap_err().to_string();
            assert!(error.contains("invalidated and fetched again"), "{error}");
        })
    }));
}

#[test]
fn a_file_opened_from_disk_is_read_not_handed_to_the_kernel() {
    let hub = FakeHub::start();
    let data = content(2 * BLOCK as usize, 22);
    hub.add("disk.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (id, size) = (id_of(&data), data.len() as u64);
    {
        let first = engine(dir.path(), &hub, settings());
        let id = id.clone();
        run_bounded(Duration::from_secs(60), move || async move {
            let fill = first
                .open(&id, source("disk.bin", size, None))
                .await
                .unwrap();
            read_whole(&fill).await;
        });
    }
    let second = engine(dir.path(), &hub, settings());
    run_bounded(Duration::from_secs(60), move || async move {
        let fill = second
            .open(&id, source("disk.bin", size, None))
            .await
            .unwrap();
        let (piece, _) = fill.piece_from(0, u64::MAX).await.unwrap();
        match piece {
            Piece::Bytes(bytes) => assert_eq!(&bytes[..], &data[..bytes.len()]),
            Piece::Own { .. } => panic!("a file opened from disk was handed to the kernel"),
        }
        drop(hub);
    });
}
