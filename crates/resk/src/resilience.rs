//! Circuit breakers and bulkheads around the dependencies a request waits on: the layer-2 cache
//! (Redis, SQLite), the embedding provider and the vector database.
//!
//! * **Circuit breaker** ([failsafe], a maintained implementation of the closed / open / half-open
//!   state machine, rather than another hand-written one): after `BREAKER_FAILURES` consecutive
//!   failures that say the dependency is unwell (unavailable, a backend error, rate limited), calls
//!   are refused at once for an open period (0.5 s, doubling with jitter up to `BREAKER_OPEN_SECS`),
//!   then let through again; the first success closes the breaker. While open, a lookup answers
//!   from layer 1 or as a degraded miss without waiting for a timeout, and a write gets a prompt 503.
//! * **Bulkhead**: at most `BULKHEAD_MAX_IN_FLIGHT` calls to one dependency at a time; a call beyond
//!   it is refused at once, so a slow dependency cannot hold every request of the server.
//!
//! Both refusals are `ErrorKind::Unavailable` errors, handled like any outage of the dependency, and
//! counted in `resk_dependency_rejections_total{dependency, reason}`; the state of each breaker is the
//! gauge `resk_circuit_breaker_open{dependency}` (1 open, 0 closed or probing).

use std::{
    future::Future,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use failsafe::{Instrument, StateMachine, failure_policy::ConsecutiveFailures};
use resk_core::{
    BackendInfo, CacheKey, CacheStore, CachedValue, Error, ErrorKind, PurgeScope, Result,
    ScanCursor, ScanPage, SetOptions,
};
use tokio::sync::Semaphore;

/// Settings of the breakers and bulkheads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResilienceConfig {
    /// Consecutive failures that open a breaker; 0 turns breakers off.
    pub breaker_failures: u32,
    /// Longest a breaker stays open before letting calls through again.
    pub breaker_max_open: Duration,
    /// Most calls in flight to one dependency.
    pub max_in_flight: usize,
}

impl Default for ResilienceConfig {
    /// 5 failures, open up to 2 s, 256 calls in flight.
    fn default() -> Self {
        Self {
            breaker_failures: 5,
            breaker_max_open: Duration::from_secs(2),
            max_in_flight: 256,
        }
    }
}

/// Shortest open period of a breaker.
const MIN_OPEN: Duration = Duration::from_millis(500);

type Breaker = StateMachine<ConsecutiveFailures<OpenPeriods>, Signals>;

/// The open periods of a breaker: from `start`, doubling up to `max`, each with equal jitter (half
/// fixed, half random), so instances do not probe a recovering dependency in step. failsafe's own
/// backoffs count whole seconds (and assert at least one), too coarse for a 0.5 s first period.
#[derive(Clone, Debug)]
struct OpenPeriods {
    next: Duration,
    max: Duration,
}

impl Iterator for OpenPeriods {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let period = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let half = period / 2;
        Some(half + half.mul_f64(fastrand::f64()))
    }
}

/// Breaker states, as [`Signals`] records them.
const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Logs and metrics of one breaker's state changes, and the state itself: failsafe lets every call
/// through while half-open, and [`Guard::call`] lets only one.
#[derive(Clone, Debug)]
struct Signals {
    dependency: &'static str,
    state: Arc<AtomicU8>,
}

impl Instrument for Signals {
    fn on_call_rejected(&self) {
        metrics::counter!("resk_dependency_rejections_total", "dependency" => self.dependency, "reason" => "circuit_open")
            .increment(1);
    }

    fn on_open(&self) {
        self.state.store(OPEN, Ordering::SeqCst);
        metrics::gauge!("resk_circuit_breaker_open", "dependency" => self.dependency).set(1.0);
        tracing::warn!(
            dependency = self.dependency,
            "circuit breaker open: calls are refused at once for a moment"
        );
    }

    fn on_half_open(&self) {
        self.state.store(HALF_OPEN, Ordering::SeqCst);
        metrics::gauge!("resk_circuit_breaker_open", "dependency" => self.dependency).set(0.0);
    }

    /// failsafe also calls this when a breaker is built (closed from the start): only a breaker
    /// that was open or half-open is logged as closing.
    fn on_closed(&self) {
        let was = self.state.swap(CLOSED, Ordering::SeqCst);
        metrics::gauge!("resk_circuit_breaker_open", "dependency" => self.dependency).set(0.0);
        if was != CLOSED {
            tracing::info!(dependency = self.dependency, "circuit breaker closed");
        }
    }
}

/// The breakers alive in this process, by dependency (weak: a dropped guard leaves the list).
/// Process-wide, not per [`Cache`](crate::Cache): breakers are built deep inside wrappers that
/// know no cache, and an operator asks "what is open on this instance".
static LIVE: Mutex<Vec<(&'static str, Weak<AtomicU8>)>> = Mutex::new(Vec::new());

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused at once.
    Open,
    /// One probe call is let through.
    HalfOpen,
}

/// One breaker of [`breakers`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct BreakerStatus {
    /// The dependency it guards (`cache`, `embed`, `vector`, `upstream`, …).
    pub dependency: &'static str,
    /// Its state now.
    pub state: BreakerState,
}

/// Every circuit breaker alive in this process, with its state (a dependency may have several: one
/// per store of a tiered stack, say).
pub fn breakers() -> Vec<BreakerStatus> {
    let live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.iter()
        .filter_map(|(dependency, state)| {
            let state = match state.upgrade()?.load(Ordering::SeqCst) {
                OPEN => BreakerState::Open,
                HALF_OPEN => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            };
            Some(BreakerStatus { dependency, state })
        })
        .collect()
}

/// The breaker and bulkhead of one dependency.
#[derive(Clone)]
pub(crate) struct Guard {
    dependency: &'static str,
    breaker: Option<Breaker>,
    /// The breaker's state (shared with its [`Signals`]).
    state: Arc<AtomicU8>,
    /// A half-open breaker's probe call is in flight.
    probing: Arc<AtomicBool>,
    bulkhead: Arc<Semaphore>,
}

/// Clears [`Guard::probing`] when the probe ends, finished or cancelled.
struct Probe(Arc<AtomicBool>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("dependency", &self.dependency)
            .field("breaker", &self.breaker.is_some())
            .field("available", &self.bulkhead.available_permits())
            .finish()
    }
}

/// Whether `err` says the dependency is unwell (as opposed to a bad request or a missing entry).
fn counts_against(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Unavailable | ErrorKind::Backend | ErrorKind::RateLimited
    )
}

impl Guard {
    /// The guard of `dependency` (a metric label: `cache`, `embed`, `vector`).
    pub(crate) fn new(dependency: &'static str, config: ResilienceConfig) -> Self {
        let state = Arc::new(AtomicU8::new(CLOSED));
        let breaker = (config.breaker_failures > 0).then(|| {
            let backoff = OpenPeriods {
                next: MIN_OPEN.min(config.breaker_max_open),
                max: config.breaker_max_open,
            };
            failsafe::Config::new()
                .failure_policy(failsafe::failure_policy::consecutive_failures(
                    config.breaker_failures,
                    backoff,
                ))
                .instrument(Signals {
                    dependency,
                    state: state.clone(),
                })
                .build()
        });
        metrics::gauge!("resk_circuit_breaker_open", "dependency" => dependency).set(0.0);
        if breaker.is_some() {
            let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
            live.retain(|(_, state)| state.strong_count() > 0);
            live.push((dependency, Arc::downgrade(&state)));
        }
        Self {
            dependency,
            breaker,
            state,
            probing: Arc::new(AtomicBool::new(false)),
            bulkhead: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        }
    }

    /// Run `call` (operation `op` of the dependency) unless the breaker is open or the bulkhead
    /// full, and record its outcome with the breaker.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let refused = || {
            Error::new(
                ErrorKind::Unavailable,
                self.dependency,
                op,
                "circuit breaker open after repeated failures; retrying shortly",
            )
        };
        if let Some(breaker) = &self.breaker
            && !breaker.is_call_permitted()
        {
            return Err(refused());
        }
        // Half-open: one call probes the dependency, the others are refused until it answers.
        let _probe = if self.state.load(Ordering::SeqCst) == HALF_OPEN {
            if self.probing.swap(true, Ordering::SeqCst) {
                metrics::counter!("resk_dependency_rejections_total", "dependency" => self.dependency, "reason" => "circuit_open")
                    .increment(1);
                return Err(refused());
            }
            Some(Probe(self.probing.clone()))
        } else {
            None
        };
        let Ok(_permit) = self.bulkhead.try_acquire() else {
            metrics::counter!("resk_dependency_rejections_total", "dependency" => self.dependency, "reason" => "bulkhead_full")
                .increment(1);
            return Err(Error::new(
                ErrorKind::Unavailable,
                self.dependency,
                op,
                "too many calls in flight to this dependency",
            ));
        };
        let out = call.await;
        if let Some(breaker) = &self.breaker {
            match &out {
                Err(err) if counts_against(err) => breaker.on_error(),
                _ => breaker.on_success(),
            }
        }
        out
    }
}

/// A cache store behind a circuit breaker and a bulkhead (dependency label `cache`). `ping`
/// (readiness) goes straight to the store, so a readiness check tells the store's real state even
/// while the breaker refuses calls.
#[derive(Debug)]
pub struct GuardedStore<S> {
    inner: S,
    guard: Guard,
}

impl<S: CacheStore> GuardedStore<S> {
    /// `inner` behind a breaker and bulkhead set by `config`.
    pub fn new(inner: S, config: ResilienceConfig) -> Self {
        Self {
            inner,
            guard: Guard::new("cache", config),
        }
    }
}

#[deny(clippy::missing_trait_methods)]
impl<S: CacheStore> CacheStore for GuardedStore<S> {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<CachedValue>> {
        self.guard.call("get", self.inner.get(key)).await
    }

    async fn set(&self, key: &CacheKey, value: Bytes, options: SetOptions) -> Result<bool> {
        self.guard
            .call("set", self.inner.set(key, value, options))
            .await
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        self.guard.call("delete", self.inner.delete(key)).await
    }

    async fn purge(&self, scope: &PurgeScope) -> Result<u64> {
        self.guard.call("purge", self.inner.purge(scope)).await
    }

    fn ping(&self) -> impl Future<Output = Result<()>> + Send {
        self.inner.ping()
    }

    async fn scan(
        &self,
        scope: &PurgeScope,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        self.guard
            .call("scan", self.inner.scan(scope, cursor, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn down() -> Result<()> {
        Err(Error::new(ErrorKind::Unavailable, "x", "op", "down"))
    }

    /// A call through `guard` that hangs until the sender is used (a dependency timing out).
    fn held_call(
        guard: &Guard,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let guard = guard.clone();
        let call = tokio::spawn(async move {
            guard
                .call("op", async {
                    let _ = rx.await;
                    Ok(())
                })
                .await
        });
        (tx, call)
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_closes_on_success() {
        let guard = Guard::new(
            "test",
            ResilienceConfig {
                breaker_failures: 3,
                breaker_max_open: Duration::from_millis(50),
                max_in_flight: 8,
            },
        );
        let calls = AtomicU32::new(0);
        let failing = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            down()
        };
        for _ in 0..3 {
            assert!(guard.call("op", failing()).await.is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Open: refused without calling.
        let refused = guard.call("op", failing()).await.unwrap_err();
        assert!(
            refused.message().contains("circuit breaker open"),
            "{refused}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // After the open period a call goes through; its success closes the breaker.
        tokio::time::sleep(Duration::from_millis(60)).await;
        guard.call("op", async { Ok(()) }).await.unwrap();
        guard.call("op", async { Ok(()) }).await.unwrap();
    }

    #[tokio::test]
    async fn a_half_open_breaker_lets_one_probe_through() {
        let guard = Guard::new(
            "test",
            ResilienceConfig {
                breaker_failures: 1,
                breaker_max_open: Duration::from_millis(20),
                max_in_flight: 8,
            },
        );
        assert!(guard.call("op", async { down() }).await.is_err());
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The probe hangs (a dependency timing out); meanwhile every other call is refused at once.
        let (tx, probe) = held_call(&guard);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = guard.call("op", async { Ok(()) }).await.unwrap_err();
        assert!(refused.message().contains("circuit breaker"), "{refused}");
        // The probe succeeds: closed again, calls go through.
        tx.send(()).unwrap();
        probe.await.unwrap().unwrap();
        guard.call("op", async { Ok(()) }).await.unwrap();
    }

    #[tokio::test]
    async fn client_mistakes_do_not_open_it() {
        let guard = Guard::new(
            "test",
            ResilienceConfig {
                breaker_failures: 2,
                ..ResilienceConfig::default()
            },
        );
        for _ in 0..5 {
            let err = guard
                .call("op", async {
                    Err::<(), _>(Error::new(ErrorKind::InvalidInput, "x", "op", "bad"))
                })
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
        guard.call("op", async { Ok(()) }).await.unwrap();
    }

    #[tokio::test]
    async fn the_bulkhead_refuses_beyond_its_size() {
        let guard = Guard::new(
            "test",
            ResilienceConfig {
                max_in_flight: 1,
                ..ResilienceConfig::default()
            },
        );
        let (tx, held) = held_call(&guard);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = guard.call("op", async { Ok(()) }).await.unwrap_err();
        assert!(refused.message().contains("in flight"), "{refused}");
        tx.send(()).unwrap();
        held.await.unwrap().unwrap();
        guard.call("op", async { Ok(()) }).await.unwrap();
    }

    #[test]
    fn open_periods_double_up_to_the_maximum_with_jitter() {
        let periods: Vec<Duration> = OpenPeriods {
            next: Duration::from_millis(500),
            max: Duration::from_secs(2),
        }
        .take(6)
        .collect();
        let bounds = [500, 1000, 2000, 2000, 2000, 2000];
        for (period, max) in periods.iter().zip(bounds) {
            let max = Duration::from_millis(max);
            assert!(*period >= max / 2 && *period <= max, "{periods:?}");
        }
    }

    #[test]
    fn zero_failures_turns_the_breaker_off() {
        let guard = Guard::new(
            "test",
            ResilienceConfig {
                breaker_failures: 0,
                ..ResilienceConfig::default()
            },
        );
        assert!(guard.breaker.is_none());
    }
}
