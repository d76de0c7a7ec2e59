//! LSP positions ↔ char offsets: the position-encoding conversion, at the
//! protocol edge so that the core works in char offsets only.
//!
//! Invariant: no position makes these functions panic. Columns past the end of a
//! line are clamped to its end (before its line break), and lines past the last
//! to the document's end, as VS Code's `validatePosition` reads them.

use inkling_core::documents::Edit;
use ropey::Rope;

/// How the columns of LSP positions are counted (negotiated at `initialize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PositionEncoding {
    /// Columns count UTF-8 bytes.
    Utf8,
    /// Columns count UTF-16 code units (the LSP default).
    #[default]
    Utf16,
}

/// A position in a document: zero-based line and column in the negotiated encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Zero-based line number.
    pub line: u32,
    /// Zero-based column, in units of the [`PositionEncoding`].
    pub column: u32,
}

/// One change of a `didChange` notification: a range replacement, or the whole text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextChange {
    /// The replaced range, `None` for a whole-document replacement.
    pub range: Option<(Position, Position)>,
    /// The new text of that range.
    pub text: String,
}

impl TextChange {
    /// This change as an edit in char offsets of `text` (the text it applies to).
    pub fn to_edit(&self, text: &Rope, encoding: PositionEncoding) -> Edit {
        Edit {
            range: self.range.map(|(start, end)| {
                char_index(text, start, encoding)..char_index(text, end, encoding)
            }),
            text: self.text.clone(),
        }
    }
}

/// Converts a position to a char index of `rope`, clamping as the module says. A
/// column that falls inside a multi-unit character resolves to its start.
pub fn char_index(rope: &Rope, position: Position, encoding: PositionEncoding) -> usize {
    let line_count = rope.len_lines();
    if position.line as usize >= line_count {
        return rope.len_chars();
    }
    let line = position.line as usize;
    let line_start = rope.line_to_char(line);
    let line_len = line_len_without_break(rope, line);
    let line_slice = rope.slice(line_start..line_start + line_len);
    let column = position.column as usize;
    let chars_in = match encoding {
        PositionEncoding::Utf8 => {
            let bytes = column.min(line_slice.len_bytes());
            // `byte_to_char` floors to the start of the char that contains the byte.
            line_slice.byte_to_char(bytes)
        }
        PositionEncoding::Utf16 => {
            let units = column.min(line_slice.len_utf16_cu());
            let idx = line_slice.utf16_cu_to_char(units);
            // Inside a surrogate pair ropey rounds up; resolve to the pair's start instead.
            if line_slice.char_to_utf16_cu(idx) > units {
                idx - 1
            } else {
                idx
            }
        }
    };
    line_start + chars_in
}

/// Converts a char index of `rope` (clamped to its length) to a position.
pub fn position(rope: &Rope, char_index: usize, encoding: PositionEncoding) -> Position {
    let char_index = char_index.min(rope.len_chars());
    let line = rope.char_to_line(char_index);
    let line_start = rope.line_to_char(line);
    let column = match encoding {
        PositionEncoding::Utf8 => rope.char_to_byte(char_index) - rope.char_to_byte(line_start),
        PositionEncoding::Utf16 => {
            rope.char_to_utf16_cu(char_index) - rope.char_to_utf16_cu(line_start)
        }
    };
    Position {
        line: line as u32,
        column: column as u32,
    }
}

/// Length in chars of `line`, not counting its line break.
fn line_len_without_break(rope: &Rope, line: usize) -> usize {
    let slice = rope.line(line);
    let mut len = slice.len_chars();
    if len > 0 && slice.char(len - 1) == '\n' {
        len -= 1;
    }
    if len > 0 && slice.char(len - 1) == '\r' {
        len -= 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use inkling_core::documents::{Document, EditError};

    fn pos(line: u32, column: u32) -> Position {
        Position { line, column }
    }

    fn edit(start: Position, end: Position, text: &str) -> TextChange {
        TextChange {
            range: Some((start, end)),
            text: text.to_owned(),
        }
    }

    fn apply(
        doc: &mut Document,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<(), EditError> {
        doc.apply_changes(version, changes, |text, change| {
            change.to_edit(text, encoding)
        })
    }

    #[test]
    fn utf16_and_utf8_columns_count_emoji_and_cjk() {
        // "a😀b" : 😀 is 4 UTF-8 bytes, 2 UTF-16 units, 1 char.
        // "漢字x": each CJK char is 3 UTF-8 bytes, 1 UTF-16 unit.
        let rope = Rope::from_str("a😀b\n漢字x\n");
        assert_eq!(char_index(&rope, pos(0, 3), PositionEncoding::Utf16), 2);
        assert_eq!(char_index(&rope, pos(0, 5), PositionEncoding::Utf8), 2);
        assert_eq!(char_index(&rope, pos(1, 2), PositionEncoding::Utf16), 6);
        assert_eq!(char_index(&rope, pos(1, 6), PositionEncoding::Utf8), 6);
        assert_eq!(position(&rope, 2, PositionEncoding::Utf16), pos(0, 3));
        assert_eq!(position(&rope, 2, PositionEncoding::Utf8), pos(0, 5));
        assert_eq!(position(&rope, 7, PositionEncoding::Utf8), pos(1, 7));
    }

    #[test]
    fn columns_inside_a_character_resolve_to_its_start() {
        let rope = Rope::from_str("a😀b");
        assert_eq!(char_index(&rope, pos(0, 2), PositionEncoding::Utf16), 1);
        assert_eq!(char_index(&rope, pos(0, 3), PositionEncoding::Utf8), 1);
    }

    #[test]
    fn out_of_range_positions_are_clamped() {
        let rope = Rope::from_str("ab\r\ncd");
        assert_eq!(char_index(&rope, pos(0, 99), PositionEncoding::Utf16), 2);
        // A line past the last one is the end of the document, whatever the column.
        assert_eq!(char_index(&rope, pos(99, 1), PositionEncoding::Utf16), 6);
        assert_eq!(char_index(&rope, pos(2, 0), PositionEncoding::Utf16), 6);
        assert_eq!(
            char_index(&rope, pos(u32::MAX, u32::MAX), PositionEncoding::Utf8),
            6
        );
        assert_eq!(position(&rope, 999, PositionEncoding::Utf16), pos(1, 2));
        let empty = Rope::from_str("");
        assert_eq!(char_index(&empty, pos(3, 3), PositionEncoding::Utf16), 0);
    }

    #[test]
    fn only_lsp_line_breaks_count() {
        // U+2028 and U+0085 are line breaks for `unicode_lines`, but not for LSP.
        let rope = Rope::from_str("a\u{2028}b\u{85}c\nd");
        assert_eq!(char_index(&rope, pos(1, 0), PositionEncoding::Utf16), 6);
    }

    #[test]
    fn changes_apply_in_order_against_the_text_each_leaves() {
        let mut doc = Document::new("fn main() {}\n", 1, "rust");
        apply(
            &mut doc,
            2,
            &[
                edit(pos(0, 11), pos(0, 11), "\n    let x = 1;\n"),
                edit(pos(1, 8), pos(1, 9), "y"),
            ],
            PositionEncoding::Utf16,
        )
        .unwrap();
        assert_eq!(doc.text.to_string(), "fn main() {\n    let y = 1;\n}\n");
        assert_eq!(doc.version, 2);
    }

    #[test]
    fn reversed_ranges_leave_the_document_intact() {
        let mut doc = Document::new("hello", 5, "text");
        let err = apply(
            &mut doc,
            6,
            &[
                edit(pos(0, 0), pos(0, 0), "ok"),
                edit(pos(0, 4), pos(0, 1), "x"),
            ],
            PositionEncoding::Utf8,
        )
        .unwrap_err();
        assert_eq!(err, EditError::ReversedRange);
        assert_eq!(doc.text.to_string(), "hello");
    }
}
