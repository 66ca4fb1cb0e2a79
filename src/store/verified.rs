//! Which pages of which blob files were checked against their CRC32C since the file last
//! changed: a warm read of such pages skips reading and computing the checksums.
//!
//! The memory is process-wide (a blob file is opened again for every download that finds no
//! live fill) and keyed by the file's device and inode. Every entry carries the file's status
//! change time (`ctime`) and size as seen when its pages were checked: any write to the file
//! (its data, its checksums or its bitmap, by this process or any other), a truncation or a
//! `chmod` sets `ctime` to the current time, so a verified read that finds another stamp
//! forgets the file's pages and checks them again.
//!
//! Kernel timestamps are taken from a clock that advances in ticks (up to 10 ms apart), so a
//! write in the same tick as the one the entry saw could leave `ctime` unchanged. Pages are
//! therefore only recorded for a file whose `ctime` is at least [`SETTLED`] in the past, and
//! only when the stamp was the same before and after the pages were read: whatever changes
//! the file later gets a later `ctime`.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// How long a file must have been left unchanged before its checked pages are remembered.
pub(crate) const SETTLED: Duration = Duration::from_millis(100);

/// Files remembered at most; the memory is cleared when it is full (it only saves work).
const MAX_FILES: usize = 4096;

/// What identifies one state of a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    size: u64,
}

impl Stamp {
    pub(crate) fn of(meta: &Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            size: meta.size(),
        }
    }

    /// The file's stamp now (`None` if it cannot be read: then nothing is skipped).
    pub(crate) fn now(file: &File) -> Option<Self> {
        file.metadata().ok().map(|m| Self::of(&m))
    }

    /// The same file with the same status change time, whatever its size: the file's own
    /// writer extending it within one timestamp tick changes only its size (see `custody.rs`).
    pub(crate) fn same_change(&self, other: &Stamp) -> bool {
        (self.dev, self.ino, self.ctime) == (other.dev, other.ino, other.ctime)
    }

    /// Whether the file was last changed at least [`SETTLED`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let (secs, nanos) = self.ctime;
        let Ok(secs) = u64::try_from(secs) else {
            return false;
        };
        let changed = UNIX_EPOCH + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32);
        now.duration_since(changed).is_ok_and(|age| age >= SETTLED)
    }
}

struct Entry {
    stamp: Stamp,
    /// One bit per page, set when the page matched its checksum under `stamp`.
    pages: Vec<u64>,
}

impl Entry {
    fn all_set(&self, pages: std::ops::Range<u64>) -> bool {
        pages.into_iter().all(|p| {
            self.pages
                .get((p / 64) as usize)
                .is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }

    fn set(&mut self, pages: std::ops::Range<u64>) {
        for p in pages {
            let word = (p / 64) as usize;
            if self.pages.len() <= word {
                self.pages.resize(word + 1, 0);
            }
            self.pages[word] |= 1 << (p % 64);
        }
    }
}

/// The process-wide memory of verified pages.
#[derive(Default)]
pub(crate) struct VerifiedPages {
    files: Mutex<HashMap<(u64, u64), Entry>>,
}

static VERIFIED: LazyLock<VerifiedPages> = LazyLock::new(VerifiedPages::default);

impl VerifiedPages {
    pub(crate) fn global() -> &'static VerifiedPages {
        &VERIFIED
    }

    /// Whether every page in `pages` was verified under exactly `stamp`.
    pub(crate) fn all_verified(&self, stamp: &Stamp, pages: std::ops::Range<u64>) -> bool {
        let files = self.files.lock();
        files
            .get(&(stamp.dev, stamp.ino))
            .is_some_and(|e| e.stamp == *stamp && e.all_set(pages))
    }

    /// Remember that `pages` matched their checksums, read between `before` and `after` (the
    /// file's stamps around the reads). Nothing is remembered unless the file did not change
    /// in between and had settled; an entry with another stamp is replaced.
    pub(crate) fn record(&self, before: &Stamp, after: &Stamp, pages: std::ops::Range<u64>) {
        if before != after || !after.settled(SystemTime::now()) {
            return;
        }
        let mut files = self.files.lock();
        let key = (after.dev, after.ino);
        if files.len() >= MAX_FILES && !files.contains_key(&key) {
            files.clear();
        }
        let entry = files.entry(key).or_insert_with(|| Entry {
            stamp: *after,
            pages: Vec::new(),
        });
        if entry.stamp != *after {
            entry.stamp = *after;
            entry.pages.clear();
        }
        entry.set(pages);
    }

    /// Forget the pages of `file` (a block of it was invalidated).
    pub(crate) fn forget(&self, file: &File) {
        if let Some(stamp) = Stamp::now(file) {
            self.files.lock().remove(&(stamp.dev, stamp.ino));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn stamp(ctime: (i64, i64), size: u64) -> Stamp {
        Stamp {
            dev: 1,
            ino: 2,
            ctime,
            size,
        }
    }

    fn long_ago() -> (i64, i64) {
        (1_000_000, 0)
    }

    #[test]
    fn pages_recorded_under_a_settled_stamp_are_verified_only_under_that_stamp() {
        let v = VerifiedPages::default();
        let s = stamp(long_ago(), 100);
        v.record(&s, &s, 3..5);
        assert!(v.all_verified(&s, 3..5));
        assert!(v.all_verified(&s, 4..5));
        assert!(!v.all_verified(&s, 3..6), "page 5 was never checked");
        assert!(
            !v.all_verified(&stamp((1_000_000, 1), 100), 3..5),
            "ctime changed"
        );
        assert!(
            !v.all_verified(&stamp(long_ago(), 101), 3..5),
            "size changed"
        );
    }

    #[test]
    fn a_new_stamp_replaces_the_pages_of_the_old_one() {
        let v = VerifiedPages::default();
        let old = stamp(long_ago(), 100);
        let new = stamp((1_000_001, 0), 100);
        v.record(&old, &old, 0..2);
        v.record(&new, &new, 1..2);
        assert!(
            !v.all_verified(&new, 0..1),
            "page 0 was checked under the old stamp only"
        );
        assert!(v.all_verified(&new, 1..2));
        assert!(!v.all_verified(&old, 1..2));
    }

    #[test]
    fn nothing_is_recorded_when_the_file_changed_during_the_read_or_just_before() {
        let v = VerifiedPages::default();
        let before = stamp(long_ago(), 100);
        let after = stamp((1_000_000, 5), 100);
        v.record(&before, &after, 0..1);
        assert!(!v.all_verified(&after, 0..1) && !v.all_verified(&before, 0..1));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let fresh = stamp((now.as_secs() as i64, now.subsec_nanos() as i64), 100);
        v.record(&fresh, &fresh, 0..1);
        assert!(
            !v.all_verified(&fresh, 0..1),
            "a file changed just now is not settled"
        );
    }

    #[test]
    fn forget_drops_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let f = File::open(&path).unwrap();
        let s = Stamp::now(&f).unwrap();
        let s = Stamp {
            ctime: long_ago(),
            ..s
        };
        let v = VerifiedPages::default();
        v.record(&s, &s, 0..1);
        assert!(v.all_verified(&s, 0..1));
        v.forget(&f);
        assert!(!v.all_verified(&s, 0..1));
    }

    #[test]
    fn writing_to_a_file_changes_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let f = File::open(&path).unwrap();
        let before = Stamp::now(&f).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(b"x").unwrap();
        assert_ne!(Stamp::now(&f).unwrap(), before);
    }
}
