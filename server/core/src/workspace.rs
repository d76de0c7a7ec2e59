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
//!   at low priority, and skips what `.gitignore` ignores. A file changed on disk
//!   ([`Workspace::refresh_in_background`]) is read again under the same rules, on
//!   the same kind of thread, in the order the changes came.
//! - A disabled file ([`DisabledFiles`]: by language or path glob) is never material
//!   for another file: no ring chunk, no signature, no index entry.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use ropey::Rope;

use crate::context::{self, CompletionContext, Preamble, Snippet, Window};
use crate::documents::Document;
use crate::lock;
use crate::syntax::{self, Definition};

/// Most files indexed.
pub const MAX_INDEX_FILES: usize = 5_000;
/// Files larger than this are not indexed.
pub const MAX_INDEX_FILE_BYTES: u64 = 1 << 20;
/// Longest time indexing may take.
pub const INDEX_TIME_LIMIT: Duration = Duration::from_secs(20);
/// Most files waiting to be refreshed; changes past it are dropped (with a warning):
/// more than the index holds, and a client may send any number.
pub const MAX_QUEUED_REFRESHES: usize = 4 * MAX_INDEX_FILES;
/// Most bytes of a chunk of the ring: it ends before the line that would take it
/// over (a minified file's one line would otherwise be a chunk, copied into every
/// open document's preamble). Twice what 64 lines of long prose take.
pub const MAX_CHUNK_BYTES: usize = 16 * 1024;
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

/// Definitions by name, and the names each file defines.
#[derive(Clone, Debug, Default)]
struct SymbolIndex {
    by_name: HashMap<String, Vec<(String, String)>>,
    /// Paths relative to the root; sorted, so that a folder's files are a range.
    files: BTreeMap<String, Vec<String>>,
}

impl SymbolIndex {
    /// Adds the definitions of the file at `path` (which must not be in the index).
    fn add(&mut self, path: &str, definitions: Vec<Definition>) {
        let mut names = Vec::new();
        for definition in definitions {
            let entries = self.by_name.entry(definition.name.clone()).or_default();
            // One more than is ever shown, to tell a common name; a name removed later
            // may then look less common than it is, until the next walk.
            if entries.len() <= MAX_DEFINITIONS_PER_NAME {
                entries.push((path.to_owned(), definition.signature));
                names.push(definition.name);
            }
        }
        self.files.insert(path.to_owned(), names);
    }

    /// Removes the file at `path`, or every file under it when it is a folder.
    fn remove(&mut self, path: &str) {
        let folder = format!("{}/", path.trim_end_matches('/'));
        let mut gone: Vec<String> = self
            .files
            .range(folder.clone()..)
            .map(|(file, _)| file)
            .take_while(|file| file.starts_with(&folder))
            .cloned()
            .collect();
        if self.files.contains_key(path) {
            gone.push(path.to_owned());
        }
        for file in gone {
            for name in self.files.remove(&file).unwrap_or_default() {
                if let Some(entries) = self.by_name.get_mut(&name) {
                    entries.retain(|(p, _)| *p != file);
                    if entries.is_empty() {
                        self.by_name.remove(&name);
                    }
                }
            }
        }
    }
}

/// Files whose completions are disabled and whose text is never shown to the model
/// for other files: by language identifier and by path glob.
#[derive(Clone, Debug, Default)]
pub struct DisabledFiles {
    languages: Vec<String>,
    patterns: Vec<String>,
    globs: GlobSet,
}

impl PartialEq for DisabledFiles {
    fn eq(&self, other: &Self) -> bool {
        self.languages == other.languages && self.patterns == other.patterns
    }
}

impl Eq for DisabledFiles {}

/// A glob of [`DisabledFiles`]: `*` and `?` match `/` too (so `*.env` matches at any
/// depth), `**` any number of folders, `{a,b}` either.
pub fn path_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(false).build()
}

impl DisabledFiles {
    /// Disables the languages `languages` (LSP identifiers, in any case) and the
    /// paths matching one of `patterns` (see [`path_glob`]).
    pub fn new(languages: Vec<String>, patterns: Vec<String>) -> Result<DisabledFiles, String> {
        let mut globs = GlobSetBuilder::new();
        for pattern in &patterns {
            globs.add(path_glob(pattern).map_err(|e| format!("`{pattern}`: {e}"))?);
        }
        let globs = globs.build().map_err(|e| e.to_string())?;
        Ok(DisabledFiles {
            languages,
            patterns,
            globs,
        })
    }

    /// Whether nothing is disabled.
    pub fn is_empty(&self) -> bool {
        self.languages.is_empty() && self.patterns.is_empty()
    }

    /// Whether the language `language_id` is disabled.
    pub fn language(&self, language_id: &str) -> bool {
        self.languages
            .iter()
            .any(|l| l.eq_ignore_ascii_case(language_id))
    }

    /// Whether a glob matches `path`, as given.
    pub fn path(&self, path: &str) -> bool {
        self.globs.is_match(path)
    }
}

/// A chunk of a document in the ring.
#[derive(Debug)]
struct Chunk {
    uri: String,
    language_id: String,
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

/// Files to refresh, each once, in the order their changes came, and whether a
/// thread is refreshing them.
#[derive(Debug, Default)]
struct RefreshQueue {
    paths: VecDeque<PathBuf>,
    queued: HashSet<PathBuf>,
    running: bool,
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
    disabled: RwLock<Arc<DisabledFiles>>,
    /// Held by a walk of the whole workspace: one at a time.
    walking: Mutex<()>,
    /// While a walk runs: the files refreshed meanwhile, refreshed again once the
    /// walk's index is in place (the walk may have read them before they changed).
    refreshed_during_walk: Mutex<Option<Vec<PathBuf>>>,
    /// Held while one file is read into the index, so that refreshes apply in order.
    refreshing: Mutex<()>,
    refresh_queue: Mutex<RefreshQueue>,
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
            indexed_files: index.files.len(),
            indexed_names: index.by_name.len(),
            ring_chunks: lock(&self.ring).len(),
            preambles_built: self.preambles_built.load(Ordering::Relaxed),
        }
    }

    /// Indexes the workspace's files (blocking; see the module invariants), then
    /// makes the index the one preambles use.
    pub fn index(&self) {
        let Some(root) = &self.root else { return };
        let _one_walk = lock(&self.walking);
        *lock(&self.refreshed_during_walk) = Some(Vec::new());
        let started = Instant::now();
        let mut index = SymbolIndex::default();
        let walk = ignore::WalkBuilder::new(root).build();
        for entry in walk.flatten() {
            if started.elapsed() > INDEX_TIME_LIMIT || index.files.len() >= MAX_INDEX_FILES {
                tracing::info!(
                    files = index.files.len(),
                    "workspace index stopped at its bounds"
                );
                break;
            }
            if let Some((relative, definitions)) = self.definitions_in(&entry) {
                index.add(&relative, definitions);
            }
        }
        tracing::info!(
            files = index.files.len(),
            names = index.by_name.len(),
            ms = started.elapsed().as_millis() as u64,
            "workspace indexed"
        );
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        self.revision.fetch_add(1, Ordering::Relaxed);
        let again = lock(&self.refreshed_during_walk).take();
        for path in again.into_iter().flatten() {
            self.refresh(&path);
        }
    }

    /// The path relative to the root and the definitions of the walked file `entry`,
    /// if it is to be indexed: a source file of a grammar's language, small enough,
    /// not disabled.
    fn definitions_in(&self, entry: &ignore::DirEntry) -> Option<(String, Vec<Definition>)> {
        let path = entry.path();
        let language_id = syntax::language_of_path(path)?;
        let relative = self.relative_path(path);
        if self.file_disabled(path, &relative) {
            return None;
        }
        let small = entry
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_INDEX_FILE_BYTES);
        let text = small
            .then(|| std::fs::read_to_string(path).ok())
            .flatten()?;
        let text = Rope::from_str(&text);
        let grammar = syntax::grammar(language_id)?;
        let tree = syntax::parse_once(&text, language_id)?;
        Some((relative, syntax::definitions(grammar, &tree, &text)))
    }

    /// Reads the file at `path` (absolute) into the index again, as the walk would
    /// have (ignore rules, bounds, disabled files), or drops it (and, for a folder,
    /// every file under it) when it is gone or no longer to be indexed. Blocking.
    pub fn refresh(&self, path: &Path) {
        let Some(root) = &self.root else { return };
        if !path.starts_with(root) {
            return;
        }
        let _in_order = lock(&self.refreshing);
        if let Some(again) = lock(&self.refreshed_during_walk).as_mut() {
            again.push(path.to_owned());
        }
        let found = walk_to(root, path).and_then(|entry| self.definitions_in(&entry));
        let relative = self.relative_path(path);
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            let index = Arc::make_mut(&mut index);
            index.remove(&relative);
            if let Some((relative, definitions)) = found
                && index.files.len() < MAX_INDEX_FILES
            {
                index.add(&relative, definitions);
            }
        }
        self.revision.fetch_add(1, Ordering::Relaxed);
    }

    /// [`Workspace::refresh`] for each of `paths`, in order, on a thread of its own at
    /// low priority (one at a time: later calls queue behind it).
    pub fn refresh_in_background(self: &Arc<Self>, paths: Vec<PathBuf>) {
        {
            let mut queue = lock(&self.refresh_queue);
            let mut dropped = 0usize;
            for path in paths {
                if queue.queued.contains(&path) {
                    continue;
                }
                if queue.paths.len() >= MAX_QUEUED_REFRESHES {
                    dropped += 1;
                    continue;
                }
                queue.queued.insert(path.clone());
                queue.paths.push_back(path);
            }
            if dropped > 0 {
                tracing::warn!(
                    "{dropped} changed files not read again: {MAX_QUEUED_REFRESHES} are waiting already"
                );
            }
            if queue.running || queue.paths.is_empty() {
                return;
            }
            queue.running = true;
        }
        let workspace = self.clone();
        let spawned = std::thread::Builder::new()
            .name("inkling-refresh".into())
            .spawn(move || {
                // SAFETY: setpriority has no memory-safety preconditions.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
                loop {
                    let next = {
                        let mut queue = lock(&workspace.refresh_queue);
                        let next = queue.paths.pop_front();
                        if let Some(path) = &next {
                            queue.queued.remove(path);
                        }
                        queue.running = next.is_some();
                        next
                    };
                    match next {
                        Some(path) => workspace.refresh(&path),
                        None => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start refreshing the index: {e}");
            lock(&self.refresh_queue).running = false;
        }
    }

    /// Forgets the index (indexing was turned off).
    pub fn clear_index(&self) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::default();
        self.revision.fetch_add(1, Ordering::Relaxed);
    }

    /// Disables `disabled` files from now on: what the ring and the index hold of
    /// them goes at once (files no longer disabled come back with the next walk).
    /// Returns whether anything changed.
    pub fn set_disabled(&self, disabled: DisabledFiles) -> bool {
        {
            let mut current = self.disabled.write().unwrap_or_else(|e| e.into_inner());
            if **current == disabled {
                return false;
            }
            *current = Arc::new(disabled);
        }
        lock(&self.ring).retain(|chunk| !self.is_disabled(&chunk.uri, &chunk.language_id));
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            let root = self.root.clone().unwrap_or_default();
            let gone: Vec<String> = index
                .files
                .keys()
                .filter(|file| self.file_disabled(&root.join(file), file))
                .cloned()
                .collect();
            let index = Arc::make_mut(&mut index);
            for file in gone {
                index.remove(&file);
            }
        }
        self.revision.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether the document `uri` in language `language_id` is disabled: by its
    /// language, or by a glob matching its path relative to the workspace root or its
    /// absolute path.
    pub fn is_disabled(&self, uri: &str, language_id: &str) -> bool {
        let disabled = self
            .disabled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if disabled.is_empty() {
            return false;
        }
        let absolute =
            file_path(uri).map_or_else(|| uri.to_owned(), |p| p.to_string_lossy().into_owned());
        disabled.language(language_id)
            || disabled.path(&self.path_of_uri(uri))
            || disabled.path(&absolute)
    }

    /// [`Workspace::is_disabled`] for a file on disk at `path`, `relative` to the
    /// root, in the language its extension says.
    fn file_disabled(&self, path: &Path, relative: &str) -> bool {
        let disabled = self
            .disabled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        !disabled.is_empty()
            && (syntax::language_of_path(path).is_some_and(|l| disabled.language(l))
                || disabled.path(relative)
                || disabled.path(&path.to_string_lossy()))
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

    /// The absolute form of `path`, a path relative to the workspace (or already
    /// absolute).
    fn absolute_path(&self, path: &str) -> String {
        match &self.root {
            Some(root) if Path::new(path).is_relative() => {
                root.join(path).to_string_lossy().into_owned()
            }
            _ => path.to_owned(),
        }
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
        self.add_chunk(uri, &document.language_id, &document.text, 0);
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
            let mut names = syntax::references(grammar, tree, text, near.clone());
            // The call being typed, which tree-sitter may not see as a call yet, is
            // the nearest name of all.
            for call in syntax::calls(&context.line_prefix) {
                names.retain(|name| *name != call.name);
                names.push(call.name);
            }
            let near_text = text
                .slice(text.byte_to_char(near.start)..text.byte_to_char(near.end))
                .to_string();
            let mut qualifiers: HashMap<String, HashSet<String>> = HashMap::new();
            for call in syntax::calls(&near_text)
                .into_iter()
                .chain(syntax::calls(&context.line_prefix))
            {
                if let Some(qualifier) = call.qualifier {
                    qualifiers.entry(call.name).or_default().insert(qualifier);
                }
            }
            let own = syntax::definitions(grammar, tree, text);
            let visible = |d: &Definition| (first_line..=last_line).contains(&d.line);
            preamble.snippets.extend(self.signatures(
                uri,
                &preamble.path,
                &Referred { names, qualifiers },
                &own,
                &visible,
                others(),
            ));
        }
        insert_bounded(&mut lock(&self.preambles), uri, (key, preamble.clone()));
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
                self.add_chunk(
                    &other,
                    &document.language_id,
                    &document.text,
                    line.saturating_sub(CHUNK_LINES / 2),
                );
            }
        }
    }

    /// Adds the chunk of `text` (of `uri`, in `language_id`) from `first_line` to the
    /// ring, replacing chunks too similar to it; nothing of a disabled document.
    fn add_chunk(&self, uri: &str, language_id: &str, text: &Rope, first_line: usize) {
        if self.is_disabled(uri, language_id) {
            return;
        }
        let first_line = first_line.min(text.len_lines().saturating_sub(1));
        let mut chunk_text = String::new();
        for line in text.lines_at(first_line).take(CHUNK_LINES) {
            if chunk_text.len() + line.len_bytes() > MAX_CHUNK_BYTES {
                break;
            }
            chunk_text.extend(line.chunks());
        }
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
            language_id: language_id.to_owned(),
            snippet: Snippet {
                path: self.path_of_uri(uri),
                source: file_path(uri).map_or_else(
                    || uri.to_owned(),
                    |path| path.to_string_lossy().into_owned(),
                ),
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
        referred: &Referred,
        own: &[Definition],
        visible: &dyn Fn(&Definition) -> bool,
        others: &[(String, Document)],
    ) -> Vec<Snippet> {
        let open: Vec<(String, Arc<Vec<Definition>>)> = others
            .iter()
            .filter(|(other, document)| {
                other != uri && !self.is_disabled(other, &document.language_id)
            })
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
        for name in referred.names.iter().rev() {
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
            let mut candidates: Vec<_> = here
                .chain(in_open)
                .chain(indexed)
                .take(MAX_DEFINITIONS_PER_NAME + 1)
                .collect();
            // A call through a module (`geometry.polygon_area(`, `shapes::area(`,
            // `geo.Area(`) means that module's definition, when one is a candidate.
            if let Some(modules) = referred.qualifiers.get(name) {
                let of_module: Vec<_> = candidates
                    .iter()
                    .filter(|(path, _)| module_names(path).any(|m| modules.contains(m)))
                    .cloned()
                    .collect();
                if !of_module.is_empty() {
                    candidates = of_module;
                    candidates.truncate(MAX_DEFINITIONS_PER_NAME);
                }
            }
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
                    source: self.absolute_path(&file),
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
        insert_bounded(
            &mut lock(&self.open_definitions),
            uri,
            (document.version, definitions.clone()),
        );
        definitions
    }
}

/// Most documents the per-document caches hold: an entry is normally removed when
/// its document closes, but a context build that was running then puts it back.
const MAX_CACHED_DOCUMENTS: usize = 256;

/// Inserts `value` for `uri` into a per-document cache, another document's entry
/// dropped first when full (it only saves rebuilding).
fn insert_bounded<V>(cache: &mut HashMap<String, V>, uri: &str, value: V) {
    if cache.len() >= MAX_CACHED_DOCUMENTS
        && !cache.contains_key(uri)
        && let Some(other) = cache.keys().next().cloned()
    {
        cache.remove(&other);
    }
    cache.insert(uri.to_owned(), value);
}

/// What the code near the cursor refers to: names, nearest last, and for names
/// called through a module (`geometry.polygon_area(`), the qualifiers.
struct Referred {
    names: Vec<String>,
    qualifiers: HashMap<String, HashSet<String>>,
}

/// The names code calls the module at `path` by: its file's stem (`geometry` for
/// `geometry.py` or `src/geometry.rs`) and its folder's name (a Go package, a Python
/// package's `__init__.py`, a Rust `mod.rs`, a JavaScript `index.js`).
fn module_names(path: &str) -> impl Iterator<Item = &str> {
    let path = Path::new(path);
    let stem = path.file_stem().and_then(|s| s.to_str());
    let folder = path
        .parent()
        .and_then(|folder| folder.file_name())
        .and_then(|s| s.to_str());
    stem.into_iter().chain(folder)
}

/// The walk's entry for `target` (a path under `root`), found with the rules of the
/// workspace walk (`.gitignore`, hidden files): only the folders on the way to it
/// are read. `None` when it is not there or the walk would skip it.
fn walk_to(root: &Path, target: &Path) -> Option<ignore::DirEntry> {
    let on_the_way = target.to_path_buf();
    ignore::WalkBuilder::new(root)
        .filter_entry(move |entry| on_the_way.starts_with(entry.path()))
        .build()
        .flatten()
        .find(|entry| entry.path() == target)
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
    // `file:///p`, and its other spellings (RFC 8089): the scheme in any case,
    // this machine named as the host (`file://localhost/p`, which some clients
    // send), and `file:/p`. Another host's file is none of this machine's.
    let rest = uri
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("file:"))
        .map(|_| &uri[5..])?;
    let path = match rest.strip_prefix("//") {
        Some(authority) => {
            let host_end = authority.find('/')?;
            let host = &authority[..host_end];
            let this_machine = ["", "localhost", "127.0.0.1", "[::1]"]
                .iter()
                .any(|name| host.eq_ignore_ascii_case(name));
            if !this_machine {
                return None;
            }
            &authority[host_end..]
        }
        None => rest.strip_prefix('/').map(|_| rest)?,
    };
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
    // A NUL ends a path for the system but not for a glob: no such path.
    let decoded = String::from_utf8(decoded)
        .ok()
        .filter(|path| !path.contains('\0'))?;
    Some(PathBuf::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, language_id: &str) -> Document {
        Document::new(text, 1, language_id)
    }

    #[test]
    fn a_per_document_cache_stays_bounded() {
        let mut cache = HashMap::new();
        for n in 0..3 * MAX_CACHED_DOCUMENTS {
            insert_bounded(&mut cache, &format!("file:///closed/{n}.rs"), n);
            assert!(cache.len() <= MAX_CACHED_DOCUMENTS);
        }
        // A document already held is updated in place.
        let held = format!("file:///closed/{}.rs", 3 * MAX_CACHED_DOCUMENTS - 1);
        let before = cache.len();
        insert_bounded(&mut cache, &held, 0);
        assert_eq!((cache.len(), cache[&held]), (before, 0));
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

    /// The other-file signatures in the preamble of `main` (cursor at its end, in
    /// `language_id`) with `others` open, as `(path, text)`.
    fn signatures_for(
        main: &str,
        language_id: &str,
        others: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let workspace = Workspace::new(Some("/w".into()));
        let others: Vec<(String, Document)> = others
            .iter()
            .map(|(path, text)| (format!("file:///w/{path}"), doc(text, language_id)))
            .collect();
        let context = workspace.context(
            "file:///w/main",
            &doc(main, language_id),
            main.chars().count(),
            Window::default(),
            256,
            &|| others.clone(),
        );
        context
            .preamble
            .snippets
            .into_iter()
            .map(|s| (s.path, s.text))
            .collect()
    }

    #[test]
    fn a_call_through_a_module_brings_that_modules_definition() {
        let area = |language: &str| match language {
            "python" => "def polygon_area(points):\n    return 0.0\n".to_owned(),
            "rust" => "pub fn polygon_area(points: &[f64]) -> f64 {\n    0.0\n}\n".to_owned(),
            "go" => {
                "package geometry\n\nfunc PolygonArea(points []float64) float64 {\n\treturn 0\n}\n"
                    .to_owned()
            }
            _ => "export function polygonArea(points) {\n  return 0;\n}\n".to_owned(),
        };
        let cases = [
            (
                "python",
                "import geometry\n\ndef main(pts):\n    return geometry.polygon_area(",
                ["geometry.py", "shapes.py", "plots.py"],
            ),
            (
                "python",
                "from pkg import geometry\n\ndef main(pts):\n    return geometry.polygon_area(",
                ["pkg/geometry.py", "shapes.py", "plots.py"],
            ),
            (
                "rust",
                "mod geometry;\n\nfn main() {\n    let a = geometry::polygon_area(",
                ["src/geometry.rs", "src/shapes.rs", "src/plots.rs"],
            ),
            (
                "go",
                "package main\n\nimport \"w/geometry\"\n\nfunc main() {\n\ta := geometry.PolygonArea(",
                ["geometry/area.go", "shapes/area.go", "plots/area.go"],
            ),
            (
                "javascript",
                "import * as geometry from './geometry.js';\n\nfunction main(pts) {\n  return geometry.polygonArea(",
                ["geometry.js", "shapes.js", "plots.js"],
            ),
        ];
        for (language_id, main, paths) in cases {
            // Three files define the name: too common to show without the module.
            let source = area(language_id);
            let others: Vec<(&str, &str)> = paths.iter().map(|p| (*p, source.as_str())).collect();
            let found = signatures_for(main, language_id, &others);
            let paths_found: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(paths_found, [paths[0]], "{language_id}: {found:?}");
            assert!(found[0].1.to_lowercase().contains("polygon"), "{found:?}");
        }
        // Called bare, while being typed, a name defined once is found too.
        let found = signatures_for(
            "from geometry import polygon_area\n\ndef main(pts):\n    return polygon_area(",
            "python",
            &[("geometry.py", &area("python"))],
        );
        assert_eq!(found.len(), 1, "{found:?}");
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
        workspace.add_chunk("file:///a", "plaintext", &text, 0);
        workspace.add_chunk("file:///a", "plaintext", &text, 1);
        assert_eq!(workspace.stats().ring_chunks, 1);
        for i in 0..40 {
            let text = Rope::from_str(
                &(0..10)
                    .map(|j| format!("file {i} line {j}\n"))
                    .collect::<String>(),
            );
            workspace.add_chunk(&format!("file:///{i}"), "plaintext", &text, 0);
        }
        assert_eq!(workspace.stats().ring_chunks, RING_CHUNKS);
    }

    #[test]
    fn a_chunk_ends_before_the_line_that_would_take_it_over_its_bytes() {
        let workspace = Workspace::new(None);
        let huge = "x".repeat(MAX_CHUNK_BYTES);
        let text = Rope::from_str(&format!("a = 1\nb = 2\nc = 3\n{huge}\nd = 4\n"));
        workspace.add_chunk("file:///a", "plaintext", &text, 0);
        let snippets = workspace.ring_snippets("file:///b");
        assert_eq!(snippets.len(), 1);
        assert_eq!(snippets[0].text, "a = 1\nb = 2\nc = 3\n");
        // A minified file's one line makes no chunk, even with lines after it.
        let minified = Rope::from_str(&format!("{huge}x\ne = 5\nf = 6\ng = 7\n"));
        workspace.add_chunk("file:///m", "plaintext", &minified, 0);
        assert_eq!(workspace.stats().ring_chunks, 1);
    }

    #[test]
    fn each_changed_file_waits_once_and_the_queue_is_bounded() {
        let workspace = Arc::new(Workspace::new(None));
        // As if a thread were at work already: no new one starts taking paths out.
        lock(&workspace.refresh_queue).running = true;
        let paths = |n: usize| (0..n).map(|i| PathBuf::from(format!("/nowhere/{i}.py")));
        // Each path twice, and more than fit.
        let many: Vec<PathBuf> = paths(MAX_QUEUED_REFRESHES + 10)
            .chain(paths(MAX_QUEUED_REFRESHES))
            .collect();
        workspace.refresh_in_background(many);
        let queue = lock(&workspace.refresh_queue);
        assert_eq!(queue.paths.len(), MAX_QUEUED_REFRESHES);
        assert_eq!(queue.queued.len(), MAX_QUEUED_REFRESHES);
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

    /// A fresh folder under the temporary directory, removed when dropped.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(name: &str) -> TempRoot {
            let root = std::env::temp_dir().join(format!("inkling-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            TempRoot(root)
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The index's signatures of `name`, as `path: signature` lines.
    fn indexed(workspace: &Workspace, name: &str) -> Vec<String> {
        let index = workspace.index.read().unwrap().clone();
        index
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|(path, signature)| format!("{path}: {signature}"))
            .collect()
    }

    fn disabled(languages: &[&str], patterns: &[&str]) -> DisabledFiles {
        let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        DisabledFiles::new(owned(languages), owned(patterns)).unwrap()
    }

    #[test]
    fn disabled_globs_match_relative_and_absolute_paths() {
        let off = disabled(&["Markdown"], &["*.env", "secrets/**"]);
        for path in [
            ".env",
            "config/prod.env",
            "/home/me/shop/.env",
            "secrets/key.py",
            "secrets/a/b.rs",
        ] {
            assert!(off.path(path), "{path} should be disabled");
        }
        for path in [
            "env.py",
            "src/secrets.py",
            "src/secrets/key.py",
            "secretsx/a.py",
        ] {
            assert!(!off.path(path), "{path} should not be disabled");
        }
        assert!(off.language("markdown"));
        assert!(!off.language("python"));
        assert!(DisabledFiles::new(Vec::new(), vec!["a[".into()]).is_err());
        assert!(DisabledFiles::default().is_empty());

        let workspace = Workspace::new(Some("/home/me/shop".into()));
        workspace.set_disabled(disabled(&[], &["secrets/**", "/etc/**"]));
        assert!(workspace.is_disabled("file:///home/me/shop/secrets/k.py", "python"));
        assert!(workspace.is_disabled("file:///etc/hosts.py", "python"));
        assert!(!workspace.is_disabled("file:///home/me/shop/src/k.py", "python"));
        // Outside the workspace, the relative path is the absolute one.
        assert!(!workspace.is_disabled("file:///elsewhere/secrets/k.py", "python"));
    }

    #[test]
    fn disabled_documents_are_never_material_for_others() {
        let workspace = Workspace::new(Some("/w".into()));
        workspace.set_disabled(disabled(&["markdown"], &["secrets/**"]));
        let secret = doc(
            "def leak_token() -> str:\n    return 'hunter2'\n\nx = 1\ny = 2\nz = 3\n",
            "python",
        );
        let notes = doc("# Notes\nalpha\nbeta\ngamma\ndelta\n", "markdown");
        workspace.opened("file:///w/secrets/token.py", &secret);
        workspace.opened("file:///w/notes.md", &notes);
        assert_eq!(workspace.stats().ring_chunks, 0);
        let others = vec![
            ("file:///w/secrets/token.py".to_owned(), secret.clone()),
            ("file:///w/notes.md".to_owned(), notes),
        ];
        let main = "def main():\n    t = leak_token()\n";
        let context = workspace.context(
            "file:///w/main.py",
            &doc(main, "python"),
            main.len() - 1,
            Window::default(),
            256,
            &|| others.clone(),
        );
        assert!(
            context.preamble.snippets.is_empty(),
            "{:#?}",
            context.preamble
        );
        // Enabled again: its signature is material once more.
        workspace.set_disabled(DisabledFiles::default());
        let context = workspace.context(
            "file:///w/main.py",
            &doc(main, "python"),
            main.len() - 1,
            Window::default(),
            256,
            &|| others.clone(),
        );
        assert!(
            context
                .preamble
                .snippets
                .iter()
                .any(|s| s.text.contains("def leak_token() -> str:")),
            "{:#?}",
            context.preamble
        );
        // Disabling drops what the ring holds of it already.
        workspace.opened("file:///w/secrets/token.py", &secret);
        assert_eq!(workspace.stats().ring_chunks, 1);
        assert!(workspace.set_disabled(disabled(&[], &["secrets/**"])));
        assert!(!workspace.set_disabled(disabled(&[], &["secrets/**"])));
        assert_eq!(workspace.stats().ring_chunks, 0);
    }

    #[test]
    fn refreshed_files_enter_change_and_leave_the_index() {
        let root = TempRoot::new("refresh");
        std::fs::create_dir_all(root.0.join(".git")).unwrap();
        root.write(".gitignore", "build/\n");
        root.write("src/old.py", "def old_helper(x):\n    return x\n");
        let workspace = Workspace::new(Some(root.0.clone()));
        workspace.index();
        assert_eq!(workspace.stats().indexed_files, 1);
        let revision = workspace.revision();

        let created = root.write("src/geometry.py", "def area(w, h):\n    return w * h\n");
        workspace.refresh(&created);
        assert_eq!(
            indexed(&workspace, "area"),
            ["src/geometry.py: def area(w, h):"]
        );
        assert!(workspace.revision() > revision);

        root.write("src/geometry.py", "def area(w, h, d):\n    return w * h\n");
        workspace.refresh(&created);
        assert_eq!(
            indexed(&workspace, "area"),
            ["src/geometry.py: def area(w, h, d):"]
        );

        std::fs::remove_file(&created).unwrap();
        workspace.refresh(&created);
        assert!(indexed(&workspace, "area").is_empty());
        assert_eq!(workspace.stats().indexed_files, 1);

        // What the walk skips, a refresh skips: ignored, disabled, not source, outside.
        let ignored = root.write("build/gen.py", "def generated():\n    pass\n");
        workspace.refresh(&ignored);
        assert!(indexed(&workspace, "generated").is_empty());
        workspace.set_disabled(disabled(&[], &["*.env.py"]));
        let secret = root.write("prod.env.py", "def secret_key():\n    pass\n");
        workspace.refresh(&secret);
        assert!(indexed(&workspace, "secret_key").is_empty());
        let outside = std::env::temp_dir().join("inkling-not-in-the-workspace.py");
        workspace.refresh(&outside);
        assert_eq!(workspace.stats().indexed_files, 1);

        // A folder deleted at once takes its files with it.
        std::fs::remove_dir_all(root.0.join("src")).unwrap();
        workspace.refresh(&root.0.join("src"));
        assert!(indexed(&workspace, "old_helper").is_empty());
        assert_eq!(workspace.stats().indexed_files, 0);
    }

    #[test]
    fn refreshes_in_the_background_apply_in_order() {
        let root = TempRoot::new("refresh-queue");
        let workspace = Arc::new(Workspace::new(Some(root.0.clone())));
        workspace.index();
        let file = root.write("a.rs", "fn first() {}\n");
        workspace.refresh_in_background(vec![file.clone()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while indexed(&workspace, "first").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(indexed(&workspace, "first"), ["a.rs: fn first()"]);
        std::fs::remove_file(&file).unwrap();
        let other = root.write("b.rs", "fn second() {}\n");
        workspace.refresh_in_background(vec![file, other]);
        while indexed(&workspace, "second").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(indexed(&workspace, "first").is_empty());
        assert_eq!(indexed(&workspace, "second"), ["b.rs: fn second()"]);
    }

    #[test]
    fn disabling_paths_drops_them_from_the_index() {
        let root = TempRoot::new("disable-index");
        root.write("secrets/vault.rs", "pub fn open_vault(code: u32) {}\n");
        root.write("src/lib.rs", "pub fn public_api() {}\n");
        let workspace = Workspace::new(Some(root.0.clone()));
        workspace.index();
        assert_eq!(workspace.stats().indexed_files, 2);
        workspace.set_disabled(disabled(&[], &["secrets/**"]));
        assert!(indexed(&workspace, "open_vault").is_empty());
        assert_eq!(indexed(&workspace, "public_api").len(), 1);
        // The walk skips them too.
        workspace.index();
        assert_eq!(workspace.stats().indexed_files, 1);
        workspace.set_disabled(disabled(&["rust"], &[]));
        assert_eq!(workspace.stats().indexed_files, 0);
    }
}
