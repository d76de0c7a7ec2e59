//! The prompt stage: a [`CompletionContext`] in, the model's token sequence out.
//!
//! Layout, front to back: BOS (when the model wants it), other files' material
//! (in the template's file-separator form, or as comments at the start of the
//! prefix), then the template's parts — the prefix being this file's outline
//! (imports, enclosing signatures) followed by the window before the cursor.
//! Everything is budgeted in tokens of the loaded model, through the [`Tokenizer`]
//! trait, so this stage is tested without one.
//!
//! Invariants (what keeps the model's KV cache valid from one keystroke to the next):
//! - Text is tokenized line by line, and the cursor line on its own, so typing on
//!   the cursor line never changes a token before it.
//! - An over-budget prefix loses whole lines from its start, in steps of
//!   [`WINDOW_STEP_LINES`], so the start of the window moves in jumps, not with
//!   every keystroke.
//! - Other files' material comes first; it changes only when the context stage
//!   refreshes it (see [`crate::context`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::context::{CompletionContext, WINDOW_STEP_LINES};
use crate::template::{FileForm, Part, Template};
use crate::tokens::{Token, Tokenizer};

/// A tokenizer that remembers the tokens of the lines it has seen: most lines of a
/// prompt are the same as in the previous one.
pub struct CachingTokenizer<T> {
    inner: T,
    lines: RefCell<HashMap<String, Vec<Token>>>,
    /// Bytes of the remembered lines' text.
    bytes: Cell<usize>,
}

/// Lines remembered before the cache starts afresh.
const CACHED_LINES: usize = 16_384;
/// Bytes of lines remembered before the cache starts afresh: lines have any length
/// (a minified file's line, edited, is a new one at each keystroke).
const CACHED_BYTES: usize = 16 << 20;

impl<T: Tokenizer> CachingTokenizer<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        CachingTokenizer {
            inner,
            lines: RefCell::new(HashMap::new()),
            bytes: Cell::new(0),
        }
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: Tokenizer> Tokenizer for CachingTokenizer<T> {
    fn tokenize(&self, text: &str) -> Vec<Token> {
        if let Some(tokens) = self.lines.borrow().get(text) {
            return tokens.clone();
        }
        let tokens = self.inner.tokenize(text);
        let mut lines = self.lines.borrow_mut();
        if lines.len() >= CACHED_LINES || self.bytes.get() + text.len() > CACHED_BYTES {
            lines.clear();
            self.bytes.set(0);
        }
        if text.len() <= CACHED_BYTES {
            self.bytes.set(self.bytes.get() + text.len());
            lines.insert(text.to_owned(), tokens.clone());
        }
        tokens
    }
}

/// Token budgets of the prompt's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most tokens of the window before the cursor.
    pub prefix_tokens: usize,
    /// Most tokens of text after the cursor (FIM templates only).
    pub suffix_tokens: usize,
    /// Most tokens of the outline and of other files' material together.
    pub extra_tokens: usize,
}

impl Budget {
    /// This budget for a context of `context_size` tokens: the window before the
    /// cursor gets at most half of it, the text after it and other files' material
    /// an eighth each (the answer keeps its quarter).
    pub fn fit(self, context_size: u32) -> Budget {
        let share = |value: usize, divisor: u32| value.min((context_size / divisor) as usize);
        Budget {
            prefix_tokens: share(self.prefix_tokens, 2).max(1),
            suffix_tokens: share(self.suffix_tokens, 8),
            extra_tokens: share(self.extra_tokens, 8),
        }
    }
}

impl Default for Budget {
    /// About 1.1k prompt tokens at most: the anchors' CPU-friendly size. The suffix
    /// is kept short because in prefix-suffix-middle order it sits after the cursor's
    /// line and is decoded again on every keystroke.
    fn default() -> Self {
        Budget {
            prefix_tokens: 768,
            suffix_tokens: 128,
            extra_tokens: 256,
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

/// Most characters of a path (or repository name) in the prompt: its end, which
/// names the file. The path lines are not in the token budget, so a path of any
/// length (an HTTP client's `filename`) must not crowd out the code.
const MAX_PATH_CHARS: usize = 200;

/// The last [`MAX_PATH_CHARS`] characters of `path`.
fn path_tail(path: &str) -> &str {
    let skip = path.chars().count().saturating_sub(MAX_PATH_CHARS);
    path.char_indices()
        .nth(skip)
        .map_or("", |(at, _)| &path[at..])
}

/// Builds the prompt for `context`.
pub fn build(
    context: &CompletionContext,
    template: &Template,
    budget: Budget,
    tokenizer: &impl Tokenizer,
) -> Prompt {
    let preamble = &context.preamble;
    let outline = fit_tail(&by_line(&preamble.outline, tokenizer), budget.extra_tokens);
    let outline_len: usize = outline.iter().map(Vec::len).sum();
    let files_budget = budget.extra_tokens - outline_len;

    let mut tokens =
        Vec::with_capacity(budget.prefix_tokens + budget.suffix_tokens + budget.extra_tokens + 8);
    tokens.extend(template.bos);
    // Other files: in the separator form they precede the template's parts; as
    // comments they open the prefix.
    let mut prefix = Vec::new();
    match template.files {
        FileForm::Separators { repo, sep } => {
            let mut files = Vec::new();
            for snippet in fit_snippets(preamble, files_budget, |s| {
                let mut lines = vec![tokenizer.tokenize(&format!("{}\n", path_tail(&s.path)))];
                lines.extend(by_line(&s.text, tokenizer));
                lines
            }) {
                files.push(sep);
                files.extend(snippet);
            }
            if let (Some(repo), false) = (repo, preamble.repository.is_empty() || files.is_empty())
            {
                tokens.push(repo);
                tokens
                    .extend(tokenizer.tokenize(&format!("{}\n", path_tail(&preamble.repository))));
            }
            tokens.extend(files);
            if !preamble.path.is_empty() {
                tokens.push(sep);
                tokens.extend(tokenizer.tokenize(&format!("{}\n", path_tail(&preamble.path))));
            }
        }
        FileForm::Comments => {
            let marker = &preamble.comment;
            for snippet in fit_snippets(preamble, files_budget, |s| {
                let mut lines =
                    vec![tokenizer.tokenize(&format!("{marker} {}\n", path_tail(&s.path)))];
                let commented: String = s.text.lines().map(|l| format!("{marker} {l}\n")).collect();
                lines.extend(by_line(&commented, tokenizer));
                lines
            }) {
                prefix.extend(snippet);
            }
        }
    }
    prefix.extend(outline.into_iter().flatten());
    let mut window = fit_prefix(&context.prefix, budget.prefix_tokens, tokenizer);
    // Healing must leave something to decode: a model with neither BOS nor other
    // prompt tokens would otherwise get an empty prompt.
    let leaves_tokens = window.len() > 1
        || !prefix.is_empty()
        || template.bos.is_some()
        || template.parts.len() > 1;
    let healed = if context.line_prefix.is_empty() || !leaves_tokens {
        None
    } else {
        window.pop()
    };
    prefix.extend(window);
    for part in &template.parts {
        match part {
            Part::Tokens(literal) => tokens.extend(literal),
            Part::Prefix => tokens.extend(&prefix),
            Part::Suffix => {
                tokens.extend(fit_suffix(&context.suffix, budget.suffix_tokens, tokenizer))
            }
        }
    }
    Prompt { tokens, healed }
}

/// The tokens of each line of `text` (line breaks included), tokenized one by one.
fn by_line(text: &str, tokenizer: &impl Tokenizer) -> Vec<Vec<Token>> {
    text.split_inclusive('\n')
        .map(|line| tokenizer.tokenize(line))
        .collect()
}

/// The longest tail of `lines` whose tokens fit `budget`.
fn fit_tail(lines: &[Vec<Token>], budget: usize) -> Vec<Vec<Token>> {
    let mut total = 0;
    let first = lines
        .iter()
        .rposition(|line| {
            total += line.len();
            total > budget
        })
        .map_or(0, |over| over + 1);
    lines[first..].to_vec()
}

/// The newest snippets (the last ones) whose rendered tokens fit `budget`, oldest first.
fn fit_snippets(
    preamble: &crate::context::Preamble,
    budget: usize,
    render: impl Fn(&crate::context::Snippet) -> Vec<Vec<Token>>,
) -> Vec<Vec<Token>> {
    let mut kept = Vec::new();
    let mut left = budget;
    for snippet in preamble.snippets.iter().rev() {
        let tokens: Vec<Token> = render(snippet).into_iter().flatten().collect();
        // The separator token of the file form counts too.
        if tokens.len() + 1 > left {
            continue;
        }
        left -= tokens.len() + 1;
        kept.push(tokens);
    }
    kept.reverse();
    kept
}

/// Tokens of the longest tail of `prefix` that fits `budget`, cut at a line that is a
/// multiple of the window's step from the start: [`WINDOW_STEP_LINES`], fewer for a
/// budget under 768 tokens (a step drops about a third of the budget at ~8 tokens a
/// line, so a short window is not cut to a few lines); a single line over budget
/// keeps its last `budget` tokens. Complete lines and the cursor line are tokenized
/// apart.
fn fit_prefix(prefix: &str, budget: usize, tokenizer: &impl Tokenizer) -> Vec<Token> {
    let step = (budget / 24).clamp(4, WINDOW_STEP_LINES);
    let lines = by_line(prefix, tokenizer);
    let mut total: usize = lines.iter().map(Vec::len).sum();
    let mut first = 0;
    while total > budget && first + 1 < lines.len() {
        let next = (first + step).min(lines.len() - 1);
        total -= lines[first..next].iter().map(Vec::len).sum::<usize>();
        first = next;
    }
    let mut tokens: Vec<Token> = lines[first..].iter().flatten().copied().collect();
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
    use crate::context::{Preamble, Snippet};
    use crate::template::tests::FakeVocab;
    use crate::template::{Family, detect};

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
            .map(|&t| char::from_u32(t as u32).unwrap_or('¤'))
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
        let template = Template::prefix_only(Some(-1));
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
        let template = detect(&FakeVocab::with(&[
            "<fim_prefix>",
            "<fim_suffix>",
            "<fim_middle>",
        ]));
        assert_eq!(template.family, Family::StarCoder);
        let prompt = build(
            &context("ab", "cd"),
            &template,
            Budget::default(),
            &CharTokenizer,
        );
        let expected = vec![-10, 'a' as Token, -11, 'c' as Token, 'd' as Token, -12];
        assert_eq!(prompt.tokens, expected);
        assert_eq!(prompt.healed, Some('b' as Token));
    }

    fn preamble() -> Preamble {
        Preamble {
            repository: "shop".into(),
            path: "src/cart.py".into(),
            comment: "#".into(),
            outline: "import math\nclass Cart:\n".into(),
            snippets: vec![
                Snippet {
                    path: "src/old.py".into(),
                    source: "/shop/src/old.py".into(),
                    text: "x = 1\n".into(),
                },
                Snippet {
                    path: "src/tax.py".into(),
                    source: "/shop/src/tax.py".into(),
                    text: "def rate(region):\n".into(),
                },
            ],
        }
    }

    /// A template of a family with file separators (Qwen's tokens).
    fn qwen_template() -> Template {
        let vocab = FakeVocab::with(&[
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            "<|repo_name|>",
            "<|file_sep|>",
        ]);
        detect(&vocab)
    }

    #[test]
    fn other_files_use_the_separator_form_when_the_family_has_one() {
        let template = qwen_template();
        assert_eq!(template.family, Family::Qwen);
        let mut ctx = context("    def total(self):\n        ", "\n");
        ctx.preamble = preamble();
        let prompt = build(&ctx, &template, Budget::default(), &CharTokenizer);
        let shown = text(&prompt.tokens).replace(char::from_u32(0).unwrap(), "");
        let rendered: String = prompt
            .tokens
            .iter()
            .map(|&t| match t {
                -10 => "<pre>".to_owned(),
                -11 => "<suf>".to_owned(),
                -12 => "<mid>".to_owned(),
                -13 => "<repo>".to_owned(),
                -14 => "<sep>".to_owned(),
                t => char::from_u32(t as u32).unwrap().to_string(),
            })
            .collect();
        assert!(!shown.is_empty());
        assert_eq!(
            rendered,
            "<repo>shop\n<sep>src/old.py\nx = 1\n<sep>src/tax.py\ndef rate(region):\n<sep>src/cart.py\n\
             <pre>import math\nclass Cart:\n    def total(self):\n       <suf>\n<mid>"
        );
        assert_eq!(prompt.healed, Some(' ' as Token));
    }

    #[test]
    fn a_path_of_any_length_keeps_only_its_end_in_the_prompt() {
        let template = qwen_template();
        let mut ctx = context("    def total(self):\n        ", "\n");
        ctx.preamble = preamble();
        ctx.preamble.path = format!("{}/é/cart.py", "d/".repeat(1 << 20));
        let prompt = build(&ctx, &template, Budget::default(), &CharTokenizer);
        let shown = text(&prompt.tokens);
        let tail = path_tail(&ctx.preamble.path);
        assert_eq!(tail.chars().count(), MAX_PATH_CHARS);
        assert!(
            tail.ends_with("/é/cart.py") && shown.contains(tail),
            "{shown}"
        );
        assert!(shown.contains("def total(self):"));
        assert!(prompt.tokens.len() < 1000, "{} tokens", prompt.tokens.len());
        assert_eq!(path_tail("src/cart.py"), "src/cart.py");
    }

    #[test]
    fn other_files_are_comments_for_prefix_only_models_and_budgets_drop_the_oldest() {
        let template = Template::prefix_only(None);
        let mut ctx = context("def f():\n", "");
        ctx.preamble = preamble();
        let prompt = build(&ctx, &template, Budget::default(), &CharTokenizer);
        assert_eq!(
            text(&prompt.tokens),
            "# src/old.py\n# x = 1\n# src/tax.py\n# def rate(region):\nimport math\nclass Cart:\ndef f():\n"
        );
        // Room for the outline and the newest snippet only.
        let tight = Budget {
            extra_tokens: 60,
            ..Budget::default()
        };
        let prompt = build(&ctx, &template, tight, &CharTokenizer);
        assert_eq!(
            text(&prompt.tokens),
            "# src/tax.py\n# def rate(region):\nimport math\nclass Cart:\ndef f():\n"
        );
    }

    #[test]
    fn over_budget_prefix_loses_lines_in_steps() {
        // 250 lines of 4 chars ("xxx\n") then the cursor line "abc".
        let prefix = format!("{}abc", "xxx\n".repeat(250));
        let tokens = fit_prefix(&prefix, 768, &CharTokenizer);
        // 1003 tokens; dropping 32 lines (128 tokens) twice leaves 747 <= 768.
        assert_eq!(tokens.len(), 747);
        assert!(text(&tokens).ends_with("xxx\nabc"));
        // Typing more on the cursor line keeps the same start.
        let longer = fit_prefix(&format!("{prefix}def"), 768, &CharTokenizer);
        assert_eq!(&longer[..tokens.len()], &tokens[..]);
    }

    #[test]
    fn a_short_window_loses_lines_in_smaller_steps() {
        let prefix = format!("{}abc", "xxx\n".repeat(100));
        // 403 tokens; steps of 10 lines (40 tokens) leave 243 <= 256, where steps of
        // 32 lines would leave 147.
        assert_eq!(fit_prefix(&prefix, 256, &CharTokenizer).len(), 243);
    }

    /// Merges a line break with the indentation after it, as byte-pair tokenizers do:
    /// tokenizing a whole text at once would change the tokens before the cursor line.
    struct MergingTokenizer;

    impl Tokenizer for MergingTokenizer {
        fn tokenize(&self, text: &str) -> Vec<Token> {
            let mut tokens = Vec::new();
            let mut chars = text.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\n' && chars.peek() == Some(&' ') {
                    chars.next();
                    tokens.push(1_000_000);
                } else {
                    tokens.push(c as Token);
                }
            }
            tokens
        }
    }

    #[test]
    fn typing_a_line_changes_only_the_tokens_of_that_line() {
        let template = Template::prefix_only(Some(-1));
        let above = "def area(w, h):\n    \"\"\"Area of a rectangle.\"\"\"\n";
        let line = "    return w * h";
        let mut previous: Option<(Vec<Token>, usize)> = None;
        for typed in 0..=line.len() {
            let mut ctx = context(&format!("{above}{}", &line[..typed]), "\n");
            ctx.preamble.outline = "import math\n".into();
            let prompt = build(&ctx, &template, Budget::default(), &MergingTokenizer);
            let before_line = 1
                + MergingTokenizer.tokenize("import math\n").len()
                + above
                    .split_inclusive('\n')
                    .map(|l| MergingTokenizer.tokenize(l).len())
                    .sum::<usize>();
            if let Some((tokens, len)) = &previous {
                assert_eq!(*len, before_line);
                assert_eq!(
                    prompt.tokens[..before_line],
                    tokens[..before_line],
                    "typed {typed}"
                );
            }
            previous = Some((prompt.tokens, before_line));
        }
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

    #[test]
    fn the_caching_tokenizer_answers_like_the_one_it_wraps() {
        let cached = CachingTokenizer::new(MergingTokenizer);
        for text in ["a\n b", "a\n b", "xyz\n"] {
            assert_eq!(cached.tokenize(text), MergingTokenizer.tokenize(text));
        }
        assert_eq!(cached.lines.borrow().len(), 2);
        assert_eq!(cached.bytes.get(), 8);
        // Lines that would take it over its bytes start it afresh.
        let long = "y".repeat(CACHED_BYTES - 4);
        assert_eq!(cached.tokenize(&long), MergingTokenizer.tokenize(&long));
        assert_eq!(cached.lines.borrow().len(), 1);
        assert_eq!(cached.bytes.get(), CACHED_BYTES - 4);
    }
}
