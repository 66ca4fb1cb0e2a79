//! Low-priority work (hashing completed files, copying replicas) must not leave the threads
//! that serve reads at a low priority.

use std::sync::Arc;
use std::time::Duration;

use crate::fetch::testkit::{
    content, engine, id_of, settings, source, wait_until, FakeHub, HubFile,
};
use crate::fetch::{FillMode, FillStats};

const POOL_NAME: &str = "hc-nice-test";

/// The nice value of thread `stat` (the contents of `/proc/.../stat`).
fn nice_of(stat: &str) -> i64 {
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    fields[16].parse().expect("nice") // field 19 of stat(5); fields[0] is field 3
}

/// Nice values of this process's threads named `name`.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                found.push(nice_of(&stat));
            }
        }
    }
    found
}

/// Give up CAP_SYS_NICE on this thread (and the threads it creates), like a service running
/// without privileges: a nice value raised on such a thread can never be lowered again.
fn drop_cap_sys_nice() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_SYS_NICE: u32 = 23;
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a valid v3 header and two data structs, on this thread only.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        ) != 0
        {
            return;
        }
        data[0].effective &= !(1 << CAP_SYS_NICE);
        data[0].permitted &= !(1 << CAP_SYS_NICE);
        libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr());
    }
}

#[test]
fn verifying_a_completed_file_leaves_the_runtime_threads_at_normal_priority() {
    let hub = FakeHub::start();
    let data = content(3 << 20, 4);
    hub.add("hashed.bin", HubFile::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings();
    settings.mode = FillMode::Complete;
    let engine = engine(dir.path(), &hub, settings);
    let base = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    let worker = std::thread::spawn(move || {
        drop_cap_sys_nice();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(4)
            .thread_name(POOL_NAME)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (id, size) = (id_of(&data), data.len() as u64);
            let fill = engine
                .open(&id, source("hashed.bin", size, None))
                .await
                .unwrap();
            fill.want_completion();
            let stats = engine.stats();
            wait_until("the file to be verified", Duration::from_secs(60), || {
                FillStats::get(&stats.verified_files) >= 1
            })
            .await;
            drop(fill);
            // Warm reads, each from a fresh open of the complete blob.
            for _ in 0..8 {
                let fill = engine
                    .open(&id, source("hashed.bin", size, None))
                    .await
                    .unwrap();
                let mut offset = 0;
                while offset < size {
                    offset += fill.read(offset, 1 << 20).await.unwrap().len() as u64;
                }
                drop(fill);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let threads = nice_of_threads(POOL_NAME);
            assert!(!threads.is_empty(), "runtime threads not found");
            assert!(
                threads.iter().all(|&n| n == base),
                "runtime threads' nice values {threads:?}, expected {base}"
            );
            let _keep = Arc::new(());
        });
    });
    worker.join().expect("test thread");
}
