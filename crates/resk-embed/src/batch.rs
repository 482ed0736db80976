//! Micro-batching: concurrent `embed` calls (one query each, on the lookup path) share provider
//! calls.
//!
//! A forward pass of a local model over eight sentences costs far less than eight passes over one
//! (matrix products use the cores better), and a remote provider bills and rate-limits per call. So
//! the [`MicroBatcher`] queues callers and hands the provider one call per batch.
//!
//! The batching adapts to load: a batch is sent as soon as a provider slot is free (`in_flight`
//! calls at most), and it holds whatever queued while the slots were busy. A lone caller on an idle
//! server waits for nothing (plus `window`, zero by default); under load, batches grow by
//! themselves. This is the scheme of Triton's dynamic batcher and of NVIDIA's and Hugging Face's
//! text-embeddings-inference queue, not a fixed timer that every request pays. One addition of
//! resk's own: with a `busy_window`, a batch formed under load also waits briefly for the callers
//! it expects (those the previous batch answered), so callers that come straight back share calls
//! instead of taking turns.
//!
//! Written here rather than taken from a crate: the batching crates on crates.io (`batched-fn`,
//! `tokio-batch`) either run one fixed window per batch or are unmaintained, and the logic is a short
//! loop over a tokio channel and semaphore.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use resk_core::{Embedder, EmbedderInfo, Embedding, Error, ErrorKind, Result};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;

/// How a [`MicroBatcher`] groups calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicroBatchConfig {
    /// Provider calls in flight at once; while all are busy, callers queue and form the next batch.
    pub in_flight: usize,
    /// Most texts in one batch (a caller's texts are never split between batches).
    pub max_batch: usize,
    /// Extra time a batch waits for more callers once a slot is free (zero: send at once).
    pub window: Duration,
    /// Under load, how long a batch may wait for the callers it expects: as many as the previous
    /// batch answered plus those that queued while it ran (zero: never wait for them).
    ///
    /// Without it, two callers that each send their next query as soon as they have an answer
    /// take turns: each call carries one text while the other caller queues behind it, so two
    /// callers get one caller's throughput at twice its latency. Waiting a little for the caller
    /// that was just answered lets them share calls. A lone caller is never kept waiting (its
    /// previous batch answered only itself), and the wait ends as soon as the expected callers
    /// are in. Zero by default here; resk-server sets 2 ms (`EMBEDDING_BATCH_BUSY_WINDOW_MS`).
    pub busy_window: Duration,
}

impl Default for MicroBatchConfig {
    fn default() -> Self {
        Self {
            in_flight: 1,
            max_batch: 64,
            window: Duration::ZERO,
            busy_window: Duration::ZERO,
        }
    }
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Embedding>>>,
    /// The caller's span: a batch's provider call runs in its first caller's span, so a traced
    /// provider request (a `traceparent`) joins that caller's trace.
    span: tracing::Span,
}

/// An [`Embedder`] that groups concurrent calls into shared calls of its inner embedder.
///
/// Each caller gets its own vectors, in its order, or a copy of the shared call's error. A call
/// with `max_batch` texts or more goes straight to the inner embedder. The queue's worker is a tokio
/// task started by the first call; if its runtime is gone, calls go straight to the inner embedder.
///
/// ```
/// # use resk_core::{Embedder, EmbedderInfo, Embedding, Result};
/// # #[derive(Debug)] struct Len(EmbedderInfo);
/// # impl Embedder for Len {
/// #     fn info(&self) -> &EmbedderInfo { &self.0 }
/// #     async fn embed(&self, t: &[String]) -> Result<Vec<Embedding>> {
/// #         Ok(t.iter().map(|s| vec![s.len() as f32]).collect()) }
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use resk_embed::{MicroBatchConfig, MicroBatcher};
/// let batcher = MicroBatcher::new(Len(EmbedderInfo::new("toy", "len", 1, 8)), MicroBatchConfig::default());
/// let (one, three) = (vec!["one".to_owned()], vec!["three".to_owned()]);
/// let (a, b) = tokio::join!(batcher.embed(&one), batcher.embed(&three));
/// assert_eq!((a.unwrap(), b.unwrap()), (vec![vec![3.0]], vec![vec![5.0]]));
/// # });
/// ```
pub struct MicroBatcher<E> {
    inner: Arc<E>,
    config: MicroBatchConfig,
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl<E> std::fmt::Debug for MicroBatcher<E>
where
    E: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroBatcher")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<E: Embedder> MicroBatcher<E> {
    /// Wrap `inner`.
    pub fn new(inner: E, config: MicroBatchConfig) -> Self {
        let config = MicroBatchConfig {
            in_flight: config.in_flight.max(1),
            max_batch: config.max_batch.max(1),
            ..config
        };
        Self {
            inner: Arc::new(inner),
            config,
            queue: OnceLock::new(),
        }
    }

    /// The queue, starting its worker on the current runtime the first time (`None` outside one).
    fn queue(&self) -> Option<&mpsc::UnboundedSender<Job>> {
        if let Some(queue) = self.queue.get() {
            return Some(queue);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            runtime.spawn(work(self.inner.clone(), rx, self.config));
            tx
        }))
    }
}

impl<E: Embedder> Embedder for MicroBatcher<E> {
    fn info(&self) -> &EmbedderInfo {
        self.inner.info()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        if texts.is_empty() || texts.len() >= self.config.max_batch {
            return self.inner.embed(texts).await;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            texts: texts.to_vec(),
            reply,
            span: tracing::Span::current(),
        };
        let Some(Ok(())) = self.queue().map(|q| q.send(job)) else {
            // No runtime to run the worker on, or its runtime has shut down.
            return self.inner.embed(texts).await;
        };
        answer.await.map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                self.inner.info().provider,
                "embed",
                "the embedding batch was dropped before it answered (runtime shutting down)",
            )
        })?
    }
}

/// The worker: wait for a free slot, take the first queued job and whatever else is queued (or
/// arrives within the window, or, under load, within the busy window until the expected callers
/// are in), and send them as one call.
async fn work<E: Embedder>(
    inner: Arc<E>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    config: MicroBatchConfig,
) {
    let slots = Arc::new(Semaphore::new(config.in_flight));
    // Callers in the previous batch (with one slot: the ones it just answered).
    let mut previous = 0;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Callers already queued when the slot came free waited behind the previous batch.
        let (first, mut queued) = match queue.try_recv() {
            Ok(job) => (job, 1),
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => match queue.recv().await {
                Some(job) => (job, 0),
                None => return,
            },
        };
        let mut size = first.texts.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + config.window;
        while size < config.max_batch {
            let next = match queue.try_recv() {
                Ok(job) => {
                    queued += 1;
                    Some(job)
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if config.window.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, queue.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            let Some(job) = next else { break };
            size += job.texts.len();
            jobs.push(job);
        }
        if !config.busy_window.is_zero() {
            // Under load, the callers just answered are likely to come back at once (each
            // sends its next query when it has its answer): wait a little for them.
            let expected = previous + queued;
            let deadline = tokio::time::Instant::now() + config.busy_window;
            while jobs.len() < expected && size < config.max_batch {
                let Ok(Some(job)) = tokio::time::timeout_at(deadline, queue.recv()).await else {
                    break;
                };
                size += job.texts.len();
                jobs.push(job);
            }
        }
        previous = jobs.len();
        let inner = inner.clone();
        let span = jobs[0].span.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                answer(&*inner, jobs).await;
            }
            .instrument(span),
        );
    }
}

/// One call for `jobs`; each gets its share of the vectors, or a copy of the error.
async fn answer<E: Embedder>(inner: &E, jobs: Vec<Job>) {
    // A caller that gave up (a client that hung up) is not embedded.
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    if jobs.is_empty() {
        return;
    }
    let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
    metrics::histogram!("resk_embed_batch_texts", "provider" => inner.info().provider)
        .record(texts.len() as f64);
    match inner.embed(&texts).await {
        Ok(vectors) if vectors.len() == texts.len() => {
            let mut vectors = vectors.into_iter();
            for job in jobs {
                let mine: Vec<Embedding> = vectors.by_ref().take(job.texts.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Ok(vectors) => {
            let err = Error::new(
                ErrorKind::Backend,
                inner.info().provider,
                "embed",
                format!(
                    "the provider returned {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                ),
            );
            for job in jobs {
                let _ = job.reply.send(Err(err.replicate()));
            }
        }
        Err(err) => {
            // One caller's bad text must not fail its neighbours: retry each caller alone.
            if err.kind() == ErrorKind::InvalidInput && jobs.len() > 1 {
                for job in jobs {
                    let _ = job.reply.send(inner.embed(&job.texts).await);
                }
                return;
            }
            for job in jobs {
                let _ = job.reply.send(Err(err.replicate()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Records each call's size; takes 20 ms per call so concurrent callers overlap.
    #[derive(Debug)]
    struct Recording {
        info: EmbedderInfo,
        calls: Mutex<Vec<usize>>,
        running: AtomicUsize,
        most_running: AtomicUsize,
    }

    impl Recording {
        fn new() -> Self {
            Self {
                info: EmbedderInfo::new("rec", "m", 1, 1000),
                calls: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                most_running: AtomicUsize::new(0),
            }
        }
    }

    impl Embedder for Recording {
        fn info(&self) -> &EmbedderInfo {
            &self.info
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
            self.info.check_texts(texts)?;
            self.calls.lock().unwrap().push(texts.len());
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if texts.iter().any(|t| t == "down") {
                return Err(Error::new(ErrorKind::Unavailable, "rec", "embed", "down"));
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    fn batcher(config: MicroBatchConfig) -> Arc<MicroBatcher<Recording>> {
        Arc::new(MicroBatcher::new(Recording::new(), config))
    }

    async fn concurrently(
        b: &Arc<MicroBatcher<Recording>>,
        texts: Vec<Vec<String>>,
    ) -> Vec<Result<Vec<Embedding>>> {
        let calls: Vec<_> = texts
            .into_iter()
            .map(|t| {
                let b = b.clone();
                tokio::spawn(async move { b.embed(&t).await })
            })
            .collect();
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    }

    /// 32 concurrent one-text calls: the first goes alone, the rest queue behind it and share a
    /// call; each caller gets its own vector; one call in flight at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_calls_and_keep_their_answers() {
        let b = batcher(MicroBatchConfig::default());
        let texts: Vec<Vec<String>> = (0..32).map(|i| vec!["x".repeat(i + 1)]).collect();
        let out = concurrently(&b, texts).await;
        for (i, r) in out.into_iter().enumerate() {
            assert_eq!(r.unwrap(), vec![vec![(i + 1) as f32]]);
        }
        let calls = b.inner.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 32);
        assert!(
            calls.len() <= 4,
            "32 callers made {} calls: {calls:?}",
            calls.len()
        );
        assert_eq!(b.inner.most_running.load(Ordering::SeqCst), 1);
    }

    /// A caller with several texts gets them back in order, next to others in the same batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_text_callers_keep_their_order() {
        let b = batcher(MicroBatchConfig::default());
        let texts = vec![
            vec!["a".into(), "bbb".into()],
            vec!["cc".into()],
            vec!["dddd".into(), "e".into(), "ffffff".into()],
        ];
        let out = concurrently(&b, texts).await;
        let out: Vec<_> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            out,
            vec![
                vec![vec![1.0], vec![3.0]],
                vec![vec![2.0]],
                vec![vec![4.0], vec![1.0], vec![6.0]]
            ]
        );
    }

    /// A lone caller on an idle batcher is sent at once (no window); with a window, callers a few
    /// milliseconds apart share one call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_window_gathers_callers_that_arrive_close_together() {
        let b = batcher(MicroBatchConfig::default());
        let t0 = tokio::time::Instant::now();
        assert_eq!(b.embed(&["one".into()]).await.unwrap(), vec![vec![3.0]]);
        assert!(t0.elapsed() < Duration::from_millis(200));

        let b = batcher(MicroBatchConfig {
            window: Duration::from_millis(100),
            ..MicroBatchConfig::default()
        });
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.embed(&["first".into()]).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = b.embed(&["second".into()]).await.unwrap();
        assert_eq!(second, vec![vec![6.0]]);
        assert_eq!(first.await.unwrap().unwrap(), vec![vec![5.0]]);
        assert_eq!(*b.inner.calls.lock().unwrap(), vec![2]);
    }

    /// Batches never exceed `max_batch`; `in_flight` slots run side by side.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_are_capped_and_slots_run_side_by_side() {
        let b = batcher(MicroBatchConfig {
            in_flight: 2,
            max_batch: 4,
            window: Duration::from_millis(5),
            ..MicroBatchConfig::default()
        });
        let out = concurrently(&b, (0..24).map(|i| vec![format!("t{i}")]).collect()).await;
        assert!(out.iter().all(Result::is_ok));
        let calls = b.inner.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|&n| n <= 4), "{calls:?}");
        assert_eq!(calls.iter().sum::<usize>(), 24);
        assert_eq!(b.inner.most_running.load(Ordering::SeqCst), 2);
        // A call as large as a batch goes straight through.
        let big: Vec<String> = (0..4).map(|i| format!("big{i}")).collect();
        assert_eq!(b.embed(&big).await.unwrap().len(), 4);
    }

    /// Two callers that each send their next text 2 ms after an answer (a client's round trip)
    /// share calls under a busy window instead of taking turns; a lone caller is never kept
    /// waiting by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_busy_window_groups_returning_callers_and_spares_a_lone_one() {
        let busy_window = Duration::from_millis(1500);
        let b = batcher(MicroBatchConfig {
            busy_window,
            ..MicroBatchConfig::default()
        });
        let t0 = tokio::time::Instant::now();
        for i in 0..3 {
            assert_eq!(
                b.embed(&["x".repeat(i + 1)]).await.unwrap(),
                vec![vec![(i + 1) as f32]]
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            t0.elapsed() < busy_window,
            "a lone caller waited: {:?}",
            t0.elapsed()
        );
        assert_eq!(*b.inner.calls.lock().unwrap(), vec![1, 1, 1]);

        let b = batcher(MicroBatchConfig {
            busy_window,
            ..MicroBatchConfig::default()
        });
        let callers: Vec<_> = ["a", "bb"]
            .into_iter()
            .map(|text| {
                let b = b.clone();
                tokio::spawn(async move {
                    for _ in 0..6 {
                        assert_eq!(
                            b.embed(&[text.to_owned()]).await.unwrap(),
                            vec![vec![text.len() as f32]]
                        );
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let calls = b.inner.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 12);
        // Taking turns would be 12 calls of one text; shared, 6 (plus one at each end).
        assert!(
            calls.len() <= 8,
            "two returning callers made {} calls: {calls:?}",
            calls.len()
        );
    }

    /// A provider failure reaches every caller of the batch; a blank text fails only its caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn errors_reach_their_callers_only() {
        let b = batcher(MicroBatchConfig {
            window: Duration::from_millis(50),
            ..MicroBatchConfig::default()
        });
        let out = concurrently(&b, vec![vec!["down".into()], vec!["fine".into()]]).await;
        for r in &out {
            assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::Unavailable);
        }

        let out = concurrently(&b, vec![vec!["  ".into()], vec!["fine".into()]]).await;
        assert_eq!(out[0].as_ref().unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(out[1].as_ref().unwrap(), &vec![vec![4.0]]);
    }

    /// Outside a runtime's reach the batcher still answers (straight through), and an empty call
    /// costs nothing.
    #[test]
    fn works_without_a_started_worker() {
        let b = MicroBatcher::new(Recording::new(), MicroBatchConfig::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(b.embed(&[])).unwrap().is_empty());
        assert_eq!(
            rt.block_on(b.embed(&["abc".into()])).unwrap(),
            vec![vec![3.0]]
        );
        drop(rt);
        // The worker's runtime is gone: a new runtime's call goes straight to the provider.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(b.embed(&["ab".into()])).unwrap(),
            vec![vec![2.0]]
        );
    }
}
