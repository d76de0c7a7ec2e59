//! Open documents: ropes, versioned edits, syntax trees.
//!
//! This module knows nothing about LSP transport or models. It stores the text
//! of each open document in a [`ropey::Rope`] (built without `unicode_lines`, so
//! only `\n`, `\r\n` and `\r` break lines, exactly as LSP counts them). Offsets
//! here are char indices; the protocol edge turns its positions into them.
//!
//! Invariant: no input can make these functions panic. Offsets past the end are
//! clamped to it; an edit whose range is reversed or whose version is not newer
//! than the document's is rejected with an error and leaves the document unchanged.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use ropey::Rope;

use crate::syntax::{self, SyntaxTree};

/// One edit: the chars of `range` replaced by `text`, or the whole text when
/// `range` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// The replaced chars (clamped to the text), `None` for the whole text.
    pub range: Option<Range<usize>>,
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
        self.with_replacement(at, at, inserted)
    }

    /// A detached copy with chars `start..end` replaced by `inserted`, as if typed
    /// there: for an item the editor's completion menu has selected (what the
    /// document will be once it is accepted). Neither the text nor the syntax tree of
    /// this document is affected.
    pub fn with_replacement(&self, start: usize, end: usize, inserted: &str) -> Document {
        let end = end.min(self.text.len_chars());
        let start = start.min(end);
        let mut text = self.text.clone(); // O(1): ropes share their nodes.
        let (byte, end_byte) = (text.char_to_byte(start), text.char_to_byte(end));
        let edit = syntax::input_edit(&text, byte, end_byte, inserted);
        text.remove(start..end);
        text.insert(start, inserted);
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

    /// Applies the edits of one change notification, in order. `to_edit` turns
    /// each change into an [`Edit`] against the text as the earlier ones leave it
    /// (the protocol edge converts its positions there).
    ///
    /// All ranges are checked before anything is changed; on error the document is
    /// left as it was.
    pub fn apply_changes<C>(
        &mut self,
        version: i32,
        changes: &[C],
        mut to_edit: impl FnMut(&Rope, &C) -> Edit,
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
            let edit = to_edit(&text, change);
            match edit.range {
                None => {
                    text = Rope::from_str(&edit.text);
                    edits = None;
                }
                Some(range) => {
                    if range.end < range.start {
                        return Err(EditError::ReversedRange);
                    }
                    let len = text.len_chars();
                    let (from, to) = (range.start.min(len), range.end.min(len));
                    if let Some(edits) = &mut edits {
                        let (start, end) = (text.char_to_byte(from), text.char_to_byte(to));
                        edits.push(syntax::input_edit(&text, start, end, &edit.text));
                    }
                    text.remove(from..to);
                    text.insert(from, &edit.text);
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

    /// Applies the changes of one change notification to the document under `uri`
    /// (see [`Document::apply_changes`]).
    pub fn change<C>(
        &mut self,
        uri: &str,
        version: i32,
        changes: &[C],
        to_edit: impl FnMut(&Rope, &C) -> Edit,
    ) -> Result<(), EditError> {
        self.documents
            .get_mut(uri)
            .ok_or(EditError::NotOpen)?
            .apply_changes(version, changes, to_edit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(range: Range<usize>, text: &str) -> Edit {
        Edit {
            range: Some(range),
            text: text.to_owned(),
        }
    }

    fn apply(doc: &mut Document, version: i32, edits: &[Edit]) -> Result<(), EditError> {
        doc.apply_changes(version, edits, |_, edit| edit.clone())
    }

    #[test]
    fn a_copy_with_a_replacement_has_the_text_and_tree_of_the_edit() {
        let doc = Document::new("import os\nx = os.pa\n", 1, "python");
        assert!(doc.tree().is_some());
        let copy = doc.with_replacement(17, 19, "path");
        assert_eq!(copy.text.to_string(), "import os\nx = os.path\n");
        assert_eq!(doc.text.to_string(), "import os\nx = os.pa\n");
        let fresh = Document::new(&copy.text.to_string(), 9, "python");
        assert_eq!(
            copy.tree().unwrap().root_node().to_sexp(),
            fresh.tree().unwrap().root_node().to_sexp()
        );
    }

    #[test]
    fn a_copy_with_an_insertion_leaves_the_document_and_its_tree_alone() {
        let doc = Document::new("def f(x):\n    return x\n", 1, "python");
        let before = doc.tree().unwrap().root_node().to_sexp();
        let copy = doc.with_insertion(22, " + 1\n\ndef g():\n    pass");
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
    fn only_lsp_line_breaks_count() {
        // U+2028 and U+0085 are line breaks for `unicode_lines`, but not for LSP.
        let doc = Document::new("a\u{2028}b\u{85}c\nd", 1, "text");
        assert_eq!(doc.text.len_lines(), 2);
    }

    #[test]
    fn edits_apply_in_order_and_track_version() {
        let mut doc = Document::new("fn main() {}\n", 1, "rust");
        apply(
            &mut doc,
            2,
            &[replace(11..11, "\n    let x = 1;\n"), replace(20..21, "y")],
        )
        .unwrap();
        assert_eq!(doc.text.to_string(), "fn main() {\n    let y = 1;\n}\n");
        assert_eq!(doc.version, 2);
    }

    #[test]
    fn ranges_past_the_end_are_clamped() {
        let mut doc = Document::new("ab", 1, "text");
        apply(&mut doc, 2, &[replace(1..99, "x")]).unwrap();
        assert_eq!(doc.text.to_string(), "ax");
        apply(&mut doc, 3, &[replace(99..99, "!")]).unwrap();
        assert_eq!(doc.text.to_string(), "ax!");
    }

    #[test]
    fn stale_and_reversed_edits_leave_the_document_intact() {
        let mut doc = Document::new("hello", 5, "text");
        let err = apply(&mut doc, 4, &[replace(0..0, "x")]).unwrap_err();
        assert!(matches!(err, EditError::StaleVersion { .. }));
        let err = apply(
            &mut doc,
            6,
            &[
                replace(0..0, "ok"),
                replace(Range { start: 4, end: 1 }, "x"),
            ],
        )
        .unwrap_err();
        assert_eq!(err, EditError::ReversedRange);
        assert_eq!(doc.text.to_string(), "hello");
        assert_eq!(doc.version, 5);
    }

    #[test]
    fn whole_document_replacement() {
        let mut doc = Document::new("old", 1, "text");
        let whole = Edit {
            range: None,
            text: "new\ntext".into(),
        };
        apply(&mut doc, 2, &[whole]).unwrap();
        assert_eq!(doc.text.to_string(), "new\ntext");
    }
}
