//! Work that must not slow down downloads in progress (hashing a completed file, copying
//! replicas) runs at the lowest CPU priority.

/// Run `f` on the current (blocking-pool) thread at nice 19, restoring the thread's priority
/// afterwards (pool threads are reused).
pub(super) fn low_priority<T>(f: impl FnOnce() -> T) -> T {
    let _guard = Nice::enter();
    f()
}

struct Nice {
    previous: Option<libc::c_int>,
}

impl Nice {
    #[cfg(target_os = "linux")]
    fn enter() -> Self {
        // SAFETY: get/setpriority on this thread's own id only change its scheduling weight.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let previous = libc::getpriority(libc::PRIO_PROCESS, tid);
            let ok = *libc::__errno_location() == 0
                && libc::setpriority(libc::PRIO_PROCESS, tid, 19) == 0;
            Self {
                previous: ok.then_some(previous),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn enter() -> Self {
        Self { previous: None }
    }
}

impl Drop for Nice {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(previous) = self.previous {
            // SAFETY: as in `enter`. Lowering a nice value needs CAP_SYS_NICE; without it the
            // thread stays at 19, which only makes later blocking work on it polite.
            unsafe {
                let tid = libc::gettid() as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, previous);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_priority_runs_the_closure_and_returns_its_value() {
        assert_eq!(low_priority(|| 40 + 2), 42);
    }
}
