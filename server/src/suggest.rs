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

use inkling_core::candidates;
use inkling_core::context::CompletionContext;
use inkling_core::generate::{
    Backend, BackendError, CancelFlag, CompletionRequest, Generation, StopReason, TextSink,
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
    /// The answer may end where the model is unsure (where, `Plan::stop_when_unsure`
    /// decides): the client asks again after an accept, as our editors do. HTTP
    /// clients (llama.vim, Zed, an inkling forwarding a request) take it as whole.
    pub may_stop_unsure: bool,
}

/// The texts to offer at a position, best first: the model's candidates (several for
/// invoked requests), then, when there is room, the first line alone of a multi-line
/// first answer.
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
    /// Prompts brought into the backend's cache without a request waiting.
    pub warmed: u64,
}

/// The prefetch in flight: what it computes and how to stop or await it.
struct Prefetch {
    prefix: String,
    suffix: String,
    cancel: CancelFlag,
    /// A warm (nothing generated): where the user is now, not a guess.
    warm: bool,
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
    /// Requests cancelled before they reached the backend.
    cancelled_before_backend: AtomicU64,
    /// Tokens generated for requests that got their generation, and those of them
    /// the suggestions were made of.
    answer_tokens: AnswerTokens,
    latencies: Mutex<LatencyLog>,
    assembly: Mutex<LatencyLog>,
    prefetch: Mutex<PrefetchState>,
    prefetch_answers: AtomicU64,
    prefetch_hits: AtomicU64,
    /// Prompts brought into the backend's cache by [`Suggester::warm`].
    warmed_prompts: AtomicU64,
    /// The context (and document) of the last request that ran out of time on its
    /// prompt or was answered from a short one, for [`Suggester::warm_unfinished`].
    unfinished: Mutex<Option<(CompletionContext, String)>>,
}

/// Tokens generated for requests (not prefetches) that got their generation, and
/// how many of them the suggestions shown were made of: the rest was generated for
/// nothing, past where post-processing cut.
#[derive(Debug, Default)]
pub struct AnswerTokens {
    /// Tokens generated.
    pub generated: AtomicU64,
    /// Tokens the suggestions were made of.
    pub shown: AtomicU64,
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

/// Counts a request as cancelled when dropped with `cancelled` still set, unless it
/// reached the backend (which counts its own cancellations).
struct Unanswered<'a> {
    cancelled: Option<&'a AtomicU64>,
    at_backend: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let (Some(cancelled), false) = (self.cancelled, self.at_backend) {
            cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Ends once `cancel` is set (checked every 10 ms).
async fn until_cancelled(cancel: &CancelFlag) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(10)).await;
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

/// Runs a synchronous stage on a blocking thread, a panic in it contained as by
/// [`contain_panic`]: building a context parses and walks the syntax tree, which a
/// huge or deeply nested file makes slow, and a runtime worker it held would hold up
/// the requests and notifications behind it.
pub async fn off_runtime<T: Send + 'static>(
    stage: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SuggestError> {
    tokio::task::spawn_blocking(move || contain_panic(stage))
        .await
        .unwrap_or_else(|_| Err(SuggestError::Failed("internal error".into())))
}

impl<B: Backend> Suggester<B> {
    /// The pipeline on `backend`.
    pub fn new(backend: B, settings: Settings) -> Suggester<B> {
        Suggester {
            backend,
            settings: Mutex::new(Arc::new(settings)),
            typed_through: Mutex::new(TypedThrough::default()),
            typed_through_hits: AtomicU64::new(0),
            cancelled_before_backend: AtomicU64::new(0),
            answer_tokens: AnswerTokens::default(),
            latencies: Mutex::new(LatencyLog::default()),
            assembly: Mutex::new(LatencyLog::default()),
            prefetch: Mutex::new(PrefetchState::default()),
            prefetch_answers: AtomicU64::new(0),
            prefetch_hits: AtomicU64::new(0),
            warmed_prompts: AtomicU64::new(0),
            unfinished: Mutex::new(None),
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

    /// Tokens generated for requests, and those the suggestions were made of.
    pub fn answer_tokens(&self) -> &AnswerTokens {
        &self.answer_tokens
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
            warmed: self.warmed_prompts.load(Ordering::Relaxed),
        }
    }

    /// An answer from the typed-through cache, counted; one cut where the model was
    /// unsure only if `may_stop_unsure`.
    fn remembered(
        &self,
        context: &CompletionContext,
        may_stop_unsure: bool,
    ) -> Result<Option<Answer>, SuggestError> {
        let Some(hit) = contain_panic(|| lock(&self.typed_through).lookup(context))? else {
            return Ok(None);
        };
        if hit.cut && !may_stop_unsure {
            return Ok(None);
        }
        self.typed_through_hits.fetch_add(1, Ordering::Relaxed);
        if hit.prefetched {
            self.prefetch_hits.fetch_add(1, Ordering::Relaxed);
        }
        // An empty hit: remembered that there is nothing to suggest here.
        let texts = if hit.text.is_empty() {
            Vec::new()
        } else {
            vec![hit.text]
        };
        Ok(Some(Answer {
            texts,
            generation: None,
        }))
    }

    /// The suggestion in `generation` (post-processed), remembered for `context` in
    /// the typed-through cache; when there is none and the generation ran to its
    /// natural end (not cut by a time limit), that there is nothing to suggest there.
    fn finish_and_remember(
        &self,
        generation: &Generation,
        context: &CompletionContext,
        stop: &StopRules,
        prefetched: bool,
    ) -> Result<Option<String>, SuggestError> {
        contain_panic(|| {
            let generated = generation.text_to_finish();
            let text = postprocess::finish(generated, context, stop);
            if !prefetched {
                let shown = postprocess::shown_len(generated, context, stop);
                let counts = &self.answer_tokens;
                let tokens = [generation.generated_tokens, generation.tokens_for(shown)];
                for (counter, tokens) in [&counts.generated, &counts.shown].into_iter().zip(tokens)
                {
                    counter.fetch_add(tokens as u64, Ordering::Relaxed);
                }
            }
            // Nothing left by post-processing is remembered as nothing to suggest
            // here, unless the answer was cut before the model said all it would.
            let cut_short = matches!(
                generation.stop_reason,
                StopReason::TimeLimit | StopReason::PromptTimeLimit | StopReason::Unsure
            );
            // An answer from a short prompt stands in until the full prompt is warm:
            // the keystrokes after it ask again rather than type through it.
            let remembered = match &text {
                _ if generation.short_prompt => None,
                Some(text) => Some(text.as_str()),
                None if !cut_short => Some(""),
                None => None,
            };
            if let Some(remembered) = remembered {
                let mut cache = lock(&self.typed_through);
                let cut = generation.stop_reason == StopReason::Unsure;
                if prefetched {
                    cache.remember_prefetched(context, remembered, cut);
                } else {
                    cache.remember(context, remembered, cut);
                }
            }
            text
        })
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
        tokio::select! {
            // Ends when the prefetch does, or is cancelled by a newer request.
            _ = done.wait_for(|ended| *ended) => true,
            () = until_cancelled(cancel) => false,
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
    /// the backend. Says whether it ran to the end (or had nothing to do).
    pub async fn prefetch(&self, context: CompletionContext, document: String) -> bool {
        // The prompt the last request in this document could not finish is warmed
        // first: a prefetch would run out of time on it too.
        let unfinished_here = lock(&self.unfinished)
            .as_ref()
            .is_some_and(|(_, unfinished)| *unfinished == document);
        if !self.may_prefetch() || unfinished_here {
            return false;
        }
        let settings = self.settings();
        let options = settings.postprocess;
        let Ok(Ok(plan)) =
            contain_panic(|| postprocess::plan(&context, Trigger::Automatic, options))
        else {
            return true;
        };
        let known = contain_panic(|| lock(&self.typed_through).contains(&context));
        if known != Ok(false) {
            return true;
        }
        let Ok(stop) = contain_panic(|| StopRules::new(&context, &plan, options)) else {
            return false;
        };
        let (prompt_time_limit, generation_time_limit) =
            settings.time_limits.for_trigger(Trigger::Automatic);
        let request = CompletionRequest {
            context: context.clone(),
            stop: stop.clone(),
            max_tokens: settings.max_tokens,
            prompt_time_limit,
            generation_time_limit,
            cancel: CancelFlag::default(),
            document,
            partial: None,
            background: true,
            keeps_cache: true,
            trigger: Trigger::Automatic,
            candidates: 1,
            suffix_rescoring: false,
            unbound_seeds: settings.unbound_names,
            stop_when_unsure: plan.stop_when_unsure,
        };
        let Some(generation) = self.run_in_background(request).await else {
            return false;
        };
        if let Ok(Some(_)) = self.finish_and_remember(&generation, &context, &stop, true) {
            self.prefetch_answers.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Brings the prompt at `context` into the backend's cache in the background
    /// (nothing is generated), so that the next request there decodes only what
    /// changed: for a document just opened, and for a prompt a request ran out of
    /// time on. Yields to requests exactly as a prefetch does; what it decoded before
    /// a request stopped it stays cached. Says whether it ran to the end.
    pub async fn warm(&self, context: CompletionContext, document: String) -> bool {
        if !self.may_prefetch() {
            return false;
        }
        let settings = self.settings();
        let options = settings.postprocess;
        let Ok(Ok(plan)) =
            contain_panic(|| postprocess::plan(&context, Trigger::Automatic, options))
        else {
            return false;
        };
        let Ok(stop) = contain_panic(|| StopRules::new(&context, &plan, options)) else {
            return false;
        };
        let request = CompletionRequest {
            context,
            stop,
            max_tokens: 0,
            prompt_time_limit: None,
            generation_time_limit: Duration::ZERO,
            cancel: CancelFlag::default(),
            document,
            partial: None,
            background: true,
            keeps_cache: false,
            trigger: Trigger::Automatic,
            candidates: 1,
            suffix_rescoring: false,
            unbound_seeds: false,
            stop_when_unsure: false,
        };
        let warmed = self.run_in_background(request).await.is_some();
        if warmed {
            self.warmed_prompts.fetch_add(1, Ordering::Relaxed);
        }
        warmed
    }

    /// Warms the prompt the last request ran out of time on, if it did (see
    /// [`Suggester::warm`]): the front ends call this after each request.
    pub async fn warm_unfinished(&self) {
        let unfinished = lock(&self.unfinished).clone();
        if let Some((context, document)) = unfinished
            && self.warm(context, document.clone()).await
        {
            let mut unfinished = lock(&self.unfinished);
            if unfinished.as_ref().is_some_and(|(_, d)| *d == document) {
                *unfinished = None;
            }
        }
    }

    /// Runs `request` as the one background job in flight (replacing an older one),
    /// unless a request is at the backend, the server is shutting down, or `request`
    /// is a prefetch and a warm is in flight: a warm follows the user (a file opened or
    /// focused), a prefetch guesses, maybe for the file the user just left. Its
    /// generation, when it ran to the end.
    async fn run_in_background(&self, request: CompletionRequest) -> Option<Generation> {
        let cancel = request.cancel.clone();
        let (ended, done) = watch::channel(false);
        {
            let mut state = lock(&self.prefetch);
            let warm = request.max_tokens == 0;
            let warm_in_flight = state.in_flight.as_ref().is_some_and(|p| p.warm);
            if state.at_backend > 0 || state.closed || !warm && warm_in_flight {
                return None;
            }
            let newer = Prefetch {
                prefix: request.context.prefix.clone(),
                suffix: request.context.suffix.clone(),
                cancel: cancel.clone(),
                warm,
                done,
            };
            if let Some(older) = state.in_flight.replace(newer) {
                older.cancel.cancel();
            }
        }
        let generation = self.backend.generate(request).await.ok();
        let mut state = lock(&self.prefetch);
        if state
            .in_flight
            .as_ref()
            .is_some_and(|p| p.cancel.same_as(&cancel))
        {
            state.in_flight = None;
        }
        let _ = ended.send(true);
        generation
    }

    /// Computes the suggestion for `ask`: `Ok(None)` when there is none to give here
    /// (the position does not want one, the model is not ready, nothing useful came out).
    pub async fn suggest(&self, ask: Ask) -> Result<Option<Answer>, SuggestError> {
        let started = Instant::now();
        // Counts the request cancelled if it ends so (or its future is dropped, on
        // `$/cancelRequest`) before the backend saw it: the backend counts the rest.
        let mut unanswered = Unanswered {
            cancelled: Some(&self.cancelled_before_backend),
            at_backend: false,
        };
        let result = self.suggest_untimed(ask, &mut unanswered.at_backend).await;
        if result != Err(SuggestError::Cancelled) {
            unanswered.cancelled = None;
        }
        lock(&self.latencies).record(started.elapsed());
        result
    }

    /// Counts a request its caller dropped or saw superseded before asking (while
    /// building its context).
    pub fn record_cancelled(&self) {
        self.cancelled_before_backend
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Requests cancelled before they reached the backend (waiting for the model to
    /// load, or for a prefetch of their position).
    pub fn cancelled_before_backend(&self) -> u64 {
        self.cancelled_before_backend.load(Ordering::Relaxed)
    }

    async fn suggest_untimed(
        &self,
        ask: Ask,
        at_backend: &mut bool,
    ) -> Result<Option<Answer>, SuggestError> {
        let settings = self.settings();
        let (mut prompt_time_limit, generation_time_limit) =
            settings.time_limits.for_trigger(ask.trigger);
        if !self.backend.is_ready() {
            // A request that comes while the model loads (Neovim asks once on entering
            // Insert mode, and not again) waits for the load, within its own time
            // budget. Its user is looking at the file meanwhile, so its prompt is then
            // decoded whole; a newer request still cancels it at once.
            let budget = prompt_time_limit.unwrap_or_default() + generation_time_limit;
            let ready = self.backend.ready_within(budget);
            let loaded = tokio::select! {
                ready = ready => ready,
                () = until_cancelled(&ask.cancel) => return Err(SuggestError::Cancelled),
            };
            if !loaded {
                return Ok(None);
            }
            prompt_time_limit = None;
        }
        let options = settings.postprocess;
        let plan = match contain_panic(|| postprocess::plan(&ask.context, ask.trigger, options))? {
            Ok(plan) => plan,
            Err(skip) => {
                tracing::debug!(document = ask.document, ?skip, "no suggestion here");
                return Ok(None);
            }
        };
        // Whole lines wanted (an invoked request, an HTTP client, `stopWhenUnsure`
        // off): a remembered answer cut where the model was unsure will not do.
        let may_stop_unsure = ask.may_stop_unsure && plan.stop_when_unsure;
        if let Some(answer) = self.remembered(&ask.context, may_stop_unsure)? {
            return Ok((!answer.texts.is_empty()).then_some(answer));
        }
        if self.await_prefetch_of(&ask.context, &ask.cancel).await
            && let Some(answer) = self.remembered(&ask.context, may_stop_unsure)?
        {
            return Ok((!answer.texts.is_empty()).then_some(answer));
        }
        let stop = contain_panic(|| StopRules::new(&ask.context, &plan, options))?;
        let assembly_time = ask.assembly_time;
        let document = ask.document.clone();
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
            keeps_cache: false,
            trigger: ask.trigger,
            candidates: match ask.trigger {
                Trigger::Invoked => settings.candidates,
                Trigger::Automatic => 1,
            },
            suffix_rescoring: ask.trigger == Trigger::Invoked && settings.suffix_rescoring,
            unbound_seeds: settings.unbound_names,
            stop_when_unsure: may_stop_unsure,
        };
        *at_backend = true;
        let at_backend = AtBackend::enter(&self.prefetch);
        let completed = self.backend.generate(request).await;
        drop(at_backend);
        let generation = match completed {
            Ok(generation) => {
                lock(&self.assembly).record(assembly_time + generation.build_time);
                let unfinished = generation.stop_reason == StopReason::PromptTimeLimit
                    || generation.short_prompt;
                *lock(&self.unfinished) = unfinished.then(|| (ask.context.clone(), document));
                generation
            }
            Err(BackendError::NotReady) => return Ok(None),
            Err(BackendError::Cancelled) => return Err(SuggestError::Cancelled),
            Err(e @ BackendError::Failed(_)) => {
                tracing::warn!("{e}");
                return Ok(None);
            }
        };
        let finished = self.finish_and_remember(&generation, &ask.context, &stop, false)?;
        let Some(text) = finished else {
            return Ok(None);
        };
        let others = contain_panic(|| {
            generation
                .alternatives
                .iter()
                .filter_map(|raw| postprocess::finish(raw, &ask.context, &stop))
                .collect::<Vec<_>>()
        })?;
        let mut texts = candidates::distinct(std::iter::once(text).chain(others));
        let first_line = texts[0].lines().next().unwrap_or_default().trim_end();
        if plan.alternatives
            && texts.len() < candidates::MAX_CANDIDATES
            && texts[0].contains('\n')
            && first_line.trim().chars().count() >= 2
        {
            let first_line = first_line.to_owned();
            texts = candidates::distinct(texts.into_iter().chain([first_line]));
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

    use crate::config::Overrides;

    /// A backend that answers every request with `answer`, holding each generation
    /// while `held` is true (until released or cancelled), and records what reached
    /// it. Clones share their state.
    #[derive(Clone)]
    struct Fake {
        answer: &'static str,
        /// Requests that reached the backend: their prefix, and whether background.
        seen: Arc<Mutex<Vec<(String, bool)>>>,
        /// Every request that reached the backend, whole.
        requests: Arc<Mutex<Vec<CompletionRequest>>>,
        held: Arc<watch::Sender<bool>>,
        ready: Arc<watch::Sender<bool>>,
        /// Whether prompts run out of time (nothing is generated).
        out_of_time: Arc<AtomicBool>,
        /// The other candidates' raw texts, given with every answer.
        alternatives: Arc<Mutex<Vec<String>>>,
        /// Whether answers end at the token limit.
        token_limit: Arc<AtomicBool>,
        /// Answers as if from a short prompt.
        short_prompt: Arc<AtomicBool>,
        /// Answers end unsure when the request lets them.
        unsure: Arc<AtomicBool>,
    }

    impl Fake {
        fn new(answer: &'static str) -> Fake {
            Fake {
                answer,
                seen: Arc::default(),
                requests: Arc::default(),
                held: Arc::new(watch::Sender::new(false)),
                ready: Arc::new(watch::Sender::new(true)),
                out_of_time: Arc::default(),
                alternatives: Arc::default(),
                token_limit: Arc::default(),
                short_prompt: Arc::default(),
                unsure: Arc::default(),
            }
        }

        fn seen(&self) -> Vec<(String, bool)> {
            lock(&self.seen).clone()
        }
    }

    impl Backend for Fake {
        fn is_ready(&self) -> bool {
            *self.ready.borrow()
        }

        async fn ready_within(&self, limit: Duration) -> bool {
            let mut ready = self.ready.subscribe();
            tokio::time::timeout(limit, ready.wait_for(|ready| *ready))
                .await
                .is_ok()
        }

        async fn generate(&self, request: CompletionRequest) -> Result<Generation, BackendError> {
            lock(&self.seen).push((request.context.prefix.clone(), request.background));
            lock(&self.requests).push(request.clone());
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
            let out_of_time = self.out_of_time.load(Ordering::Relaxed);
            let text = if out_of_time || request.max_tokens == 0 {
                ""
            } else {
                self.answer
            };
            if let Some(partial) = &request.partial {
                partial.send(text);
            }
            Ok(Generation {
                text: text.to_owned(),
                alternatives: lock(&self.alternatives).clone(),
                prompt_tokens: 1,
                reused_tokens: 0,
                // One token per byte.
                generated_tokens: text.len(),
                token_ends: (1..=text.len()).collect(),
                stop_reason: if out_of_time {
                    StopReason::PromptTimeLimit
                } else if request.stop_when_unsure && self.unsure.load(Ordering::Relaxed) {
                    StopReason::Unsure
                } else if self.token_limit.load(Ordering::Relaxed) {
                    StopReason::TokenLimit
                } else {
                    StopReason::EndOfGeneration
                },
                build_time: Duration::ZERO,
                prompt_time: Duration::ZERO,
                generation_time: Duration::ZERO,
                short_prompt: self.short_prompt.load(Ordering::Relaxed),
            })
        }
    }

    const PREFIX: &str = "def add(a, b):\n    return ";

    #[tokio::test]
    async fn an_answer_cut_where_the_model_was_unsure_serves_only_automatic_editor_requests() {
        let fake = Fake::new("a +");
        fake.unsure.store(true, Ordering::Relaxed);
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        let asked = || lock(&fake.requests).len();
        let stops_unsure = |n: usize| lock(&fake.requests)[n].stop_when_unsure;
        // In a line begun, an editor's automatic request may stop where unsure.
        assert_eq!(
            texts(suggester.suggest(ask(PREFIX, &cancel)).await),
            ["a +"]
        );
        assert!(stops_unsure(0));
        // Typed through: from memory.
        let typed = format!("{PREFIX}a");
        assert_eq!(texts(suggester.suggest(ask(&typed, &cancel)).await), [" +"]);
        assert_eq!(asked(), 1);
        // An invoked request there asks the model, for whole lines.
        let invoked = Ask {
            trigger: Trigger::Invoked,
            ..ask(&typed, &cancel)
        };
        suggester.suggest(invoked).await.unwrap();
        assert_eq!(asked(), 2);
        assert!(!stops_unsure(1));
        // So does an HTTP client's request, which takes answers whole.
        let http = Ask {
            may_stop_unsure: false,
            ..ask(&format!("{PREFIX}a "), &cancel)
        };
        suggester.suggest(http).await.unwrap();
        assert_eq!(asked(), 3);
        assert!(!stops_unsure(2));
        // At a line's start, the whole statement.
        let start = ask("def add(a, b):\n    ", &cancel);
        suggester.suggest(start).await.unwrap();
        assert!(!stops_unsure(3));
        // With `stopWhenUnsure` turned off, a cut answer remembered before is not one
        // to give.
        let elsewhere = "def sub(a, b):\n    return ";
        suggester.suggest(ask(elsewhere, &cancel)).await.unwrap();
        assert_eq!(asked(), 5);
        let mut settings = Settings::resolve(Overrides::default()).0;
        settings.postprocess.stop_when_unsure = false;
        suggester.set_settings(settings);
        let typed = format!("{elsewhere}a");
        suggester.suggest(ask(&typed, &cancel)).await.unwrap();
        assert_eq!(asked(), 6);
        assert!(!stops_unsure(5));
    }

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
            may_stop_unsure: true,
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

    /// `suggester.suggest(ask(prefix, cancel))` on a task of its own.
    fn spawn_ask(
        suggester: &Arc<Suggester<Fake>>,
        prefix: &'static str,
        cancel: &CancelFlag,
    ) -> tokio::task::JoinHandle<Result<Option<Answer>, SuggestError>> {
        let (suggester, cancel) = (suggester.clone(), cancel.clone());
        tokio::spawn(async move { suggester.suggest(ask(prefix, &cancel)).await })
    }

    /// A prefetch (or, with `warm`, a warm) of `prefix` on a task of its own.
    fn spawn_background(
        suggester: &Arc<Suggester<Fake>>,
        prefix: &'static str,
        warm: bool,
    ) -> tokio::task::JoinHandle<()> {
        let suggester = suggester.clone();
        tokio::spawn(async move {
            let context = context::from_parts(prefix, "\n", "python");
            if warm {
                suggester.warm(context, "file:///a.py".into()).await;
            } else {
                suggester.prefetch(context, "file:///a.py".into()).await;
            }
        })
    }

    fn texts(answer: Result<Option<Answer>, SuggestError>) -> Vec<String> {
        answer.unwrap().map(|a| a.texts).unwrap_or_default()
    }

    #[tokio::test]
    async fn the_last_line_a_limit_cut_is_not_shown() {
        let fake = Fake::new("x = a + b\n    y = x * 2\n    z = fo");
        let prefix = "def add(a, b):\n    ";
        for (cut, expected) in [
            (false, "x = a + b\n    y = x * 2\n    z = fo"),
            (true, "x = a + b\n    y = x * 2"),
        ] {
            fake.token_limit.store(cut, Ordering::Relaxed);
            let answer = pipeline(&fake)
                .suggest(ask(prefix, &CancelFlag::default()))
                .await
                .unwrap()
                .expect("an answer");
            assert_eq!(answer.texts[0], expected, "cut by the token limit: {cut}");
        }
    }

    #[tokio::test]
    async fn invoked_requests_offer_the_distinct_candidates_and_automatic_ones_ask_for_one() {
        let fake = Fake::new("a + b\n");
        *lock(&fake.alternatives) = ["a + b  \n", "b + a\n", "\n", "a - b\n", "a * b\n"]
            .map(String::from)
            .to_vec();
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        let invoked = Ask {
            trigger: Trigger::Invoked,
            ..ask(PREFIX, &cancel)
        };
        assert_eq!(
            texts(suggester.suggest(invoked).await),
            ["a + b", "b + a", "a - b"]
        );
        let automatic = ask("def sub(a, b):\n    return ", &cancel);
        assert!(suggester.suggest(automatic).await.is_ok());
        let asked: Vec<(u32, bool)> = lock(&fake.requests)
            .iter()
            .map(|r| (r.candidates, r.suffix_rescoring))
            .collect();
        // Rescoring is off by default.
        assert_eq!(asked, [(3, false), (1, false)]);
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
    async fn the_tokens_generated_and_those_shown_are_counted() {
        let fake = Fake::new("a + b\nnext()\n");
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        assert_eq!(
            texts(suggester.suggest(ask(PREFIX, &cancel)).await),
            ["a + b"]
        );
        let tokens = suggester.answer_tokens();
        assert_eq!(tokens.generated.load(Ordering::Relaxed), 13);
        assert_eq!(tokens.shown.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn nothing_to_suggest_is_answered_from_memory_the_second_time() {
        let fake = Fake::new("\n");
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        assert_eq!(suggester.suggest(ask(PREFIX, &cancel)).await, Ok(None));
        assert_eq!(suggester.suggest(ask(PREFIX, &cancel)).await, Ok(None));
        assert_eq!(fake.seen().len(), 1, "the backend was asked again");
        assert_eq!(suggester.typed_through_hits(), 1);
        // A prompt cut by its time limit is no proof that there is nothing to say.
        let fake = Fake::new("a + b\n");
        fake.out_of_time.store(true, Ordering::Relaxed);
        let suggester = pipeline(&fake);
        assert_eq!(suggester.suggest(ask(PREFIX, &cancel)).await, Ok(None));
        fake.out_of_time.store(false, Ordering::Relaxed);
        assert_eq!(
            texts(suggester.suggest(ask(PREFIX, &cancel)).await),
            ["a + b"]
        );
    }

    #[tokio::test]
    async fn a_backend_that_is_not_ready_is_not_asked() {
        let fake = Fake::new("a + b\n");
        fake.ready.send_replace(false);
        let suggester = pipeline(&fake);
        let answer = suggester.suggest(ask(PREFIX, &CancelFlag::default())).await;
        assert_eq!(answer, Ok(None));
        assert!(fake.seen().is_empty());
    }

    #[tokio::test]
    async fn a_request_during_the_load_waits_for_it_and_decodes_its_whole_prompt() {
        let fake = Fake::new("a + b\n");
        fake.ready.send_replace(false);
        let suggester = pipeline(&fake);
        let asking = spawn_ask(&suggester, PREFIX, &CancelFlag::default());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(fake.seen().is_empty());
        fake.ready.send_replace(true);
        assert_eq!(texts(asking.await.unwrap()), ["a + b"]);
        let requests = lock(&fake.requests).clone();
        assert_eq!(requests[0].prompt_time_limit, None);
        // Once loaded, requests have their prompt time limit again.
        suggester
            .suggest(ask("x = ", &CancelFlag::default()))
            .await
            .unwrap();
        assert!(lock(&fake.requests)[1].prompt_time_limit.is_some());
    }

    #[tokio::test]
    async fn a_request_waiting_for_the_load_can_be_cancelled() {
        let fake = Fake::new("a + b\n");
        fake.ready.send_replace(false);
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        let asking = spawn_ask(&suggester, PREFIX, &cancel);
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancel.cancel();
        assert_eq!(asking.await.unwrap(), Err(SuggestError::Cancelled));
        assert!(fake.seen().is_empty());
        assert_eq!(suggester.cancelled_before_backend(), 1);
        // A request whose future is dropped (`$/cancelRequest`) counts too.
        let dropped = spawn_ask(&suggester, PREFIX, &CancelFlag::default());
        tokio::time::sleep(Duration::from_millis(20)).await;
        dropped.abort();
        let _ = dropped.await;
        assert_eq!(suggester.cancelled_before_backend(), 2);
    }

    #[tokio::test]
    async fn a_prompt_that_ran_out_of_time_is_warmed_in_the_background() {
        let fake = Fake::new("a + b\n");
        fake.out_of_time.store(true, Ordering::Relaxed);
        let suggester = pipeline(&fake);
        let answer = suggester.suggest(ask(PREFIX, &CancelFlag::default())).await;
        assert_eq!(answer, Ok(None));
        fake.out_of_time.store(false, Ordering::Relaxed);
        suggester.warm_unfinished().await;
        let requests = lock(&fake.requests).clone();
        assert_eq!(requests.len(), 2);
        let warm = &requests[1];
        assert!(warm.background);
        assert_eq!(warm.max_tokens, 0);
        assert_eq!(warm.prompt_time_limit, None);
        assert_eq!(warm.context.prefix, PREFIX);
        assert_eq!(suggester.prefetch_stats().warmed, 1);
        // Once warmed, nothing is left to warm.
        suggester.warm_unfinished().await;
        assert_eq!(lock(&fake.requests).len(), 2);
    }

    #[tokio::test]
    async fn an_answer_from_a_short_prompt_has_its_full_prompt_warmed_before_any_prefetch() {
        let fake = Fake::new("a + b\n");
        fake.short_prompt.store(true, Ordering::Relaxed);
        let suggester = pipeline(&fake);
        let answer = suggester.suggest(ask(PREFIX, &CancelFlag::default())).await;
        assert_eq!(texts(answer), ["a + b"]);
        // A prefetch would run out of time on the same cold prompt: none runs…
        spawn_background(&suggester, "def other(a):\n    ", false)
            .await
            .unwrap();
        assert_eq!(lock(&fake.requests).len(), 1);
        // …until the full prompt is warm.
        suggester.warm_unfinished().await;
        let warm = lock(&fake.requests)[1].clone();
        assert_eq!((warm.max_tokens, warm.context.prefix.as_str()), (0, PREFIX));
        spawn_background(&suggester, "def other(a):\n    ", false)
            .await
            .unwrap();
        assert_eq!(lock(&fake.requests).len(), 3);
    }

    #[tokio::test]
    async fn an_answer_from_a_short_prompt_is_not_typed_through() {
        let fake = Fake::new("a + b\n");
        let suggester = pipeline(&fake);
        let typed = format!("{PREFIX}a");
        for (short, requests) in [(true, 2), (false, 3)] {
            fake.short_prompt.store(short, Ordering::Relaxed);
            let cancel = CancelFlag::default();
            assert_eq!(
                texts(suggester.suggest(ask(PREFIX, &cancel)).await),
                ["a + b"]
            );
            // Typing its first character asks the model again after a short prompt's
            // answer (the full prompt may be warm by then), not after a full one's.
            suggester.suggest(ask(&typed, &cancel)).await.unwrap();
            assert_eq!(lock(&fake.requests).len(), requests, "short: {short}");
        }
    }

    #[tokio::test]
    async fn a_request_stops_a_warm_in_flight() {
        let fake = Fake::new("a + b\n");
        fake.held.send_replace(true);
        let suggester = pipeline(&fake);
        let warming = spawn_background(&suggester, "def other():\n    ", true);
        until(|| fake.seen().len() == 1).await;
        let asking = spawn_ask(&suggester, PREFIX, &CancelFlag::default());
        warming.await.unwrap();
        assert_eq!(suggester.prefetch_stats().warmed, 0);
        fake.held.send_replace(false);
        assert_eq!(texts(asking.await.unwrap()), ["a + b"]);
    }

    #[tokio::test]
    async fn a_cancelled_request_ends_without_an_answer() {
        let fake = Fake::new("a + b\n");
        fake.held.send_replace(true);
        let suggester = pipeline(&fake);
        let cancel = CancelFlag::default();
        let asking = spawn_ask(&suggester, PREFIX, &cancel);
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
    async fn a_prefetch_gives_way_to_a_warm_in_flight() {
        let fake = Fake::new("a + b\n");
        fake.held.send_replace(true);
        let suggester = pipeline(&fake);
        let warming = spawn_background(&suggester, "def other():\n    ", true);
        until(|| fake.seen().len() == 1).await;
        // The prefetch (for where the user was) gives way to the warm (where they
        // are): it does not start, and the warm runs to its end.
        let prefetching = spawn_background(&suggester, PREFIX, false);
        tokio::time::timeout(Duration::from_secs(5), prefetching)
            .await
            .expect("the prefetch gives up at once")
            .unwrap();
        assert_eq!(fake.seen().len(), 1);
        fake.held.send_replace(false);
        warming.await.unwrap();
        assert_eq!(suggester.prefetch_stats().warmed, 1);
    }

    #[tokio::test]
    async fn a_request_for_the_prefetched_context_joins_the_prefetch() {
        let fake = Fake::new("a + b\n");
        fake.held.send_replace(true);
        let suggester = pipeline(&fake);
        let prefetching = spawn_background(&suggester, PREFIX, false);
        until(|| fake.seen().len() == 1).await;
        let asking = spawn_ask(&suggester, PREFIX, &CancelFlag::default());
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
        let prefetching = spawn_background(&suggester, "def other():\n    return ", false);
        until(|| fake.seen().len() == 1).await;
        let asking = spawn_ask(&suggester, PREFIX, &CancelFlag::default());
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
        let answer = suggester.suggest(ask("# add the ", &cancel)).await;
        assert_eq!(texts(answer), ["total"]);
        assert_eq!(fake.seen(), [("# add the ".to_owned(), false)]);
        // With comments turned off, the backend is not asked.
        let mut settings = (*suggester.settings()).clone();
        settings.postprocess.in_comments = false;
        suggester.set_settings(settings);
        let answer = suggester.suggest(ask("# add the ", &cancel)).await;
        assert!(texts(answer).is_empty());
        assert_eq!(fake.seen().len(), 1);
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
