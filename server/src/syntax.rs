//! tree-sitter: which language a document is in, and what kind of code the cursor
//! is in (a comment, a string, code).
//!
//! Parsing is bounded: documents over [`MAX_PARSE_BYTES`] are not parsed, and a
//! parse that runs longer than [`PARSE_BUDGET`] is abandoned, so a huge or
//! pathological file can never stall a request. Without a tree every fact is
//! `false`, which means "plain code" to the stages after this one.

use std::time::{Duration, Instant};

use ropey::Rope;
use tree_sitter::{Language, ParseOptions, ParseState, Parser, Point};

/// Documents larger than this are not parsed.
pub const MAX_PARSE_BYTES: usize = 4 << 20;
/// Longest time one parse may take.
pub const PARSE_BUDGET: Duration = Duration::from_millis(100);

/// The grammar for an LSP language identifier, if inkling has one.
pub fn language(language_id: &str) -> Option<Language> {
    let language = match language_id {
        "rust" => tree_sitter_rust::LANGUAGE,
        "python" => tree_sitter_python::LANGUAGE,
        "javascript" | "javascriptreact" => tree_sitter_javascript::LANGUAGE,
        "typescript" => tree_sitter_typescript::LANGUAGE_TYPESCRIPT,
        "typescriptreact" => tree_sitter_typescript::LANGUAGE_TSX,
        "go" => tree_sitter_go::LANGUAGE,
        "c" => tree_sitter_c::LANGUAGE,
        "cpp" => tree_sitter_cpp::LANGUAGE,
        _ => return None,
    };
    Some(language.into())
}

/// What the syntax tree says about the cursor's surroundings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyntaxFacts {
    /// The cursor is inside a comment.
    pub in_comment: bool,
    /// The cursor is inside a string literal.
    pub in_string: bool,
    /// Indentation (columns) of the body of the innermost block around the cursor
    /// (function, class, loop, braces): code indented less is outside that scope.
    pub scope_indent: Option<usize>,
}

/// Node kinds that hold a scope's statements, across the supported grammars.
const BLOCK_KINDS: [&str; 7] = [
    "block",
    "compound_statement",
    "statement_block",
    "declaration_list",
    "field_declaration_list",
    "class_body",
    "function_body",
];

/// Parses `text` (bounded, see the module doc) and reports the facts at char index `cursor`.
pub fn facts_at(text: &Rope, language_id: &str, cursor: usize) -> SyntaxFacts {
    let Some(language) = language(language_id) else {
        return SyntaxFacts::default();
    };
    if text.len_bytes() > MAX_PARSE_BYTES {
        return SyntaxFacts::default();
    }
    let mut parser = Parser::new();
    if parser.set_language(&language).is_err() {
        return SyntaxFacts::default();
    }
    let started = Instant::now();
    let mut out_of_time = |_: &ParseState| started.elapsed() > PARSE_BUDGET;
    let mut read = |byte: usize, _: Point| -> &[u8] {
        if byte >= text.len_bytes() {
            return &[];
        }
        let (chunk, chunk_start, _, _) = text.chunk_at_byte(byte);
        &chunk.as_bytes()[byte - chunk_start..]
    };
    let options = ParseOptions::new().progress_callback(&mut out_of_time);
    let Some(tree) = parser.parse_with_options(&mut read, None, Some(options)) else {
        return SyntaxFacts::default();
    };
    let byte = text.char_to_byte(cursor.min(text.len_chars()));
    // The node that ends at the cursor matters as much as the one that starts there:
    // `# note|` is in the comment, `foo|(` is in code. Look one byte to the left.
    let probe = byte.saturating_sub(1);
    let mut node = tree
        .root_node()
        .descendant_for_byte_range(probe, byte.max(probe + 1).min(text.len_bytes()));
    let mut facts = SyntaxFacts::default();
    while let Some(current) = node {
        let kind = current.kind();
        // A node that ends exactly at the cursor only contains it when it is open-ended
        // (a line comment runs to the end of the line).
        let contains = current.start_byte() < byte
            && (current.end_byte() > byte || kind.contains("comment") && !closes(&current, text));
        if contains && kind.contains("comment") {
            facts.in_comment = true;
        }
        if contains && kind.contains("string") && !kind.contains("content") {
            facts.in_string = true;
        }
        if facts.scope_indent.is_none() && BLOCK_KINDS.contains(&kind) {
            // The first statement's column is the body's indentation, when it stands on
            // a line of its own (not `{ x }` on one line).
            facts.scope_indent = (0..current.named_child_count())
                .filter_map(|i| current.named_child(i))
                .find(|child| !child.kind().contains("comment"))
                .filter(|child| {
                    // tree-sitter's column counts bytes since the last `\n`; the rope's
                    // lines also break at a lone `\r`, so work from the byte offset.
                    let column = child.start_position().column;
                    let line_start = child.start_byte() - column;
                    text.bytes_at(line_start)
                        .take(column)
                        .all(|b| b == b' ' || b == b'\t')
                })
                .map(|child| child.start_position().column);
        }
        node = current.parent();
    }
    facts
}

/// Whether a comment node ends with a closing delimiter (`*/`), rather than at a line end.
fn closes(node: &tree_sitter::Node<'_>, text: &Rope) -> bool {
    let end = node.end_byte();
    // Bytes, not a slice: `end - 2` may fall inside a multi-byte character.
    end >= 2 && text.byte(end - 2) == b'*' && text.byte(end - 1) == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(language_id: &str, before: &str, after: &str) -> SyntaxFacts {
        let rope = Rope::from_str(&format!("{before}{after}"));
        facts_at(&rope, language_id, before.chars().count())
    }

    #[test]
    fn comments_are_recognised_in_several_languages() {
        assert!(facts("python", "x = 1  # the count of", "\ny = 2\n").in_comment);
        assert!(facts("rust", "fn f() {\n    // explain", "\n}\n").in_comment);
        assert!(facts("c", "/* multi\n line", " */\nint x;\n").in_comment);
        assert!(facts("go", "package main\n// Package doc", "\n").in_comment);
        assert!(!facts("c", "/* closed */ int", " x;\n").in_comment);
        assert!(!facts("python", "def f(x):\n    return x", "\n").in_comment);
        assert!(!facts("rust", "fn f() {\n    let x = 1;", "\n}\n").in_comment);
    }

    #[test]
    fn the_enclosing_scope_has_an_indentation() {
        let python = "def f(x):\n    y = 1\n    if y:\n        z = 2\n        ";
        // Between two statements of the `if` body: that body.
        let between = "\n        w = 3\n    return y\n";
        assert_eq!(facts("python", python, between).scope_indent, Some(8));
        // After its last statement the `if` body has ended: the function body.
        assert_eq!(
            facts("python", python, "\n    return y\n").scope_indent,
            Some(4)
        );
        let rust = "fn f() {\n  let a = 1;\n  ";
        assert_eq!(facts("rust", rust, "\n}\n").scope_indent, Some(2));
        assert_eq!(facts("python", "x = 1", "\n").scope_indent, None);
    }

    #[test]
    fn multi_byte_text_and_lone_carriage_returns_are_safe() {
        assert!(facts("python", "# 你好", "\n").in_comment);
        assert!(facts("go", "// done ✓", "\n").in_comment);
        let rust = "fn f() {\r//ééé\n   let a = 1;";
        let _ = facts("rust", rust, "\n}\n");
    }

    #[test]
    fn strings_are_recognised() {
        assert!(facts("python", "s = \"hello wor", "ld\"\n").in_string);
        assert!(facts("javascript", "const s = 'hel", "lo';\n").in_string);
        assert!(!facts("javascript", "const s = 'hello';", "\n").in_string);
    }

    #[test]
    fn unknown_languages_and_huge_documents_are_plain_code() {
        assert_eq!(facts("cobol", "* comment", ""), SyntaxFacts::default());
        let huge = "x".repeat(MAX_PARSE_BYTES + 1);
        assert_eq!(
            facts("python", &format!("# {huge}"), ""),
            SyntaxFacts::default()
        );
    }

    #[test]
    fn a_slow_parse_is_abandoned_in_time() {
        // About 3 MB of nested brackets: parse work grows with it; the budget bounds it.
        let text = "[".repeat(1 << 20) + &"1, ".repeat(600_000);
        let started = Instant::now();
        let _ = facts("javascript", &text, "");
        assert!(
            started.elapsed() < PARSE_BUDGET * 5,
            "{:?}",
            started.elapsed()
        );
    }
}
