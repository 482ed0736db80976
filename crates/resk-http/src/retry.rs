//! Exponential backoff with full jitter, honouring a provider's `Retry-After`.

use std::{future::Future, time::Duration};

use resk_core::Result;

/// How often and how patiently transient failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// The first backoff ceiling; doubled per attempt.
    pub base: Duration,
    /// The largest wait between attempts, including a `Retry-After` the provider asked for.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based): the provider's `Retry-After` when it gave one,
    /// else a uniformly random duration in `[0, min(max, base · 2^attempt)]` ("full jitter"), so many
    /// clients that failed together do not retry together.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max);
        }
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    /// Run `op` until it succeeds, fails with a non-retryable error, or the retries are spent.
    pub async fn run<T, F, Fut>(&self, provider: &'static str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_retryable() && attempt < self.max_retries => {
                    let wait = self.backoff(attempt, err.retry_after());
                    metrics::counter!("resk_provider_retries_total", "provider" => provider)
                        .increment(1);
                    tracing::debug!(provider, attempt, ?wait, error = %err, "retrying a provider call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicU32, Ordering};

    use resk_core::{Error, ErrorKind};

    use super::*;

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(100 * (1u64 << attempt.min(10))).min(p.max);
            assert!(p.backoff(attempt, None) <= ceiling);
        }
        assert_eq!(
            p.backoff(0, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(p.backoff(0, Some(Duration::from_secs(60))), p.max);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_then_succeeds_and_stops_on_bad_input() {
        let p = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let out = p
            .run("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::new(ErrorKind::Unavailable, "test", "embed", "503"))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((out, calls.load(Ordering::SeqCst)), (7, 3));

        let calls = AtomicU32::new(0);
        let err = p
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::new(ErrorKind::InvalidInput, "test", "embed", "400"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "bad input is never retried"
        );

        let calls = AtomicU32::new(0);
        let err = p
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::new(ErrorKind::RateLimited, "test", "embed", "429"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert_eq!(calls.load(Ordering::SeqCst), 1 + p.max_retries);
    }
}
