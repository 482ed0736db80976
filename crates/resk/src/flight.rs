//! Coalescing of concurrent identical work (singleflight): callers that ask for the same key while
//! a call for it is in flight wait for that call's result instead of making their own. Nothing is
//! kept once the call is over (that is the caches' job), so a result is never served stale.
//!
//! Used for vector searches: 100 concurrent misses of one query cost one search (the embedding cache
//! already coalesces their embedding calls). Written here rather than taken from a crate: it is a
//! map of tokio `OnceCell`s, and tokio's cell already handles the hard part (a cancelled leader:
//! the next waiter runs its own call).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::sync::OnceCell;

/// In-flight calls by key.
pub(crate) struct Flights<V> {
    inflight: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<V> std::fmt::Debug for Flights<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inflight.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Flights").field("in_flight", &n).finish()
    }
}

impl<V: Clone> Flights<V> {
    /// The result of `call`, or of the call for `key` already in flight; `leader` tells whether
    /// this caller's own call ran.
    pub(crate) async fn run(&self, key: String, call: impl Future<Output = V>) -> (V, bool) {
        let cell = self
            .inflight
            .lock()
            .ok()
            .map(|mut map| map.entry(key.clone()).or_default().clone());
        // A poisoned map (a panic while holding it): do not coalesce.
        let Some(cell) = cell else {
            return (call.await, true);
        };
        let mut leader = false;
        let value = cell
            .get_or_init(|| {
                leader = true;
                call
            })
            .await
            .clone();
        if leader
            && let Ok(mut map) = self.inflight.lock()
            && map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            map.remove(&key);
        }
        (value, leader)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicU32, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_call_and_later_ones_call_again() {
        let flights = Arc::new(Flights::<u32>::default());
        let calls = Arc::new(AtomicU32::new(0));
        let run = |flights: Arc<Flights<u32>>, calls: Arc<AtomicU32>| async move {
            flights
                .run("k".into(), async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    calls.fetch_add(1, Ordering::SeqCst) + 1
                })
                .await
        };
        let results = futures_util::future::join_all(
            (0..20).map(|_| tokio::spawn(run(flights.clone(), calls.clone()))),
        )
        .await;
        let leaders = results.iter().filter(|r| r.as_ref().unwrap().1).count();
        assert_eq!(leaders, 1);
        assert!(results.iter().all(|r| r.as_ref().unwrap().0 == 1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Over: the next caller makes a call of its own.
        assert_eq!(run(flights.clone(), calls.clone()).await, (2, true));
        assert_eq!(format!("{flights:?}"), "Flights { in_flight: 0 }");
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let flights = Arc::new(Flights::<u32>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k".into(), async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k".into(), async { 2 }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        assert_eq!(waiter.await.unwrap(), (2, true));
    }
}
