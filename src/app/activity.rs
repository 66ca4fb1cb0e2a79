//! What the process is doing, for a shutdown that drains instead of sleeping: requests in
//! flight (a download is in flight until its last byte is sent) and whether the process has
//! been told to stop (so answers carry `Connection: close`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Activity {
    requests: AtomicUsize,
    stopping: AtomicBool,
}

/// Counts one request as in flight until dropped (it lives in the request's context).
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
}

impl Activity {
    /// Count a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::SeqCst);
        InFlight {
            activity: Arc::clone(self),
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The process will stop (graceful shutdown or upgrade): close connections after their
    /// current answer.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_until_their_guard_is_dropped() {
        let activity = Arc::new(Activity::default());
        let a = activity.begin();
        let b = activity.begin();
        assert_eq!(activity.requests(), 2);
        drop(a);
        assert_eq!(activity.requests(), 1);
        drop(b);
        assert_eq!(activity.requests(), 0);
        assert!(!activity.is_stopping());
        activity.stop();
        assert!(activity.is_stopping());
    }
}
