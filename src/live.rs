//! [`Live`]: a read-only view of one part of the current settings, for the long-lived
//! services (metadata, fill engine) that must follow a config reload.
//!
//! The settings themselves live in one `ArcSwap` owned by the [`App`](crate::app::App); a
//! service is handed a `Live` that reads its part of whatever is current, so a reload is one
//! `store()` and every service sees it at its next read. A value read is a snapshot: keep it
//! for one piece of work (a request to an upstream, a scheduling round), read again for the
//! next. Imports nothing of ours.

use std::fmt;
use std::sync::Arc;

/// The current value of one setting (`T` is cheap to clone: an `Arc`, a `Duration`).
pub struct Live<T> {
    read: Arc<dyn Fn() -> T + Send + Sync>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self {
            read: Arc::clone(&self.read),
        }
    }
}

impl<T> fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Live(..)")
    }
}

impl<T: 'static> Live<T> {
    /// A view that calls `read` for the current value.
    pub fn new(read: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self {
            read: Arc::new(read),
        }
    }

    /// A value that never changes (tests, one-shot commands).
    pub fn fixed(value: T) -> Self
    where
        T: Clone + Send + Sync,
    {
        Self::new(move || value.clone())
    }

    /// The current value.
    pub fn get(&self) -> T {
        (self.read)()
    }

    /// A view of a part of this one.
    pub fn map<U: 'static>(&self, part: impl Fn(T) -> U + Send + Sync + 'static) -> Live<U> {
        let read = Arc::clone(&self.read);
        Live::new(move || part(read()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;

    #[test]
    fn a_live_view_follows_the_swapped_value() {
        let cell = Arc::new(ArcSwap::from_pointee((1u32, "a")));
        let view = {
            let cell = Arc::clone(&cell);
            Live::new(move || cell.load_full())
        };
        let number = view.map(|pair| pair.0);
        assert_eq!(number.get(), 1);
        let before = view.get();
        cell.store(Arc::new((2, "b")));
        assert_eq!(number.get(), 2);
        assert_eq!(view.get().1, "b");
        assert_eq!(
            before.1, "a",
            "a value read before the swap is kept as it was"
        );
    }

    #[test]
    fn a_fixed_value_never_changes() {
        let live = Live::fixed(7u8);
        assert_eq!((live.get(), live.clone().get()), (7, 7));
    }
}
