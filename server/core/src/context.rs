//! The context stage: what text around the cursor the model gets to see.
//!
//! Input: a [`Document`] and a cursor; output: a [`CompletionContext`] of plain
//! strings. No tokens and no model here; the prompt stage fits these strings into
//! the model's token budget. What comes from outside the window — the [`Preamble`]
//! of outline and other files — is gathered by [`crate::workspace`].
//!
//! Invariant: the prefix window starts at a line boundary that moves in steps of
//! [`WINDOW_STEP_LINES`], not with every line typed, so the start of the prompt —
//! and the model's KV cache for it — survives keystrokes.

use ropey::Rope;

use crate::documents::Document;
use crate::syntax::{self, SyntaxFacts};
use crate::unbound;

/// The prefix window's first line is a multiple of this many lines.
pub const WINDOW_STEP_LINES: usize = 32;

/// How many lines around the cursor to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Lines before the cursor line (at least; the start is rounded down to a step).
    pub prefix_lines: usize,
    /// Lines after the cursor line.
    pub suffix_lines: usize,
}

impl Default for Window {
    /// llama.vim's defaults: 256 lines before the cursor, 64 after.
    fn default() -> Self {
        Window {
            prefix_lines: 256,
            suffix_lines: 64,
        }
    }
}

/// Most characters of the window before the cursor, and after it: lines are not
/// bounded in length (a minified file is one line), and every cached answer and
/// prompt line copies its context. Far more than a prompt's token budget uses.
pub const MAX_PREFIX_CHARS: usize = 128 * 1024;
/// See [`MAX_PREFIX_CHARS`].
pub const MAX_SUFFIX_CHARS: usize = 32 * 1024;
/// Where the bound before the cursor cuts a line, it cuts at a multiple of this many
/// characters, so the window's start stays put while the user types (the prompt's
/// start, and the typed-through cache's keys, stay the same). The text after the
/// cursor keeps its length, and so its text, while the user types.
const CUT_STEP_CHARS: usize = 8 * 1024;

/// Characters per token assumed where a position is picked before tokenizing: code
/// in the vocabularies of small models runs at three to four.
const CHARS_PER_TOKEN: usize = 3;

/// Where to assume the cursor of a document just opened, to bring its prompt into
/// the model's cache before the user types: editors open files at the top, so the
/// end of the last line whose text from the start still fits a prefix of
/// `prefix_tokens` tokens (the whole text when it fits). A cursor anywhere above
/// it shares this prompt's start (the window begins at line 0 for both).
pub fn opening_cursor(text: &Rope, prefix_tokens: usize) -> usize {
    let budget = prefix_tokens.saturating_mul(CHARS_PER_TOKEN);
    if text.len_chars() <= budget {
        return text.len_chars();
    }
    let line = text.char_to_line(budget);
    // The end of the line before the one the budget ends in (before its break).
    let next_line_start = text.line_to_char(line);
    let mut cursor = next_line_start;
    while cursor > 0 && matches!(text.char(cursor - 1), '\n' | '\r') {
        cursor -= 1;
    }
    cursor
}

/// The text around the cursor, split the ways the later stages need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompletionContext {
    /// Text from the window's first line up to the cursor.
    pub prefix: String,
    /// Text from the cursor to the end of the window's last line.
    pub suffix: String,
    /// The cursor line up to the cursor.
    pub line_prefix: String,
    /// The cursor line after the cursor, without its line break.
    pub line_suffix: String,
    /// The document's language identifier.
    pub language_id: String,
    /// What tree-sitter says about the cursor's surroundings.
    pub syntax: SyntaxFacts,
    /// The first line of the prefix window.
    pub window_first_line: usize,
    /// On a blank cursor line, names the code below it reads that nothing above it
    /// in its function defines (see [`unbound::unbound_names`]).
    pub unbound_names: Vec<String>,
    /// What the model sees before the window.
    pub preamble: Preamble,
}

/// What goes before the window: this file's outline and other files' material.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preamble {
    /// The workspace's name (for the repository form of FIM templates).
    pub repository: String,
    /// This document's path, relative to the workspace.
    pub path: String,
    /// Starts a line comment in this document's language.
    pub comment: String,
    /// Lines of this file above the window that say where the cursor is: the
    /// imports and the headers of the enclosing scopes, as written.
    pub outline: String,
    /// Material from other files, least important first: chunks of recently edited
    /// files, then signatures of what the code near the cursor refers to.
    pub snippets: Vec<Snippet>,
}

/// Text from another file (or from far away in this one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snippet {
    /// Where it comes from, relative to the workspace.
    pub path: String,
    /// Where it comes from on this machine: the absolute file path (else the URI),
    /// for rules about paths (a remote's deny-list).
    pub source: String,
    /// The text, whole lines.
    pub text: String,
}

impl CompletionContext {
    /// Whether there is code (not just white space) right of the cursor on its line.
    pub fn has_text_right_of_cursor(&self) -> bool {
        !self.line_suffix.trim().is_empty()
    }
}

/// Extracts the local context at char index `cursor` (clamped to the document),
/// with an empty preamble.
pub fn extract(document: &Document, cursor: usize, window: Window) -> CompletionContext {
    let rope = &document.text;
    let cursor = cursor.min(rope.len_chars());
    let line = rope.char_to_line(cursor);
    let line_start = rope.line_to_char(line);

    let first_line =
        line.saturating_sub(window.prefix_lines) / WINDOW_STEP_LINES * WINDOW_STEP_LINES;
    let last_line = (line + window.suffix_lines).min(rope.len_lines().saturating_sub(1));
    let earliest = cursor
        .saturating_sub(MAX_PREFIX_CHARS)
        .next_multiple_of(CUT_STEP_CHARS);
    let latest = (cursor + MAX_SUFFIX_CHARS).min(rope.len_chars());
    let window_start = rope.line_to_char(first_line).max(earliest);
    let window_end = if last_line + 1 < rope.len_lines() {
        rope.line_to_char(last_line + 1)
    } else {
        rope.len_chars()
    }
    .min(latest);

    let line_end = if line + 1 < rope.len_lines() {
        rope.line_to_char(line + 1)
    } else {
        rope.len_chars()
    }
    .min(latest);
    let line_suffix = rope.slice(cursor..line_end).to_string();
    let line_suffix = line_suffix.trim_end_matches(['\n', '\r']).to_owned();
    let line_prefix = rope.slice(line_start.max(earliest)..cursor).to_string();
    let blank_line = line_prefix.trim().is_empty() && line_suffix.trim().is_empty();
    let tree = document.tree();

    CompletionContext {
        prefix: rope.slice(window_start..cursor).to_string(),
        suffix: rope.slice(cursor..window_end).to_string(),
        line_prefix,
        line_suffix,
        language_id: document.language_id.clone(),
        syntax: syntax::facts_at(tree.as_ref(), rope, cursor),
        window_first_line: first_line,
        unbound_names: match &tree {
            Some(tree) if blank_line => {
                unbound::unbound_names(tree, rope, cursor, &document.language_id)
            }
            _ => Vec::new(),
        },
        preamble: Preamble::default(),
    }
}

/// The context at a cursor between `prefix` and `suffix`, for text that is not an
/// open document (requests to the HTTP endpoint carry the text itself).
pub fn from_parts(prefix: &str, suffix: &str, language_id: &str) -> CompletionContext {
    let document = Document::new(&format!("{prefix}{suffix}"), 0, language_id);
    extract(&document, prefix.chars().count(), Window::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_cursor_ends_the_lines_that_fit_the_prefix() {
        let short = Rope::from_str("a = 1\nb = 2\n");
        assert_eq!(opening_cursor(&short, 100), short.len_chars());
        let long = Rope::from_str(&numbered_lines(1000));
        let cursor = opening_cursor(&long, 100);
        assert!(cursor <= 300, "{cursor}");
        assert!(cursor >= 300 - 9, "{cursor}");
        // At the end of a line, before its break.
        assert_eq!(long.char(cursor), '\n');
        assert_ne!(long.char(cursor - 1), '\n');
        let crlf = Rope::from_str(&"x = 1\r\n".repeat(100));
        let at = opening_cursor(&crlf, 10);
        assert_eq!(crlf.char(at), '\r');
        assert_eq!(opening_cursor(&Rope::from_str(""), 10), 0);
    }

    #[test]
    fn a_huge_line_is_cut_to_the_window_bounds_around_the_cursor() {
        let line = "x".repeat(MAX_PREFIX_CHARS * 2);
        let text = format!("a = 1\n{line}{line}\nb = 2\n");
        let document = Document::new(&text, 0, "python");
        let cursor = 6 + line.len();
        let context = extract(&document, cursor, Window::default());
        let prefix_len = context.prefix.len();
        assert!((MAX_PREFIX_CHARS - CUT_STEP_CHARS..=MAX_PREFIX_CHARS).contains(&prefix_len));
        assert_eq!(context.line_prefix.len(), prefix_len);
        assert_eq!(context.suffix.len(), MAX_SUFFIX_CHARS);
        assert_eq!(context.line_suffix.len(), MAX_SUFFIX_CHARS);
        // Typing keeps the window's start, and the text after the cursor.
        let typed = format!("a = 1\n{line}qq{line}\nb = 2\n");
        let typed = extract(
            &Document::new(&typed, 1, "python"),
            cursor + 2,
            Window::default(),
        );
        assert_eq!(typed.prefix, format!("{}qq", context.prefix));
        assert_eq!(typed.suffix, context.suffix);
        // Ordinary text is whole.
        let context = extract(&document, 2, Window::default());
        assert_eq!(context.prefix, "a ");
        assert_eq!(context.line_suffix, "= 1");
    }

    fn numbered_lines(n: usize) -> String {
        (0..n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn splits_around_the_cursor() {
        let doc = Document::new("def f(x):\n    return x + 1\n", 1, "python");
        let cursor = "def f(x):\n    return ".chars().count();
        let ctx = extract(&doc, cursor, Window::default());
        assert_eq!(ctx.prefix, "def f(x):\n    return ");
        assert_eq!(ctx.suffix, "x + 1\n");
        assert_eq!(ctx.line_prefix, "    return ");
        assert_eq!(ctx.line_suffix, "x + 1");
        assert!(ctx.has_text_right_of_cursor());
        assert_eq!(ctx.language_id, "python");
    }

    #[test]
    fn window_start_moves_in_steps() {
        let doc = Document::new(&numbered_lines(400), 1, "text");
        let window = Window {
            prefix_lines: 100,
            suffix_lines: 2,
        };
        let starts: Vec<String> = (150..=159)
            .map(|line| {
                let ctx = extract(&doc, doc.text.line_to_char(line), window);
                ctx.prefix.lines().next().unwrap().to_owned()
            })
            .collect();
        // Lines 150..=159 minus 100 = 50..=59: all round down to 32.
        assert!(starts.iter().all(|s| s == "line 32"), "{starts:?}");
        let ctx = extract(&doc, doc.text.line_to_char(150), window);
        assert_eq!(ctx.suffix.lines().count(), 3);
    }

    #[test]
    fn cursor_past_the_end_is_clamped() {
        let doc = Document::new("abc", 1, "text");
        let ctx = extract(&doc, 99, Window::default());
        assert_eq!(ctx.prefix, "abc");
        assert_eq!(ctx.suffix, "");
        assert!(!ctx.has_text_right_of_cursor());
    }
}
