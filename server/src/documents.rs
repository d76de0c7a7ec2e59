//! Open documents: ropes, versioned edits and position conversion.
//!
//! This module knows nothing about LSP transport or models. It stores the text
//! of each open document in a [`ropey::Rope`] (built without `unicode_lines`, so
//! only `\n`, `\r\n` and `\r` break lines, exactly as LSP counts them) and
//! converts between LSP positions (line + column in UTF-8 bytes or UTF-16 code
//! units) and char indices.
//!
//! Invariant: no input can make these functions panic. Positions past the end of
//! a line are clamped to its end, and lines past the last to the document's end; an edit whose range is reversed or
//! whose version is not newer than the document's is rejected with an error and
//! leaves the document unchanged.

use std::collections::HashMap;
use std::fmt;

use ropey::Rope;

use crate::syntax::{self, SyntaxTree};

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

/// Why an edit was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditError {
    /// No document is open under that key.
    NotOpen,
    /// The edit's version is not newer than the document's: it arrived out of order.
    StaleVersion {
        /// The document's current version.
        current: i32,
        /// The version the edit carried.
        received: i32,
    },
    /// The range's end lies before its start.
    ReversedRange,
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::NotOpen => write!(f, "document is not open"),
            EditError::StaleVersion { current, received } => write!(
                f,
                "edit for version {received} is not newer than the document's version {current}"
            ),
            EditError::ReversedRange => write!(f, "range end lies before its start"),
        }
    }
}

impl std::error::Error for EditError {}

/// The text of one open document and what the client said about it.
#[derive(Clone, Debug)]
pub struct Document {
    /// The full text.
    pub text: Rope,
    /// The client's version number of this text.
    pub version: i32,
    /// The client's language identifier (`rust`, `python`, …).
    pub language_id: String,
    /// The syntax tree, shared with copies of this document and kept up to date
    /// incrementally (see [`syntax`]).
    pub syntax: SyntaxTree,
}

impl Document {
    /// Creates a document from its full text.
    pub fn new(text: &str, version: i32, language_id: &str) -> Self {
        let syntax = SyntaxTree::default();
        syntax.reset(version);
        Document {
            text: Rope::from_str(text),
            version,
            language_id: language_id.to_owned(),
            syntax,
        }
    }

    /// A detached copy with `inserted` put at char index `at`, as if typed there:
    /// for looking ahead (what the document will be once a suggestion is accepted).
    /// Neither the text nor the syntax tree of this document is affected.
    pub fn with_insertion(&self, at: usize, inserted: &str) -> Document {
        let at = at.min(self.text.len_chars());
        let mut text = self.text.clone(); // O(1): ropes share their nodes.
        let byte = text.char_to_byte(at);
        let edit = syntax::input_edit(&text, byte, byte, inserted);
        text.insert(at, inserted);
        let version = self.version.saturating_add(1);
        let syntax = self.syntax.fork(self.version);
        syntax.edit(&[edit], version);
        Document {
            text,
            version,
            language_id: self.language_id.clone(),
            syntax,
        }
    }

    /// The syntax tree of the current text, if its language has a grammar and
    /// parsing stays within bounds.
    pub fn tree(&self) -> Option<tree_sitter::Tree> {
        self.syntax.get(&self.text, self.version, &self.language_id)
    }

    /// Converts a position to a char index, clamping the column to the end of its line
    /// (before its line break). A line past the last one means the end of the document,
    /// as VS Code's `validatePosition` reads it. A column that falls inside a
    /// multi-unit character resolves to the start of that character.
    pub fn char_index(&self, position: Position, encoding: PositionEncoding) -> usize {
        let rope = &self.text;
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

    /// Converts a char index (clamped to the document's length) to a position.
    pub fn position(&self, char_index: usize, encoding: PositionEncoding) -> Position {
        let rope = &self.text;
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

    /// Applies the changes of one `didChange` notification, in order.
    ///
    /// All ranges are checked before anything is changed, against the text as
    /// each earlier change leaves it; on error the document is left as it was.
    pub fn apply_changes(
        &mut self,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<(), EditError> {
        // Versions increase with every change; an equal one is a replay or out of order.
        if version <= self.version {
            return Err(EditError::StaleVersion {
                current: self.version,
                received: version,
            });
        }
        let mut text = self.text.clone(); // O(1): ropes share their nodes.
        // The tree's edits, applied only once all changes are known to be valid;
        // `None` after a whole-text replacement.
        let mut edits = Some(Vec::with_capacity(changes.len()));
        for change in changes {
            match change.range {
                None => {
                    text = Rope::from_str(&change.text);
                    edits = None;
                }
                Some((start, end)) => {
                    let view = Document {
                        text,
                        version,
                        language_id: String::new(),
                        syntax: SyntaxTree::default(),
                    };
                    let from = view.char_index(start, encoding);
                    let to = view.char_index(end, encoding);
                    if to < from {
                        return Err(EditError::ReversedRange);
                    }
                    text = view.text;
                    if let Some(edits) = &mut edits {
                        let (start, end) = (text.char_to_byte(from), text.char_to_byte(to));
                        edits.push(syntax::input_edit(&text, start, end, &change.text));
                    }
                    text.remove(from..to);
                    text.insert(from, &change.text);
                }
            }
        }
        self.text = text;
        self.version = version;
        match edits {
            Some(edits) => self.syntax.edit(&edits, version),
            None => self.syntax.reset(version),
        }
        Ok(())
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

/// All open documents, keyed by URI.
#[derive(Debug, Default)]
pub struct DocumentStore {
    documents: HashMap<String, Document>,
}

impl DocumentStore {
    /// Opens (or reopens) a document.
    pub fn open(&mut self, uri: &str, document: Document) {
        self.documents.insert(uri.to_owned(), document);
    }

    /// Closes a document; closing one that is not open does nothing.
    pub fn close(&mut self, uri: &str) {
        self.documents.remove(uri);
    }

    /// The document under `uri`, if open.
    pub fn get(&self, uri: &str) -> Option<&Document> {
        self.documents.get(uri)
    }

    /// Every open document with its URI.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Document)> {
        self.documents
            .iter()
            .map(|(uri, document)| (uri.as_str(), document))
    }

    /// Applies the changes of one `didChange` notification to the document under `uri`.
    pub fn change(
        &mut self,
        uri: &str,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<(), EditError> {
        self.documents
            .get_mut(uri)
            .ok_or(EditError::NotOpen)?
            .apply_changes(version, changes, encoding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u32, column: u32) -> Position {
        Position { line, column }
    }

    fn edit(start: Position, end: Position, text: &str) -> TextChange {
        TextChange {
            range: Some((start, end)),
            text: text.to_owned(),
        }
    }

    #[test]
    fn utf16_and_utf8_columns_count_emoji_and_cjk() {
        // "a😀b" : 😀 is 4 UTF-8 bytes, 2 UTF-16 units, 1 char.
        // "漢字x": each CJK char is 3 UTF-8 bytes, 1 UTF-16 unit.
        let doc = Document::new("a😀b\n漢字x\n", 1, "text");
        assert_eq!(doc.char_index(pos(0, 3), PositionEncoding::Utf16), 2);
        assert_eq!(doc.char_index(pos(0, 5), PositionEncoding::Utf8), 2);
        assert_eq!(doc.char_index(pos(1, 2), PositionEncoding::Utf16), 6);
        assert_eq!(doc.char_index(pos(1, 6), PositionEncoding::Utf8), 6);
        assert_eq!(doc.position(2, PositionEncoding::Utf16), pos(0, 3));
        assert_eq!(doc.position(2, PositionEncoding::Utf8), pos(0, 5));
        assert_eq!(doc.position(7, PositionEncoding::Utf8), pos(1, 7));
    }

    #[test]
    fn a_copy_with_an_insertion_leaves_the_document_and_its_tree_alone() {
        let doc = Document::new("def f(x):\n    return x\n", 1, "python");
        let before = doc.tree().unwrap().root_node().to_sexp();
        let at = doc.char_index(pos(1, 12), PositionEncoding::Utf16);
        let copy = doc.with_insertion(at, " + 1\n\ndef g():\n    pass");
        assert_eq!(
            copy.text.to_string(),
            "def f(x):\n    return x + 1\n\ndef g():\n    pass\n"
        );
        assert_eq!(copy.version, 2);
        // The copy's tree is edited and reparsed on its own, to the tree of its text.
        let fresh = Document::new(&copy.text.to_string(), 1, "python");
        assert_eq!(
            copy.tree().unwrap().root_node().to_sexp(),
            fresh.tree().unwrap().root_node().to_sexp()
        );
        assert_eq!(doc.text.to_string(), "def f(x):\n    return x\n");
        assert_eq!(doc.tree().unwrap().root_node().to_sexp(), before);
    }

    #[test]
    fn columns_inside_a_character_resolve_to_its_start() {
        let doc = Document::new("a😀b", 1, "text");
        assert_eq!(doc.char_index(pos(0, 2), PositionEncoding::Utf16), 1);
        assert_eq!(doc.char_index(pos(0, 3), PositionEncoding::Utf8), 1);
    }

    #[test]
    fn out_of_range_positions_are_clamped() {
        let doc = Document::new("ab\r\ncd", 1, "text");
        assert_eq!(doc.char_index(pos(0, 99), PositionEncoding::Utf16), 2);
        // A line past the last one is the end of the document, whatever the column.
        assert_eq!(doc.char_index(pos(99, 1), PositionEncoding::Utf16), 6);
        assert_eq!(doc.char_index(pos(2, 0), PositionEncoding::Utf16), 6);
        assert_eq!(
            doc.char_index(pos(u32::MAX, u32::MAX), PositionEncoding::Utf8),
            6
        );
        assert_eq!(doc.position(999, PositionEncoding::Utf16), pos(1, 2));
        let empty = Document::new("", 1, "text");
        assert_eq!(empty.char_index(pos(3, 3), PositionEncoding::Utf16), 0);
    }

    #[test]
    fn only_lsp_line_breaks_count() {
        // U+2028 and U+0085 are line breaks for `unicode_lines`, but not for LSP.
        let doc = Document::new("a\u{2028}b\u{85}c\nd", 1, "text");
        assert_eq!(doc.text.len_lines(), 2);
        assert_eq!(doc.char_index(pos(1, 0), PositionEncoding::Utf16), 6);
    }

    #[test]
    fn edits_apply_in_order_and_track_version() {
        let mut doc = Document::new("fn main() {}\n", 1, "rust");
        doc.apply_changes(
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
    fn stale_and_reversed_edits_leave_the_document_intact() {
        let mut doc = Document::new("hello", 5, "text");
        let err = doc
            .apply_changes(
                4,
                &[edit(pos(0, 0), pos(0, 0), "x")],
                PositionEncoding::Utf8,
            )
            .unwrap_err();
        assert!(matches!(err, EditError::StaleVersion { .. }));
        let err = doc
            .apply_changes(
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
        assert_eq!(doc.version, 5);
    }

    #[test]
    fn whole_document_replacement() {
        let mut doc = Document::new("old", 1, "text");
        doc.apply_changes(
            2,
            &[TextChange {
                range: None,
                text: "new\ntext".into(),
            }],
            PositionEncoding::Utf16,
        )
        .unwrap();
        assert_eq!(doc.text.to_string(), "new\ntext");
    }
}
