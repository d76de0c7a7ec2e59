//! One llama context used as one sequence, with the tokens its KV cache holds:
//! applying a reuse plan, decoding prompts in chunks, rewinding.
//!
//! Invariant: `cached` mirrors the KV cache. On any decode error, or a cache
//! operation llama.cpp refuses, the cache is cleared and `cached` emptied, never
//! left half-known.

use inkling_core::generate::BackendError;
use inkling_core::tokens::Token;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaModel, RopeType};
use llama_cpp_2::token::LlamaToken;

use crate::kv_plan::{self, MIN_SHIFT_RUN, Move, ReusePlan};

/// Prompt tokens decoded per call: small enough that a cancel is noticed quickly,
/// large enough to keep the matrix kernels efficient.
pub const PROMPT_CHUNK: usize = 64;

/// Prompt tokens decoded per call for background work (warming, prefetching): a
/// request that comes waits for the chunk being decoded, so it is kept short
/// (about 80 ms here) at some cost in throughput nobody waits for.
pub const BACKGROUND_CHUNK: usize = 16;

/// Whether llama.cpp can move this model's cached entries to other positions. It
/// cannot for models with several positions per token (M-RoPE, vision RoPE) nor for
/// Step-3.5's per-layer rotary sizes, and aborts the process if asked: the checks of
/// `llama_memory_can_shift`, which llama-cpp-2 does not expose.
pub fn can_shift(model: &LlamaModel) -> bool {
    let several_positions = matches!(
        model.rope_type(),
        Some(RopeType::MRope | RopeType::IMRope | RopeType::Vision)
    );
    let architecture = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    !several_positions && architecture != "step35"
}

/// Why prompt decoding stopped before the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    Cancelled,
    OutOfTime,
}

/// Where a token's logits are in the last decoded batch (-1: the last).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogitsAt(pub(crate) i32);

/// One llama context used as a single sequence (id 0), with the tokens its KV cache
/// holds, in position order.
pub(crate) struct Sequence<'m> {
    pub(crate) context: LlamaContext<'m>,
    pub(crate) cached: Vec<Token>,
    batch: LlamaBatch<'static>,
    /// Cells were moved and their keys are not re-rotated until the next decode:
    /// the state must not be saved before that, or the rotation is lost.
    pub(crate) shift_pending: bool,
    /// Whether cached runs may be moved (see [`can_shift`]).
    can_shift: bool,
}

impl<'m> Sequence<'m> {
    /// A sequence on `context` whose batches hold up to `batch_size` tokens.
    pub(crate) fn new(
        context: LlamaContext<'m>,
        can_shift: bool,
        batch_size: usize,
    ) -> Sequence<'m> {
        Sequence {
            context,
            cached: Vec::new(),
            batch: LlamaBatch::new(batch_size, 1),
            shift_pending: false,
            can_shift,
        }
    }

    pub(crate) fn n_ctx(&self) -> usize {
        self.context.n_ctx() as usize
    }

    /// Drops the whole cache.
    pub(crate) fn forget(&mut self) {
        self.context.clear_kv_cache();
        self.cached.clear();
        self.shift_pending = false;
    }

    /// Keeps the first `len` cached tokens.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.cached.len() {
            return;
        }
        match self
            .context
            .clear_kv_cache_seq(Some(0), Some(len as u32), None)
        {
            Ok(true) => self.cached.truncate(len),
            _ => self.forget(),
        }
    }

    /// Brings the cache in line with `prompt` as far as it can without decoding, by
    /// the plan of [`kv_plan::plan`]: the common prefix stays, matching runs move
    /// down into place (llama-server's `--cache-reuse`), the rest is dropped. Returns
    /// the plan as applied; on any llama.cpp refusal the cache is emptied and nothing
    /// is kept.
    pub(crate) fn reuse(&mut self, prompt: &[Token]) -> ReusePlan {
        let plan = kv_plan::plan(&self.cached, prompt, self.can_shift, MIN_SHIFT_RUN);
        for &Move { from, to, len } in &plan.moves {
            let moved = self
                .context
                .clear_kv_cache_seq(Some(0), Some(to as u32), Some(from as u32))
                .is_ok_and(|removed| removed)
                && self
                    .context
                    .kv_cache_seq_add(
                        0,
                        Some(from as u32),
                        Some((from + len) as u32),
                        to as i32 - from as i32,
                    )
                    .is_ok();
            if !moved {
                self.forget();
                return ReusePlan::default();
            }
            self.shift_pending = true;
            self.cached.copy_within(from..from + len, to);
        }
        // The cells from `kept` on are either unmatched or already moved down.
        self.truncate(plan.kept);
        if self.cached.len() != plan.kept {
            return ReusePlan::default();
        }
        plan
    }

    /// How many tokens of `prompt` would be left to decode after [`Sequence::reuse`]
    /// of a cache holding `cached`.
    pub(crate) fn missing(&self, cached: &[Token], prompt: &[Token]) -> usize {
        prompt.len() - kv_plan::plan(cached, prompt, self.can_shift, MIN_SHIFT_RUN).kept
    }

    /// Decodes `tokens` after the cached ones, asking for the logits of the last one,
    /// or of every one when `all_logits` (to verify drafts).
    pub(crate) fn decode(
        &mut self,
        tokens: &[Token],
        all_logits: bool,
    ) -> Result<LogitsAt, BackendError> {
        self.batch.clear();
        let start = self.cached.len();
        for (i, &token) in tokens.iter().enumerate() {
            let last = i + 1 == tokens.len();
            self.batch
                .add(
                    LlamaToken(token),
                    (start + i) as i32,
                    &[0],
                    all_logits || last,
                )
                .map_err(|e| BackendError::Failed(e.to_string()))?;
        }
        if let Err(e) = self.context.decode(&mut self.batch) {
            // The cache may hold part of the batch now: forget it all to stay consistent.
            self.forget();
            return Err(BackendError::Failed(e.to_string()));
        }
        self.cached.extend_from_slice(tokens);
        self.shift_pending = false;
        Ok(LogitsAt(tokens.len() as i32 - 1))
    }

    /// Decodes what the cache lacks of `prompt`, in chunks; the last token alone, so a
    /// repeated prompt (which reuses all but that token) gets the very same logits and
    /// the same greedy answer as the first time. Stops early, keeping what was decoded,
    /// when `interrupt` says so (asked before each chunk); `Ok(None)` means complete.
    pub(crate) fn fill(
        &mut self,
        prompt: &[Token],
        chunk_size: usize,
        mut interrupt: impl FnMut() -> Option<Interrupt>,
        mut decoded: impl FnMut(usize),
    ) -> Result<Option<Interrupt>, BackendError> {
        let Some((last, body)) = prompt.split_last() else {
            return Err(BackendError::Failed("empty prompt".into()));
        };
        let from = self.cached.len().min(body.len());
        for chunk in body[from..]
            .chunks(chunk_size.max(1))
            .chain([std::slice::from_ref(last)])
        {
            if let Some(reason) = interrupt() {
                return Ok(Some(reason));
            }
            self.decode(chunk, false)?;
            decoded(chunk.len());
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_is_refused_for_models_with_several_positions_per_token() {
        use crate::test_gguf::{load, vocab_file_of};
        for (architecture, expected) in [
            ("llama", true),
            ("gemma3", true),
            ("qwen2vl", false),
            ("qwen3vl", false),
        ] {
            let model = load(&vocab_file_of(architecture, architecture, &["<s>"], true));
            assert_eq!(can_shift(&model), expected, "{architecture}");
        }
    }
}
