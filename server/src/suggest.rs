//! The completion pipeline shared by the front ends (LSP and HTTP): from a
//! [`CompletionContext`] to the texts to offer.
//!
//! plan → typed-through cache → engine (prompt + generation) → finish. The front
//! ends own everything about their protocol (documents, versions, cancellation by
//! the client); this module owns what is the same for all of them.
//!
//! After an answer, [`Suggester::prefetch`] asks the engine for the answer at the
//! position the user reaches by accepting it (llama.vim's "speculative FIM"), and puts
//! it in the typed-through cache, so that accepting and asking again is answered from
//! memory.
//!
//! Invariants:
//! - An answer found in the [`TypedThrough`] cache never reaches the engine.
//! - Every request that reaches [`Suggester::suggest`] gets its latency recorded,
//!   whatever the outcome, so the percentiles in `inkling/stats` cover all of them.
//! - A prefetch never makes a request wait for it: a request that needs the engine
//!   cancels it (the engine notices before its next decode call), unless the
//!   request asks for the very context the prefetch is computing, in which case it
//!   waits for that answer instead. At most one prefetch is in flight, and none
//!   starts while a request is at the engine: both are decided under one lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::Settings;
use crate::context::CompletionContext;
use crate::engine::{
    CancelFlag, CompletionRequest, CountersSnapshot, Engine, EngineError, Generation,
};
use crate::postprocess::{self, StopRules, Trigger};
use crate::typed_through::TypedThrough;

/// One completion asked for by a front end.
#[derive(Debug)]
pub struct Ask {
    /// The text around the cursor.
    pub context: CompletionContext,
    /// How the request was triggered.
    pub trigger: Trigger,
    /// Set when the front end no longer wants the answer.
    pub cancel: CancelFlag,
    /// Which warm state of the engine to use: one per document.
    pub slot: String,
    /// Receives the text generated so far, as it grows (before post-processing).
    pub partial: Option<mpsc::UnboundedSender<String>>,
    /// Most tokens to generate, when less than the configured limit; 0 only brings
    /// the prompt into the engine's cache.
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
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

/// What prefetching did, as sent to clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefetchStats {
    /// The engine's work on prefetches (not part of the request counters).
    #[serde(flatten)]
    pub engine: CountersSnapshot,
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

/// The shared pipeline: the engine, the settings and what is remembered between
/// requests. One per server process, shared by all front ends.
pub struct Suggester {
    engine: Engine,
    settings: Settings,
    typed_through: Mutex<TypedThrough>,
    latencies: Mutex<LatencyLog>,
    assembly: Mutex<LatencyLog>,
    prefetch: Mutex<PrefetchState>,
    prefetch_answers: AtomicU64,
    prefetch_hits: AtomicU64,
}

/// Prefetching's shared state, changed only under its lock, so that a prefetch
/// cannot slip in between a request's check and its arrival at the engine.
#[derive(Default)]
struct PrefetchState {
    in_flight: Option<Prefetch>,
    /// Requests at the engine now: no prefetch starts while there are any.
    at_engine: usize,
    /// Set at shutdown: no prefetch starts any more.
    closed: bool,
}

/// A request at the engine: counted in [`PrefetchState::at_engine`] while alive,
/// even when the future holding it is dropped.
struct AtEngine<'a>(&'a Mutex<PrefetchState>);

impl<'a> AtEngine<'a> {
    /// Counts a request in and stops the prefetch in flight, in one step.
    fn enter(state: &'a Mutex<PrefetchState>) -> AtEngine<'a> {
        let mut guard = lock(state);
        guard.at_engine += 1;
        if let Some(prefetch) = guard.in_flight.take() {
            prefetch.cancel.cancel();
        }
        AtEngine(state)
    }
}

impl Drop for AtEngine<'_> {
    fn drop(&mut self) {
        lock(self.0).at_engine -= 1;
    }
}

/// Locks `mutex`, even if a panic elsewhere poisoned it: the data behind the
/// server's locks is consistent between statements (replaced whole, never left
/// half-updated).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a synchronous stage; a panic in it (a bug) fails this request instead of
/// ending the server, which tower-lsp does not guard against.
pub fn contain_panic<T>(stage: impl FnOnce() -> T) -> Result<T, SuggestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(stage)).map_err(|_| {
        tracing::error!("a completion stage panicked; the request is answered with an error");
        SuggestError::Failed("internal error".into())
    })
}

impl Suggester {
    /// Starts the engine (which loads the model in the background).
    pub fn start(settings: Settings) -> Suggester {
        Suggester {
            engine: Engine::start(settings.clone()),
            settings,
            typed_through: Mutex::new(TypedThrough::default()),
            latencies: Mutex::new(LatencyLog::default()),
            assembly: Mutex::new(LatencyLog::default()),
            prefetch: Mutex::new(PrefetchState::default()),
            prefetch_answers: AtomicU64::new(0),
            prefetch_hits: AtomicU64::new(0),
        }
    }

    /// The engine behind the pipeline.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The resolved settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Latency percentiles over the most recent requests.
    pub fn latency(&self) -> Latency {
        lock(&self.latencies).percentiles()
    }

    /// Percentiles of the time to assemble a prompt (context, then layout and
    /// tokenization in the engine), over requests that reached the engine.
    pub fn assembly_latency(&self) -> Latency {
        lock(&self.assembly).percentiles()
    }

    /// The engine's counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.engine.counters()
    }

    /// What prefetching did.
    pub fn prefetch_stats(&self) -> PrefetchStats {
        PrefetchStats {
            engine: self.engine.background_counters(),
            answers: self.prefetch_answers.load(Ordering::Relaxed),
            hits: self.prefetch_hits.load(Ordering::Relaxed),
        }
    }

    /// An answer from the typed-through cache, counted.
    fn remembered(&self, context: &CompletionContext) -> Result<Option<Answer>, SuggestError> {
        let Some(hit) = contain_panic(|| lock(&self.typed_through).lookup(context))? else {
            return Ok(None);
        };
        self.engine.count_typed_through();
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
    /// [`AtEngine::enter`] to stop.
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
    /// engine, and the server is not shutting down.
    pub fn may_prefetch(&self) -> bool {
        let state = lock(&self.prefetch);
        self.engine.is_ready() && state.at_engine == 0 && !state.closed
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
    /// already or a request is at the engine. Cancelled by the next request that needs
    /// the engine.
    pub async fn prefetch(&self, context: CompletionContext, slot: String) {
        if !self.may_prefetch() {
            return;
        }
        let options = self.settings.postprocess;
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
            if state.at_engine > 0 || state.closed {
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
            self.settings.time_limits.for_trigger(Trigger::Automatic);
        let request = CompletionRequest {
            context: context.clone(),
            stop: stop.clone(),
            max_tokens: self.settings.max_tokens,
            prompt_time_limit,
            generation_time_limit,
            cancel: cancel.clone(),
            slot,
            partial: None,
            background: true,
        };
        if let Ok(generation) = self.engine.complete(request).await {
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
        if !self.engine.is_ready() {
            return Ok(None);
        }
        let options = self.settings.postprocess;
        let plan = match contain_panic(|| postprocess::plan(&ask.context, ask.trigger, options))? {
            Ok(plan) => plan,
            Err(skip) => {
                tracing::debug!(slot = ask.slot, ?skip, "no suggestion here");
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
            self.settings.time_limits.for_trigger(ask.trigger);
        let request = CompletionRequest {
            context: ask.context.clone(),
            stop: stop.clone(),
            max_tokens: ask.max_tokens.map_or(self.settings.max_tokens, |n| {
                n.min(self.settings.max_tokens)
            }),
            prompt_time_limit,
            generation_time_limit,
            cancel: ask.cancel,
            slot: ask.slot,
            partial: ask.partial,
            background: false,
        };
        let at_engine = AtEngine::enter(&self.prefetch);
        let completed = self.engine.complete(request).await;
        drop(at_engine);
        let generation = match completed {
            Ok(generation) => {
                lock(&self.assembly).record(assembly_time + generation.build_time);
                generation
            }
            Err(EngineError::NotReady) => return Ok(None),
            Err(EngineError::Cancelled) => return Err(SuggestError::Cancelled),
            Err(e @ EngineError::Failed(_)) => {
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
