//! Fuzz targets and property tests for what reaches the server from outside:
//! LSP frames and messages, document edits, the completion stages that run on a
//! client's text and a model's output, HTTP request bodies and GGUF files. Issue
//! 13's rule is that nothing a client, a model file or a setting sends may kill
//! the server; these targets look for the inputs that would.
//!
//! The targets are [`bolero`] tests. Under `cargo test` they are ordinary tests
//! that replay the saved inputs (`src/__fuzz__/<target>/corpus` and `crashes`, raw
//! bytes for the byte targets) and then feed random inputs for [`short_run`] each:
//! 2 s, or `INKLING_FUZZ_SECONDS`. A failure prints its input and a
//! `BOLERO_RANDOM_SEED=…` that replays it; `INKLING_FUZZ_SHRINK_SECONDS` lets
//! bolero shrink it first. The long run is the same with more time, one target at
//! a time (`--nocapture` prints the number of inputs run):
//!
//! ```text
//! cargo test --release -p inkling --lib fuzz
//! INKLING_FUZZ_SECONDS=600 cargo test --release -p inkling --lib \
//!     fuzz::document_edits -- --nocapture
//! ```
//!
//! Coverage-guided runs use libFuzzer through `cargo-bolero`. That is a build of
//! its own (sanitizer coverage, in `target/fuzz/build_<hash>`, llama.cpp
//! included), and it needs AddressSanitizer: with `--sanitizer NONE` the `inkling`
//! binary's own test executable fails to link (no libFuzzer runtime in it):
//!
//! ```text
//! cargo install cargo-bolero
//! RUSTC_BOOTSTRAP=1 cargo bolero test -p inkling --profile release --rustc-bootstrap \
//!     --corpus-dir /tmp/corpus/frames -T 600s fuzz::frames_never_panic
//! ```
//!
//! The property tests of incremental edits ([`proptest`]) compare a document edited
//! batch by batch — its text and its incrementally reparsed syntax tree — with a
//! plain `String` oracle, the tree tree-sitter keeps for the same edits and a fresh
//! parse. `PROPTEST_CASES` overrides their count (4000 each).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bolero::{TypeGenerator, check};
use serde_json::{Value, json};
use tree_sitter::{InputEdit, Point, Tree};

use inkling_core::documents::{Document, DocumentStore, EditError};
use inkling_engine::{Engine, gguf};
use inkling_remote::hedge::Hedged;

use crate::config::{Overrides, Settings};
use crate::lsp::positions::{self, Position, PositionEncoding, TextChange};
use crate::suggest::Suggester;
use crate::{CurrentPipeline, http, transport};

/// How long each target runs under `cargo test`: `INKLING_FUZZ_SECONDS`, 2 s by default.
fn short_run() -> Duration {
    std::env::var("INKLING_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(2), Duration::from_secs_f64)
}

/// Time spent making a failing input smaller before it is reported:
/// `INKLING_FUZZ_SHRINK_SECONDS`, none by default (bolero's shrinking of generated
/// values can overrun its time by minutes; the failure's seed replays it anyway).
fn shrink_time() -> Duration {
    std::env::var("INKLING_FUZZ_SHRINK_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::ZERO, Duration::from_secs_f64)
}

/// Pieces that edits and documents are built of: the line breaks LSP knows, text
/// of every UTF-8 and UTF-16 width (emoji, a ZWJ sequence, CJK, combining marks),
/// and code that opens and closes Rust and Python constructs.
const PIECES: &[&str] = &[
    "a",
    "x1",
    " ",
    "    ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "😀",
    "👩\u{200d}👩\u{200d}👧",
    "\u{200d}",
    "漢字",
    "e\u{301}",
    "\u{301}",
    "é",
    "\u{feff}",
    "def f(x):",
    "class A:",
    "fn f() {",
    "struct S {",
    "return ",
    "let x = ",
    "if x:",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ":",
    ";",
    ",",
    "\"",
    "'",
    "\"\"\"",
    "#",
    "//",
    "/*",
    "*/",
    "\\",
    "r#\"",
    "\0",
];

/// A piece of text: one of [`PIECES`], or any string.
#[derive(Clone, Debug, TypeGenerator)]
enum Piece {
    Known(u8),
    Any(String),
}

fn text_of(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Known(i) => PIECES[*i as usize % PIECES.len()],
            Piece::Any(s) => s.as_str(),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The LSP transport: frames and messages.
// ---------------------------------------------------------------------------

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
}

/// Reads every frame of `bytes` through a buffer of `capacity` bytes, as the
/// transport does: the bodies (or refusals) up to the end, and how reading ended.
fn read_all_frames(bytes: &[u8], capacity: usize) -> (Vec<transport::FrameBody>, bool) {
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let mut reader = tokio::io::BufReader::with_capacity(capacity.max(1), bytes);
            let mut frames = Vec::new();
            // Every frame but the last consumes at least one byte.
            for _ in 0..=bytes.len() + 1 {
                match transport::read_frame(&mut reader, transport::MAX_FRAME_BYTES).await {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => return (frames, true),
                    Err(_) => return (frames, false),
                }
            }
            panic!("read_frame does not reach the end of {} bytes", bytes.len());
        })
    })
}

#[test]
fn frames_never_panic() {
    check!(name = "frames")
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|bytes: &[u8]| {
            let capacity = bytes.first().map_or(8, |&b| 1 + b as usize % 64);
            read_all_frames(bytes, capacity);
        });
}

/// One well-formed frame and how its header is laid out.
#[derive(Debug, TypeGenerator)]
struct FrameSpec {
    body: Vec<u8>,
    /// Blank lines before the header (tolerated between frames).
    blank_lines: u8,
    /// `\n` instead of `\r\n` after each header line.
    bare_newlines: bool,
    /// A `Content-Type` header, before or after the length.
    content_type: Option<bool>,
    /// Spaces after `Content-Length:`.
    spaces: u8,
    /// An unrelated header line of about 8 KiB (the header-line limit) plus this
    /// many bytes, before or after the length: a long line is read in pieces.
    long_header: Option<(i8, bool)>,
}

fn encode_frame(spec: &FrameSpec, out: &mut Vec<u8>) {
    let newline: &[u8] = if spec.bare_newlines { b"\n" } else { b"\r\n" };
    for _ in 0..spec.blank_lines % 3 {
        out.extend_from_slice(newline);
    }
    let long = spec.long_header.map(|(delta, before)| {
        let len = (8 << 10) + i64::from(delta % 8) - 2;
        (
            format!("X-Padding: {}", "p".repeat(len as usize - 11)),
            before,
        )
    });
    let mut header = |line: &str| {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(newline);
    };
    if let Some((line, true)) = &long {
        header(line);
    }
    if spec.content_type == Some(true) {
        header("Content-Type: application/vscode-jsonrpc; charset=utf-8");
    }
    let spaces = " ".repeat(spec.spaces as usize % 3);
    header(&format!("Content-Length:{spaces}{}", spec.body.len()));
    if spec.content_type == Some(false) {
        header("Content-Type: application/vscode-jsonrpc; charset=utf-8");
    }
    if let Some((line, false)) = &long {
        header(line);
    }
    out.extend_from_slice(newline);
    out.extend_from_slice(&spec.body);
}

#[test]
fn well_formed_frames_are_read_back_whole() {
    check!(name = "well_formed_frames")
        .with_type::<(Vec<FrameSpec>, u8)>()
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|(specs, capacity)| {
            let mut bytes = Vec::new();
            for spec in specs {
                encode_frame(spec, &mut bytes);
            }
            let (frames, clean_end) = read_all_frames(&bytes, 1 + *capacity as usize);
            let bodies: Vec<&[u8]> = specs.iter().map(|s| s.body.as_slice()).collect();
            let read: Vec<&[u8]> = frames
                .iter()
                .map(|f| f.as_ref().map_or(&b"<refused>"[..], Vec::as_slice))
                .collect();
            assert_eq!(
                read,
                bodies,
                "frames read back from {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(clean_end);
        });
}

/// tower-lsp-server's own message type (`jsonrpc::Message`, private to it): what its
/// reader decodes every frame into. A frame it cannot decode ends its reader.
#[derive(serde::Deserialize)]
#[serde(untagged)]
#[allow(dead_code)] // Only decoded, to see whether it can be.
enum TowerMessage {
    Response(tower_lsp_server::jsonrpc::Response),
    Request(tower_lsp_server::jsonrpc::Request),
}

/// Whether tower-lsp's reader survives `body`, decoded as its codec does.
fn tower_lsp_decodes(body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    if text.is_empty() {
        return Ok(());
    }
    serde_json::from_str::<TowerMessage>(text)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The guard's properties: it never panics, whatever it lets through tower-lsp can
/// decode, and whatever it refuses gets a well-formed JSON-RPC error.
fn check_guard(body: &[u8]) {
    match transport::parse_message(body) {
        Ok(_) => {
            if let Err(e) = tower_lsp_decodes(body) {
                panic!(
                    "the guard passed {:?}, which tower-lsp cannot decode: {e}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        Err(response) => {
            assert_eq!(response["jsonrpc"], "2.0", "{response}");
            let code = response["error"]["code"].as_i64();
            assert!(matches!(code, Some(-32700 | -32600)), "{response}");
            assert!(response["error"]["message"].is_string(), "{response}");
            let id = &response["id"];
            assert!(id.is_null() || id.is_string() || id.is_i64(), "{response}");
        }
    }
}

#[test]
fn message_guard_never_panics() {
    check!(name = "message_guard")
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|bytes: &[u8]| check_guard(bytes));
}

/// The member names that matter to JSON-RPC, and others.
#[derive(Clone, Copy, Debug, TypeGenerator)]
enum Key {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
    Code,
    Message,
    Other(u8),
}

impl Key {
    fn json(self) -> String {
        match self {
            Key::Jsonrpc => "\"jsonrpc\"".into(),
            Key::Id => "\"id\"".into(),
            Key::Method => "\"method\"".into(),
            Key::Params => "\"params\"".into(),
            Key::Result => "\"result\"".into(),
            Key::Error => "\"error\"".into(),
            Key::Code => "\"code\"".into(),
            Key::Message => "\"message\"".into(),
            // An escaped spelling of a known name, and plain others.
            Key::Other(0) => "\"\\u006dethod\"".into(),
            Key::Other(n) => format!("\"k{}\"", n % 4),
        }
    }
}

/// A JSON value as written in a message, including spellings that `Value` and
/// typed decoders read differently.
#[derive(Clone, Debug, TypeGenerator)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i64),
    Unsigned(u64),
    Float(f64),
    /// `1.0`, `1e2`, `-0`, `2.0`: numbers that are integers only to some readers.
    Spelled(u8),
    Version,
    EscapedVersion,
    MethodName(u8),
    Text(String),
    EmptyObject,
    EmptyArray,
}

impl Leaf {
    fn json(&self) -> String {
        match self {
            Leaf::Null => "null".into(),
            Leaf::Bool(b) => b.to_string(),
            Leaf::Int(i) => i.to_string(),
            Leaf::Unsigned(u) => u.to_string(),
            Leaf::Float(f) => serde_json::to_string(f).unwrap_or_else(|_| "0.5".into()),
            Leaf::Spelled(n) => [
                "1.0",
                "1e2",
                "-0",
                "2.0",
                "1E0",
                "0.0",
                "9223372036854775808",
            ][*n as usize % 7]
                .into(),
            Leaf::Version => "\"2.0\"".into(),
            Leaf::EscapedVersion => "\"2\\u002e0\"".into(),
            Leaf::MethodName(n) => json!(
                [
                    "initialize",
                    "exit",
                    "shutdown",
                    "textDocument/didOpen",
                    "textDocument/didChange",
                    "textDocument/inlineCompletion",
                    "$/cancelRequest",
                    "inkling/stats",
                ][*n as usize % 8]
            )
            .to_string(),
            Leaf::Text(s) => Value::String(s.clone()).to_string(),
            Leaf::EmptyObject => "{}".into(),
            Leaf::EmptyArray => "[]".into(),
        }
    }
}

/// A member's value: a leaf, or a container of leaves.
#[derive(Clone, Debug, TypeGenerator)]
enum Member {
    Leaf(Leaf),
    Array(Vec<Leaf>),
    Object(Vec<(Key, Leaf)>),
}

impl Member {
    fn json(&self) -> String {
        match self {
            Member::Leaf(leaf) => leaf.json(),
            Member::Array(items) => {
                let items: Vec<String> = items.iter().map(Leaf::json).collect();
                format!("[{}]", items.join(","))
            }
            Member::Object(members) => {
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("{}:{}", k.json(), v.json()))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
        }
    }
}

/// A message-shaped object: members in any order, repeated or missing, with a
/// valid start (`"jsonrpc":"2.0"`) most of the time.
#[derive(Debug, TypeGenerator)]
struct MessageSpec {
    version_first: bool,
    members: Vec<(Key, Member)>,
    /// Whitespace around the object, a batch (array) around it.
    padded: bool,
    batch: bool,
}

impl MessageSpec {
    fn json(&self) -> String {
        let mut members: Vec<String> = Vec::new();
        if self.version_first {
            members.push("\"jsonrpc\":\"2.0\"".into());
        }
        members.extend(
            self.members
                .iter()
                .map(|(k, v)| format!("{}:{}", k.json(), v.json())),
        );
        let object = format!("{{{}}}", members.join(","));
        let object = if self.padded {
            format!(" \r\n\t{object} \n")
        } else {
            object
        };
        if self.batch {
            format!("[{object}]")
        } else {
            object
        }
    }
}

#[test]
fn message_guard_agrees_with_tower_lsp() {
    check!(name = "message_guard_shapes")
        .with_type::<MessageSpec>()
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|spec| check_guard(spec.json().as_bytes()));
}

// ---------------------------------------------------------------------------
// Documents: edits in both position encodings against a `String` oracle.
// ---------------------------------------------------------------------------

/// The edit semantics of `documents`, written again on a plain `String`: lines end
/// at `\n`, `\r\n` or a lone `\r`; a line past the last one is the end of the text,
/// a column past the end of a line is its end (before the break), a column inside a
/// character is that character's start.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Oracle {
    text: String,
    version: i32,
}

impl Oracle {
    /// Byte ranges of each line's content (without its break).
    fn lines(&self) -> Vec<(usize, usize)> {
        let bytes = self.text.as_bytes();
        let mut lines = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    lines.push((start, i));
                    start = i + 1;
                }
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    lines.push((start, i));
                    i += 1;
                    start = i + 1;
                }
                b'\r' => {
                    lines.push((start, i));
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        lines.push((start, bytes.len()));
        lines
    }

    fn offset(&self, position: Position, encoding: PositionEncoding) -> usize {
        let lines = self.lines();
        let Some(&(start, end)) = lines.get(position.line as usize) else {
            return self.text.len();
        };
        let mut units = 0usize;
        for (i, c) in self.text[start..end].char_indices() {
            units += match encoding {
                PositionEncoding::Utf8 => c.len_utf8(),
                PositionEncoding::Utf16 => c.len_utf16(),
            };
            if units > position.column as usize {
                return start + i;
            }
        }
        end
    }

    /// Applies one `didChange`; on success, the tree-sitter edits it makes, computed
    /// on the `String` (`None` after a whole-text replacement).
    fn apply(
        &mut self,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<Option<Vec<InputEdit>>, EditError> {
        if version <= self.version {
            return Err(EditError::StaleVersion {
                current: self.version,
                received: version,
            });
        }
        let mut next = self.clone();
        let mut edits = Some(Vec::new());
        for change in changes {
            match change.range {
                None => {
                    next.text = change.text.clone();
                    edits = None;
                }
                Some((start, end)) => {
                    let (from, to) = (next.offset(start, encoding), next.offset(end, encoding));
                    if to < from {
                        return Err(EditError::ReversedRange);
                    }
                    if let Some(edits) = &mut edits {
                        edits.push(string_edit(&next.text, from, to, &change.text));
                    }
                    next.text.replace_range(from..to, &change.text);
                }
            }
        }
        self.text = next.text;
        self.version = version;
        Ok(edits)
    }
}

/// tree-sitter's point of byte `byte` of `text`: rows end at `\n` only, columns
/// count bytes.
fn string_point(text: &str, byte: usize) -> Point {
    let before = &text.as_bytes()[..byte];
    let row = before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    Point::new(row, byte - line_start)
}

/// The tree-sitter edit replacing bytes `from..to` of `text` with `inserted`.
fn string_edit(text: &str, from: usize, to: usize, inserted: &str) -> InputEdit {
    let start_position = string_point(text, from);
    let mut after = text[..from].to_owned();
    after.push_str(inserted);
    InputEdit {
        start_byte: from,
        old_end_byte: to,
        new_end_byte: from + inserted.len(),
        start_position,
        old_end_position: string_point(text, to),
        new_end_position: string_point(&after, after.len()),
    }
}

/// The tree tree-sitter itself keeps for the oracle's text: the same edits, as
/// [`string_edit`] computes them, and the same reparses. Parsing is deterministic,
/// so the document's tree must be this one, node for node, even where error
/// recovery makes an incrementally parsed tree differ from a fresh one.
struct ReferenceTree {
    parser: tree_sitter::Parser,
    tree: Option<Tree>,
    /// Whether `tree` was parsed since the last edit: a document reparses only after
    /// an edit (reparsing the same text can recover from errors differently).
    parsed: bool,
}

impl ReferenceTree {
    /// A reference for a document in `language_id`, not yet parsed (as a document's
    /// tree is parsed when first asked for).
    fn new(language_id: &str) -> Option<ReferenceTree> {
        let language: tree_sitter::Language = match language_id {
            "python" => tree_sitter_python::LANGUAGE.into(),
            "rust" => tree_sitter_rust::LANGUAGE.into(),
            _ => return None,
        };
        let mut parser = tree_sitter::Parser::new();
        parser.set_language(&language).ok()?;
        Some(ReferenceTree {
            parser,
            tree: None,
            parsed: false,
        })
    }

    fn edit(&mut self, edits: Option<&[InputEdit]>) {
        self.parsed = false;
        match (edits, &mut self.tree) {
            (Some(edits), Some(tree)) => edits.iter().for_each(|edit| tree.edit(edit)),
            (Some(_), None) => {}
            (None, tree) => *tree = None,
        }
    }

    fn reparse(&mut self, text: &str) -> Option<&Tree> {
        if !self.parsed || self.tree.is_none() {
            self.tree = self.parser.parse(text, self.tree.as_ref());
            self.parsed = true;
        }
        self.tree.as_ref()
    }

    fn fork(&self) -> ReferenceTree {
        let mut parser = tree_sitter::Parser::new();
        parser
            .set_language(&self.parser.language().expect("a language"))
            .unwrap();
        ReferenceTree {
            parser,
            tree: self.tree.clone(),
            parsed: self.parsed,
        }
    }
}

/// A coordinate of a position: mostly within a small text, sometimes anywhere.
#[derive(Clone, Copy, Debug, TypeGenerator)]
enum Coordinate {
    Near(u8),
    Close(u8),
    Within(u8),
    Any(u32),
}

impl Coordinate {
    fn value(self) -> u32 {
        match self {
            Coordinate::Near(n) => u32::from(n % 6),
            Coordinate::Close(n) => u32::from(n % 24),
            Coordinate::Within(n) => u32::from(n),
            Coordinate::Any(n) => n,
        }
    }
}

#[derive(Clone, Debug, TypeGenerator)]
struct ChangeSpec {
    /// Replace the whole text instead of a range.
    whole: bool,
    start: (Coordinate, Coordinate),
    end: (Coordinate, Coordinate),
    /// Use `start..end` as given even when `end` comes first.
    unordered: bool,
    text: Vec<Piece>,
}

impl ChangeSpec {
    fn change(&self) -> TextChange {
        let position = |(line, column): (Coordinate, Coordinate)| Position {
            line: line.value(),
            column: column.value(),
        };
        let (mut start, mut end) = (position(self.start), position(self.end));
        if !self.unordered && (end.line, end.column) < (start.line, start.column) {
            std::mem::swap(&mut start, &mut end);
        }
        TextChange {
            range: (!self.whole).then_some((start, end)),
            text: text_of(&self.text),
        }
    }
}

#[derive(Debug, TypeGenerator)]
struct EditSession {
    utf8: bool,
    language: u8,
    initial: Vec<Piece>,
    /// Each batch is one `didChange`; the byte says how its version moves.
    batches: Vec<(u8, Vec<ChangeSpec>)>,
    /// Then a copy with text inserted at a position (a prefetch's look-ahead).
    insertion: Option<((Coordinate, Coordinate), Vec<Piece>)>,
}

const LANGUAGES: [&str; 3] = ["python", "rust", "plaintext"];

/// What a tree looks like, node by node: kind, bytes, points, error flags.
fn shape(tree: &Tree) -> Vec<(&'static str, usize, usize, Point, Point, bool, bool)> {
    let mut nodes = Vec::new();
    let mut cursor = tree.walk();
    'walk: loop {
        let node = cursor.node();
        nodes.push((
            node.kind(),
            node.start_byte(),
            node.end_byte(),
            node.start_position(),
            node.end_position(),
            node.is_error(),
            node.is_missing(),
        ));
        if cursor.goto_first_child() {
            continue;
        }
        while !cursor.goto_next_sibling() {
            if !cursor.goto_parent() {
                break 'walk;
            }
        }
    }
    nodes
}

/// The document's incrementally kept tree is the tree tree-sitter keeps when given
/// the oracle's edits ([`ReferenceTree`]) and, where the text has no syntax error,
/// the tree a fresh parse gives (either may be missing: a parse that runs out of
/// time gives none). (With errors, tree-sitter's recovery can differ
/// between an incremental and a fresh parse even with no edit at all: Python's
/// `struct S { a: u8 }\n// c\n)` reparsed with its own tree as the old one.)
fn assert_tree_is_right(document: &Document, reference: Option<&mut ReferenceTree>) {
    let text = document.text.to_string();
    let Some(incremental) = document.tree() else {
        // No grammar, or the parse ran out of time (a loaded machine, a pathological
        // text): the document dropped its tree, and so does the reference.
        if let Some(reference) = reference {
            reference.tree = None;
        }
        return;
    };
    if let Some(reference) = reference {
        let expected = reference.reparse(&text);
        assert_eq!(
            Some(shape(&incremental)),
            expected.map(shape),
            "the tree tree-sitter keeps for {text:?}"
        );
    }
    let fresh = Document::new(&text, 0, &document.language_id).tree();
    if let Some(fresh) = fresh.filter(|fresh| !fresh.root_node().has_error()) {
        assert_eq!(
            incremental.root_node().to_sexp(),
            fresh.root_node().to_sexp(),
            "tree of {text:?}"
        );
        assert_eq!(shape(&incremental), shape(&fresh), "nodes of {text:?}");
    }
}

/// Positions and char indices convert into each other (except between the two
/// halves of a `\r\n`, which no position names).
fn assert_positions_round_trip(document: &Document, encoding: PositionEncoding) {
    let text = &document.text;
    let step = (text.len_chars() / 64).max(1);
    for index in (0..=text.len_chars()).step_by(step) {
        let position = positions::position(&document.text, index, encoding);
        let inside_crlf = index > 0
            && index < text.len_chars()
            && text.char(index - 1) == '\r'
            && text.char(index) == '\n';
        if !inside_crlf {
            assert_eq!(
                positions::char_index(&document.text, position, encoding),
                index,
                "{position:?}"
            );
        }
    }
}

#[test]
fn document_edits_match_a_string_oracle() {
    check!(name = "document_edits")
        .with_type::<EditSession>()
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|session| {
            let encoding = if session.utf8 {
                PositionEncoding::Utf8
            } else {
                PositionEncoding::Utf16
            };
            let language = LANGUAGES[session.language as usize % LANGUAGES.len()];
            let initial = text_of(&session.initial);
            let mut store = DocumentStore::default();
            store.open("file:///a", Document::new(&initial, 1, language));
            let mut reference = ReferenceTree::new(language);
            let mut oracle = Oracle {
                text: initial,
                version: 1,
            };
            for (step, specs) in &session.batches {
                let changes: Vec<TextChange> = specs.iter().map(ChangeSpec::change).collect();
                let version = match step % 8 {
                    0 => oracle.version,
                    1 => oracle.version.saturating_sub(1),
                    n => oracle.version.saturating_add(i32::from(n)),
                };
                let uri = if step % 61 == 60 {
                    "file:///b"
                } else {
                    "file:///a"
                };
                let expected = if uri == "file:///a" {
                    oracle.apply(version, &changes, encoding)
                } else {
                    Err(EditError::NotOpen)
                };
                let result = store.change(uri, version, &changes, |text, change| {
                    change.to_edit(text, encoding)
                });
                assert_eq!(result, expected.clone().map(drop), "{changes:?}");
                if let (Ok(edits), Some(reference)) = (&expected, &mut reference) {
                    reference.edit(edits.as_deref());
                }
                let document = store.get("file:///a").unwrap();
                assert_eq!(document.text.to_string(), oracle.text, "{changes:?}");
                assert_eq!(document.version, oracle.version);
                // Some batches are followed by a request, which reparses the tree.
                if step & 0x80 != 0 {
                    assert_tree_is_right(document, reference.as_mut());
                }
            }
            let document = store.get("file:///a").unwrap();
            assert_positions_round_trip(document, encoding);
            assert_tree_is_right(document, reference.as_mut());
            if let Some(((line, column), pieces)) = &session.insertion {
                let position = Position {
                    line: line.value(),
                    column: column.value(),
                };
                let at = positions::char_index(&document.text, position, encoding);
                let inserted = text_of(pieces);
                let copy = document.with_insertion(at, &inserted);
                let byte = oracle.offset(position, encoding);
                let mut copy_reference = reference.as_ref().map(ReferenceTree::fork);
                if let Some(copy_reference) = &mut copy_reference {
                    copy_reference.edit(Some(&[string_edit(&oracle.text, byte, byte, &inserted)]));
                }
                let mut expected = oracle.text.clone();
                expected.insert_str(byte, &inserted);
                assert_eq!(copy.text.to_string(), expected);
                assert_tree_is_right(&copy, copy_reference.as_mut());
                // The original and its tree are untouched.
                assert_eq!(document.text.to_string(), oracle.text);
                assert_tree_is_right(document, reference.as_mut());
            }
        });
}

/// A request at a position of a document, and what a model might answer there.
#[derive(Debug, TypeGenerator)]
struct StagesSpec {
    language: u8,
    utf8: bool,
    text: Vec<Piece>,
    cursor: (Coordinate, Coordinate),
    window: (u8, u8),
    invoked: bool,
    postprocess: bool,
    comments: bool,
    generated: Vec<Piece>,
}

/// The synchronous stages a completion request runs on text the client controls
/// (context, syntax facts and queries, plan, stop rules) and on text the model
/// produced (the end of the answer, the finish): none may panic.
#[test]
fn completion_stages_never_panic() {
    use inkling_core::postprocess::{self, StopRules, Trigger};
    use inkling_core::{context, syntax};
    check!(name = "completion_stages")
        .with_type::<StagesSpec>()
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|spec| {
            let encoding = if spec.utf8 {
                PositionEncoding::Utf8
            } else {
                PositionEncoding::Utf16
            };
            let language = [
                "python",
                "rust",
                "javascript",
                "typescript",
                "go",
                "c",
                "cpp",
                "text",
            ][spec.language as usize % 8];
            let document = Document::new(&text_of(&spec.text), 1, language);
            let position = Position {
                line: spec.cursor.0.value(),
                column: spec.cursor.1.value(),
            };
            let cursor = positions::char_index(&document.text, position, encoding);
            let window = context::Window {
                prefix_lines: spec.window.0 as usize,
                suffix_lines: spec.window.1 as usize,
            };
            let context = context::extract(&document, cursor, window);
            if let (Some(grammar), Some(tree)) = (syntax::grammar(language), document.tree()) {
                let text = &document.text;
                let byte = text.char_to_byte(cursor);
                let _ = syntax::enclosing_scopes(grammar, &tree, text, byte);
                let _ = syntax::imports(grammar, &tree, text, byte);
                let _ = syntax::definitions(grammar, &tree, text);
                let _ = syntax::references(grammar, &tree, text, byte.saturating_sub(200)..byte);
            }
            let options = postprocess::Options {
                enabled: spec.postprocess,
                in_comments: spec.comments,
                stop_when_unsure: true,
            };
            let trigger = if spec.invoked {
                Trigger::Invoked
            } else {
                Trigger::Automatic
            };
            let Ok(plan) = postprocess::plan(&context, trigger, options) else {
                return;
            };
            let rules = StopRules::new(&context, &plan, options);
            let generated = text_of(&spec.generated);
            for (end, _) in generated.char_indices().chain([(generated.len(), ' ')]) {
                if let Some(at) = rules.end_of_answer(&generated[..end], end == generated.len()) {
                    assert!(at <= end, "the answer ends at {at}, after its {end} bytes");
                }
            }
            if let Some(answer) = postprocess::finish(&generated, &context, &rules) {
                let _ = answer.len();
            }
        });
}

// ---------------------------------------------------------------------------
// The HTTP endpoint: FIM prompts and request bodies.
// ---------------------------------------------------------------------------

/// The FIM markers `split_fim_prompt` knows, in its order, as (prefix, suffix,
/// middle); Codestral's suffix-first layout last.
const FIM_FORMATS: [(&str, &str, &str); 5] = [
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    ("<PRE> ", " <SUF>", " <MID>"),
    ("<|code_prefix|>", "<|code_suffix|>", "<|code_middle|>"),
];

#[test]
fn fim_prompts_never_panic() {
    check!(name = "fim_prompts")
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|bytes: &[u8]| {
            let prompt = String::from_utf8_lossy(bytes);
            let (prefix, suffix) = http::split_fim_prompt(&prompt);
            assert!(prefix.len() + suffix.len() <= prompt.len());
        });
}

#[derive(Clone, Debug, TypeGenerator)]
struct FimSpec {
    format: u8,
    header: Vec<Piece>,
    prefix: Vec<Piece>,
    suffix: Vec<Piece>,
    with_middle: bool,
}

#[test]
fn fim_prompts_split_where_they_were_joined() {
    check!(name = "fim_round_trip")
        .with_type::<FimSpec>()
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|spec| {
            let (header, prefix, suffix) = (
                text_of(&spec.header),
                text_of(&spec.prefix),
                text_of(&spec.suffix),
            );
            let markers = FIM_FORMATS
                .iter()
                .flat_map(|(p, s, m)| [*p, *s, *m])
                .chain(["[SUFFIX]", "[PREFIX]", "<PRE>", "<SUF>", "<MID>"]);
            // Text that holds a marker is ambiguous; the clients' own text is escaped.
            if markers
                .into_iter()
                .any(|m| header.contains(m) || prefix.contains(m) || suffix.contains(m))
            {
                return;
            }
            let format = spec.format as usize % (FIM_FORMATS.len() + 1);
            let prompt = match FIM_FORMATS.get(format) {
                Some((p, s, m)) => {
                    let middle = if spec.with_middle { *m } else { "" };
                    format!("{header}{p}{prefix}{s}{suffix}{middle}")
                }
                None => format!("{header}[SUFFIX]{suffix}[PREFIX]{prefix}"),
            };
            assert_eq!(
                http::split_fim_prompt(&prompt),
                (prefix, suffix),
                "{prompt:?}"
            );
        });
}

/// The address of an HTTP endpoint served for these tests, with an engine whose
/// model does not exist (so requests go through every stage but the model).
fn http_endpoint() -> SocketAddr {
    static ENDPOINT: OnceLock<SocketAddr> = OnceLock::new();
    *ENDPOINT.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let listener = http::bind(0).await.expect("a loopback port");
                sender.send(listener.local_addr().unwrap()).unwrap();
                let model = std::env::temp_dir().join("inkling-fuzz-no-such-model.gguf");
                let (settings, _) = Settings::resolve(Overrides {
                    model: Some(model),
                    ..Overrides::default()
                });
                http::serve(
                    listener,
                    CurrentPipeline::new(Arc::new(Suggester::new(
                        Hedged::new(Engine::start(settings.engine.clone()), Arc::default()),
                        settings,
                    ))),
                )
                .await;
            });
        });
        receiver.recv().expect("the endpoint's address")
    })
}

thread_local! {
    static CONNECTION: std::cell::RefCell<Option<BufReader<TcpStream>>> =
        const { std::cell::RefCell::new(None) };
}

/// Posts `body` to `path` over a kept-alive connection; the answer's status and body,
/// or why there was none (the server closed a fresh connection without answering).
fn post(path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    CONNECTION.with(|connection| {
        let mut connection = connection.borrow_mut();
        let mut failures = Vec::new();
        for fresh in [connection.is_none(), true] {
            if fresh {
                let stream = TcpStream::connect(http_endpoint()).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                *connection = Some(BufReader::new(stream));
            }
            let reader = connection.as_mut().unwrap();
            let answer = reader
                .get_mut()
                .write_all(&request)
                .map_err(|e| format!("writing: {e}"))
                .and_then(|()| read_response(reader));
            match answer {
                Ok(answer) => return Ok(answer),
                Err(e) => failures.push(format!(
                    "{} connection: {e}",
                    if fresh { "new" } else { "kept" }
                )),
            }
            // A kept-alive connection the server had closed: try once on a new one.
            *connection = None;
            if fresh {
                break;
            }
        }
        Err(failures.join("; "))
    })
}

fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>), String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("reading the status line: {e}"))?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("status line {line:?}"))?;
    let mut length = 0;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("reading a header: {e}"))?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header {header:?}"))?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| format!("header {header:?}"))?;
        }
        assert!(
            !name.eq_ignore_ascii_case("transfer-encoding"),
            "a chunked answer: {header}"
        );
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading {length} bytes of body: {e}"))?;
    Ok((status, body))
}

/// The endpoint answers `body` sent to `path` with a JSON answer: 200 or a client
/// error, never a server error, never a dropped connection.
fn check_endpoint(path: &str, body: &[u8]) {
    // A flood of new connections (thousands a second, each closed after its answer)
    // can find all of the endpoint's connections still winding down, and such a
    // connection is closed unanswered by design (`http::MAX_CONNECTIONS`): ask again
    // after a pause. A body that kills a connection every time still fails.
    let mut attempts = 0;
    let (status, answer) = loop {
        match post(path, body) {
            Ok(answer) => break answer,
            Err(_) if attempts < 3 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!(
                "no answer from {path} ({e}) to {:?}",
                String::from_utf8_lossy(body)
            ),
        }
    };
    assert!(
        status == 200 || (400..500).contains(&status),
        "{status} from {path} to {:?}: {}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&answer)
    );
    if status == 200 {
        serde_json::from_slice::<Value>(&answer).expect("a JSON answer");
    }
}

const HTTP_PATHS: [&str; 2] = ["/infill", "/v1/completions"];

#[test]
fn http_bodies_never_panic() {
    check!(name = "http_bodies")
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|bytes: &[u8]| {
            let path = HTTP_PATHS[bytes.first().map_or(0, |b| *b as usize % 2)];
            check_endpoint(path, bytes.get(1..).unwrap_or_default());
        });
}

/// The member names of both request shapes, and others.
#[derive(Clone, Copy, Debug, TypeGenerator)]
enum Field {
    Prompt,
    Suffix,
    MaxTokens,
    Stop,
    Stream,
    Model,
    InputPrefix,
    InputSuffix,
    InputExtra,
    NPredict,
    ResponseFields,
    Temperature,
}

#[derive(Clone, Debug, TypeGenerator)]
enum FieldValue {
    Leaf(Leaf),
    Code(Vec<Piece>),
    Fim(FimSpec),
    Strings(Vec<Vec<Piece>>),
    Paths(Vec<u8>),
    Chunks(Vec<(Vec<Piece>, Vec<Piece>)>),
}

impl FieldValue {
    fn json(&self) -> Value {
        match self {
            FieldValue::Leaf(leaf) => serde_json::from_str(&leaf.json()).unwrap_or(Value::Null),
            FieldValue::Code(pieces) => Value::String(text_of(pieces)),
            FieldValue::Fim(spec) => {
                let (p, s, m) = FIM_FORMATS[spec.format as usize % FIM_FORMATS.len()];
                Value::String(format!(
                    "{}{p}{}{s}{}{m}",
                    text_of(&spec.header),
                    text_of(&spec.prefix),
                    text_of(&spec.suffix)
                ))
            }
            FieldValue::Strings(items) => items.iter().map(|p| text_of(p)).collect(),
            FieldValue::Paths(picks) => picks
                .iter()
                .map(|n| {
                    [
                        "content",
                        "timings/prompt_n",
                        "timings/",
                        "/",
                        "",
                        "a//b",
                        "timings",
                    ][*n as usize % 7]
                })
                .collect(),
            FieldValue::Chunks(chunks) => chunks
                .iter()
                .map(|(name, text)| json!({"filename": text_of(name), "text": text_of(text)}))
                .collect(),
        }
    }
}

#[derive(Debug, TypeGenerator)]
struct BodySpec {
    completions: bool,
    fields: Vec<(Field, FieldValue)>,
}

#[test]
fn http_request_shapes_are_answered() {
    check!(name = "http_shapes")
        .with_type::<BodySpec>()
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|spec| {
            // Members in order; a repeated one is written twice, as a client might.
            let members: Vec<String> = spec
                .fields
                .iter()
                .map(|(field, value)| {
                    let name = match field {
                        Field::Prompt => "prompt",
                        Field::Suffix => "suffix",
                        Field::MaxTokens => "max_tokens",
                        Field::Stop => "stop",
                        Field::Stream => "stream",
                        Field::Model => "model",
                        Field::InputPrefix => "input_prefix",
                        Field::InputSuffix => "input_suffix",
                        Field::InputExtra => "input_extra",
                        Field::NPredict => "n_predict",
                        Field::ResponseFields => "response_fields",
                        Field::Temperature => "temperature",
                    };
                    format!("\"{name}\":{}", value.json())
                })
                .collect();
            let body = format!("{{{}}}", members.join(","));
            check_endpoint(HTTP_PATHS[usize::from(spec.completions)], body.as_bytes());
        });
}

// ---------------------------------------------------------------------------
// GGUF files: the bounded metadata reader every model file goes through.
// ---------------------------------------------------------------------------

/// A GGUF value type's code in the file.
fn gguf_code(value: &gguf::Value) -> u32 {
    use gguf::Value as V;
    match value {
        V::U8(_) => 0,
        V::I8(_) => 1,
        V::U16(_) => 2,
        V::I16(_) => 3,
        V::U32(_) => 4,
        V::I32(_) => 5,
        V::F32(_) => 6,
        V::Bool(_) => 7,
        V::String(_) => 8,
        V::Array(_) => 9,
        V::U64(_) => 10,
        V::I64(_) => 11,
        V::F64(_) => 12,
    }
}

fn gguf_array_code(array: &gguf::Array) -> u32 {
    use gguf::Array as A;
    match array {
        A::U8(_) => 0,
        A::I8(_) => 1,
        A::U16(_) => 2,
        A::I16(_) => 3,
        A::U32(_) => 4,
        A::I32(_) => 5,
        A::F32(_) => 6,
        A::Bool(_) => 7,
        A::String(_) => 8,
        A::Array(_) => 9,
        A::U64(_) => 10,
        A::I64(_) => 11,
        A::F64(_) => 12,
    }
}

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// An array's element type, count and elements, as the file has them.
fn gguf_array(out: &mut Vec<u8>, array: &gguf::Array) {
    use gguf::Array as A;
    out.extend(gguf_array_code(array).to_le_bytes());
    macro_rules! numbers {
        ($items:expr) => {{
            out.extend(($items.len() as u64).to_le_bytes());
            for item in $items {
                out.extend(item.to_le_bytes());
            }
        }};
    }
    match array {
        A::U8(v) => numbers!(v),
        A::I8(v) => numbers!(v),
        A::U16(v) => numbers!(v),
        A::I16(v) => numbers!(v),
        A::U32(v) => numbers!(v),
        A::I32(v) => numbers!(v),
        A::U64(v) => numbers!(v),
        A::I64(v) => numbers!(v),
        A::F32(v) => numbers!(v),
        A::F64(v) => numbers!(v),
        A::Bool(v) => {
            out.extend((v.len() as u64).to_le_bytes());
            out.extend(v.iter().map(|&b| u8::from(b)));
        }
        A::String(v) => {
            out.extend((v.len() as u64).to_le_bytes());
            for s in v {
                gguf_string(out, s);
            }
        }
        A::Array(v) => {
            out.extend((v.len() as u64).to_le_bytes());
            for inner in v {
                gguf_array(out, inner);
            }
        }
    }
}

/// A GGUF file with `metadata`, tensor descriptions left as zeros.
fn gguf_file(metadata: &gguf::Metadata) -> Vec<u8> {
    use gguf::Value as V;
    let mut out = b"GGUF".to_vec();
    out.extend(metadata.version.to_le_bytes());
    out.extend(metadata.tensor_count.to_le_bytes());
    out.extend((metadata.entries.len() as u64).to_le_bytes());
    for (key, value) in &metadata.entries {
        gguf_string(&mut out, key);
        out.extend(gguf_code(value).to_le_bytes());
        match value {
            V::U8(n) => out.extend(n.to_le_bytes()),
            V::I8(n) => out.extend(n.to_le_bytes()),
            V::U16(n) => out.extend(n.to_le_bytes()),
            V::I16(n) => out.extend(n.to_le_bytes()),
            V::U32(n) => out.extend(n.to_le_bytes()),
            V::I32(n) => out.extend(n.to_le_bytes()),
            V::U64(n) => out.extend(n.to_le_bytes()),
            V::I64(n) => out.extend(n.to_le_bytes()),
            V::F32(n) => out.extend(n.to_le_bytes()),
            V::F64(n) => out.extend(n.to_le_bytes()),
            V::Bool(b) => out.push(u8::from(*b)),
            V::String(s) => gguf_string(&mut out, s),
            V::Array(array) => gguf_array(&mut out, array),
        }
    }
    out.resize(out.len() + 24 * metadata.tensor_count as usize, 0);
    out
}

/// How deep a value's arrays nest, as the reader counts (an array of numbers, or
/// an empty array of arrays, is 1).
fn gguf_depth(array: &gguf::Array) -> u32 {
    match array {
        gguf::Array::Array(inner) => 1 + inner.iter().map(gguf_depth).max().unwrap_or(0),
        _ => 1,
    }
}

#[derive(Debug, TypeGenerator)]
enum GgufSpec {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(u32),
    F64(u64),
    Bool(bool),
    Text(Vec<Piece>),
    Bytes(Vec<u8>),
    Ints(Vec<i32>),
    Floats(Vec<u32>),
    Flags(Vec<bool>),
    Tokens(Vec<Vec<Piece>>),
    Longs(Vec<u64>),
    Nested(Vec<Vec<i16>>),
    /// Empty arrays nested this deep, around the reader's limit.
    Deep(u8),
}

impl GgufSpec {
    fn value(&self) -> gguf::Value {
        use gguf::{Array as A, Value as V};
        match self {
            GgufSpec::U8(n) => V::U8(*n),
            GgufSpec::I8(n) => V::I8(*n),
            GgufSpec::U16(n) => V::U16(*n),
            GgufSpec::I16(n) => V::I16(*n),
            GgufSpec::U32(n) => V::U32(*n),
            GgufSpec::I32(n) => V::I32(*n),
            GgufSpec::U64(n) => V::U64(*n),
            GgufSpec::I64(n) => V::I64(*n),
            GgufSpec::F32(bits) => V::F32(f32::from_bits(*bits)),
            GgufSpec::F64(bits) => V::F64(f64::from_bits(*bits)),
            GgufSpec::Bool(b) => V::Bool(*b),
            GgufSpec::Text(pieces) => V::String(text_of(pieces)),
            GgufSpec::Bytes(v) => V::Array(A::U8(v.clone())),
            GgufSpec::Ints(v) => V::Array(A::I32(v.clone())),
            GgufSpec::Floats(v) => V::Array(A::F32(v.iter().map(|b| f32::from_bits(*b)).collect())),
            GgufSpec::Flags(v) => V::Array(A::Bool(v.clone())),
            GgufSpec::Tokens(v) => V::Array(A::String(v.iter().map(|p| text_of(p)).collect())),
            GgufSpec::Longs(v) => V::Array(A::U64(v.clone())),
            GgufSpec::Nested(v) => {
                V::Array(A::Array(v.iter().map(|i| A::I16(i.clone())).collect()))
            }
            GgufSpec::Deep(depth) => {
                let mut array = A::Array(Vec::new());
                for _ in 1..depth % 12 {
                    array = A::Array(vec![array]);
                }
                V::Array(array)
            }
        }
    }
}

/// llama.cpp's keys, which `Metadata`'s accessors look up, and others.
const GGUF_KEYS: [&str; 8] = [
    "general.architecture",
    "general.name",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.chat_template",
    "",
];

#[derive(Debug, TypeGenerator)]
struct GgufFileSpec {
    version3: bool,
    tensors: u8,
    entries: Vec<(u8, GgufSpec)>,
    /// Then damaged: cut at, or a byte overwritten at, a point chosen by these.
    cut: Option<u16>,
    overwrite: Option<(u16, u8)>,
}

/// What every caller does with metadata: its accessors must not panic either.
fn use_metadata(metadata: &gguf::Metadata) {
    let _ = (
        metadata.architecture(),
        metadata.name(),
        metadata.has_chat_template(),
    );
    let _ = (
        metadata.tokens(),
        metadata.token_types(),
        metadata.fim_tokens(),
    );
    let _ = metadata.token_id("tokenizer.ggml.prefix_token_id");
}

#[test]
fn gguf_bytes_never_panic() {
    check!(name = "gguf_bytes")
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|bytes: &[u8]| {
            // Most inputs start like a GGUF file, so that the fuzzer gets past the magic.
            let mut file = Vec::with_capacity(bytes.len() + 8);
            if bytes.first().is_some_and(|b| b % 4 != 0) {
                file.extend(b"GGUF");
                file.extend((2 + u32::from(bytes[0] % 2)).to_le_bytes());
                file.extend(&bytes[1..]);
            } else {
                file.extend(bytes);
            }
            if let Ok(metadata) = gguf::read_metadata(std::io::Cursor::new(&file)) {
                use_metadata(&metadata);
            }
        });
}

#[test]
fn gguf_files_read_back_and_damaged_ones_are_refused_calmly() {
    check!(name = "gguf_files")
        .with_type::<GgufFileSpec>()
        .with_test_time(short_run())
        .with_shrink_time(shrink_time())
        .for_each(|spec| {
            let metadata = gguf::Metadata {
                version: if spec.version3 { 3 } else { 2 },
                tensor_count: u64::from(spec.tensors % 4),
                entries: spec
                    .entries
                    .iter()
                    .map(|(key, value)| {
                        (
                            GGUF_KEYS[*key as usize % GGUF_KEYS.len()].to_owned(),
                            value.value(),
                        )
                    })
                    .collect(),
            };
            let file = gguf_file(&metadata);
            let too_deep = metadata.entries.iter().any(
                |(_, value)| matches!(value, gguf::Value::Array(array) if gguf_depth(array) > 8),
            );
            match gguf::read_metadata(std::io::Cursor::new(&file)) {
                // Floats compare by their bytes (NaN is not equal to itself).
                Ok(read) => {
                    assert!(!too_deep, "arrays nested over the limit were read");
                    assert_eq!(gguf_file(&read), file);
                    use_metadata(&read);
                }
                Err(e) => assert!(too_deep, "{e}: {metadata:?}"),
            }
            let mut damaged = file.clone();
            if let Some((at, byte)) = spec.overwrite {
                let at = at as usize % damaged.len();
                damaged[at] = byte;
            }
            if let Some(cut) = spec.cut {
                damaged.truncate(cut as usize % (damaged.len() + 1));
            }
            if let Ok(read) = gguf::read_metadata(std::io::Cursor::new(&damaged)) {
                use_metadata(&read);
            }
        });
}

// ---------------------------------------------------------------------------
// Property tests: batches of incremental edits, text and syntax tree.
// ---------------------------------------------------------------------------

mod edits {
    use proptest::prelude::*;

    use super::*;

    /// Text that code is edited with: ASCII, every kind of line break, emoji, a ZWJ
    /// sequence, CJK and combining marks, and brackets and keywords that change the
    /// tree's shape.
    fn inserted_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(vec![
                "x", "ab", "42", " ", "    ", "\n", "\r\n", "\r", "😀", "👩\u{200d}👩\u{200d}👧",
                "漢字", "中", "e\u{301}", "\u{301}", "\u{200d}",
            ]),
            2 => prop::sample::select(vec![
                "def f(x):\n", "    return x\n", "class A:\n    pass\n", "if x:\n  y = 1\r\n",
                "fn f() {", "}", "{", "(", ")", "let s = \"", "\"", "# c", "// c\n", "/* ",
                " */", "\"\"\"", ":", ";", "struct S { a: u8 }\n", "impl S {}\r",
            ]),
        ];
        prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
    }

    fn coordinate() -> impl Strategy<Value = u32> {
        prop_oneof![12 => 0u32..12, 4 => 0u32..40, 1 => any::<u32>()]
    }

    fn change() -> impl Strategy<Value = TextChange> {
        (
            (coordinate(), coordinate()),
            (coordinate(), coordinate()),
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.02),
            inserted_text(),
        )
            .prop_map(|(a, b, unordered, whole, text)| {
                let position = |(line, column)| Position { line, column };
                let (mut start, mut end) = (position(a), position(b));
                if !unordered && b < a {
                    std::mem::swap(&mut start, &mut end);
                }
                TextChange {
                    range: (!whole).then_some((start, end)),
                    text,
                }
            })
    }

    fn initial_text(language: &'static str) -> impl Strategy<Value = String> {
        let samples = match language {
            "python" => vec![
                "",
                "import os\n\ndef f(x):\n    return x + 1\n",
                "class A:\r\n    def m(self):\r\n        return '😀'\r\n",
                "s = \"漢字\"  # comment\nif s:\n    print(s)\n",
            ],
            _ => vec![
                "",
                "fn main() {\n    let x = 1;\n}\n",
                "struct S {\r\n    a: u8,\r\n}\r\nimpl S { fn f(&self) -> u8 { self.a } }\r\n",
                "// 👩\u{200d}👩\u{200d}👧\nfn f() -> &'static str { \"e\u{301}\" }\n",
            ],
        };
        (prop::sample::select(samples), inserted_text()).prop_map(|(s, t)| format!("{s}{t}"))
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            // `PROPTEST_CASES` wins over this count.
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(4000),
            max_shrink_iters: 4096,
            ..ProptestConfig::default()
        }
    }

    fn session(
        language: &'static str,
    ) -> impl Strategy<Value = (String, bool, Vec<Vec<TextChange>>)> {
        (
            initial_text(language),
            any::<bool>(),
            prop::collection::vec(prop::collection::vec(change(), 1..5), 1..5),
        )
    }

    fn run(language: &str, initial: &str, utf8: bool, batches: &[Vec<TextChange>]) {
        let encoding = if utf8 {
            PositionEncoding::Utf8
        } else {
            PositionEncoding::Utf16
        };
        let mut document = Document::new(initial, 1, language);
        let mut oracle = Oracle {
            text: initial.to_owned(),
            version: 1,
        };
        let mut reference = ReferenceTree::new(language);
        // The first tree is parsed whole; every later one incrementally.
        assert_tree_is_right(&document, reference.as_mut());
        for (i, changes) in batches.iter().enumerate() {
            let version = 2 + i as i32;
            let expected = oracle.apply(version, changes, encoding);
            let result = document.apply_changes(version, changes, |text, change| {
                change.to_edit(text, encoding)
            });
            assert_eq!(result, expected.clone().map(drop), "{changes:?}");
            if let (Ok(edits), Some(reference)) = (&expected, &mut reference) {
                reference.edit(edits.as_deref());
            }
            assert_eq!(document.text.to_string(), oracle.text, "{changes:?}");
            assert_tree_is_right(&document, reference.as_mut());
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn python_edits_keep_text_and_tree((initial, utf8, batches) in session("python")) {
            run("python", &initial, utf8, &batches);
        }

        #[test]
        fn rust_edits_keep_text_and_tree((initial, utf8, batches) in session("rust")) {
            run("rust", &initial, utf8, &batches);
        }
    }
}

mod harness_checks {
    use super::*;

    #[test]
    fn the_oracle_clamps_as_documented() {
        let oracle = Oracle {
            text: "a😀b\r\ncd\re".into(),
            version: 1,
        };
        let at = |line, column, encoding| oracle.offset(Position { line, column }, encoding);
        assert_eq!(at(0, 2, PositionEncoding::Utf16), 1);
        assert_eq!(at(0, 3, PositionEncoding::Utf16), 5);
        assert_eq!(at(0, 99, PositionEncoding::Utf8), 6);
        assert_eq!(at(1, 1, PositionEncoding::Utf8), 9);
        assert_eq!(at(2, 0, PositionEncoding::Utf8), 11);
        assert_eq!(at(3, 0, PositionEncoding::Utf8), 12);
        assert_eq!(at(9, 9, PositionEncoding::Utf8), 12);
    }
}
