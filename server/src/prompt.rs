//! The prompt stage: a [`CompletionContext`] in, the model's token sequence out.
//!
//! The layout depends on the model: with FIM tokens, prefix-suffix-middle
//! (`<pre>prefix<suf>suffix<mid>`); without them, the prefix alone. Windows are
//! budgeted in tokens of the loaded model, through the [`Tokenizer`] trait so this
//! stage can be tested without one.
//!
//! Invariant: when the prefix is over budget it loses whole lines from its start,
//! in steps of [`WINDOW_STEP_LINES`], so the first tokens of the prompt stay the
//! same from one keystroke to the next.

use crate::context::{CompletionContext, WINDOW_STEP_LINES};

/// A token id of the loaded model's vocabulary.
pub type Token = i32;

/// Turns text into token ids of some vocabulary, without adding special tokens.
pub trait Tokenizer {
    /// Tokenizes `text`, treating any special-token spelling in it as plain text.
    fn tokenize(&self, text: &str) -> Vec<Token>;
}

/// The fill-in-the-middle tokens of a model's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FimTokens {
    /// Starts the text before the cursor.
    pub prefix: Token,
    /// Starts the text after the cursor.
    pub suffix: Token,
    /// Asks for the middle: generation starts after it.
    pub middle: Token,
}

/// How a prompt is laid out for the loaded model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// The beginning-of-sequence token, when the model wants one (Gemma does: without it
    /// its output degenerates into repetition).
    pub bos: Option<Token>,
    /// FIM tokens, when the model has them; `None` means prefix-only.
    pub fim: Option<FimTokens>,
}

/// Token budgets of the prompt's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most tokens of text before the cursor.
    pub prefix_tokens: usize,
    /// Most tokens of text after the cursor (FIM models only).
    pub suffix_tokens: usize,
}

impl Default for Budget {
    /// About 1k prompt tokens: the anchors' CPU-friendly size, and what Continue uses.
    fn default() -> Self {
        Budget {
            prefix_tokens: 768,
            suffix_tokens: 256,
        }
    }
}

/// A prompt ready for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// The tokens to decode.
    pub tokens: Vec<Token>,
    /// Token healing: the prefix's last token, left out of `tokens` when the cursor is
    /// mid-line. The prefix may end inside a word or before a space, where its last
    /// token is one the model would rarely produce there ("inve" + "ntory"); the engine
    /// instead makes the first generated token start with this token's text.
    pub healed: Option<Token>,
}

/// Builds the prompt for `context`.
pub fn build(
    context: &CompletionContext,
    template: &Template,
    budget: Budget,
    tokenizer: &impl Tokenizer,
) -> Prompt {
    let mut prefix = fit_prefix(&context.prefix, budget.prefix_tokens, tokenizer);
    // Healing must leave something to decode: a model with neither BOS nor FIM tokens
    // would otherwise get an empty prompt.
    let leaves_tokens = prefix.len() > 1 || template.bos.is_some() || template.fim.is_some();
    let healed = if context.line_prefix.is_empty() || !leaves_tokens {
        None
    } else {
        prefix.pop()
    };
    let mut tokens = Vec::with_capacity(prefix.len() + budget.suffix_tokens + 4);
    tokens.extend(template.bos);
    match template.fim {
        None => tokens.extend(prefix),
        Some(fim) => {
            tokens.push(fim.prefix);
            tokens.extend(prefix);
            tokens.push(fim.suffix);
            tokens.extend(fit_suffix(&context.suffix, budget.suffix_tokens, tokenizer));
            tokens.push(fim.middle);
        }
    }
    Prompt { tokens, healed }
}

/// Tokens of the longest tail of `prefix` that fits `budget`, cut at a line that is a
/// multiple of [`WINDOW_STEP_LINES`] from the start; a single line over budget keeps
/// its last `budget` tokens.
fn fit_prefix(prefix: &str, budget: usize, tokenizer: &impl Tokenizer) -> Vec<Token> {
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(prefix.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < prefix.len() || i == 0)
        .collect();
    // Per-line counts estimate the whole; the final tokenization decides.
    let counts: Vec<usize> = line_starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = line_starts.get(n + 1).copied().unwrap_or(prefix.len());
            tokenizer.tokenize(&prefix[start..end]).len()
        })
        .collect();
    let mut total: usize = counts.iter().sum();
    let mut first = 0;
    while total > budget && first + 1 < line_starts.len() {
        let next = (first + WINDOW_STEP_LINES).min(line_starts.len() - 1);
        total -= counts[first..next].iter().sum::<usize>();
        first = next;
    }
    let mut tokens = tokenizer.tokenize(&prefix[line_starts[first]..]);
    if tokens.len() > budget {
        tokens.drain(..tokens.len() - budget);
    }
    tokens
}

/// Tokens of the longest head of `suffix`, in whole lines, that fits `budget`.
fn fit_suffix(suffix: &str, budget: usize, tokenizer: &impl Tokenizer) -> Vec<Token> {
    let mut tokens = Vec::new();
    for line in suffix.split_inclusive('\n') {
        let line_tokens = tokenizer.tokenize(line);
        if tokens.len() + line_tokens.len() > budget {
            break;
        }
        tokens.extend(line_tokens);
    }
    tokens
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One token per char: the token is the char's code point.
    pub(crate) struct CharTokenizer;

    impl Tokenizer for CharTokenizer {
        fn tokenize(&self, text: &str) -> Vec<Token> {
            text.chars().map(|c| c as Token).collect()
        }
    }

    fn text(tokens: &[Token]) -> String {
        tokens
            .iter()
            .map(|&t| char::from_u32(t as u32).unwrap_or('?'))
            .collect()
    }

    fn context(prefix: &str, suffix: &str) -> CompletionContext {
        CompletionContext {
            prefix: prefix.into(),
            suffix: suffix.into(),
            line_prefix: prefix.rsplit('\n').next().unwrap_or_default().into(),
            ..CompletionContext::default()
        }
    }

    #[test]
    fn prefix_only_layout_starts_with_bos() {
        let template = Template {
            bos: Some(-1),
            fim: None,
        };
        let prompt = build(
            &context("ab", "cd"),
            &template,
            Budget::default(),
            &CharTokenizer,
        );
        // The cursor is mid-line: the last prefix token is healed, not decoded.
        assert_eq!(prompt.tokens, vec![-1, 'a' as Token]);
        assert_eq!(prompt.healed, Some('b' as Token));
        let at_line_start = build(
            &context("ab\n", "cd"),
            &template,
            Budget::default(),
            &CharTokenizer,
        );
        assert_eq!(at_line_start.tokens.len(), 4);
        assert_eq!(at_line_start.healed, None);
    }

    #[test]
    fn fim_layout_is_prefix_suffix_middle() {
        let fim = FimTokens {
            prefix: -2,
            suffix: -3,
            middle: -4,
        };
        let template = Template {
            bos: None,
            fim: Some(fim),
        };
        let prompt = build(
            &context("ab", "cd"),
            &template,
            Budget::default(),
            &CharTokenizer,
        );
        let expected = vec![-2, 'a' as Token, -3, 'c' as Token, 'd' as Token, -4];
        assert_eq!(prompt.tokens, expected);
        assert_eq!(prompt.healed, Some('b' as Token));
    }

    #[test]
    fn over_budget_prefix_loses_lines_in_steps() {
        // 100 lines of 4 chars ("xxx\n") then the cursor line "abc".
        let prefix = format!("{}abc", "xxx\n".repeat(100));
        let tokens = fit_prefix(&prefix, 300, &CharTokenizer);
        // 403 tokens; dropping 32 lines (128 tokens) leaves 275 <= 300.
        assert_eq!(tokens.len(), 275);
        assert!(text(&tokens).ends_with("xxx\nabc"));
        // Typing more on the cursor line keeps the same start.
        let longer = fit_prefix(&format!("{prefix}def"), 300, &CharTokenizer);
        assert_eq!(&longer[..tokens.len()], &tokens[..]);
    }

    #[test]
    fn a_single_huge_line_keeps_its_tail() {
        let tokens = fit_prefix(&"y".repeat(1000), 10, &CharTokenizer);
        assert_eq!(tokens.len(), 10);
    }

    #[test]
    fn suffix_keeps_whole_lines_within_budget() {
        let tokens = fit_suffix("ab\ncd\nef\n", 7, &CharTokenizer);
        assert_eq!(text(&tokens), "ab\ncd\n");
    }
}
