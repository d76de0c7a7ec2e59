//! tree-sitter: each document's syntax tree, kept up to date incrementally, and
//! what the other stages ask of it — whether the cursor is in a comment or a
//! string, the enclosing scopes' signatures, the imports, the definitions a file
//! offers and the names code refers to.
//!
//! Grammars and their queries (`grammars/<language>/context.scm`, compiled in) are
//! looked up by LSP language identifier; a language without one simply has no tree.
//!
//! Invariants:
//! - Parsing is bounded: documents over [`MAX_PARSE_BYTES`] are not parsed, and a
//!   parse that runs longer than [`PARSE_BUDGET`] is abandoned (and not retried for
//!   [`RETRY_AFTER`]), so a huge or pathological file never stalls a request.
//! - A tree is only used for the text version it was parsed or edited for. Edits
//!   are applied to the tree as they arrive ([`SyntaxTree::edit`], cheap); the
//!   reparse, which reuses the unchanged subtrees, happens when a request needs it.
//! - Without a tree every fact is `false` / empty, which means "plain code" to the
//!   stages after this one.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ropey::Rope;
use tree_sitter::{
    InputEdit, Language, Node, ParseOptions, ParseState, Parser, Point, Query, QueryCursor,
    StreamingIterator, Tree,
};

use crate::lock;

/// Documents larger than this are not parsed.
pub const MAX_PARSE_BYTES: usize = 4 << 20;
/// Longest time one parse may take.
pub const PARSE_BUDGET: Duration = Duration::from_millis(100);
/// After a parse ran out of time, the document is not parsed again for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Most bytes of text whose trees are kept, over all documents: a tree takes some 60
/// times its text (10,000 open files of 9 KB held 5 GB). Past it, the trees least
/// recently used are dropped, and parsed again when next wanted.
const KEPT_TREES_TEXT_BYTES: usize = 4 << 20;
/// Most trees kept, however small.
const KEPT_TREES: usize = 256;
/// Trees kept whatever their size: the ones in use now.
const ALWAYS_KEPT_TREES: usize = 2;
/// Longest signature kept, in lines; longer ones are cut.
const MAX_SIGNATURE_LINES: usize = 6;
/// A type definition this short is shown whole (its fields are what code uses).
const MAX_WHOLE_TYPE_LINES: usize = 12;

/// A language inkling can parse: its grammar, its queries and its comment marker.
pub struct Grammar {
    language: Language,
    query: Query,
    /// Starts a line comment in this language.
    pub comment: &'static str,
    /// A statement that stands for the one being typed when the scopes around an
    /// unfinished statement are read from a repaired copy (see [`enclosing_scopes`]).
    placeholder: &'static str,
}

/// The comment marker of a language without a grammar: `#` for the common
/// script and configuration languages, `//` otherwise.
pub fn comment_marker(language_id: &str) -> &'static str {
    if let Some(grammar) = grammar(language_id) {
        return grammar.comment;
    }
    match language_id {
        "python" | "shellscript" | "sh" | "bash" | "ruby" | "perl" | "r" | "yaml" | "toml"
        | "makefile" | "dockerfile" | "elixir" | "julia" | "nim" | "powershell" | "cmake" => "#",
        "lua" | "sql" | "haskell" | "elm" | "ada" => "--",
        "lisp" | "clojure" | "scheme" | "racket" => ";;",
        "erlang" | "latex" | "tex" | "matlab" => "%",
        _ => "//",
    }
}

/// The grammar for an LSP language identifier, if inkling has one. Each language's
/// query is compiled on first use (some take a few hundred milliseconds).
pub fn grammar(language_id: &str) -> Option<&'static Grammar> {
    const LANGUAGES: [&str; 8] = [
        "rust",
        "python",
        "javascript",
        "typescript",
        "typescriptreact",
        "go",
        "c",
        "cpp",
    ];
    static GRAMMARS: [OnceLock<Option<Grammar>>; 8] = [const { OnceLock::new() }; 8];
    let key = match language_id {
        "javascriptreact" => "javascript",
        other => other,
    };
    let slot = LANGUAGES.iter().position(|&id| id == key)?;
    GRAMMARS[slot]
        .get_or_init(|| {
            let (language, source, comment): (Language, &str, &str) = match key {
                "rust" => (
                    tree_sitter_rust::LANGUAGE.into(),
                    include_str!("../../../grammars/rust/context.scm"),
                    "//",
                ),
                "python" => (
                    tree_sitter_python::LANGUAGE.into(),
                    include_str!("../../../grammars/python/context.scm"),
                    "#",
                ),
                "javascript" => (
                    tree_sitter_javascript::LANGUAGE.into(),
                    include_str!("../../../grammars/javascript/context.scm"),
                    "//",
                ),
                "typescript" => (
                    tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
                    include_str!("../../../grammars/typescript/context.scm"),
                    "//",
                ),
                "typescriptreact" => (
                    tree_sitter_typescript::LANGUAGE_TSX.into(),
                    include_str!("../../../grammars/typescript/context.scm"),
                    "//",
                ),
                "go" => (
                    tree_sitter_go::LANGUAGE.into(),
                    include_str!("../../../grammars/go/context.scm"),
                    "//",
                ),
                "c" => (
                    tree_sitter_c::LANGUAGE.into(),
                    include_str!("../../../grammars/c/context.scm"),
                    "//",
                ),
                _ => (
                    tree_sitter_cpp::LANGUAGE.into(),
                    include_str!("../../../grammars/cpp/context.scm"),
                    "//",
                ),
            };
            // A broken query is a bug caught by the tests; in a release it costs that
            // language its tree, not the server.
            // Python's blocks need a statement; in the others an empty line will do.
            let placeholder = if key == "python" { "pass" } else { "" };
            Query::new(&language, source)
                .inspect_err(|e| tracing::error!("query for {key} does not compile: {e}"))
                .ok()
                .map(|query| Grammar {
                    language,
                    query,
                    comment,
                    placeholder,
                })
        })
        .as_ref()
}

/// The file extensions with a grammar, each with its LSP language identifier.
const EXTENSIONS: [(&str, &str); 20] = [
    ("rs", "rust"),
    ("py", "python"),
    ("pyi", "python"),
    ("js", "javascript"),
    ("mjs", "javascript"),
    ("cjs", "javascript"),
    ("jsx", "javascriptreact"),
    ("ts", "typescript"),
    ("mts", "typescript"),
    ("cts", "typescript"),
    ("tsx", "typescriptreact"),
    ("go", "go"),
    ("c", "c"),
    ("h", "c"),
    ("cc", "cpp"),
    ("cpp", "cpp"),
    ("cxx", "cpp"),
    ("hpp", "cpp"),
    ("hh", "cpp"),
    ("hxx", "cpp"),
];

/// The language of a file, by its extension, as an LSP language identifier.
pub fn language_of_path(path: &std::path::Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?;
    EXTENSIONS
        .iter()
        .find(|(known, _)| *known == extension)
        .map(|(_, id)| *id)
}

/// The extensions [`language_of_path`] knows: the files the workspace index reads.
pub fn source_extensions() -> impl Iterator<Item = &'static str> {
    EXTENSIONS.iter().map(|(extension, _)| *extension)
}

/// A document's syntax tree, shared by the copies of the document (a request works
/// on a copy while edits keep arriving for the original).
#[derive(Clone, Default)]
pub struct SyntaxTree(Arc<Mutex<TreeState>>);

/// The documents whose trees are kept, most recently used first, each with its
/// text's length (see [`KEPT_TREES_TEXT_BYTES`]).
static KEPT: Mutex<VecDeque<(Weak<Mutex<TreeState>>, usize)>> = Mutex::new(VecDeque::new());

/// Records that `state`'s tree, of a text of `bytes`, was just used; drops the trees
/// least recently used past the bounds. Called without `state`'s lock held; a tree
/// whose lock is held elsewhere (in use) is left for a later call.
fn keep(state: &Arc<Mutex<TreeState>>, bytes: usize) {
    let mut kept = lock(&KEPT);
    kept.retain(|(other, _)| {
        other.strong_count() > 0 && !std::ptr::eq(other.as_ptr(), Arc::as_ptr(state))
    });
    kept.push_front((Arc::downgrade(state), bytes));
    let mut total: usize = kept.iter().map(|(_, bytes)| bytes).sum();
    let mut index = kept.len();
    while index > ALWAYS_KEPT_TREES && (total > KEPT_TREES_TEXT_BYTES || kept.len() > KEPT_TREES) {
        index -= 1;
        let Some(other) = kept[index].0.upgrade() else {
            continue;
        };
        if let Ok(mut other) = other.try_lock() {
            other.tree = None;
            other.parsed = false;
            total -= kept[index].1;
            kept.remove(index);
        }
    }
}

#[derive(Clone, Default)]
struct TreeState {
    /// The last tree, with every edit since applied to it.
    tree: Option<Tree>,
    /// The document version `tree` (edits included) describes.
    version: i32,
    /// Whether `tree` was parsed for `version`, not only edited towards it.
    parsed: bool,
    /// No parse before this instant (the last one ran out of time).
    retry_at: Option<Instant>,
}

impl fmt::Debug for SyntaxTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.0);
        f.debug_struct("SyntaxTree")
            .field("version", &state.version)
            .field("parsed", &state.parsed)
            .finish()
    }
}

impl SyntaxTree {
    /// Records edits that turned the text into `version`.
    pub fn edit(&self, edits: &[InputEdit], version: i32) {
        let mut state = lock(&self.0);
        if let Some(tree) = &mut state.tree {
            for edit in edits {
                tree.edit(edit);
            }
        }
        state.version = version;
        state.parsed = false;
    }

    /// An independent copy for version `version` of the text: edits to either no
    /// longer reach the other. It starts from this tree when the tree describes that
    /// version, and empty otherwise.
    pub fn fork(&self, version: i32) -> SyntaxTree {
        let state = lock(&self.0);
        let copy = if state.version == version {
            state.clone()
        } else {
            TreeState {
                version,
                ..TreeState::default()
            }
        };
        SyntaxTree(Arc::new(Mutex::new(copy)))
    }

    /// Forgets the tree: the whole text was replaced by `version`.
    pub fn reset(&self, version: i32) {
        let mut state = lock(&self.0);
        state.tree = None;
        state.version = version;
        state.parsed = false;
        state.retry_at = None;
    }

    /// The tree of `text`, which is version `version` of a document in `language_id`:
    /// reparsed (incrementally, bounded) if edits arrived since the last parse.
    /// `None` for unsupported languages, huge texts and parses out of time.
    ///
    /// The parse runs without the lock (only the old tree is copied under it, which
    /// shares its nodes), so edits to this document never wait for a parse: a tree
    /// parsed for a version that edits have since left behind is not stored.
    pub fn get(&self, text: &Rope, version: i32, language_id: &str) -> Option<Tree> {
        let grammar = grammar(language_id)?;
        if text.len_bytes() > MAX_PARSE_BYTES {
            return None;
        }
        let old = {
            let state = lock(&self.0);
            if state.version != version {
                // This copy of the document is older than the tree: parse it alone.
                None
            } else if state.parsed {
                let tree = state.tree.clone();
                drop(state);
                keep(&self.0, text.len_bytes());
                return tree;
            } else if state.retry_at.is_some_and(|at| Instant::now() < at) {
                return None;
            } else {
                Some(state.tree.clone())
            }
        };
        let Some(old) = old else {
            return parse(grammar, text, None);
        };
        let tree = parse(grammar, text, old.as_ref());
        let mut state = lock(&self.0);
        if state.version == version && !state.parsed {
            state.retry_at = tree.is_none().then(|| Instant::now() + RETRY_AFTER);
            state.parsed = tree.is_some();
            state.tree = tree.clone();
            if state.parsed {
                drop(state);
                keep(&self.0, text.len_bytes());
            }
        }
        tree
    }
}

/// The tree of `text` in `language_id`, parsed once for a text no document holds (a
/// file read for the index): it takes no place among the trees kept (see
/// [`KEPT_TREES_TEXT_BYTES`]). `None` as for [`SyntaxTree::get`].
pub fn parse_once(text: &Rope, language_id: &str) -> Option<Tree> {
    let grammar = grammar(language_id)?;
    if text.len_bytes() > MAX_PARSE_BYTES {
        return None;
    }
    parse(grammar, text, None)
}

/// The tree-sitter edit for replacing bytes `start..old_end` of `text` (before the
/// edit) with `inserted`.
pub fn input_edit(text: &Rope, start: usize, old_end: usize, inserted: &str) -> InputEdit {
    let start_position = point(text, start);
    let inserted_lines = Rope::from_str(inserted);
    let last_line = inserted_lines.len_lines() - 1;
    let new_end_position = if last_line == 0 {
        Point::new(start_position.row, start_position.column + inserted.len())
    } else {
        let column = inserted.len() - inserted_lines.line_to_byte(last_line);
        Point::new(start_position.row + last_line, column)
    };
    InputEdit {
        start_byte: start,
        old_end_byte: old_end,
        new_end_byte: start + inserted.len(),
        start_position,
        old_end_position: point(text, old_end),
        new_end_position,
    }
}

/// The tree-sitter point of a byte offset. Rows are the rope's lines, which also
/// break at a lone `\r` where tree-sitter's do not; that only skews columns in such
/// files, and byte offsets (what this module works with) stay exact.
fn point(text: &Rope, byte: usize) -> Point {
    let row = text.byte_to_line(byte);
    Point::new(row, byte - text.line_to_byte(row))
}

/// Parses `text`, reusing `old` (already edited to match), within the time budget.
fn parse(grammar: &Grammar, text: &Rope, old: Option<&Tree>) -> Option<Tree> {
    let mut parser = Parser::new();
    parser.set_language(&grammar.language).ok()?;
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
    let tree = parser.parse_with_options(&mut read, old, Some(options));
    if tree.is_none() {
        tracing::debug!("parse abandoned after {:?}", started.elapsed());
    }
    tree
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
pub(crate) const BLOCK_KINDS: [&str; 7] = [
    "block",
    "compound_statement",
    "statement_block",
    "declaration_list",
    "field_declaration_list",
    "class_body",
    "function_body",
];

/// The nodes from `root` down to `node`, both included (`node` last even where
/// tree-sitter finds no way down to it). Walking up with `Node::parent` costs the
/// node's depth on every step
/// (tree-sitter finds a parent by descending from the root), so a walk up a file
/// nested thousands deep (`{{{{…`) would cost seconds; this path costs its length.
pub fn path_to<'t>(root: Node<'t>, node: Node<'t>) -> Vec<Node<'t>> {
    let mut path = vec![root];
    let mut current = root;
    while current.id() != node.id() {
        match current.child_with_descendant(node) {
            Some(child) => {
                path.push(child);
                current = child;
            }
            None => {
                path.push(node);
                break;
            }
        }
    }
    path
}

/// Whether `node`'s subtree, within the bytes `range`, nests more than `limit`
/// levels below it (only the subtrees that overlap `range` are read).
pub fn nests_deeper_than(node: Node<'_>, range: std::ops::Range<usize>, limit: usize) -> bool {
    let mut cursor = node.walk();
    let mut depth = 0usize;
    loop {
        let current = cursor.node();
        let overlaps = current.start_byte() < range.end && current.end_byte() > range.start;
        if overlaps && depth > limit {
            return true;
        }
        if overlaps && cursor.goto_first_child() {
            depth += 1;
            continue;
        }
        loop {
            if depth == 0 {
                return false;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            cursor.goto_parent();
            depth -= 1;
        }
    }
}

/// The facts at char index `cursor` of `text`, whose tree is `tree`.
pub fn facts_at(tree: Option<&Tree>, text: &Rope, cursor: usize) -> SyntaxFacts {
    let Some(tree) = tree else {
        return SyntaxFacts::default();
    };
    let byte = text.char_to_byte(cursor.min(text.len_chars()));
    // The node that ends at the cursor matters as much as the one that starts there:
    // `# note|` is in the comment, `foo|(` is in code. Look one byte to the left.
    let probe = byte.saturating_sub(1);
    let Some(innermost) = tree
        .root_node()
        .descendant_for_byte_range(probe, byte.max(probe + 1).min(text.len_bytes()))
    else {
        return SyntaxFacts::default();
    };
    let mut facts = SyntaxFacts::default();
    for current in path_to(tree.root_node(), innermost).into_iter().rev() {
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
                    let line_start = text.line_to_byte(text.byte_to_line(child.start_byte()));
                    (line_start..child.start_byte()).all(|b| matches!(text.byte(b), b' ' | b'\t'))
                })
                .map(|child| {
                    let line_start = text.line_to_byte(text.byte_to_line(child.start_byte()));
                    child.start_byte() - line_start
                });
        }
    }
    facts
}

/// Whether a comment node ends with a closing delimiter (`*/`), rather than at a line end.
fn closes(node: &Node<'_>, text: &Rope) -> bool {
    let end = node.end_byte();
    // Bytes, not a slice: `end - 2` may fall inside a multi-byte character.
    end >= 2 && text.byte(end - 2) == b'*' && text.byte(end - 1) == b'/'
}

/// A scope around the cursor: its first line and its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The line the scope starts on.
    pub line: usize,
    /// Its header as written, indented as in the file (`    def area(self):`,
    /// `impl Shape for Square {`), possibly over several lines.
    pub header: String,
}

/// A function, method or type that other code can refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// Its name.
    pub name: String,
    /// Its signature (for types short enough, the whole definition).
    pub signature: String,
    /// The line it starts on.
    pub line: usize,
}

/// The scopes enclosing byte `byte`, outermost first. Where the tree is broken —
/// the statement being typed is unfinished, and tree-sitter's error recovery may then
/// fold the whole enclosing function into an error node — they are read from a
/// repaired copy: the text before the cursor line, a placeholder statement at the
/// cursor line's indentation, and the braces still open closed.
pub fn enclosing_scopes(grammar: &Grammar, tree: &Tree, text: &Rope, byte: usize) -> Vec<Scope> {
    // An error anywhere may be the one that swallowed the scope around the cursor.
    if tree.root_node().has_error()
        && let Some(scopes) = repaired_scopes(grammar, text, byte)
    {
        return scopes;
    }
    scopes_in(grammar, tree, text, byte)
}

/// The scopes at the cursor line (the line of byte `byte`) in a copy of the text
/// before it, followed by the grammar's placeholder statement at the line's
/// indentation; `None` when the copy cannot be parsed in time.
fn repaired_scopes(grammar: &Grammar, text: &Rope, byte: usize) -> Option<Vec<Scope>> {
    let line = text.byte_to_line(byte);
    let indent: String = text
        .line(line)
        .chars()
        .take_while(|c| matches!(c, ' ' | '\t'))
        .collect();
    let mut repaired = text.slice(..text.line_to_char(line)).to_string();
    repaired.push_str(&indent);
    repaired.push_str(grammar.placeholder);
    let cursor = repaired.len();
    repaired.push('\n');
    // The braces left open, closed (counted roughly: braces in strings and comments
    // are usually balanced).
    let open = repaired
        .matches('{')
        .count()
        .saturating_sub(repaired.matches('}').count());
    repaired.push_str(&"}\n".repeat(open));
    let repaired = Rope::from_str(&repaired);
    let tree = parse(grammar, &repaired, None)?;
    Some(scopes_in(grammar, &tree, &repaired, cursor))
}

/// The scopes of `tree` enclosing byte `byte`, outermost first.
fn scopes_in(grammar: &Grammar, tree: &Tree, text: &Rope, byte: usize) -> Vec<Scope> {
    // White space typed after code (`return |`) is not part of the statement's node,
    // nor of the function's when the statement is its last: look where the code ends.
    let line_start = text.line_to_byte(text.byte_to_line(byte));
    let mut code_end = byte;
    while code_end > line_start && matches!(text.byte(code_end - 1), b' ' | b'\t') {
        code_end -= 1;
    }
    let byte = if code_end > line_start {
        code_end
    } else {
        byte
    };
    let mut scopes: Vec<Scope> = Vec::new();
    // A scope that ends at the cursor still holds it (the end of a function's last
    // line), unless it ends with its closing brace.
    let holds = |node: Node<'_>| {
        node.start_byte() < byte
            && (byte < node.end_byte() || byte == node.end_byte() && text.byte(byte - 1) != b'}')
    };
    let probe = byte.saturating_sub(1)..byte + 1;
    for_each_capture(grammar, tree, text, Some(probe), |name, node, _| {
        if name == "scope" && holds(node) {
            scopes.push(Scope {
                line: text.byte_to_line(node.start_byte()),
                header: signature(node, text, false, true),
            });
        }
    });
    scopes.sort_by_key(|s| s.line);
    scopes.dedup_by_key(|s| s.line);
    scopes
}

/// The lines of the import statements that start before byte `before`, as
/// `(first line, last line)` pairs in file order.
pub fn imports(grammar: &Grammar, tree: &Tree, text: &Rope, before: usize) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    for_each_capture(grammar, tree, text, Some(0..before), |name, node, _| {
        if name == "import" && node.start_byte() < before {
            let last = text.byte_to_line(node.end_byte().saturating_sub(1).max(node.start_byte()));
            lines.push((text.byte_to_line(node.start_byte()), last));
        }
    });
    lines.sort_unstable();
    lines.dedup();
    lines
}

/// Every function, method and type defined in the tree, in file order.
pub fn definitions(grammar: &Grammar, tree: &Tree, text: &Rope) -> Vec<Definition> {
    let mut found = Vec::new();
    for_each_capture(grammar, tree, text, None, |name, node, name_node| {
        let whole_if_short = match name {
            "definition.callable" => false,
            "definition.type" => true,
            _ => return,
        };
        let Some(name_node) = name_node else { return };
        found.push(Definition {
            name: node_text(text, name_node.start_byte(), name_node.end_byte()),
            signature: signature(node, text, whole_if_short, false),
            line: text.byte_to_line(node.start_byte()),
        });
    });
    found.sort_by_key(|d| d.line);
    found.dedup_by(|a, b| a.line == b.line && a.name == b.name);
    found
}

/// Names that the code in bytes `range` refers to, each once, in order of appearance.
pub fn references(
    grammar: &Grammar,
    tree: &Tree,
    text: &Rope,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut names: Vec<(usize, String)> = Vec::new();
    for_each_capture(grammar, tree, text, Some(range.clone()), |name, node, _| {
        if name == "reference" && range.contains(&node.start_byte()) {
            names.push((
                node.start_byte(),
                node_text(text, node.start_byte(), node.end_byte()),
            ));
        }
    });
    names.sort_unstable();
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .filter_map(|(_, name)| seen.insert(name.clone()).then_some(name))
        .collect()
}

/// A call written in code: the callee's name, and the name that qualifies it
/// (`geometry` in `geometry.polygon_area(`, `shapes` in `shapes::area(`), if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// What qualifies the callee: a module, package, namespace or object.
    pub qualifier: Option<String>,
    /// The callee.
    pub name: String,
}

/// The calls written in `text`, in order, read from the text itself rather than the
/// tree: a call still being typed, which tree-sitter's error recovery may not make a
/// call node of, counts too. A name before `(`, with what stands before a `.`, `::`
/// or `->` in front of it as its qualifier.
pub fn calls(text: &str) -> Vec<Call> {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let is_name = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| word(c) && !c.is_ascii_digit())
    };
    text.match_indices('(')
        .filter_map(|(at, _)| {
            let before = &text[..at];
            let rest = before.trim_end_matches(word);
            let name = &before[rest.len()..];
            let qualifier = [".", "::", "->"]
                .iter()
                .find_map(|separator| rest.strip_suffix(separator))
                .map(|q| &q[q.trim_end_matches(word).len()..])
                .filter(|q| is_name(q));
            is_name(name).then(|| Call {
                qualifier: qualifier.map(str::to_owned),
                name: name.to_owned(),
            })
        })
        .collect()
}

/// Runs the grammar's query over `tree` (or the part intersecting `range`) and calls
/// `visit(capture name, node, the match's @name node)` for every capture.
fn for_each_capture<'t>(
    grammar: &Grammar,
    tree: &'t Tree,
    text: &Rope,
    range: Option<std::ops::Range<usize>>,
    mut visit: impl FnMut(&str, Node<'t>, Option<Node<'t>>),
) {
    let mut cursor = QueryCursor::new();
    if let Some(range) = range {
        cursor.set_byte_range(range);
    }
    let names = grammar.query.capture_names();
    let name_index = grammar.query.capture_index_for_name("name");
    let source = |node: Node<'_>| {
        let (start, end) = (node.start_byte(), node.end_byte());
        std::iter::once(node_text(text, start, end).into_bytes())
    };
    let mut matches = cursor.matches(&grammar.query, tree.root_node(), source);
    while let Some(found) = matches.next() {
        let name_node = found
            .captures
            .iter()
            .find(|c| Some(c.index) == name_index)
            .map(|c| c.node);
        for capture in found.captures {
            if Some(capture.index) != name_index {
                visit(names[capture.index as usize], capture.node, name_node);
            }
        }
    }
}

/// The text of bytes `start..end`, widened to whole characters.
fn node_text(text: &Rope, start: usize, end: usize) -> String {
    let end = end.min(text.len_bytes());
    text.slice(text.byte_to_char(start.min(end))..text.byte_to_char(end))
        .to_string()
}

/// A definition's signature: its text up to its body (`fn f(x: u8) -> u8`,
/// `def f(x):`), the whole text when it has no body or, with `whole_if_short`, when
/// it is short; `opening` keeps the body's opening brace, as a scope header shows it.
fn signature(node: Node<'_>, text: &Rope, whole_if_short: bool, opening: bool) -> String {
    let start = node.start_byte();
    let line_start = text.line_to_byte(text.byte_to_line(start));
    let indent = node_text(text, line_start, start);
    let indent = if indent.trim().is_empty() {
        indent
    } else {
        String::new()
    };
    // Arrow functions and function expressions bound to a name keep their body in
    // the value (`const f = (x) => { … }`).
    let body = node.child_by_field_name("body").or_else(|| {
        node.child_by_field_name("value")
            .and_then(|value| value.child_by_field_name("body"))
    });
    let lines = node.end_position().row - node.start_position().row + 1;
    let (end, limit) = match body {
        Some(_) if whole_if_short && lines <= MAX_WHOLE_TYPE_LINES => {
            (node.end_byte(), MAX_WHOLE_TYPE_LINES)
        }
        Some(body) => (body.start_byte(), MAX_SIGNATURE_LINES),
        None => (
            node.end_byte(),
            if whole_if_short {
                MAX_WHOLE_TYPE_LINES
            } else {
                MAX_SIGNATURE_LINES
            },
        ),
    };
    let mut header = format!("{indent}{}", node_text(text, start, end).trim_end());
    if let Some(cut) = header.match_indices('\n').nth(limit - 1).map(|(i, _)| i) {
        header.truncate(cut);
    }
    if opening
        && body.is_some_and(|b| {
            b.start_byte() == end && end < text.len_bytes() && text.byte(end) == b'{'
        })
    {
        header.push_str(" {");
    }
    // Go declares types in a `type_spec` without its keyword.
    if node.kind() == "type_spec" {
        header.insert_str(indent.len(), "type ");
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(language_id: &str, text: &Rope) -> Option<Tree> {
        parse_once(text, language_id)
    }

    fn facts(language_id: &str, before: &str, after: &str) -> SyntaxFacts {
        let rope = Rope::from_str(&format!("{before}{after}"));
        let tree = tree_of(language_id, &rope);
        facts_at(tree.as_ref(), &rope, before.chars().count())
    }

    #[test]
    fn trees_past_the_bound_are_dropped_and_parsed_again_when_wanted() {
        let text = Rope::from_str("def f(x):\n    return x + 1\n");
        let documents: Vec<SyntaxTree> = (0..KEPT_TREES + 10)
            .map(|_| SyntaxTree::default())
            .collect();
        let first = documents[0]
            .get(&text, 0, "python")
            .expect("a tree")
            .root_node()
            .to_sexp();
        for document in &documents[1..] {
            assert!(document.get(&text, 0, "python").is_some());
        }
        assert!(
            lock(&documents[0].0).tree.is_none(),
            "the oldest tree is kept"
        );
        assert!(lock(&documents[KEPT_TREES + 9].0).tree.is_some());
        let again = documents[0].get(&text, 0, "python").expect("parsed again");
        assert_eq!(again.root_node().to_sexp(), first);
    }

    #[test]
    fn trees_past_the_text_bound_are_dropped_unless_in_use() {
        // The cache is process-wide: other tests' trees come and go meanwhile, so this
        // checks what holds whatever they do.
        let text = Rope::from_str("def f(x):\n    return x + 1\n");
        let [a, b, c]: [SyntaxTree; 3] = std::array::from_fn(|_| SyntaxTree::default());
        for document in [&a, &b, &c] {
            assert!(document.get(&text, 0, "python").is_some());
        }
        // Each as if its text were 1.5 MB: the three are over the 4 MB bound.
        let large = KEPT_TREES_TEXT_BYTES * 3 / 8;
        keep(&a.0, large);
        keep(&b.0, large);
        {
            // A tree in use (its lock held) is left for a later call.
            let in_use = lock(&a.0);
            keep(&c.0, large);
            assert!(in_use.tree.is_some(), "a tree in use was dropped");
        }
        keep(&c.0, large);
        let kept = |document: &SyntaxTree| lock(&document.0).tree.is_some();
        assert!(kept(&c), "the tree used last was dropped");
        assert!(!(kept(&a) && kept(&b)), "4.5 MB of trees kept");
        let kept_bytes: usize = lock(&KEPT)
            .iter()
            .filter(|(state, _)| state.upgrade().is_some_and(|s| lock(&s).tree.is_some()))
            .map(|(_, bytes)| bytes)
            .sum();
        assert!(
            kept_bytes <= KEPT_TREES_TEXT_BYTES,
            "{kept_bytes} bytes kept"
        );
    }

    #[test]
    fn the_path_to_a_node_is_its_chain_of_parents() {
        let rope = Rope::from_str("fn f() {\n    if x { let y = [1, (2, 3)]; }\n}\n");
        let tree = tree_of("rust", &rope).expect("a tree");
        let at = rope.to_string().find("3)").expect("the 3");
        let leaf = tree
            .root_node()
            .descendant_for_byte_range(at, at + 1)
            .expect("a leaf");
        let mut parents = vec![leaf];
        while let Some(parent) = parents.last().and_then(|n| n.parent()) {
            parents.push(parent);
        }
        parents.reverse();
        assert!(parents.len() > 6);
        assert_eq!(path_to(tree.root_node(), leaf), parents);
    }

    #[test]
    fn nesting_is_measured_where_the_range_reads() {
        let text = "fn f() {\n    {{{{}}}}\n}\nfn g() {}\n";
        let rope = Rope::from_str(text);
        let tree = tree_of("rust", &rope).expect("a tree");
        let root = tree.root_node();
        let depth = |range: std::ops::Range<usize>| {
            (0..20)
                .find(|&limit| !nests_deeper_than(root, range.clone(), limit))
                .expect("shallow")
        };
        let inner = text.find("{}").expect("the innermost block");
        let g = text.find("fn g").expect("g");
        // source_file > function_item > block > expression_statement > block ×4.
        assert!(depth(inner..inner + 1) >= 6, "{}", depth(inner..inner + 1));
        assert!(depth(g..text.len()) < depth(inner..inner + 1));
        assert!(depth(g..text.len()) <= 3);
    }

    #[test]
    fn a_cursor_nested_thousands_deep_gets_its_facts() {
        // Deep enough for a walk per level to cost seconds, shallow enough to parse
        // within its wall-clock budget on a loaded machine (20,000 did not always).
        let depth = 5_000;
        let before = format!("fn f() {{\n{}\n    // note ", "{".repeat(depth));
        let after = format!("\n{}\n}}\n", "}".repeat(depth));
        let rope = Rope::from_str(&format!("{before}{after}"));
        assert!(tree_of("rust", &rope).is_some(), "parsed in time");
        // Only the tree says the cursor is in a comment.
        assert!(facts("rust", &before, &after).in_comment);
    }

    #[test]
    fn every_language_has_a_compiling_query() {
        for id in [
            "rust",
            "python",
            "javascript",
            "javascriptreact",
            "typescript",
            "typescriptreact",
            "go",
            "c",
            "cpp",
        ] {
            assert!(grammar(id).is_some(), "{id}");
        }
        assert!(grammar("cobol").is_none());
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
    fn unknown_languages_and_huge_documents_have_no_tree() {
        assert_eq!(facts("cobol", "* comment", ""), SyntaxFacts::default());
        let huge = Rope::from_str(&format!("# {}", "x".repeat(MAX_PARSE_BYTES + 1)));
        assert!(tree_of("python", &huge).is_none());
    }

    #[test]
    fn a_slow_parse_is_abandoned_in_time() {
        // About 3 MB of nested brackets: parse work grows with it; the budget bounds it.
        let text = Rope::from_str(&("[".repeat(1 << 20) + &"1, ".repeat(600_000)));
        let syntax = SyntaxTree::default();
        let started = Instant::now();
        let _ = syntax.get(&text, 0, "javascript");
        assert!(
            started.elapsed() < PARSE_BUDGET * 5,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn edits_reparse_incrementally_to_the_same_tree() {
        let mut text = Rope::from_str("fn a() {\n    let x = 1;\n}\n");
        let syntax = SyntaxTree::default();
        assert!(syntax.get(&text, 1, "rust").is_some());
        // Insert a function between the two lines, as a didChange would.
        let at = text.line_to_byte(1);
        let inserted = "    fn b(y: u8) -> u8 { y }\n";
        let edit = input_edit(&text, at, at, inserted);
        text.insert(text.byte_to_char(at), inserted);
        syntax.edit(&[edit], 2);
        let incremental = syntax.get(&text, 2, "rust").unwrap();
        let fresh = tree_of("rust", &text).unwrap();
        assert_eq!(
            incremental.root_node().to_sexp(),
            fresh.root_node().to_sexp()
        );
        // A copy of the document at an older version does not use the newer tree.
        let old = Rope::from_str("struct S;\n");
        let old_tree = syntax.get(&old, 1, "rust").unwrap();
        assert!(old_tree.root_node().to_sexp().contains("struct_item"));
    }

    #[test]
    fn unfinished_code_at_the_end_of_the_text_is_safe() {
        // The body of the function is missing: tree-sitter gives it an empty node at
        // the very end of the text.
        let source =
            "import os\n\ndef files(d):\n    return [f for f in os.listdir(d) if f.endswith(";
        let (grammar, tree, text) = parsed("python", source);
        let scopes = enclosing_scopes(grammar, &tree, &text, source.len());
        assert!(
            scopes.iter().all(|s| s.header.starts_with("def files(d):")),
            "{scopes:?}"
        );
        let _ = definitions(grammar, &tree, &text);
        for source in ["fn f()", "def f():", "class A:", "int f() {"] {
            for language_id in [
                "rust",
                "python",
                "c",
                "cpp",
                "go",
                "javascript",
                "typescript",
            ] {
                let (grammar, tree, text) = parsed(language_id, source);
                let _ = enclosing_scopes(grammar, &tree, &text, source.len());
                let _ = definitions(grammar, &tree, &text);
            }
        }
    }

    #[test]
    fn the_enclosing_function_is_found_while_its_last_statement_is_unfinished() {
        // The function starts 400 lines up; the file ends in the statement being typed.
        let body = |line: &str| {
            (0..400)
                .map(|i| line.replace('N', &i.to_string()))
                .collect::<String>()
        };
        let cases = [
            (
                "python",
                format!(
                    "import os\n\ndef report(rows):\n{}    return ",
                    body("    xN = rows[N]\n")
                ),
                "def report(rows):",
            ),
            (
                "rust",
                format!(
                    "use std::fmt;\n\nfn report(rows: &[u8]) -> u8 {{\n{}    return ",
                    body("    let xN = rows[N];\n")
                ),
                "fn report(rows: &[u8]) -> u8 {",
            ),
            (
                "c",
                format!(
                    "#include <stdio.h>\n\nint report(int *rows) {{\n{}    return ",
                    body("    int xN = rows[N];\n")
                ),
                "int report(int *rows) {",
            ),
            (
                "cpp",
                format!(
                    "#include <vector>\n\nint report(std::vector<int> rows) {{\n{}    return ",
                    body("    int xN = rows[N];\n")
                ),
                "int report(std::vector<int> rows) {",
            ),
            (
                "go",
                format!(
                    "package main\n\nfunc report(rows []int) int {{\n{}\treturn ",
                    body("\txN := rows[N]\n")
                ),
                "func report(rows []int) int {",
            ),
            (
                "javascript",
                format!(
                    "import fs from 'fs';\n\nfunction report(rows) {{\n{}  return ",
                    body("  const xN = rows[N];\n")
                ),
                "function report(rows) {",
            ),
            (
                "typescript",
                format!(
                    "import fs from 'fs';\n\nfunction report(rows: number[]): number {{\n{}  return ",
                    body("  const xN = rows[N];\n")
                ),
                "function report(rows: number[]): number {",
            ),
        ];
        for (language_id, source, header) in cases {
            // Unfinished as tree-sitter still parses it, and as it cannot.
            for source in [source.clone(), format!("{source}total(rows, ")] {
                let (grammar, tree, text) = parsed(language_id, &source);
                let scopes = enclosing_scopes(grammar, &tree, &text, source.len());
                let headers: Vec<&str> = scopes.iter().map(|s| s.header.as_str()).collect();
                assert_eq!(
                    headers,
                    [header],
                    "{language_id}: {:?}",
                    &source[source.len() - 30..]
                );
                assert_eq!(scopes[0].line, 2, "{language_id}");
            }
        }
        // A method in a class, with an unfinished call in the middle of the file.
        let source = "class Report:\n    def render(self, rows):\n        total = sum(\n\ndef other():\n    pass\n";
        let (grammar, tree, text) = parsed("python", source);
        let cursor = source.find("sum(").unwrap() + 4;
        let headers: Vec<String> = enclosing_scopes(grammar, &tree, &text, cursor)
            .into_iter()
            .map(|s| s.header)
            .collect();
        assert_eq!(headers, ["class Report:", "    def render(self, rows):"]);
    }

    #[test]
    fn calls_are_read_from_the_text_with_their_qualifiers() {
        let call = |qualifier: Option<&str>, name: &str| Call {
            qualifier: qualifier.map(str::to_owned),
            name: name.to_owned(),
        };
        assert_eq!(
            calls("    area = geometry.polygon_area("),
            [call(Some("geometry"), "polygon_area")]
        );
        assert_eq!(
            calls("let a = shapes::area(&p, f(x)) + p->norm(1);"),
            [
                call(Some("shapes"), "area"),
                call(None, "f"),
                call(Some("p"), "norm")
            ]
        );
        assert_eq!(
            calls("x = geo.Area(pts) + (1 + 2) * g()(3)"),
            [call(Some("geo"), "Area"), call(None, "g")]
        );
    }

    fn parsed(language_id: &str, source: &str) -> (&'static Grammar, Tree, Rope) {
        let text = Rope::from_str(source);
        let tree = tree_of(language_id, &text).expect("parses");
        (grammar(language_id).unwrap(), tree, text)
    }

    fn names(definitions: &[Definition]) -> Vec<&str> {
        definitions.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn rust_definitions_scopes_imports_and_references() {
        let source = "use std::fmt;\nuse crate::shapes::Area;\n\npub struct Point {\n    x: f64,\n    y: f64,\n}\n\nimpl Point {\n    pub fn distance(&self, other: &Point) -> f64 {\n        let d = square(self.x - other.x);\n        d.sqrt()\n    }\n}\n\nfn square(v: f64) -> f64 {\n    v * v\n}\n";
        let (grammar, tree, text) = parsed("rust", source);
        let defs = definitions(grammar, &tree, &text);
        assert_eq!(names(&defs), ["Point", "distance", "square"]);
        assert_eq!(
            defs[0].signature,
            "pub struct Point {\n    x: f64,\n    y: f64,\n}"
        );
        assert_eq!(
            defs[1].signature,
            "    pub fn distance(&self, other: &Point) -> f64"
        );
        let cursor = source.find("d.sqrt").unwrap();
        let scopes = enclosing_scopes(grammar, &tree, &text, cursor);
        let headers: Vec<&str> = scopes.iter().map(|s| s.header.as_str()).collect();
        assert_eq!(
            headers,
            [
                "impl Point {",
                "    pub fn distance(&self, other: &Point) -> f64 {"
            ]
        );
        assert_eq!(
            imports(grammar, &tree, &text, source.len()),
            [(0, 0), (1, 1)]
        );
        let line = source.find("        let d").unwrap();
        let refs = references(grammar, &tree, &text, line..cursor);
        assert!(refs.contains(&"square".to_owned()), "{refs:?}");
    }

    #[test]
    fn python_definitions_scopes_and_imports() {
        let source = "import os\nfrom pathlib import Path\n\nclass Store:\n    def load(self, name: str) -> bytes:\n        path = resolve(name)\n        return path.read_bytes()\n\ndef resolve(name):\n    return Path(name)\n";
        let (grammar, tree, text) = parsed("python", source);
        let defs = definitions(grammar, &tree, &text);
        assert_eq!(names(&defs), ["Store", "load", "resolve"]);
        assert_eq!(defs[2].signature, "def resolve(name):");
        let cursor = source.find("return path").unwrap();
        let headers: Vec<String> = enclosing_scopes(grammar, &tree, &text, cursor)
            .into_iter()
            .map(|s| s.header)
            .collect();
        assert_eq!(
            headers,
            ["class Store:", "    def load(self, name: str) -> bytes:"]
        );
        assert_eq!(
            imports(grammar, &tree, &text, source.len()),
            [(0, 0), (1, 1)]
        );
        let refs = references(
            grammar,
            &tree,
            &text,
            source.find("        path =").unwrap()..cursor,
        );
        assert!(refs.contains(&"resolve".to_owned()), "{refs:?}");
    }

    #[test]
    fn other_languages_find_their_definitions() {
        let cases = [
            (
                "javascript",
                "import { x } from './x.js';\nexport function area(w, h) {\n  return w * h;\n}\nconst half = (v) => v / 2;\nclass Box {\n  grow(by) { return by; }\n}\n",
                vec!["area", "half", "Box", "grow"],
            ),
            (
                "typescript",
                "import { x } from './x';\ninterface Shape { area(): number }\nexport function scale(s: Shape, k: number): number {\n  return s.area() * k;\n}\n",
                vec!["Shape", "area", "scale"],
            ),
            (
                "go",
                "package geo\n\nimport \"math\"\n\ntype Point struct {\n\tX, Y float64\n}\n\nfunc (p Point) Norm() float64 {\n\treturn math.Sqrt(p.X*p.X + p.Y*p.Y)\n}\n",
                vec!["Point", "Norm"],
            ),
            (
                "c",
                "#include <stdio.h>\n\nstruct point { int x; int y; };\n\nint norm(struct point *p);\n\nint norm(struct point *p) {\n  return p->x + p->y;\n}\n",
                vec!["point", "norm", "norm"],
            ),
            (
                "cpp",
                "#include <vector>\n\nnamespace geo {\nclass Shape {\n public:\n  double area() const;\n};\n}\n\ndouble geo::Shape::area() const {\n  return 1.0;\n}\n",
                vec!["Shape", "area", "area"],
            ),
        ];
        for (language_id, source, expected) in cases {
            let (grammar, tree, text) = parsed(language_id, source);
            let defs = definitions(grammar, &tree, &text);
            assert_eq!(names(&defs), expected, "{language_id}: {defs:#?}");
            assert_eq!(
                imports(grammar, &tree, &text, source.len()).len(),
                1,
                "{language_id}"
            );
        }
    }
}
