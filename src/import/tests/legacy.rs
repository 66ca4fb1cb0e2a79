//! Caches of Olah before 0.5: v9 directories (Olah 0.4) and v8 files (Olah 0.1-0.3, and
//! DingoSpeed's blobs), with hex-encoded answers.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::write::GzEncoder;

use super::*;
use crate::import::legacy::{DEFAULT_MASK_BITS, FIXED_HEADER_LEN};

/// Writes an OLAH v8 file as Olah 0.3 (`OlahCache.resize` + `write_block`) and DingoSpeed
/// (`Resize` + `WriteBlock`) do: the `<4sQQQQ` header, a bitmap of 1,048,576 bits, the file
/// pre-sized (sparse) to header + size, then each present block at `header + i*block_size`
/// (the last one truncated) with its bit set.
pub fn write_v8(path: &Path, content: &[u8], block_size: u64, present: impl Fn(u64) -> bool) {
    mkparent(path);
    let size = content.len() as u64;
    let blocks = size.div_ceil(block_size);
    let mut bitmap = vec![0u8; (DEFAULT_MASK_BITS / 8) as usize];
    for b in (0..blocks).filter(|&b| present(b)) {
        bitmap[(b / 8) as usize] |= 1 << (b % 8);
    }
    let mut header = Vec::new();
    header.extend_from_slice(b"OLAH");
    for v in [8u64, block_size, size, DEFAULT_MASK_BITS] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(header.len() as u64, FIXED_HEADER_LEN);
    header.extend_from_slice(&bitmap);
    assert_eq!(header.len(), 131_108);
    let file = fs::File::create(path).unwrap();
    file.write_all_at(&header, 0).unwrap();
    file.set_len(header.len() as u64 + size).unwrap();
    for b in (0..blocks).filter(|&b| present(b)) {
        let start = (b * block_size) as usize;
        let end = (start + block_size as usize).min(content.len());
        file.write_all_at(&content[start..end], header.len() as u64 + start as u64)
            .unwrap();
    }
}

/// Writes an Olah 0.4 cache directory: `meta.bin` (`<4sQQQQ`: magic, 9, block size, file
/// size, compression) and `blocks/block_{i:08}.bin` for the present blocks, whole-block gzip
/// (`gzip.compress(data, compresslevel=4)`) when `compression == 1`.
fn write_v9(
    dir: &Path,
    content: &[u8],
    block_size: u64,
    compression: u64,
    present: impl Fn(u64) -> bool,
) {
    fs::create_dir_all(dir.join("blocks")).unwrap();
    let size = content.len() as u64;
    let mut meta = b"OLAH".to_vec();
    for v in [9u64, block_size, size, compression] {
        meta.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(dir.join("meta.bin"), meta).unwrap();
    for b in (0..size.div_ceil(block_size)).filter(|&b| present(b)) {
        let start = (b * block_size) as usize;
        let raw = &content[start..(start + block_size as usize).min(content.len())];
        let stored = if compression == 1 {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::new(4));
            std::io::Write::write_all(&mut e, raw).unwrap();
            e.finish().unwrap()
        } else {
            raw.to_vec()
        };
        fs::write(
            dir.join("blocks").join(format!("block_{b:0>8}.bin")),
            stored,
        )
        .unwrap();
    }
}

#[tokio::test]
async fn imports_olah_04_and_03_caches_complete_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let base = repos.join("files/models/old/repo/resolve").join(C1);
    let api = repos.join("api/models/old/repo");
    let v9 = data(30, 300_000);
    let v9_plain = data(31, 100_000);
    let v9_partial = data(32, 300_000);
    let v8 = data(33, 200_000);
    write_v9(&base.join("gz.bin"), &v9, 120_000, 1, |_| true);
    write_v9(&base.join("plain.bin"), &v9_plain, 120_000, 0, |_| true);
    write_v9(&base.join("partial.bin"), &v9_partial, 120_000, 1, |b| {
        b != 0
    });
    write_v8(&base.join("v8.bin"), &v8, 50_000, |_| true);
    for (path, content) in [
        ("gz.bin", &v9),
        ("plain.bin", &v9_plain),
        ("partial.bin", &v9_partial),
        ("v8.bin", &v8),
    ] {
        write_hex_answer(
            &api.join("paths-info")
                .join(C1)
                .join(path)
                .join("paths-info_post.json"),
            200,
            &[],
            &hub_paths_info(path, content, true),
            None,
        );
    }
    write_hex_answer(
        &api.join("revision/main/meta_get.json"),
        200,
        &[],
        &repo_info("old/repo", C1),
        None,
    );
    let app = app(&dir.path().join("cache"), "64KiB");

    let report = import_olah(&app, &repos).await.unwrap();
    println!("{report}");
    assert_counts_match(&report);
    for content in [&v9, &v9_plain, &v8] {
        assert_eq!(stored(&app, &sha256_hex(content)).as_ref(), Some(content));
    }
    let reason = skipped_reason(&report, "models/old/repo", C1, "partial.bin");
    assert!(
        reason.contains("block 0: not downloaded") && reason.contains("no checksums"),
        "{reason}"
    );
    assert_eq!(report.counts().imported, 3);
    let model = repo(RepoType::Model, "old/repo");
    assert_eq!(
        resolved(&app, &model, "main", "v8.bin").await.unwrap().size,
        v8.len() as u64
    );
}

#[test]
fn malformed_cache_entries_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let mut cases: Vec<Vec<u8>> = vec![
        b"OL".to_vec(),
        b"OLAH".to_vec(),
        b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX".to_vec(),
    ];
    let mut header = b"OLAH".to_vec();
    for v in [8u64, 0, 10, DEFAULT_MASK_BITS] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    cases.push(header.clone());
    let mut huge = b"OLAH".to_vec();
    for v in [8u64, 1, u64::MAX, DEFAULT_MASK_BITS] {
        huge.extend_from_slice(&v.to_le_bytes());
    }
    cases.push(huge);
    for bytes in cases {
        fs::write(&p, &bytes).unwrap();
        assert!(source::CacheSource::open(&p).is_err(), "{bytes:?}");
    }
    // v10 headers cut at every length.
    let full = v10_header(V10::SMALL, 1000, "\"etag\"");
    for n in 0..full.len() {
        assert!(v10::parse_header(&full[..n]).is_err(), "{n}");
    }
    assert!(v10::parse_header(&full).is_ok());
}
