//! A process-wide allowance of large reads of a blob's own bytes.
//!
//! Bytes a fill wrote itself need no checks (`store/custody.rs`), so a reader may take them in
//! any size. Large reads keep one client fast (each read is a hand-off to a blocking thread
//! and back: 1 MiB reads instead of 256 KiB lifted one cold download by about 15 %), but each
//! is held until the client's socket took it: with many clients of one cold file, large reads
//! for all of them would hold that much memory. So only a few large reads are alive at a time,
//! process-wide; the others read small.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Bytes of one large read.
pub(super) const LARGE_READ: usize = 1 << 20;

/// The allowance of the process.
pub(super) static LARGE_READS: Allowance = Allowance::new(4);

pub(super) struct Allowance {
    alive: AtomicUsize,
    max: usize,
}

impl Allowance {
    const fn new(max: usize) -> Self {
        Self {
            alive: AtomicUsize::new(0),
            max,
        }
    }

    /// A share of the allowance, if one is free.
    pub(super) fn try_take(&'static self) -> Option<Share> {
        self.alive
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Share { of: self })
    }
}

/// One large read's share of the allowance, given back when its bytes are dropped.
pub(super) struct Share {
    of: &'static Allowance,
}

impl Share {
    /// `bytes`, holding this share until the last slice of them is dropped.
    pub(super) fn hold(self, bytes: Bytes) -> Bytes {
        Bytes::from_owner(Held {
            bytes,
            _share: self,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.of.alive.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Held {
    bytes: Bytes,
    _share: Share,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_reads_are_bounded_and_their_share_comes_back_with_the_last_slice() {
        let allowance: &'static Allowance = Box::leak(Box::new(Allowance::new(2)));
        let a = allowance
            .try_take()
            .unwrap()
            .hold(Bytes::from_static(b"abc"));
        let b = allowance
            .try_take()
            .unwrap()
            .hold(Bytes::from_static(b"def"));
        assert!(allowance.try_take().is_none());
        assert_eq!((&a[..], &b[..]), (&b"abc"[..], &b"def"[..]));
        let tail = a.slice(1..);
        drop(a);
        assert!(
            allowance.try_take().is_none(),
            "a slice still holds the share"
        );
        assert_eq!(&tail[..], b"bc");
        drop(tail);
        let c = allowance.try_take();
        assert!(c.is_some());
        assert!(allowance.try_take().is_none());
        drop((b, c));
        assert_eq!(allowance.alive.load(Ordering::Acquire), 0);
    }
}
