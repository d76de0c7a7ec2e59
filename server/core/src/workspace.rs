//! The workspace around the document being completed: what the model sees before
//! the window ([`Preamble`]) — this file's imports and enclosing signatures, chunks
//! of recently edited files, and the signatures of what the code near the cursor
//! refers to, found in the open documents and in a background index of the
//! workspace's files.
//!
//! Invariants:
//! - A document's preamble changes only when the window's first line moves (in
//!   steps of 32 lines), when the cursor moves into another scope that starts above
//!   the window, or when the workspace's material changes ([`Workspace::revision`]:
//!   the index finished, a chunk entered the ring). Typing never changes it, so the
//!   KV cache of everything before the window survives keystrokes.
//! - The ring takes a chunk of a document when the user moves on to another one
//!   (its last edit is done), like llama.vim on leaving a buffer; a chunk too similar
//!   to one already there replaces it.
//! - Indexing is bounded in files, bytes per file and time, runs on its own thread
//!   at low priority, and skips what `.gitignore` ignores.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ropey::Rope;

use crate::context::{self, CompletionContext, Preamble, Snippet, Window};
use crate::documents::Document;
use crate::lock;
use crate::syntax::{self, Definition, SyntaxTree};

/// Most files indexed.
pub const MAX_INDEX_FILES: usize = 5_000;
/// Files larger than this are not indexed.
pub const MAX_INDEX_FILE_BYTES: u64 = 1 << 20;
/// Longest time indexing may take.
pub const INDEX_TIME_LIMIT: Duration = Duration::from_secs(20);
/// Chunks kept in the ring (llama.vim's `ring_n_chunks`).
pub const RING_CHUNKS: usize = 16;
/// Lines per chunk (llama.vim's `ring_chunk_size`).
pub const CHUNK_LINES: usize = 64;
/// A new chunk replaces those it is at least this similar to.
const CHUNK_SIMILARITY: f64 = 0.9;
/// Lines around the cursor whose references get their signatures shown.
const REFERENCE_LINES_ABOVE: usize = 48;
const REFERENCE_LINES_BELOW: usize = 8;
/// Most definitions shown, and per name (a common name's many definitions say little).
const MAX_SYMBOLS: usize = 12;
const MAX_DEFINITIONS_PER_NAME: usize = 2;

/// Definitions by name.
#[derive(Debug, Default)]
struct SymbolIndex {
    by_name: HashMap<String, Vec<(String, String)>>,
    files: usize,
}

impl SymbolIndex {
    fn add(&mut self, path: &str, definitions: Vec<Definition>) {
        for definition in definitions {
            let entries = self.by_name.entry(definition.name).or_default();
            if entries.len() <= MAX_DEFINITIONS_PER_NAME {
                entries.push((path.to_owned(), definition.signature));
            }
        }
        self.files += 1;
    }
}

/// A chunk of a document in the ring.
#[derive(Debug)]
struct Chunk {
    uri: String,
    snippet: Snippet,
    /// Hashes of its non-blank lines, for similarity.
    lines: HashSet<u64>,
}

/// A document version and the definitions found in it.
type VersionedDefinitions = (i32, Arc<Vec<Definition>>);

/// Why and where a preamble was computed: it is reused while this stays the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PreambleKey {
    window_first_line: usize,
    /// First lines of the enclosing scopes that start above the window.
    scopes: Vec<usize>,
    revision: u64,
}

/// What the index and the ring hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkspaceStats {
    /// Files in the index.
    pub indexed_files: usize,
    /// Names with definitions in the index.
    pub indexed_names: usize,
    /// Chunks in the ring.
    pub ring_chunks: usize,
    /// Preambles computed (not reused).
    pub preambles_built: u64,
}

/// The workspace: its index, its ring of chunks and each document's last preamble.
#[derive(Debug, Default)]
pub struct Workspace {
    root: Option<PathBuf>,
    name: String,
    index: RwLock<Arc<SymbolIndex>>,
    ring: Mutex<VecDeque<Chunk>>,
    /// Documents edited since they were last in focus, with the line of their last edit.
    pending: Mutex<HashMap<String, usize>>,
    /// Open documents' definitions, by URI, for the version they were found in.
    open_definitions: Mutex<HashMap<String, VersionedDefinitions>>,
    preambles: Mutex<HashMap<String, (PreambleKey, Preamble)>>,
    revision: AtomicU64,
    preambles_built: AtomicU64,
}

impl Workspace {
    /// A workspace rooted at `root` (`None`: no folder, so no index).
    pub fn new(root: Option<PathBuf>) -> Workspace {
        let name = root
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Workspace {
            root,
            name,
            ..Workspace::default()
        }
    }

    /// Changes when the material preambles are made from changes.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }

    /// Counts for `inkling/stats`.
    pub fn stats(&self) -> WorkspaceStats {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        WorkspaceStats {
            indexed_files: index.files,
            indexed_names: index.by_name.len(),
            ring_chunks: lock(&self.ring).len(),
            preambles_built: self.preambles_built.load(Ordering::Relaxed),
        }
    }

    /// Indexes the workspace's files (blocking; see the module invariants), then
    /// makes the index the one preambles use.
    pub fn index(&self) {
        let Some(root) = &self.root else { return };
        let started = Instant::now();
        let mut index = SymbolIndex::default();
        let walk = ignore::WalkBuilder::new(root).build();
        for entry in walk.flatten() {
            if started.elapsed() > INDEX_TIME_LIMIT || index.files >= MAX_INDEX_FILES {
                tracing::info!(files = index.files, "workspace index stopped at its bounds");
                break;
            }
            let path = entry.path();
            let Some(language_id) = syntax::language_of_path(path) else {
                continue;
            };
            let small = entry
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() <= MAX_INDEX_FILE_BYTES);
            let Some(text) = small.then(|| std::fs::read_to_string(path).ok()).flatten() else {
                continue;
            };
            let text = Rope::from_str(&text);
            let (Some(grammar), Some(tree)) = (
                syntax::grammar(language_id),
                SyntaxTree::default().get(&text, 0, language_id),
            ) else {
                continue;
            };
            let relative = self.relative_path(path);
            index.add(&relative, syntax::definitions(grammar, &tree, &text));
        }
        tracing::info!(
            files = index.files,
            names = index.by_name.len(),
            ms = started.elapsed().as_millis() as u64,
            "workspace indexed"
        );
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        self.revision.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts [`Workspace::index`] on a thread of its own, at low priority.
    pub fn index_in_background(self: &Arc<Self>) {
        let workspace = self.clone();
        let spawned = std::thread::Builder::new()
            .name("inkling-index".into())
            .spawn(move || {
                // Linux applies a priority to the calling thread alone: the engine's
                // threads keep theirs.
                // SAFETY: setpriority has no memory-safety preconditions.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
                workspace.index();
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start indexing: {e}");
        }
    }

    /// `path` relative to the workspace root (as given when outside it).
    fn relative_path(&self, path: &Path) -> String {
        let relative = self
            .root
            .as_deref()
            .and_then(|root| path.strip_prefix(root).ok())
            .unwrap_or(path);
        relative.to_string_lossy().into_owned()
    }

    /// The path of `uri` relative to the workspace, or the URI's last segment.
    pub fn path_of_uri(&self, uri: &str) -> String {
        match file_path(uri) {
            Some(path) => self.relative_path(&path),
            None => uri.rsplit('/').next().unwrap_or(uri).to_owned(),
        }
    }

    /// A document was opened: a chunk of its start enters the ring (a document's
    /// own chunks are never shown to it).
    pub fn opened(&self, uri: &str, document: &Document) {
        self.add_chunk(uri, &document.text, 0);
    }

    /// A document was edited at `line`.
    pub fn edited(&self, uri: &str, line: usize) {
        lock(&self.pending).insert(uri.to_owned(), line);
    }

    /// A document was closed: forget what was kept for it (its ring chunks stay:
    /// recently edited code is still worth showing).
    pub fn closed(&self, uri: &str) {
        lock(&self.pending).remove(uri);
        lock(&self.open_definitions).remove(uri);
        lock(&self.preambles).remove(uri);
    }

    /// The context at char index `cursor` of `document` (open as `uri`), with its
    /// preamble; `open_documents` gives the other open documents, and is called only
    /// when the preamble is rebuilt or a chunk is taken (not on every keystroke).
    pub fn context(
        &self,
        uri: &str,
        document: &Document,
        cursor: usize,
        window: Window,
        budget_extra: usize,
        open_documents: &dyn Fn() -> Vec<(String, Document)>,
    ) -> CompletionContext {
        let mut context = context::extract(document, cursor, window);
        if budget_extra == 0 {
            return context;
        }
        let others = std::cell::OnceCell::new();
        let others = || others.get_or_init(open_documents).as_slice();
        self.focus(uri, others);
        let tree = document.tree();
        let grammar = syntax::grammar(&document.language_id);
        let text = &document.text;
        let cursor_byte = text.char_to_byte(cursor.min(text.len_chars()));
        let first_line = context.window_first_line;
        let scopes = match (grammar, &tree) {
            (Some(grammar), Some(tree)) => {
                syntax::enclosing_scopes(grammar, tree, text, cursor_byte)
            }
            _ => Vec::new(),
        };
        let scopes: Vec<_> = scopes.into_iter().filter(|s| s.line < first_line).collect();
        let key = PreambleKey {
            window_first_line: first_line,
            scopes: scopes.iter().map(|s| s.line).collect(),
            revision: self.revision(),
        };
        if let Some((cached_key, preamble)) = lock(&self.preambles).get(uri)
            && *cached_key == key
        {
            context.preamble = preamble.clone();
            return context;
        }
        self.preambles_built.fetch_add(1, Ordering::Relaxed);
        let mut preamble = Preamble {
            repository: self.name.clone(),
            path: self.path_of_uri(uri),
            comment: syntax::comment_marker(&document.language_id).to_owned(),
            outline: String::new(),
            snippets: self.ring_snippets(uri),
        };
        if let (Some(grammar), Some(tree)) = (grammar, &tree) {
            let window_start = text.line_to_byte(first_line);
            let mut outline = String::new();
            for (first, last) in syntax::imports(grammar, tree, text, window_start) {
                if last < first_line {
                    outline.extend(
                        text.lines_at(first)
                            .take(last - first + 1)
                            .map(|l| l.to_string()),
                    );
                }
            }
            if !outline.is_empty() && !outline.ends_with('\n') {
                outline.push('\n');
            }
            for scope in &scopes {
                outline.push_str(&scope.header);
                outline.push('\n');
            }
            preamble.outline = outline;
            let last_line =
                first_line + context.prefix.lines().count() + context.suffix.lines().count();
            let near = {
                let cursor_line = text.byte_to_line(cursor_byte);
                let from = cursor_line
                    .saturating_sub(REFERENCE_LINES_ABOVE)
                    .max(first_line);
                let to = (cursor_line + REFERENCE_LINES_BELOW + 1).min(text.len_lines());
                text.line_to_byte(from)..text.line_to_byte(to)
            };
            let names = syntax::references(grammar, tree, text, near);
            let own = syntax::definitions(grammar, tree, text);
            let visible = |d: &Definition| (first_line..=last_line).contains(&d.line);
            preamble.snippets.extend(self.signatures(
                uri,
                &preamble.path,
                &names,
                &own,
                &visible,
                others(),
            ));
        }
        lock(&self.preambles).insert(uri.to_owned(), (key, preamble.clone()));
        context.preamble = preamble;
        context
    }

    /// The user is at `uri`: the documents edited elsewhere since their last focus
    /// give their chunk to the ring.
    fn focus<'a>(&self, uri: &str, others: impl FnOnce() -> &'a [(String, Document)]) {
        let done: Vec<(String, usize)> = {
            let mut pending = lock(&self.pending);
            let done = pending
                .iter()
                .filter(|(u, _)| *u != uri)
                .map(|(u, l)| (u.clone(), *l))
                .collect();
            pending.retain(|u, _| u == uri);
            done
        };
        if done.is_empty() {
            return;
        }
        let others = others();
        for (other, line) in done {
            if let Some((_, document)) = others.iter().find(|(u, _)| *u == other) {
                self.add_chunk(&other, &document.text, line.saturating_sub(CHUNK_LINES / 2));
            }
        }
    }

    /// Adds the chunk of `text` from `first_line` to the ring, replacing chunks too
    /// similar to it.
    fn add_chunk(&self, uri: &str, text: &Rope, first_line: usize) {
        let first_line = first_line.min(text.len_lines().saturating_sub(1));
        let chunk_text: String = text
            .lines_at(first_line)
            .take(CHUNK_LINES)
            .map(|l| l.to_string())
            .collect();
        let lines: HashSet<u64> = chunk_text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                l.trim().hash(&mut hasher);
                hasher.finish()
            })
            .collect();
        // Chunks of a few lines say little and cost a separator each.
        if lines.len() < 3 {
            return;
        }
        let mut ring = lock(&self.ring);
        ring.retain(|old| similarity(&old.lines, &lines) < CHUNK_SIMILARITY);
        if ring.len() >= RING_CHUNKS {
            ring.pop_front();
        }
        ring.push_back(Chunk {
            uri: uri.to_owned(),
            snippet: Snippet {
                path: self.path_of_uri(uri),
                text: chunk_text,
            },
            lines,
        });
        self.revision.fetch_add(1, Ordering::Relaxed);
    }

    /// The ring's chunks of documents other than `uri`, oldest first.
    fn ring_snippets(&self, uri: &str) -> Vec<Snippet> {
        lock(&self.ring)
            .iter()
            .filter(|chunk| chunk.uri != uri)
            .map(|chunk| chunk.snippet.clone())
            .collect()
    }

    /// Snippets of the signatures `names` refer to, defined outside the window
    /// (`visible` says what is inside): this file first, then the other open
    /// documents, then the index. Least important (farthest from the cursor) first.
    fn signatures(
        &self,
        uri: &str,
        path: &str,
        names: &[String],
        own: &[Definition],
        visible: &dyn Fn(&Definition) -> bool,
        others: &[(String, Document)],
    ) -> Vec<Snippet> {
        let open: Vec<(String, Arc<Vec<Definition>>)> = others
            .iter()
            .filter(|(other, _)| other != uri)
            .map(|(other, document)| {
                (
                    self.path_of_uri(other),
                    self.definitions_of(other, document),
                )
            })
            .collect();
        let open_paths: HashSet<&str> = open.iter().map(|(p, _)| p.as_str()).collect();
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut found: Vec<(String, String)> = Vec::new();
        // Names nearest the cursor (the last ones) are looked up first.
        for name in names.iter().rev() {
            if found.len() >= MAX_SYMBOLS || own.iter().any(|d| d.name == *name && visible(d)) {
                continue;
            }
            let here = own
                .iter()
                .filter(|d| d.name == *name)
                .map(|d| (path.to_owned(), d.signature.clone()));
            let in_open = open.iter().flat_map(|(p, defs)| {
                defs.iter()
                    .filter(|d| d.name == *name)
                    .map(|d| (p.clone(), d.signature.clone()))
            });
            let indexed = index
                .by_name
                .get(name)
                .into_iter()
                .flatten()
                .filter(|(p, _)| p != path && !open_paths.contains(p.as_str()))
                .cloned();
            let candidates: Vec<_> = here
                .chain(in_open)
                .chain(indexed)
                .take(MAX_DEFINITIONS_PER_NAME + 1)
                .collect();
            // A name defined in many places is too common to guess which is meant.
            if candidates.len() <= MAX_DEFINITIONS_PER_NAME {
                found.extend(candidates);
            }
        }
        found.truncate(MAX_SYMBOLS);
        // Group by file, the file of the nearest name last.
        let mut snippets: Vec<Snippet> = Vec::new();
        for (file, signature) in found.into_iter().rev() {
            match snippets.iter_mut().find(|s| s.path == file) {
                Some(snippet) => {
                    snippet.text.push_str(&signature);
                    snippet.text.push('\n');
                }
                None => snippets.push(Snippet {
                    path: file,
                    text: format!("{signature}\n"),
                }),
            }
        }
        snippets
    }

    /// The definitions of an open document, found again only when it changed.
    fn definitions_of(&self, uri: &str, document: &Document) -> Arc<Vec<Definition>> {
        if let Some((version, definitions)) = lock(&self.open_definitions).get(uri)
            && *version == document.version
        {
            return definitions.clone();
        }
        let definitions = match (syntax::grammar(&document.language_id), document.tree()) {
            (Some(grammar), Some(tree)) => syntax::definitions(grammar, &tree, &document.text),
            _ => Vec::new(),
        };
        let definitions = Arc::new(definitions);
        lock(&self.open_definitions)
            .insert(uri.to_owned(), (document.version, definitions.clone()));
        definitions
    }
}

/// llama.vim's chunk similarity: twice the shared lines over the lines of both.
fn similarity(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    2.0 * a.intersection(b).count() as f64 / (a.len() + b.len()) as f64
}

/// The file path of a `file:` URI, percent-decoded.
pub fn file_path(uri: &str) -> Option<PathBuf> {
    let path = uri.strip_prefix("file://")?;
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    Some(PathBuf::from(String::from_utf8(decoded).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, language_id: &str) -> Document {
        Document::new(text, 1, language_id)
    }

    #[test]
    fn uris_become_workspace_paths() {
        let workspace = Workspace::new(Some("/home/me/shop".into()));
        assert_eq!(
            workspace.path_of_uri("file:///home/me/shop/src/a%20b.py"),
            "src/a b.py"
        );
        assert_eq!(
            workspace.path_of_uri("file:///elsewhere/x.rs"),
            "/elsewhere/x.rs"
        );
        assert_eq!(
            workspace.path_of_uri("untitled:Untitled-1"),
            "untitled:Untitled-1"
        );
    }

    #[test]
    fn signatures_of_referenced_functions_come_from_other_open_documents() {
        let workspace = Workspace::new(Some("/w".into()));
        let tax = doc(
            "def rate(region: str) -> float:\n    return 0.2\n\ndef unused():\n    pass\n",
            "python",
        );
        let cart = "from tax import rate\n\ndef total(items, region):\n    net = sum(items)\n    return net * rate(region)\n";
        let others = vec![("file:///w/tax.py".to_owned(), tax)];
        let cart_doc = doc(cart, "python");
        let context = workspace.context(
            "file:///w/cart.py",
            &cart_doc,
            cart.len() - 1,
            Window::default(),
            256,
            &|| others.clone(),
        );
        let preamble = &context.preamble;
        assert_eq!(preamble.path, "cart.py");
        assert_eq!(preamble.repository, "w");
        let signatures: Vec<&Snippet> = preamble
            .snippets
            .iter()
            .filter(|s| s.path == "tax.py")
            .collect();
        assert_eq!(signatures.len(), 1, "{preamble:#?}");
        assert!(
            signatures[0]
                .text
                .contains("def rate(region: str) -> float:"),
            "{preamble:#?}"
        );
        assert!(!signatures[0].text.contains("unused"));
    }

    #[test]
    fn the_outline_holds_imports_and_enclosing_signatures_above_the_window() {
        let mut source =
            String::from("import os\nimport sys\n\nclass Report:\n    def render(self, rows):\n");
        for i in 0..400 {
            source.push_str(&format!("        line_{i} = rows[{i}]\n"));
        }
        let document = doc(&source, "python");
        let workspace = Workspace::new(None);
        let cursor = source.chars().count() - 1;
        let context = workspace.context(
            "file:///r.py",
            &document,
            cursor,
            Window::default(),
            256,
            &Vec::new,
        );
        assert!(context.window_first_line > 5);
        assert_eq!(
            context.preamble.outline,
            "import os\nimport sys\nclass Report:\n    def render(self, rows):\n"
        );
        // Near the top, the window shows all of it: no outline.
        let context = workspace.context(
            "file:///r.py",
            &document,
            200,
            Window::default(),
            256,
            &Vec::new,
        );
        assert_eq!(context.preamble.outline, "");
    }

    #[test]
    fn the_preamble_stays_the_same_while_typing() {
        let workspace = Workspace::new(None);
        let lines = |name: &str| {
            (0..10)
                .map(|i| format!("{name}{i} = compute({i})\n"))
                .collect::<String>()
        };
        let other = doc(&lines("x"), "python");
        let mut others = vec![("file:///b.py".to_owned(), other)];
        let mut text = "def f():\n    return 1\n".to_owned();
        workspace.opened("file:///b.py", &others[0].1);
        let first = workspace.context(
            "file:///a.py",
            &doc(&text, "python"),
            text.len(),
            Window::default(),
            256,
            &|| others.clone(),
        );
        assert_eq!(first.preamble.snippets.len(), 1);
        for c in "y = f()".chars() {
            text.push(c);
            let next = workspace.context(
                "file:///a.py",
                &doc(&text, "python"),
                text.len(),
                Window::default(),
                256,
                &|| others.clone(),
            );
            assert_eq!(next.preamble, first.preamble);
        }
        assert_eq!(workspace.stats().preambles_built, 1);
        // An edit elsewhere reaches the ring when the user comes back.
        others[0].1 = doc(&lines("z"), "python");
        workspace.edited("file:///b.py", 3);
        let after = workspace.context(
            "file:///a.py",
            &doc(&text, "python"),
            text.len(),
            Window::default(),
            256,
            &|| others.clone(),
        );
        assert_eq!(after.preamble.snippets.len(), 2, "{:#?}", after.preamble);
    }

    #[test]
    fn similar_chunks_replace_each_other_and_the_ring_is_bounded() {
        let workspace = Workspace::new(None);
        let text = Rope::from_str(&(0..100).map(|i| format!("line {i}\n")).collect::<String>());
        workspace.add_chunk("file:///a", &text, 0);
        workspace.add_chunk("file:///a", &text, 1);
        assert_eq!(workspace.stats().ring_chunks, 1);
        for i in 0..40 {
            let text = Rope::from_str(
                &(0..10)
                    .map(|j| format!("file {i} line {j}\n"))
                    .collect::<String>(),
            );
            workspace.add_chunk(&format!("file:///{i}"), &text, 0);
        }
        assert_eq!(workspace.stats().ring_chunks, RING_CHUNKS);
    }

    #[test]
    fn the_index_finds_definitions_in_workspace_files() {
        let root = std::env::temp_dir().join(format!("inkling-index-{}", std::process::id()));
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(
            root.join("src/geometry.rs"),
            "pub fn polygon_area(points: &[Point]) -> f64 {\n    0.0\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("notes.txt"), "fn not_code() {}\n").unwrap();
        let workspace = Workspace::new(Some(root.clone()));
        workspace.index();
        let stats = workspace.stats();
        assert_eq!(stats.indexed_files, 1);
        let main = "fn main() {\n    let a = polygon_area(&pts);\n}\n";
        let context = workspace.context(
            "file:///nowhere/main.rs",
            &doc(main, "rust"),
            main.len() - 3,
            Window::default(),
            256,
            &Vec::new,
        );
        let text: String = context
            .preamble
            .snippets
            .iter()
            .map(|s| format!("{}: {}", s.path, s.text))
            .collect();
        assert_eq!(
            text,
            "src/geometry.rs: pub fn polygon_area(points: &[Point]) -> f64\n"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
