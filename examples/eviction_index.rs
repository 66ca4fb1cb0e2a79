//! Benchmark of the eviction index (run by `scripts/bench-eviction`; not a test): how long a
//! cache of N blobs takes to load its index at start (read the snapshot, reconcile it with
//! the store's listing), and how long choosing victims takes. The issue's target: 100k blobs
//! start in under 2 s.
//!
//! ```text
//! cargo run --release --example eviction_index -- [--blobs 100000] [--roots 2]
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use hubcache::evict::{Copy, DiskBlob, DownloadId, EvictionIndex, PlanRequest};
use hubcache::store::BlobId;

const TARGET: Duration = Duration::from_secs(2);
const MIN: u64 = 60_000;

struct Args {
    blobs: usize,
    roots: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        blobs: 100_000,
        roots: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--blobs" => args.blobs = value.parse().map_err(|_| "--blobs: a number")?,
            "--roots" => args.roots = value.parse().map_err(|_| "--roots: a number")?,
            other => return Err(format!("unknown option {other} (--blobs N, --roots N)")),
        }
    }
    if args.roots == 0 || args.blobs == 0 {
        return Err("--blobs and --roots must be at least 1".into());
    }
    Ok(args)
}

fn blob_id(i: usize) -> BlobId {
    let hex = hex::encode(Sha256::digest(i.to_le_bytes()));
    BlobId::parse(&hex).expect("sha256 hex is a blob id")
}

/// xorshift64*: deterministic pseudo-random numbers for the synthetic cache.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("eviction_index: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("hubcache-bench-evict-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("eviction_index: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let path = dir.join("eviction.idx");
    let result = run(&args, &path);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eviction_index: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args, path: &std::path::Path) -> Result<(), String> {
    let n = args.blobs;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let now = 100 * 24 * 60 * MIN;
    println!(
        "eviction index benchmark: {n} blobs on {} roots ({} build)",
        args.roots,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );

    // A synthetic cache: sizes from 1 KiB to ~4 GiB, some replicated, read by a few downloads,
    // referenced by repos of a few hundred owners.
    let build = Instant::now();
    let index = EvictionIndex::new(Arc::new(hubcache_plugin_lru::Lru), &[]);
    let ids: Vec<BlobId> = (0..n).map(blob_id).collect();
    let repos = (n / 20).max(1);
    let mut listing = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        let size = 1024 + rng.next() % (4 << 30);
        let filled = now - rng.next() % (90 * 24 * 60 * MIN);
        let root = (i % usize::from(args.roots)) as u16;
        let mut copies = vec![Copy {
            root,
            allocated: size,
        }];
        index.record_fill(id, size, root, size, filled);
        if args.roots > 1 && i % 4 == 0 {
            let other = (root + 1) % args.roots;
            index.record_fill(id, size, other, size, filled);
            copies.push(Copy {
                root: other,
                allocated: size,
            });
        }
        for d in 0..rng.next() % 4 {
            index.record_read(id, DownloadId(d), filled + d * MIN);
        }
        index.add_repo(id, &format!("org{}/model{}", i % 500, i % repos));
        // The listing the store would give: 1% of the snapshot's blobs are gone from disk.
        if i % 100 != 0 {
            listing.push(DiskBlob {
                id: id.clone(),
                size,
                copies,
                modified: filled,
            });
        }
    }
    // ... and 1% are on disk but not in the snapshot.
    for i in n..n + n / 100 {
        listing.push(DiskBlob {
            id: blob_id(i),
            size: 1 << 20,
            copies: vec![Copy {
                root: 0,
                allocated: 1 << 20,
            }],
            modified: now - MIN,
        });
    }
    println!("  building the synthetic cache   {}", ms(build.elapsed()));

    let t = Instant::now();
    index.save(path).map_err(|e| e.to_string())?;
    let save = t.elapsed();
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    println!(
        "  save snapshot                  {} ({:.1} MiB)",
        ms(save),
        size as f64 / f64::from(1 << 20)
    );
    drop(index);

    let start = Instant::now();
    let (index, report) = EvictionIndex::open(path, Arc::new(hubcache_plugin_lru::Lru), &[]);
    let open = start.elapsed();
    let listed = listing.len();
    let t = Instant::now();
    let reconciled = index.reconcile(listing, now);
    let reconcile = t.elapsed();
    let total = start.elapsed();
    println!("  open (load {} blobs)        {}", report.blobs, ms(open));
    println!(
        "  reconcile ({listed} listed: +{} -{}) {}",
        reconciled.added,
        reconciled.removed,
        ms(reconcile)
    );
    println!(
        "  start total                    {}   (target < {} s: {})",
        ms(total),
        TARGET.as_secs(),
        if total < TARGET { "met" } else { "MISSED" }
    );

    let usage = index.usage();
    let t = Instant::now();
    let plan = index.plan(&PlanRequest::free(usage.allocated / 10, now), &|_| false);
    println!(
        "  plan: free 10% under lru       {} ({} victims)",
        ms(t.elapsed()),
        plan.victims.len()
    );
    let t = Instant::now();
    let plan = index.plan(
        &PlanRequest::free_on(0, usage.allocated / 100, now),
        &|_| false,
    );
    println!(
        "  plan: free 1% of root 0        {} ({} victims)",
        ms(t.elapsed()),
        plan.victims.len()
    );
    let t = Instant::now();
    index.record_read(&ids[1], DownloadId(77), now);
    println!(
        "  record one read                {:.1} µs",
        t.elapsed().as_secs_f64() * 1e6
    );

    let t = Instant::now();
    let lfuda = Arc::new(hubcache_plugin_lfuda::Lfuda::new());
    let (index, _) = EvictionIndex::open(path, lfuda, &[]);
    let reopen = t.elapsed();
    let t = Instant::now();
    let plan = index.plan(&PlanRequest::free(usage.allocated / 10, now), &|_| false);
    println!(
        "  open under lfuda (new keys)    {}; plan 10% {} ({} victims)",
        ms(reopen),
        ms(t.elapsed()),
        plan.victims.len()
    );
    Ok(())
}
