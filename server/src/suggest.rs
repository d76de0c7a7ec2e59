//! The completion pipeline shared by the front ends (LSP and HTTP): from a
//! [`CompletionContext`] to the texts to offer.
//!
//! plan → typed-through cache → backend (prompt + generation) → finish. The front
//! ends own everything about their protocol (documents, versions, cancellation by
//! the client); this module owns what is the same for all of them.
//!
//! After an answer, [`Suggester::prefetch`] asks the backend for the answer at the
//! position the user reaches by accepting it (llama.vim's "speculative FIM"), and puts
//! it in the typed-through cache, so that accepting and asking again is answered from
//! memory.
//!
//! Invariants:
//! - An answer found in the [`TypedThrough`] cache never reaches the backend.
//! - Every request that reaches [`Suggester::suggest`] gets its latency recorded,
//!   whatever the outcome, so the percentiles in `inkling/stats` cover all of them.
//! - A prefetch never makes a request wait for it: a request that needs the backend
//!   cancels it (the backend notices before its next decode call), unless the
//!   request asks for the very context the prefetch is computing, in which case it
//!   waits for that answer instead. At most one prefetch is in flight, and none
//!   starts while a request is at the backend: both are decided under one lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inkling_core::context::CompletionContext;
use inkling_core::generate::{
    Backend, BackendError, CancelFlag, CompletionRequest, Generation, TextSink,
};
use inkling_core::lock;
use inkling_core::postprocess::{self, StopRules, Trigger};
use inkling_core::typed_through::TypedThrough;
use tokio::sync::watch;

use crate::config::Settings;

/// One completion asked for by a front end.
#[derive(Debug)]
pub struct Ask {
    /// The text around the cursor.
    pub context: CompletionContext,
    /// How the request was triggered.
    pub trigger: Trigger,
    /// Set when the front end no longer wants the answer.
    pub cancel: CancelFlag,
    /// The document (its URI): the backend keeps one warm cache per document.
    pub document: String,
    /// Receives the text generated so far, as it grows (before post-processing).
    pub partial: Option<TextSink>,
    /// Most tokens to generate, when less than the configured limit; 0 only brings
    /// the prompt into the backend's cache.
    pub max_tokens: Option<u32>,
    /// Time the front end spent on the context (part of the prompt's assembly).
    pub assembly_time: Duration,
}

/// The texts to offer at a position, best first: the full answer, then (for invoked
/// multi-line answers) its first line alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The suggestions.
    pub texts: Vec<String>,
    /// What the model did; `None` when the answer came from the typed-through cache.
    pub generation: Option<Generation>,
}

/// Why a request got no answer at all (as opposed to an empty one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuggestError {
    /// The request was cancelled or superseded.
    Cancelled,
    /// A stage failed; the message says how.
    Failed(String),
}

/// Latency percentiles over the most recent requests, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Requests the percentiles are computed over.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// How many recent latencies are kept for the percentiles.
const LATENCY_WINDOW: usize = 1000;

/// Recent request latencies, oldest overwritten first.
#[derive(Debug, Default)]
struct LatencyLog {
    samples: Vec<Duration>,
    next: usize,
}

impl LatencyLog {
    fn record(&mut self, latency: Duration) {
        if self.samples.len() < LATENCY_WINDOW {
            self.samples.push(latency);
        } else {
            self.samples[self.next] = latency;
        }
        self.next = (self.next + 1) % LATENCY_WINDOW;
    }

    fn percentiles(&self) -> Latency {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |p: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Latency {
            samples: sorted.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
        }
    }
}

/// What prefetching did (the backend counts its own work on prefetches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    /// Prefetches that left an answer in the typed-through cache.
    pub answers: u64,
    /// Requests answered from a prefetched answer (after accepting, or typing on).
    pub hits: u64,
}

/// The prefetch in flight: what it computes and how to stop or await it.
struct Prefetch {
    prefix: String,
    suffix: String,
    cancel: CancelFlag,
    /// Turns `true` when the prefetch has ended (answered or not).
    done: watch::Receiver<bool>,
}

/// The shared pipeline: the backend, the settings and what is remembered between
/// requests. One per server process, shared by all front ends.
pub struct Suggester<B> {
    backend: B,
    /// Replaced whole when the options the pipeline uses change.
    settings: Mutex<Arc<Settings>>,
    typed_through: Mutex<TypedThrough>,
    /// Requests answered from the typed-through cache.
    typed_through_hits: AtomicU64,
    latencies: Mutex<LatencyLog>,
    assembly: Mutex<LatencyLog>,
    prefetch: Mutex<PrefetchState>,
    prefetch_answers: AtomicU64,
    prefetch_hits: AtomicU64,
}

/// Prefetching's shared state, changed only under its lock, so that a prefetch
/// cannot slip in between a request's check and its arrival at the backend.
#[derive(Default)]
struct PrefetchState {
    in_flight: Option<Prefetch>,
    /// Requests at the backend now: no prefetch starts while there are any.
    at_backend: usize,
    /// Set at shutdown: no prefetch starts any more.
    closed: bool,
}

/// A request at the backend: counted in [`PrefetchState::at_backend`] while alive,
/// even when the future holding it is dropped.
struct AtBackend<'a>(&'a Mutex<PrefetchState>);

impl<'a> AtBackend<'a> {
    /// Counts a request in and stops the prefetch in flight, in one step.
    fn enter(state: &'a Mutex<PrefetchState>) -> AtBackend<'a> {
        let mut guard = lock(state);
        guard.at_backend += 1;
        if let Some(prefetch) = guard.in_flight.take() {
            prefetch.cancel.cancel();
        }
        AtBackend(state)
    }
}

impl Drop for AtBackend<'_> {
    fn drop(&mut self) {
        lock(self.0).at_backend -= 1;
    }
}

/// Runs a synchronous stage; a panic in it (a bug) fails this request instead of
/// ending the server, which tower-lsp does not guard against.
pub fn contain_panic<T>(stage: impl FnOnce() -> T) -> Result<T, SuggestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(stage)).map_err(|_| {
        tracing::error!("a completion stage panicked; the request is answered with an error");
        SuggestError::Failed("internal error".into())
    })
}

impl<B: Backend> Suggester<B> {
    /// The pipeline on `backend`.
    pub fn new(backend: B, settings: Settings) -> Suggester<B> {
        Suggester {
            backend,
            settings: Mutex::new(Arc::new(settings)),
            typed_through: Mutex::new(TypedThrough::default()),
            typed_through_hits: AtomicU64::new(0),
            latencies: Mutex::new(LatencyLog::default()),
            assembly: Mutex::new(LatencyLog::default()),
            prefetch: Mutex::new(PrefetchState::default()),
            prefetch_answers: AtomicU64::new(0),
            prefetch_hits: AtomicU64::new(0),
        }
    }

    /// The backend behind the pipeline.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The resolved settings.
    pub fn settings(&self) -> Arc<Settings> {
        lock(&self.settings).clone()
    }

    /// Uses `settings` from the next request on (those the backend was started with
    /// stay as they were: a change of them needs a new backend).
    pub fn set_settings(&self, settings: Settings) {
        *lock(&self.settings) = Arc::new(settings);
    }

    /// Latency percentiles over the most recent requests.
    pub fn latency(&self) -> Latency {
        lock(&self.latencies).percentiles()
    }

    /// Percentiles of the time to assemble a prompt (context, then layout and
    /// tokenization in the backend), over requests that reached the backend.
    pub fn assembly_latency(&self) -> Latency {
        lock(&self.assembly).percentiles()
    }

    /// Requests answered from the typed-through cache, without the backend.
    pub fn typed_through_hits(&self) -> u64 {
        self.typed_through_hits.load(Ordering::Relaxed)
    }

    /// What prefetching did.
    pub fn prefetch_stats(&self) -> PrefetchStats {
        PrefetchStats {
            answers: self.prefetch_answers.load(Ordering::Relaxed),
            hits: self.prefetch_hits.load(Ordering::Relaxed),
        }
    }

    /// An answer from the typed-through cache, counted.
    fn remembered(&self, context: &CompletionContext) -> Result<Option<Answer>, SuggestError> {
        let Some(hit) = contain_panic(|| lock(&self.typed_through).lookup(context))? else {
            return Ok(None);
        };
        self.typed_through_hits.fetch_add(1, Ordering::Relaxed);
        if hit.prefetched {
            self.prefetch_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(Answer {
            texts: vec![hit.text],
            generation: None,
        }))
    }

    /// Waits for the prefetch in flight if it computes `context` (and says whether it
    /// did), unless `cancel` is set first. Other prefetches are left to
    /// [`AtBackend::enter`] to stop.
    async fn await_prefetch_of(&self, context: &CompletionContext, cancel: &CancelFlag) -> bool {
        let done = lock(&self.prefetch).in_flight.as_ref().and_then(|p| {
            (p.prefix == context.prefix && p.suffix == context.suffix).then(|| p.done.clone())
        });
        let Some(mut done) = done else {
            return false;
        };
        let cancelled = async {
            while !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            // Ends when the prefetch does, or is cancelled by a newer request.
            _ = done.wait_for(|ended| *ended) => true,
            () = cancelled => false,
        }
    }

    /// Whether a prefetch could start now: the model is ready, no request is at the
    /// backend, and the server is not shutting down.
    pub fn may_prefetch(&self) -> bool {
        let state = lock(&self.prefetch);
        self.backend.is_ready() && state.at_backend == 0 && !state.closed
    }

    /// Stops the prefetch in flight, if any, and starts no more (at shutdown).
    pub fn cancel_prefetch(&self) {
        let mut state = lock(&self.prefetch);
        state.closed = true;
        if let Some(prefetch) = state.in_flight.take() {
            prefetch.cancel.cancel();
        }
    }

    /// Computes, in the background, the answer at `context` (where the user will be
    /// after accepting a suggestion) into the typed-through cache, unless it is there
    /// already or a request is at the backend. Cancelled by the next request that needs
    /// the backend.
    pub async fn prefetch(&self, context: CompletionContext, document: String) {
        if !self.may_prefetch() {
            return;
        }
        let settings = self.settings();
        let options = settings.postprocess;
        let Ok(Ok(plan)) =
            contain_panic(|| postprocess::plan(&context, Trigger::Automatic, options))
        else {
            return;
        };
        let known = contain_panic(|| lock(&self.typed_through).contains(&context));
        if known != Ok(false) {
            return;
        }
        let Ok(stop) = contain_panic(|| StopRules::new(&context, &plan, options)) else {
            return;
        };
        let cancel = CancelFlag::default();
        let (ended, done) = watch::channel(false);
        {
            let mut state = lock(&self.prefetch);
            if state.at_backend > 0 || state.closed {
                return;
            }
            let newer = Prefetch {
                prefix: context.prefix.clone(),
                suffix: context.suffix.clone(),
                cancel: cancel.clone(),
                done,
            };
            if let Some(older) = state.in_flight.replace(newer) {
                older.cancel.cancel();
            }
        }
        let (prompt_time_limit, generation_time_limit) =
            settings.time_limits.for_trigger(Trigger::Automatic);
        let request = CompletionRequest {
            context: context.clone(),
            stop: stop.clone(),
            max_tokens: settings.max_tokens,
            prompt_time_limit,
            generation_time_limit,
            cancel: cancel.clone(),
            document,
            partial: None,
            background: true,
        };
        if let Ok(generation) = self.backend.generate(request).await {
            let stored = contain_panic(|| {
                let text = postprocess::finish(&generation.text, &context, &stop)?;
                lock(&self.typed_through).remember_prefetched(&context, &text);
                Some(())
            });
            if matches!(stored, Ok(Some(()))) {
                self.prefetch_answers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut state = lock(&self.prefetch);
        if state
            .in_flight
            .as_ref()
            .is_some_and(|p| p.cancel.same_as(&cancel))
        {
            state.in_flight = None;
        }
        let _ = ended.send(true);
    }

    /// Computes the suggestion for `ask`: `Ok(None)` when there is none to give here
    /// (the position does not want one, the model is not ready, nothing useful came out).
    pub async fn suggest(&self, ask: Ask) -> Result<Option<Answer>, SuggestError> {
        let started = Instant::now();
        let result = self.suggest_untimed(ask).await;
        lock(&self.latencies).record(started.elapsed());
        result
    }

    async fn suggest_untimed(&self, ask: Ask) -> Result<Option<Answer>, SuggestError> {
        if !self.backend.is_ready() {
            return Ok(None);
        }
        let settings = self.settings();
        let options = settings.postprocess;
        let plan = match contain_panic(|| postprocess::plan(&ask.context, ask.trigger, options))? {
            Ok(plan) => plan,
            Err(skip) => {
                tracing::debug!(document = ask.document, ?skip, "no suggestion here");
                return Ok(None);
            }
        };
        if let Some(answer) = self.remembered(&ask.context)? {
            return Ok(Some(answer));
        }
        if self.await_prefetch_of(&ask.context, &ask.cancel).await
            && let Some(answer) = self.remembered(&ask.context)?
        {
            return Ok(Some(answer));
        }
        let stop = contain_panic(|| StopRules::new(&ask.context, &plan, options))?;
        let assembly_time = ask.assembly_time;
        let (prompt_time_limit, generation_time_limit) =
            settings.time_limits.for_trigger(ask.trigger);
        let request = CompletionRequest {
            context: ask.context.clone(),
            stop: stop.clone(),
            max_tokens: ask
                .max_tokens
                .map_or(settings.max_tokens, |n| n.min(settings.max_tokens)),
            prompt_time_limit,
            generation_time_limit,
            cancel: ask.cancel,
            document: ask.document,
            partial: ask.partial,
            background: false,
        };
        let at_backend = AtBackend::enter(&self.prefetch);
        let completed = self.backend.generate(request).await;
        drop(at_backend);
        let generation = match completed {
            Ok(generation) => {
                lock(&self.assembly).record(assembly_time + generation.build_time);
                generation
            }
            Err(BackendError::NotReady) => return Ok(None),
            Err(BackendError::Cancelled) => return Err(SuggestError::Cancelled),
            Err(e @ BackendError::Failed(_)) => {
                tracing::warn!("{e}");
                return Ok(None);
            }
        };
        let finished = contain_panic(|| {
            let text = postprocess::finish(&generation.text, &ask.context, &stop)?;
            lock(&self.typed_through).remember(&ask.context, &text);
            Some(text)
        })?;
        let Some(text) = finished else {
            return Ok(None);
        };
        let mut texts = vec![text];
        let first_line = texts[0].lines().next().unwrap_or_default().trim_end();
        if plan.alternatives && texts[0].contains('\n') && first_line.trim().chars().count() >= 2 {
            texts.push(first_line.to_owned());
        }
        Ok(Some(Answer {
            texts,
            generation: Some(generation),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    use inkling_core::context;
    use inkling_core::generate::StopReason;

    use crate::config::Overrides;

    /// A backend that answers every request with `answer`, holding each generation
    /// while `held` is true (until released or cancelled), and records what reached
    /// it. Clones share their state.
    #[derive(Clone)]
    struct Fake {
        answer: &'static str,
        /// Requests that reached the backend: their prefix, and whether background.
        seen: Arc<Mutex<Vec<(String, bool)>>>,
        held: Arc<watch::Sender<bool>>,
        ready: Arc<AtomicBool>,
    }

    impl Fake {
        fn new(answer: &'static str) -> Fake {
            Fake {
                answer,
                seen: Arc::default(),
                held: Arc::new(watch::Sender::new(false)),
                ready: Arc::new(AtomicBool::new(true)),
            }
        }

        fn seen(&self) -> Vec<(String, bool)> {
            lock(&self.seen).clone()
        }
    }

    impl Backend for Fake {
        fn is_ready(&self) -> bool {
            self.ready.load(Ordering::Relaxed)
        }

        async fn generate(&self, request: CompletionRequest) -> Result<Generation, BackendError> {
            lock(&self.seen).push((request.context.prefix.clone(), request.background));
            let mut held = self.held.subscribe();
            loop {
                if request.cancel.is_cancelled() {
                    return Err(BackendError::Cancelled);
                }
                if !*held.borrow_and_update() {
                    break;
                }
                tokio::select! {
                    _ = held.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            if let Some(partial) = &request.partial {
                partial.send(self.answer);
            }
            Ok(Generation {
                text: self.answer.to_owned(),
                prompt_tokens: 1,
                reused_tokens: 0,
                generated_tokens: 1,
                stop_reason: StopReason::EndOfGeneration,
                build_time: Duration::ZERO,
                prompt_time: Duration::ZERO,
                generation_time: Duration::ZERO,
            })
        }
    }

    const PREFIX: &str = "def add(a, b):\n    return ";

    fn pipeline(fake: &Fake) -> Arc<Suggester<Fake>> {
        let settings = Settings::resolve(Overrides::default()).0;
        Arc::new(Suggester::new(fake.clone(), settings))
    }

    fn ask(prefix: &str, cancel: &CancelFlag) -> Ask {
        Ask {
            context: context::from_parts(prefix, "\n", "python"),
            trigger: Trigger::Automatic,
            cancel: cancel.clone(),
            document: "file:///a.py".into(),
            partial: None,
            max_tokens: None,
            assembly_time: Duration::ZERO,
        }
    }

    /// Yields to the runtime until `done` holds (each step lets spawned tasks run).
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition not reached");
    }

    fn texts(answer: Result<Option<Answer>, SuggestError>) -> Vec<String> {
        answer.unwrap().map(|a| a.texts).unwrap_or_default()
    }

    #[tokio::test]
    async fn typing_into_an_answer_is_answered_from_memory() {
        let fake = Fake::new("a + b\n");
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        assert_eq!(
            texts(suggester.suggest(ask(PREFIX, &cancel)).await),
            ["a + b"]
        );
        let typed = format!("{PREFIX}a +");
        let answer = suggester
            .suggest(ask(&typed, &cancel))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.texts, [" b"]);
        assert!(answer.generation.is_none(), "the backend was asked again");
        assert_eq!(fake.seen().len(), 1);
        assert_eq!(suggester.typed_through_hits(), 1);
        assert_eq!(suggester.latency().samples, 2);
    }

    #[tokio::test]
    async fn a_backend_that_is_not_ready_is_not_asked() {
        let fake = Fake::new("a + b\n");
        fake.ready.store(false, Ordering::Relaxed);
        let suggester = pipeline(&fake);
        let answer = suggester.suggest(ask(PREFIX, &CancelFlag::default())).await;
        assert_eq!(answer, Ok(None));
        assert!(fake.seen().is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_request_ends_without_an_answer() {
        let fake = Fake::new("a + b\n");
        fake.held.send_replace(true);
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        let asking = tokio::spawn({
            let (suggester, cancel) = (suggester.clone(), cancel.clone());
            async move { suggester.suggest(ask(PREFIX, &cancel)).await }
        });
        until(|| fake.seen().len() == 1).await;
        assert!(
            !suggester.may_prefetch(),
            "a prefetch may start beside a request"
        );
        cancel.cancel();
        assert_eq!(asking.await.unwrap(), Err(SuggestError::Cancelled));
        // Nothing was remembered for the cancelled request.
        fake.held.send_replace(false);
        assert_eq!(
            texts(suggester.suggest(ask(PREFIX, &CancelFlag::default())).await),
            ["a + b"]
        );
        assert_eq!(fake.seen().len(), 2);
    }

    #[tokio::test]
    async fn a_request_for_the_prefetched_context_joins_the_prefetch() {
        let fake = Fake::new("a + b\n");
        fake.held.send_replace(true);
        let suggester = pipeline(&fake);
        let prefetching = tokio::spawn({
            let suggester = suggester.clone();
            async move {
                let context = context::from_parts(PREFIX, "\n", "python");
                suggester.prefetch(context, "file:///a.py".into()).await;
            }
        });
        until(|| fake.seen().len() == 1).await;
        let asking = tokio::spawn({
            let suggester = suggester.clone();
            async move { suggester.suggest(ask(PREFIX, &CancelFlag::default())).await }
        });
        // The request waits for the prefetch rather than asking the backend.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fake.seen(), [(PREFIX.to_owned(), true)]);
        fake.held.send_replace(false);
        prefetching.await.unwrap();
        assert_eq!(texts(asking.await.unwrap()), ["a + b"]);
        assert_eq!(fake.seen().len(), 1);
        let stats = suggester.prefetch_stats();
        assert_eq!((stats.answers, stats.hits), (1, 1));
    }

    #[tokio::test]
    async fn a_request_elsewhere_supersedes_the_prefetch() {
        let fake = Fake::new("a + b\n");
        fake.held.send_replace(true);
        let suggester = pipeline(&fake);
        let prefetching = tokio::spawn({
            let suggester = suggester.clone();
            async move {
                let context = context::from_parts("def other():\n    return ", "\n", "python");
                suggester.prefetch(context, "file:///a.py".into()).await;
            }
        });
        until(|| fake.seen().len() == 1).await;
        let asking = tokio::spawn({
            let suggester = suggester.clone();
            async move { suggester.suggest(ask(PREFIX, &CancelFlag::default())).await }
        });
        // The prefetch is cancelled at once and leaves nothing behind.
        prefetching.await.unwrap();
        assert_eq!(suggester.prefetch_stats().answers, 0);
        until(|| fake.seen().len() == 2).await;
        fake.held.send_replace(false);
        assert_eq!(texts(asking.await.unwrap()), ["a + b"]);
        assert_eq!(fake.seen()[1], (PREFIX.to_owned(), false));
    }

    #[tokio::test]
    async fn no_prefetch_starts_after_shutdown_or_for_a_known_answer() {
        let fake = Fake::new("a + b\n");
        let suggester = pipeline(&fake);
        let context = context::from_parts(PREFIX, "\n", "python");
        suggester
            .suggest(ask(PREFIX, &CancelFlag::default()))
            .await
            .unwrap();
        suggester
            .prefetch(context.clone(), "file:///a.py".into())
            .await;
        assert_eq!(fake.seen().len(), 1, "a remembered answer was prefetched");
        suggester.cancel_prefetch();
        let elsewhere = context::from_parts("x = ", "\n", "python");
        suggester.prefetch(elsewhere, "file:///a.py".into()).await;
        assert_eq!(fake.seen().len(), 1, "a prefetch started after shutdown");
    }

    #[tokio::test]
    async fn changed_settings_apply_to_the_next_request() {
        let fake = Fake::new("total");
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        // Comments get no suggestion by default: the backend is not asked.
        let answer = suggester.suggest(ask("# add the ", &cancel)).await;
        assert!(texts(answer).is_empty());
        assert!(fake.seen().is_empty());
        let mut settings = (*suggester.settings()).clone();
        settings.postprocess.in_comments = true;
        suggester.set_settings(settings);
        let answer = suggester.suggest(ask("# add the ", &cancel)).await;
        assert_eq!(texts(answer), ["total"]);
        assert_eq!(fake.seen(), [("# add the ".to_owned(), false)]);
    }

    #[tokio::test]
    async fn partial_text_reaches_the_sink() {
        let fake = Fake::new("a + b\n");
        let suggester = pipeline(&fake);
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut asked = ask(PREFIX, &CancelFlag::default());
        asked.partial = Some(TextSink::new({
            let received = received.clone();
            move |text| lock(&received).push(text.to_owned())
        }));
        suggester.suggest(asked).await.unwrap();
        assert_eq!(*lock(&received), ["a + b\n"]);
    }

    #[test]
    fn percentiles_cover_the_most_recent_window() {
        let mut log = LatencyLog::default();
        assert_eq!(log.percentiles().samples, 0);
        for ms in 1..=100 {
            log.record(Duration::from_millis(ms));
        }
        let latency = log.percentiles();
        assert_eq!(latency.samples, 100);
        assert!((latency.p50_ms - 51.0).abs() < 1e-9, "{latency:?}");
        assert!((latency.p95_ms - 95.0).abs() < 1e-9, "{latency:?}");
        for _ in 0..LATENCY_WINDOW {
            log.record(Duration::from_millis(7));
        }
        let latency = log.percentiles();
        assert_eq!(latency.samples, LATENCY_WINDOW);
        assert!((latency.p99_ms - 7.0).abs() < 1e-9, "{latency:?}");
    }
}
