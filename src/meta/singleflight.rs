//! Coalescing of identical metadata calls: concurrent callers with the same key share one
//! upstream request and its result.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

type SharedCall<V> = Shared<BoxFuture<'static, V>>;

pub struct SingleFlight<K, V: Clone> {
    calls: Arc<Mutex<HashMap<K, SharedCall<V>>>>,
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            calls: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Run `make()` unless a call with the same key is already running; either way return
    /// its result. The call runs to completion even if every caller goes away.
    pub async fn run<F, Fut>(&self, key: K, make: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let shared = {
            let mut calls = self.calls.lock();
            if let Some(existing) = calls.get(&key) {
                existing.clone()
            } else {
                let calls_ref = Arc::clone(&self.calls);
                let key_ref = key.clone();
                // A sibling's question stays one on the call's own task (`siblings`).
                let fut = super::siblings::keep_scope(make());
                let wrapped = async move {
                    let value = fut.await;
                    calls_ref.lock().remove(&key_ref);
                    value
                }
                .boxed()
                .shared();
                // Drive it on its own task so a caller that disconnects does not cancel it.
                tokio::spawn(wrapped.clone());
                calls.insert(key, wrapped.clone());
                wrapped
            }
        };
        shared.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_with_one_key_run_once() {
        let flight: Arc<SingleFlight<String, usize>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let flight = flight.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                flight
                    .run("k".to_string(), move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once finished, a new call runs again.
        let again = flight.run("k".to_string(), || async { 7 }).await;
        assert_eq!(again, 7);
    }
}
