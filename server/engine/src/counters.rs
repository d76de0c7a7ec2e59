//! The engine's running totals, kept apart for requests someone waits for and
//! for background work.

use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals of what the engine did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests that ended cancelled.
    pub cancelled: AtomicU64,
    /// Prompt tokens decoded.
    pub prompt_tokens_evaluated: AtomicU64,
    /// Prompt tokens whose KV entries were reused.
    pub prompt_tokens_reused: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Requests answered from the typed-through cache, without the model.
    pub typed_through: AtomicU64,
    /// Prompt tokens reused by moving their KV entries into place (part of `reused`).
    pub prompt_tokens_shifted: AtomicU64,
    /// Requests whose document's saved cache was restored.
    pub warm_restores: AtomicU64,
    /// Tokens drafted for speculative decoding.
    pub drafted_tokens: AtomicU64,
    /// Drafted tokens the model confirmed.
    pub accepted_tokens: AtomicU64,
    /// Time spent on prompts, in microseconds.
    pub prompt_micros: AtomicU64,
    /// Time spent generating, in microseconds.
    pub generation_micros: AtomicU64,
    /// Tokens of the prompts built.
    pub prompt_tokens: AtomicU64,
    /// Tokens of each prompt equal to the same document's previous prompt (its
    /// longest common prefix with it).
    pub prompt_tokens_unchanged: AtomicU64,
    /// Time spent building prompts (layout and tokenization), in microseconds.
    pub prompt_build_micros: AtomicU64,
    /// Requests answered from a short prompt while the full one was not decoded far
    /// enough.
    pub short_prompts: AtomicU64,
}

/// The engine's counters, kept twice: for requests someone waits for, and for
/// background work (prefetches), so that neither blurs the other's figures.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    pub(crate) foreground: Counters,
    pub(crate) background: Counters,
}

impl Tallies {
    pub(crate) fn of(&self, background: bool) -> &Counters {
        if background {
            &self.background
        } else {
            &self.foreground
        }
    }
}

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Requests received.
    pub requests: u64,
    /// Requests that ended cancelled.
    pub cancelled: u64,
    /// Prompt tokens decoded.
    pub prompt_tokens_evaluated: u64,
    /// Prompt tokens whose KV entries were reused.
    pub prompt_tokens_reused: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Requests answered from the typed-through cache, without the model.
    pub typed_through: u64,
    /// Prompt tokens reused by moving their KV entries into place (part of `reused`).
    pub prompt_tokens_shifted: u64,
    /// Requests whose document's saved cache was restored.
    pub warm_restores: u64,
    /// Tokens drafted for speculative decoding.
    pub drafted_tokens: u64,
    /// Drafted tokens the model confirmed.
    pub accepted_tokens: u64,
    /// Time spent on prompts, in microseconds.
    pub prompt_micros: u64,
    /// Time spent generating, in microseconds.
    pub generation_micros: u64,
    /// Tokens of the prompts built.
    pub prompt_tokens: u64,
    /// Tokens of each prompt equal to the same document's previous prompt.
    pub prompt_tokens_unchanged: u64,
    /// Time spent building prompts (layout and tokenization), in microseconds.
    pub prompt_build_micros: u64,
    /// Requests answered from a short prompt.
    pub short_prompts: u64,
}

impl Counters {
    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            requests: get(&self.requests),
            cancelled: get(&self.cancelled),
            prompt_tokens_evaluated: get(&self.prompt_tokens_evaluated),
            prompt_tokens_reused: get(&self.prompt_tokens_reused),
            generated_tokens: get(&self.generated_tokens),
            typed_through: get(&self.typed_through),
            prompt_tokens_shifted: get(&self.prompt_tokens_shifted),
            warm_restores: get(&self.warm_restores),
            drafted_tokens: get(&self.drafted_tokens),
            accepted_tokens: get(&self.accepted_tokens),
            prompt_micros: get(&self.prompt_micros),
            generation_micros: get(&self.generation_micros),
            prompt_tokens: get(&self.prompt_tokens),
            prompt_tokens_unchanged: get(&self.prompt_tokens_unchanged),
            prompt_build_micros: get(&self.prompt_build_micros),
            short_prompts: get(&self.short_prompts),
        }
    }
}
