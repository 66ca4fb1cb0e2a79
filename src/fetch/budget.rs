//! [`Budget`]: a fair semaphore whose size can change while permits are held (a config
//! reload changing `fill.connections_total` or `fill.background_fills`).
//!
//! Growing adds permits at once, so waiters proceed. Shrinking takes away the permits that are
//! free; the rest is a debt paid by the next permits given back (they are forgotten instead of
//! returned), so work already running is never cut and nothing waits beside a free permit. A
//! later growth pays the debt first.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
struct Size {
    /// The size asked for.
    target: usize,
    /// Permits out that must not come back (the budget shrank while they were held).
    debt: usize,
}

/// A resizable, fair (first come, first served) budget of permits.
#[derive(Debug)]
pub(crate) struct Budget {
    semaphore: Arc<Semaphore>,
    size: Mutex<Size>,
}

/// One permit of a [`Budget`], given back (or forgotten, see the module doc) on drop.
#[derive(Debug)]
pub(crate) struct BudgetPermit {
    permit: Option<OwnedSemaphorePermit>,
    budget: Arc<Budget>,
}

impl Budget {
    pub(crate) fn new(size: usize) -> Arc<Self> {
        let size = size.max(1);
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(size)),
            size: Mutex::new(Size {
                target: size,
                debt: 0,
            }),
        })
    }

    /// Wait for a permit (in arrival order).
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<BudgetPermit, AcquireError> {
        let permit = Arc::clone(&self.semaphore).acquire_owned().await?;
        Ok(BudgetPermit {
            permit: Some(permit),
            budget: Arc::clone(self),
        })
    }

    /// Make the budget `size` permits (at least 1).
    pub(crate) fn resize(&self, size: usize) {
        let size = size.max(1);
        let mut current = self.size.lock();
        if size > current.target {
            let grow = size - current.target;
            let repaid = grow.min(current.debt);
            current.debt -= repaid;
            self.semaphore.add_permits(grow - repaid);
        } else if size < current.target {
            let shrink = current.target - size;
            let taken = self.semaphore.forget_permits(shrink);
            current.debt += shrink - taken;
        }
        current.target = size;
    }

    /// The size asked for.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size.lock().target
    }

    /// Permits held now (by work started under any size).
    pub(crate) fn in_use(&self) -> usize {
        let size = self.size.lock();
        (size.target + size.debt).saturating_sub(self.semaphore.available_permits())
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut size = self.budget.size.lock();
        if size.debt > 0 {
            size.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn acquire_within(budget: &Arc<Budget>, ms: u64) -> Option<BudgetPermit> {
        tokio::time::timeout(Duration::from_millis(ms), budget.acquire())
            .await
            .ok()
            .map(|p| p.unwrap())
    }

    #[tokio::test]
    async fn growing_wakes_a_waiter_at_once() {
        let budget = Budget::new(1);
        let _held = budget.acquire().await.unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire().await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the budget is full");
        budget.resize(2);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the waiter got the new permit")
            .unwrap()
            .unwrap();
        assert_eq!(budget.size(), 2);
    }

    #[tokio::test]
    async fn shrinking_below_what_is_held_waits_for_permits_to_come_back() {
        let budget = Budget::new(3);
        let a = budget.acquire().await.unwrap();
        let b = budget.acquire().await.unwrap();
        budget.resize(1);
        assert_eq!(budget.in_use(), 2);
        assert!(acquire_within(&budget, 20).await.is_none(), "2 held > 1");
        drop(a);
        assert!(
            acquire_within(&budget, 20).await.is_none(),
            "1 still held = the new size"
        );
        drop(b);
        let c = acquire_within(&budget, 500)
            .await
            .expect("back to one free");
        assert!(acquire_within(&budget, 20).await.is_none());
        assert_eq!(budget.in_use(), 1);
        drop(c);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn growing_after_a_shrink_pays_the_debt_first() {
        let budget = Budget::new(4);
        let held: Vec<_> = futures::future::join_all((0..4).map(|_| budget.acquire()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        budget.resize(1); // debt 3
        budget.resize(2); // debt 2: still 4 held > 2
        assert!(acquire_within(&budget, 20).await.is_none());
        drop(held);
        // Size 2: exactly two permits are free now.
        let x = acquire_within(&budget, 500).await.expect("first");
        let y = acquire_within(&budget, 500).await.expect("second");
        assert!(acquire_within(&budget, 20).await.is_none(), "only two");
        drop((x, y));
        assert_eq!(budget.in_use(), 0);
    }
}
