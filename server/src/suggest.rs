//! The completion pipeline shared by the front ends (LSP and HTTP): from a
//! [`CompletionContext`] to the texts to offer.
//!
//! plan → typed-through cache → engine (prompt + generation) → finish. The front
//! ends own everything about their protocol (documents, versions, cancellation by
//! the client); this module owns what is the same for all of them.
//!
//! Invariants:
//! - An answer found in the [`TypedThrough`] cache never reaches the engine.
//! - Every request that reaches [`Suggester::suggest`] gets its latency recorded,
//!   whatever the outcome, so the percentiles in `inkling/stats` cover all of them.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

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

/// The shared pipeline: the engine, the settings and what is remembered between
/// requests. One per server process, shared by all front ends.
pub struct Suggester {
    engine: Engine,
    settings: Settings,
    typed_through: Mutex<TypedThrough>,
    latencies: Mutex<LatencyLog>,
    assembly: Mutex<LatencyLog>,
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
        if let Some(text) = contain_panic(|| lock(&self.typed_through).lookup(&ask.context))? {
            self.engine.count_typed_through();
            return Ok(Some(Answer {
                texts: vec![text],
                generation: None,
            }));
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
        };
        let generation = match self.engine.complete(request).await {
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
