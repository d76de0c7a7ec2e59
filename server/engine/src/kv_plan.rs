//! KV reuse as a plan: which cached tokens to keep, which runs to move down into
//! place, and where decoding must start — decided over token slices alone, so it is
//! tested without a model. [`crate::sequence`] applies a plan to llama.cpp.
//!
//! Invariants of a plan (for `cached` and `prompt`):
//! - The first `common` tokens are the longest common prefix of `cached` and
//!   `prompt` without its last token: at least that token is always decoded, since
//!   its logits start generation.
//! - Moves go down only (`to <= from`), in increasing order, and do not overlap:
//!   llama.cpp requires new tokens to follow the cached ones, so text inserted above
//!   the cursor is decoded again from the insertion on.
//! - Each moved run holds at least `min_run` tokens equal in `cached[from..]` and
//!   `prompt[to..]`; after the moves, `prompt[..kept]` is what the cache holds.

use inkling_core::tokens::Token;

/// Cached tokens matching the prompt that are moved into place rather than
/// recomputed must come in runs of at least this many (llama-server's `--cache-reuse`):
/// shorter runs are not worth a shift, and are more often matches by chance.
pub const MIN_SHIFT_RUN: usize = 64;

/// One run of cached tokens moved to an earlier position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// Its first cached position.
    pub from: usize,
    /// Its position in the prompt (and in the cache once moved).
    pub to: usize,
    /// Its length in tokens.
    pub len: usize,
}

/// How to bring a cache in line with a prompt without decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReusePlan {
    /// Cached tokens kept where they are (the common prefix).
    pub common: usize,
    /// Runs moved down into place, after the common prefix.
    pub moves: Vec<Move>,
    /// Prompt tokens the cache holds once the plan is applied; the rest is decoded.
    pub kept: usize,
}

impl ReusePlan {
    /// Tokens of `kept` that were moved rather than kept in place.
    pub fn shifted(&self) -> usize {
        self.moves.iter().map(|m| m.len).sum()
    }
}

/// The plan for a cache holding `cached` and the new `prompt`: keep the longest
/// common prefix, then move later runs of at least `min_run` cached tokens that
/// match the prompt into place (when `can_shift`), and drop the rest.
pub fn plan(cached: &[Token], prompt: &[Token], can_shift: bool, min_run: usize) -> ReusePlan {
    let limit = prompt.len().saturating_sub(1);
    let common = common_prefix(cached, &prompt[..limit]);
    let (mut head_p, mut head_c) = (common, common);
    let mut moves = Vec::new();
    while can_shift && head_c < cached.len() && head_p < limit {
        let run = common_prefix(&cached[head_c..], &prompt[head_p..limit]);
        if run < min_run.max(1) {
            head_c += 1;
            continue;
        }
        moves.push(Move {
            from: head_c,
            to: head_p,
            len: run,
        });
        head_p += run;
        head_c += run;
    }
    ReusePlan {
        common,
        moves,
        kept: head_p,
    }
}

/// The length of the longest common prefix of `a` and `b`.
pub fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens `start..start + len`, as a stand-in for lines of text.
    fn run(start: Token, len: usize) -> Vec<Token> {
        (start..start + len as Token).collect()
    }

    fn joined(parts: &[Vec<Token>]) -> Vec<Token> {
        parts.concat()
    }

    /// Applies `plan` to `cached` the way the sequence does, to check what it holds.
    fn applied(cached: &[Token], plan: &ReusePlan) -> Vec<Token> {
        let mut cache = cached.to_vec();
        for m in &plan.moves {
            cache.copy_within(m.from..m.from + m.len, m.to);
        }
        cache.truncate(plan.kept);
        cache
    }

    #[test]
    fn an_identical_prompt_keeps_all_but_its_last_token() {
        let prompt = run(0, 100);
        let plan = super::plan(&prompt, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!(plan.common, 99);
        assert_eq!(plan.kept, 99);
        assert!(plan.moves.is_empty());
    }

    #[test]
    fn typing_at_the_end_keeps_the_common_prefix() {
        let cached = run(0, 100);
        let prompt = joined(&[run(0, 90), vec![-1, -2, -3]]);
        let plan = super::plan(&cached, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!((plan.common, plan.kept), (90, 90));
        assert_eq!(applied(&cached, &plan), prompt[..90]);
    }

    #[test]
    fn a_deletion_above_the_cursor_moves_the_rest_down() {
        // Lines 10..30 deleted: the 200 tokens after them move down by 20.
        let cached = joined(&[run(0, 10), run(10, 20), run(30, 200), vec![-1]]);
        let prompt = joined(&[run(0, 10), run(30, 200), vec![-9]]);
        let plan = super::plan(&cached, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!(plan.common, 10);
        assert_eq!(
            plan.moves,
            [Move {
                from: 30,
                to: 10,
                len: 200
            }]
        );
        assert_eq!(plan.kept, 210);
        assert_eq!(plan.shifted(), 200);
        assert_eq!(applied(&cached, &plan), prompt[..210]);
    }

    #[test]
    fn an_insertion_above_the_cursor_is_decoded_from_the_insertion_on() {
        // Runs only move down: what follows inserted text cannot be moved up.
        let cached = joined(&[run(0, 10), run(10, 200)]);
        let prompt = joined(&[run(0, 10), vec![-5; 30], run(10, 200), vec![-9]]);
        let plan = super::plan(&cached, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!((plan.common, plan.kept), (10, 10));
        assert!(plan.moves.is_empty());
    }

    #[test]
    fn a_window_slide_keeps_the_start_and_moves_the_body() {
        // The window loses its first 40 tokens; a stable header (BOS, outline) stays.
        let header = run(1000, 5);
        let cached = joined(&[header.clone(), run(0, 40), run(40, 300)]);
        let prompt = joined(&[header, run(40, 300), run(340, 20)]);
        let plan = super::plan(&cached, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!(plan.common, 5);
        assert_eq!(
            plan.moves,
            [Move {
                from: 45,
                to: 5,
                len: 300
            }]
        );
        assert_eq!(plan.kept, 305);
        assert_eq!(applied(&cached, &plan), prompt[..305]);
    }

    #[test]
    fn runs_shorter_than_the_minimum_are_not_moved() {
        let cached = joined(&[run(0, 10), run(10, 5), run(15, 63)]);
        let prompt = joined(&[run(0, 10), run(15, 63), vec![-9]]);
        let plan = super::plan(&cached, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!((plan.common, plan.kept), (10, 10));
        assert!(plan.moves.is_empty());
        // One token longer, and it moves.
        let cached = joined(&[run(0, 10), run(10, 5), run(15, 64)]);
        let prompt = joined(&[run(0, 10), run(15, 64), vec![-9]]);
        let plan = super::plan(&cached, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!(plan.kept, 74);
        assert_eq!(applied(&cached, &plan), prompt[..74]);
    }

    #[test]
    fn several_runs_move_in_order() {
        let cached = joined(&[run(0, 8), vec![-1; 3], run(8, 70), vec![-2; 4], run(78, 80)]);
        let prompt = joined(&[run(0, 8), run(8, 70), run(78, 80), vec![-9]]);
        let plan = super::plan(&cached, &prompt, true, MIN_SHIFT_RUN);
        assert_eq!(plan.moves.len(), 2);
        assert!(plan.moves.iter().all(|m| m.to <= m.from));
        assert_eq!(plan.kept, 158);
        assert_eq!(applied(&cached, &plan), prompt[..158]);
    }

    #[test]
    fn a_cache_that_cannot_shift_keeps_only_the_common_prefix() {
        let cached = joined(&[run(0, 10), run(10, 20), run(30, 200)]);
        let prompt = joined(&[run(0, 10), run(30, 200), vec![-9]]);
        let plan = super::plan(&cached, &prompt, false, MIN_SHIFT_RUN);
        assert_eq!((plan.common, plan.kept), (10, 10));
        assert!(plan.moves.is_empty());
    }

    #[test]
    fn empty_inputs_plan_nothing() {
        assert_eq!(plan(&[], &[], true, MIN_SHIFT_RUN), ReusePlan::default());
        assert_eq!(
            plan(&run(0, 10), &[], true, MIN_SHIFT_RUN),
            ReusePlan::default()
        );
        assert_eq!(
            plan(&[], &run(0, 10), true, MIN_SHIFT_RUN),
            ReusePlan::default()
        );
    }
}
