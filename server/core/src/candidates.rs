//! Several candidate answers at one position: which of them are distinct, and the
//! text after the cursor that rescoring asks the model to read after each one.
//!
//! A prefix-only model never sees the code after the cursor while it generates. To
//! let that code inform the answer anyway, each candidate is followed by the rest of
//! its line and the next [`SCORED_LINES`] non-blank lines of the file, and the
//! candidates are ordered by how likely the model finds that whole text (the sum of
//! its tokens' log-probabilities): a candidate that makes the following lines
//! natural wins over one that makes them surprising.

use crate::context::CompletionContext;
use crate::postprocess::{self, StopRules};
use crate::syntax;

/// Most items an invoked request offers.
pub const MAX_CANDIDATES: usize = 3;

/// Non-blank lines after the cursor line that rescoring reads after each candidate.
pub const SCORED_LINES: usize = 3;

/// The text a candidate is followed by in the file: the rest of the cursor line, its
/// line break, and the following lines up to and including the [`SCORED_LINES`]th
/// non-blank one (blank lines between them as they are).
pub fn following_text(context: &CompletionContext) -> String {
    let after_line = context
        .suffix
        .strip_prefix(context.line_suffix.as_str())
        .unwrap_or(&context.suffix);
    let mut text = context.line_suffix.clone();
    let mut non_blank = 0;
    for line in after_line.split_inclusive('\n') {
        if non_blank == SCORED_LINES {
            break;
        }
        text.push_str(line);
        non_blank += usize::from(!line.trim().is_empty());
    }
    text
}

/// `texts` without empty ones and repetitions (texts equal once trailing white space
/// is ignored), in their order, at most [`MAX_CANDIDATES`].
pub fn distinct(texts: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for text in texts {
        if kept.len() == MAX_CANDIDATES {
            break;
        }
        let same = |k: &String| k.trim_end() == text.trim_end();
        if !text.trim().is_empty() && !kept.iter().any(same) {
            kept.push(text);
        }
    }
    kept
}

/// The order of `scores` from best (highest) to worst; ties keep their order, so
/// that the greedy answer (first) wins a tie.
pub fn best_first(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Whether `answer`'s first line defines one of `names` (names nothing above the
/// cursor defines): a loop header binding one of them (`for x in`, see
/// [`loop_targets`]), a name after `as` (`with open(p) as x:`), or an assignment or
/// declaration (`x = …`, `a, b = …`, `let mut x: T = …`, `x := …`, `int x = …`)
/// with one of them among its targets
/// and none of them read by its value (`x = x + 1` and `x = ctx[x]` read a name not
/// defined yet).
pub fn defines(answer: &str, names: &[String]) -> bool {
    let line = answer.lines().next().unwrap_or_default();
    let named = |word: &str| names.iter().any(|name| name == word);
    if let Some(targets) = loop_targets(line) {
        return words(targets).any(|(_, word)| named(word));
    }
    // `with open(p) as f:`, `except OSError as e:`: the name after `as`.
    let mut after_as = line.split(" as ").skip(1).filter_map(|rest| {
        words(rest)
            .next()
            .filter(|(at, _)| *at == 0)
            .map(|(_, word)| word)
    });
    if after_as.any(named) {
        return true;
    }
    let Some(equals) = assignment(line) else {
        return false;
    };
    let targets = line[..equals].strip_suffix(':').unwrap_or(&line[..equals]);
    // A type annotation after the targets (`x: int`, `let v: Vec<u8>`).
    let targets = targets.split(':').next().unwrap_or_default();
    let allowed = |c: char| {
        c.is_alphanumeric() || matches!(c, '_' | ',' | '(' | ')' | '[' | ']' | ' ' | '\t')
    };
    // `f(x=1)`: a keyword argument; `x[i] = 1`: an element; neither binds a name.
    let call = targets.char_indices().any(|(i, c)| {
        matches!(c, '(' | '[') && targets[..i].ends_with(|p: char| p.is_alphanumeric() || p == '_')
    });
    targets.chars().all(allowed)
        && !call
        && words(targets).any(|(_, word)| named(word))
        && !variables(&line[equals + 1..]).any(named)
}

/// The variables a loop header binds (`for x, y in`, `for (const x of`,
/// `for (auto x :`, `for _, x := range`): the text between `for` and `in`, `of`,
/// `:` or `:=`, when it holds only names, commas, brackets and declaration words.
fn loop_targets(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("for")?;
    // `for` itself, not `format := …`.
    if !rest.starts_with([' ', '(']) {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('(').unwrap_or(rest);
    let end = [" in ", " of ", " :", ":="]
        .iter()
        .filter_map(|stop| rest.find(stop))
        .min()?;
    let targets = &rest[..end];
    let names_only = targets
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | ',' | '(' | ')' | '[' | ']' | ' '));
    (names_only && !targets.trim().is_empty()).then_some(targets)
}

/// The words of `text` (runs of letters, digits and `_`), each with its byte offset.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
        .map(move |word| (word.as_ptr() as usize - text.as_ptr() as usize, word))
}

/// The words of `code` that may be variables: not in string literals, not members
/// (after `.`, `->` or `::`) and not starting with a digit.
fn variables(code: &str) -> impl Iterator<Item = &str> {
    // Whether each byte is inside quotes (escapes skipped).
    let mut quoted = vec![false; code.len()];
    let mut open: Option<u8> = None;
    let mut escaped = false;
    for (i, byte) in code.bytes().enumerate() {
        match open {
            Some(quote) => {
                quoted[i] = true;
                if escaped {
                    escaped = false;
                } else if byte == b'\\' {
                    escaped = true;
                } else if byte == quote {
                    open = None;
                }
            }
            None if matches!(byte, b'"' | b'\'' | b'`') => {
                quoted[i] = true;
                open = Some(byte);
            }
            None => {}
        }
    }
    words(code)
        .filter(move |(at, word)| {
            let before = code[..*at].trim_end();
            let member = [".", "->", "::"].iter().any(|m| before.ends_with(m));
            !quoted[*at] && !member && !word.starts_with(|c: char| c.is_ascii_digit())
        })
        .map(|(_, word)| word)
}

/// Where the first `=` of `line` is that is neither a comparison, nor an operator's
/// assignment (`+=`), nor an arrow (`=>`).
fn assignment(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b'='
            && !matches!(bytes.get(i + 1), Some(b'=' | b'>'))
            && (i == 0 || !b"=<>!+-*/%&|^".contains(&bytes[i - 1]))
    })
}

/// Where the value starts in an answer whose first line is an assignment (just
/// after its `=`).
pub fn value_start(answer: &str) -> Option<usize> {
    let line = answer.lines().next().unwrap_or_default();
    // A loop header's `=` (`key=…` in its iterable) starts no value.
    if loop_targets(line).is_some() {
        return None;
    }
    assignment(line).map(|at| at + 1)
}

/// The text a candidate for `name` starts with at `context`: the name, after the
/// indentation the next line with code has when the cursor line has none yet (an
/// editor leaves a blank line empty). When the cursor line is indented, the next
/// line with code more so, and the line above leaves nothing open (a block, a
/// bracket), the cursor line opens the block the name is read in: a loop over it,
/// in the languages whose loops name their variable first (`for x`,
/// `for (const x`); `None` in the others.
pub fn seed_text(context: &CompletionContext, name: &str) -> Option<String> {
    let next_code = context
        .suffix
        .lines()
        .skip(1)
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let indent = &next_code[..next_code.len() - next_code.trim_start().len()];
    let line_indent = context.line_prefix.as_str();
    // The line above left a block, bracket or line open: the cursor line is in it.
    let above_continues = context
        .prefix
        .lines()
        .rev()
        .skip(1)
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_end().ends_with([':', '{', '(', '[', ',', '\\']));
    let opens_block = !line_indent.is_empty()
        && line_indent.trim().is_empty()
        && indent.len() > line_indent.len()
        && indent.starts_with(line_indent)
        && !above_continues;
    if opens_block {
        return match context.language_id.as_str() {
            "python" | "rust" => Some(format!("for {name}")),
            "javascript" | "javascriptreact" | "typescript" | "typescriptreact" => {
                Some(format!("for (const {name}"))
            }
            _ => None,
        };
    }
    let missing = indent.strip_prefix(line_indent).unwrap_or_default();
    Some(format!("{missing}{name}"))
}

/// `order` (indices into `answers`) with the answers that define one of `names` (see
/// [`defines`]) moved to the front, each group in its order: a line that defines what
/// the code below uses but nothing above defines is the likeliest one wanted there.
pub fn binding_first(order: &[usize], answers: &[String], names: &[String]) -> Vec<usize> {
    to_front(order, |i| defines(&answers[i], names))
}

/// `order` (indices into `answers`, raw answers whose generation ended by `rules`)
/// with the answers that are unfinished as shown at `context` moved to the back, each
/// group in its order: one that is only comments, or that ends by opening a block it
/// gives no body (`else:` with the document's next line not indented deeper), needs
/// more written before it is code that runs, where another item may already be.
/// Judged on what post-processing makes of each answer (it cuts a header a limit left
/// at the end of a longer answer); without post-processing, `order` as it is.
pub fn finished_first(
    order: &[usize],
    answers: &[String],
    context: &CompletionContext,
    rules: &StopRules,
) -> Vec<usize> {
    if !rules.shapes_answers() {
        return order.to_vec();
    }
    to_front(order, |i| {
        postprocess::finish(&answers[i], context, rules)
            .is_some_and(|shown| !unfinished(&shown, context))
    })
}

/// `order` with the indices `wanted` says yes to first, each group in its order.
fn to_front(order: &[usize], wanted: impl Fn(usize) -> bool) -> Vec<usize> {
    let (mut first, rest): (Vec<usize>, Vec<usize>) = order.iter().partition(|&&i| wanted(i));
    first.extend(rest);
    first
}

/// Whether `shown`, a finished answer at `context`, is only comments or ends with a
/// block it gives no body (see [`finished_first`]).
fn unfinished(shown: &str, context: &CompletionContext) -> bool {
    let whole = format!("{}{shown}", context.line_prefix);
    let lines: Vec<&str> = whole.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(last) = lines.last() else {
        return false;
    };
    let marker = syntax::comment_marker(&context.language_id);
    let comment = |line: &&str| line.trim_start().starts_with(marker);
    lines.iter().all(comment) || postprocess::opens_block_without_body(last, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_answers_come_before_headers_without_a_body_and_comments() {
        use crate::postprocess::{Options, Trigger, plan};
        let rules_at = |context: &CompletionContext, options: Options| {
            let plan = plan(context, Trigger::Invoked, options).expect("a plan");
            StopRules::new(context, &plan, options)
        };
        let context = CompletionContext {
            prefix: "def f(lex):\n    lex.next()\n    ".into(),
            line_prefix: "    ".into(),
            suffix: "\n\ndef g():\n    pass\n".into(),
            language_id: "python".into(),
            ..CompletionContext::default()
        };
        let rules = rules_at(&context, Options::default());
        let answers = [
            "if len(lex) == 0:",
            "# print(lex)",
            "lex.whitespace_split = True",
            "else:\n        raise ValueError(x)",
            // Post-processing cuts the header a limit left at the end.
            "lex.commenters = ''\n    if lex:",
        ]
        .map(String::from);
        let all = [0, 1, 2, 3, 4];
        assert_eq!(
            finished_first(&all, &answers, &context, &rules),
            [2, 3, 4, 0, 1]
        );
        // The header's body is the document's next line: finished.
        let body_below = CompletionContext {
            suffix: "\n        yield lex\n".into(),
            ..context.clone()
        };
        let rules = rules_at(&body_below, Options::default());
        assert_eq!(
            finished_first(&[0, 1, 2], &answers, &body_below, &rules),
            [0, 2, 1]
        );
        // Without post-processing answers are shown as generated, in their order.
        let off = Options {
            enabled: false,
            ..Options::default()
        };
        let rules = rules_at(&context, off);
        assert_eq!(finished_first(&all, &answers, &context, &rules), all);
    }

    fn context(suffix: &str, line_suffix: &str) -> CompletionContext {
        CompletionContext {
            suffix: suffix.into(),
            line_suffix: line_suffix.into(),
            ..CompletionContext::default()
        }
    }

    #[test]
    fn following_text_is_the_rest_of_the_line_and_three_non_blank_lines() {
        let ctx = context(")\n    a = 1\n\n    b = 2\n    c = 3\n    d = 4\n", ")");
        assert_eq!(
            following_text(&ctx),
            ")\n    a = 1\n\n    b = 2\n    c = 3\n"
        );
        let short = context("\nreturn x", "");
        assert_eq!(following_text(&short), "\nreturn x");
        assert_eq!(following_text(&context("", "")), "");
    }

    #[test]
    fn distinct_drops_empty_and_repeated_texts_and_keeps_three() {
        let texts = ["a", "a  ", " ", "b", "c", "d"].map(String::from);
        assert_eq!(distinct(texts), ["a", "b", "c"]);
    }

    #[test]
    fn an_answer_defines_a_name_it_assigns_or_declares_without_reading_it() {
        let names = ["res".to_owned(), "total".to_owned()];
        for yes in [
            "res = []",
            "na, res = a, b",
            "let mut total: u32 = 0;",
            "total := 0",
            "int total = 0;",
            "res: list[int] = []\nmore",
            "res = self.res + other.total",
            "for res in items:",
            "for (const res of items) {",
            "for i, res in enumerate(items):",
            "for _, total := range xs {",
            "with open(path) as res:",
            "except OSError as res:",
            "total = row[\"total\"] + row['res']",
            "res := r.URL.Query().Get(\"res\")",
            "int total = s->total;",
            "let total = T::total();",
        ] {
            assert!(defines(yes, &names), "{yes}");
        }
        for no in [
            "result = []",
            "res == []",
            "total += 1",
            "self.res = []",
            "if res:",
            "print(total)",
            "x = res",
            "f(res=1)",
            "res[0] = 1",
            "res => res + 1",
            "res = res + 1",
            "total = ctx[total]",
            "res = ' '.join(res)",
            "for item in res:",
            "with res as f:",
            "format := f(res)",
            "for (let i = 0; i < res; i++) {",
            "",
        ] {
            assert!(!defines(no, &names), "{no}");
        }
    }

    #[test]
    fn the_value_starts_after_the_assignments_equals_sign() {
        assert_eq!(value_start("    seen = set()"), Some(10));
        assert_eq!(value_start("x := 1\ny = 2"), Some(4));
        assert_eq!(value_start("if a == b:"), None);
        assert_eq!(value_start("for k in sorted(d, key=len):"), None);
    }

    #[test]
    fn a_seed_on_an_empty_line_gets_the_next_code_lines_indentation() {
        let mut ctx = context("\n\n        out.append(x)\n", "");
        assert_eq!(seed_text(&ctx, "out").unwrap(), "        out");
        ctx.line_prefix = "        ".into();
        assert_eq!(seed_text(&ctx, "out").unwrap(), "out");
    }

    #[test]
    fn a_seed_on_a_line_that_opens_the_block_below_is_a_loop_over_the_name() {
        let mut ctx = context("\n        if c == '(':\n", "");
        ctx.line_prefix = "    ".into();
        ctx.language_id = "python".into();
        assert_eq!(seed_text(&ctx, "c").unwrap(), "for c");
        ctx.language_id = "typescript".into();
        assert_eq!(seed_text(&ctx, "c").unwrap(), "for (const c");
        ctx.language_id = "c".into();
        assert_eq!(seed_text(&ctx, "c"), None);
        // Below a line that opened a block, the cursor line is in it.
        ctx.language_id = "python".into();
        ctx.prefix = "    if ready:\n    ".into();
        assert_eq!(seed_text(&ctx, "c").unwrap(), "    c");
    }

    #[test]
    fn binding_answers_go_first_each_group_in_its_order() {
        let answers = ["if x:", "res = []", "pass", "res = {}"].map(String::from);
        let names = ["res".to_owned()];
        assert_eq!(binding_first(&[2, 0, 3, 1], &answers, &names), [3, 1, 2, 0]);
        assert_eq!(binding_first(&[0, 2], &answers, &names), [0, 2]);
    }

    #[test]
    fn best_first_orders_by_score_and_keeps_ties_in_order() {
        assert_eq!(best_first(&[-3.0, -1.0, -3.0, -2.0]), [1, 3, 0, 2]);
    }
}
