//! Speculative decoding's drafts: none, prompt lookup (n-gram matches in the
//! history), or a smaller model with the same vocabulary in its own context.
//! Drafts are only guesses: the session keeps a drafted token only where the
//! model itself picks it.

use inkling_core::generate::BackendError;
use inkling_core::tokens::Token;

use crate::sequence::{Interrupt, LogitsAt, PROMPT_CHUNK, Sequence};

/// Most tokens drafted for one verification batch.
pub const MAX_DRAFT: usize = 8;

/// A token picked from a verification batch must lead the runner-up by this many
/// logits; closer calls are decided by decoding one token alone, so that speculative
/// and plain decoding pick the same tokens (their arithmetic rounds differently).
pub const MIN_BATCH_MARGIN: f32 = 0.5;

/// The most likely token and its lead over the runner-up (greedy sampling; the
/// first of equal logits wins).
pub fn greedy(logits: &[f32]) -> (Token, f32) {
    let (mut best, mut best_logit, mut second) = (0, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (id, &logit) in logits.iter().enumerate() {
        if logit > best_logit {
            second = best_logit;
            best = id;
            best_logit = logit;
        } else if logit > second {
            second = logit;
        }
    }
    (best as Token, best_logit - second)
}

/// n-gram lengths tried by prompt lookup, longest first.
const LOOKUP_NGRAMS: std::ops::RangeInclusive<usize> = 2..=4;

/// Prompt lookup: the tokens that followed the most recent earlier occurrence of the
/// last n tokens of `history` (longest n first), at most `max` of them.
pub fn lookup_draft(history: &[Token], max: usize) -> Vec<Token> {
    for n in LOOKUP_NGRAMS.rev() {
        let Some(tail_start) = history.len().checked_sub(n) else {
            continue;
        };
        let tail = &history[tail_start..];
        let found = (0..tail_start)
            .rev()
            .find(|&start| &history[start..start + n] == tail);
        if let Some(start) = found {
            let follow = &history[start + n..(start + n + max).min(history.len())];
            return follow.to_vec();
        }
    }
    Vec::new()
}

/// Where draft tokens come from.
pub(crate) enum Drafter<'m> {
    Off,
    PromptLookup,
    /// A smaller model with the same vocabulary, in its own context.
    Model(Sequence<'m>),
}

impl Drafter<'_> {
    /// Up to `max` tokens that likely follow `history`; empty when there is no guess
    /// or `stop` says the request should end (a draft model decodes the history).
    pub(crate) fn draft(
        &mut self,
        history: &[Token],
        max: usize,
        stop: &dyn Fn() -> bool,
    ) -> Vec<Token> {
        if max == 0 {
            return Vec::new();
        }
        match self {
            Drafter::Off => Vec::new(),
            Drafter::PromptLookup => lookup_draft(history, max),
            Drafter::Model(sequence) => {
                let drafted = draft_with_model(sequence, history, max, stop);
                drafted.unwrap_or_else(|e| {
                    tracing::debug!("draft model failed: {e}");
                    Vec::new()
                })
            }
        }
    }
}

/// Greedy tokens of the draft model after `history`.
fn draft_with_model(
    sequence: &mut Sequence<'_>,
    history: &[Token],
    max: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Token>, BackendError> {
    if history.len() + max + 1 >= sequence.n_ctx() {
        return Ok(Vec::new());
    }
    sequence.reuse(history);
    let interrupted = sequence.fill(
        history,
        PROMPT_CHUNK,
        || stop().then_some(Interrupt::Cancelled),
        |_| (),
    )?;
    if interrupted.is_some() {
        return Ok(Vec::new());
    }
    let mut at = LogitsAt(-1);
    let mut draft: Vec<Token> = Vec::with_capacity(max);
    while draft.len() < max {
        let (token, _) = greedy(sequence.context.get_logits_ith(at.0));
        draft.push(token);
        if draft.len() < max {
            at = sequence.decode(&[token], false)?;
        }
    }
    Ok(draft)
}
