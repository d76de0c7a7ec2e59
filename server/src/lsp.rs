//! The LSP layer: translates JSON-RPC messages into calls on the stages and back.
//!
//! It owns the open documents (behind a mutex held only for short, synchronous
//! sections, never across an `.await`) and a handle to the engine. Every
//! completion goes documents → context → engine (prompt + generation) →
//! postprocess; this module only adapts shapes and positions.
//!
//! Invariants:
//! - Edits are applied inside the notification handler before its first `.await`,
//!   so they take effect in the order the client sent them.
//! - A newer completion request for a document cancels the older one's generation;
//!   dropping a request's future (on `$/cancelRequest`) cancels it too.
//! - An answer computed for a document version that has since changed is dropped.
//! - A document whose completions are disabled gets an empty answer, and nothing of
//!   it reaches the model.
//!
//! Settings and files that change while the editor runs are in [`live`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use inkling_core::context::{self, CompletionContext, Window};
use inkling_core::documents::{Document, DocumentStore, EditError};
use inkling_core::generate::{Backend, BackendError, CancelFlag, StopReason, TextSink};
use inkling_core::lock;
use inkling_core::postprocess::{self, Trigger};
use inkling_core::workspace::{self, Workspace};
use inkling_engine::{Engine, EngineState};
use inkling_remote::hedge::{Hedged, Remotes};
use inkling_remote::stats::Source;
use tower_lsp_server::jsonrpc::{Error as RpcError, Result as RpcResult};
use tower_lsp_server::ls_types::*;
use tower_lsp_server::{Client, LanguageServer, LspService};

use crate::acceptance::Acceptance;
use crate::config::{Layers, Overrides};
use crate::suggest::{self, Ask, SuggestError, Suggester};
use crate::wire::{
    self, DidAccept, ModelStatus, PartialCompletion, PromptAnswer, Stats, SuggestionId,
};
use crate::{CurrentPipeline, Pipeline};

mod live;
pub mod positions;

use positions::{PositionEncoding, TextChange};

/// The custom request that returns the engine's running totals.
pub const STATS_METHOD: &str = "inkling/stats";

/// The custom notification sent on every model state change (see [`ModelStatus`]).
pub enum StatusNotification {}

impl tower_lsp_server::ls_types::notification::Notification for StatusNotification {
    type Params = ModelStatus;
    const METHOD: &'static str = "inkling/status";
}

/// The custom notification that streams a suggestion as it is generated, sent only
/// to clients that asked for it (`streamPartial`).
pub enum PartialNotification {}

impl tower_lsp_server::ls_types::notification::Notification for PartialNotification {
    type Params = PartialCompletion;
    const METHOD: &'static str = "inkling/partialCompletion";
}

/// How long a document opened while the model loads waits for it before its
/// prompt is warmed (a first load fetches the default model).
const WARM_LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
/// How often a warm waiting for the model checks whether a newer one replaced it.
const SUPERSEDED_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How often the client's process is checked for life.
const PARENT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// Ends the server when the client's process (`initialize.processId`) is gone, as
/// the spec asks: a client that died cannot send `exit`, and its stdin may stay
/// open (held by a grandchild, say). A pid that is not there from the start
/// belongs to another PID namespace (a container, a Flatpak host) and is not watched.
fn watch_parent(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    let alive = move || {
        // SAFETY: signal 0 only checks that the process exists.
        let found = unsafe { libc::kill(pid, 0) } == 0;
        found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    };
    if !alive() {
        tracing::info!("the client's process {pid} is not visible here; not watching it");
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PARENT_CHECK_INTERVAL).await;
            if !alive() {
                tracing::warn!("the client (process {pid}) is gone; exiting");
                crate::exit_now(1);
            }
        }
    });
}

/// The language server: documents, settings and the engine handle.
pub struct LspServer {
    client: Client,
    flag_overrides: Overrides,
    session: OnceLock<SessionSetup>,
    /// The settings in use, and what follows them (see [`live`]).
    live: Mutex<live::Live>,
    /// The pipeline in use, from `initialized` on.
    pipeline: OnceLock<CurrentPipeline>,
    workspace: OnceLock<Arc<Workspace>>,
    documents: Arc<Mutex<DocumentStore>>,
    in_flight: Mutex<HashMap<String, CancelFlag>>,
    /// The newest automatic request's flag: the user types in one place at a time,
    /// so a newer automatic request, in any document, supersedes it (a burst of them
    /// across documents would otherwise queue every other request behind it).
    newest_automatic: Mutex<Option<CancelFlag>>,
    shutdown_requested: Arc<AtomicBool>,
    /// `initialize` and `initialized` came: each is acted on once. tower-lsp lets a
    /// second `initialize` sent right after the first through, and would take an
    /// error answer to it for a failed initialization: it gets the first's answer.
    initialize_seen: AtomicBool,
    initialize_result: OnceLock<InitializeResult>,
    initialized_seen: AtomicBool,
    /// What became of the suggestions shown (local statistics).
    acceptance: Acceptance,
    /// The remote engine (if configured), shared by the pipelines of the session.
    remotes: Arc<Remotes>,
    /// Where the last answer came from, as last told to the client.
    announced_source: Mutex<Option<Source>>,
    /// Counts warms asked for: one that gets to run after a newer was asked for
    /// (a just-opened file's first screen, computed after the cursor it was then
    /// focused at) does not run.
    warms_asked: Arc<AtomicU64>,
    /// Held by a warm while it checks it is the newest and builds its context: the
    /// context caches the document's preamble, which the next requests reuse, so
    /// a superseded warm must not build it after a newer one did (the request at the
    /// focused cursor would then get the preamble of the file's first screen, and
    /// none of the prompt the newer warm decoded).
    warm_contexts: Arc<Mutex<()>>,
    /// Documents whose refused edit the user was shown (once a document until it is
    /// opened again: a client whose every edit is refused would show one a keystroke).
    edits_refused: Mutex<std::collections::HashSet<String>>,
}

/// What `initialize` decided.
struct SessionSetup {
    encoding: PositionEncoding,
    /// Whether the client accepts `window/workDoneProgress/create`.
    work_done_progress: bool,
    /// Whether the client answers `workspace/configuration`.
    pulls_configuration: bool,
    /// Whether to register for `workspace/didChangeWatchedFiles`: the client can, and
    /// there is a workspace folder to watch.
    watches_files: bool,
    /// Problems with the options (unreadable, or values out of range), shown once the
    /// session is initialized.
    option_problems: Vec<String>,
}

/// A document and the context at a cursor in it.
struct ContextAt {
    /// A copy of the document, as the context saw it.
    document: Document,
    /// The version of the document the copy was made of.
    version: i32,
    /// The cursor, a char index into `document`.
    cursor: usize,
    /// The cursor as a position in the session's encoding.
    position: Position,
    context: CompletionContext,
    /// The completion menu's selected item the context assumes accepted: the range
    /// it replaces, that range's start (a char index into the document itself) and
    /// its text.
    selected: Option<(Range, usize, String)>,
}

/// Everything besides the document that a context is made from; cheap to clone and
/// usable from any task.
#[derive(Clone)]
struct ContextSources {
    workspace: Arc<Workspace>,
    documents: Arc<Mutex<DocumentStore>>,
    extra_tokens: usize,
}

impl ContextSources {
    /// The context at char `cursor` of `document`, open as `key`.
    fn context(&self, key: &str, document: &Document, cursor: usize) -> CompletionContext {
        // Copies of the other documents, made only when the preamble needs them.
        let others = || {
            lock(&self.documents)
                .iter()
                .filter(|(other, _)| *other != key)
                .map(|(other, d)| (other.to_owned(), d.clone()))
                .collect()
        };
        self.workspace.context(
            key,
            document,
            cursor,
            Window::default(),
            self.extra_tokens,
            &others,
        )
    }
}

/// A suggestion for one cursor position, in the document's coordinates.
struct Suggestion {
    /// The texts to offer, best first (see `suggest::Answer`).
    texts: Vec<String>,
    cursor: Position,
    /// The cursor, a char index into the document.
    cursor_index: usize,
    line_prefix: String,
    /// The range the texts replace, when they continue the item the editor's
    /// completion menu has selected (each text then starts with that item's text).
    replaces: Option<Range>,
}

/// The custom request that returns the prompt the model would get at a position.
pub const PROMPT_METHOD: &str = "inkling/prompt";

/// The client's report that it showed an item ([`SuggestionId`]).
pub const DID_SHOW_METHOD: &str = "inkling/didShow";
/// The client's report that the user accepted an item, whole or its start ([`DidAccept`]).
pub const DID_ACCEPT_METHOD: &str = "inkling/didAccept";
/// The client's report that the user dismissed an item ([`SuggestionId`]).
pub const DID_DISMISS_METHOD: &str = "inkling/didDismiss";
/// The client's report of where the cursor is in a document that became active, or
/// whose view moved (`TextDocumentPositionParams`).
pub const DID_FOCUS_METHOD: &str = "inkling/didFocus";

/// No remote engine yet (`initialized` configures it), with configuration mistakes
/// of the remote shown to the user (`window/showMessage`).
fn remotes_reporting_to(client: &Client) -> Arc<Remotes> {
    let remotes = Arc::new(Remotes::default());
    let client = client.clone();
    remotes.set_reporter(Arc::new(move |message: String| {
        tracing::warn!("{message}");
        let client = client.clone();
        tokio::spawn(async move { client.show_message(MessageType::WARNING, message).await });
    }));
    remotes
}

/// Builds the service for [`tower_lsp_server::Server`], with command-line `flags`
/// as the base settings. The returned flag is set once `shutdown` was received.
pub fn service(
    flags: Overrides,
) -> (
    LspService<LspServer>,
    tower_lsp_server::ClientSocket,
    Arc<AtomicBool>,
) {
    let shutdown_requested = Arc::new(AtomicBool::new(false));
    let flag = shutdown_requested.clone();
    let (service, socket) = LspService::build(move |client| LspServer {
        remotes: remotes_reporting_to(&client),
        announced_source: Mutex::new(None),
        warms_asked: Arc::new(AtomicU64::new(0)),
        warm_contexts: Arc::new(Mutex::new(())),
        edits_refused: Mutex::default(),
        client,
        flag_overrides: flags.clone(),
        session: OnceLock::new(),
        live: Mutex::new({
            // Replaced by `initialize`, with the client's options.
            let layers = Layers {
                started_with: flags.clone(),
                changed: Overrides::default(),
            };
            let (settings, _) = layers.resolve();
            live::Live::new(layers, settings)
        }),
        pipeline: OnceLock::new(),
        workspace: OnceLock::new(),
        documents: Arc::new(Mutex::new(DocumentStore::default())),
        in_flight: Mutex::new(HashMap::new()),
        newest_automatic: Mutex::new(None),
        shutdown_requested: flag.clone(),
        initialize_seen: AtomicBool::new(false),
        initialize_result: OnceLock::new(),
        initialized_seen: AtomicBool::new(false),
        acceptance: Acceptance::default(),
    })
    .custom_method(
        "textDocument/inlineCompletion",
        LspServer::inline_completion,
    )
    .custom_method(STATS_METHOD, LspServer::stats)
    .custom_method(PROMPT_METHOD, LspServer::prompt)
    .custom_method(DID_SHOW_METHOD, LspServer::did_show)
    .custom_method(DID_ACCEPT_METHOD, LspServer::did_accept)
    .custom_method(DID_DISMISS_METHOD, LspServer::did_dismiss)
    .custom_method(DID_FOCUS_METHOD, LspServer::did_focus)
    .finish();
    (service, socket, shutdown_requested)
}

/// The JSON-RPC error for a request the engine could not serve.
fn model_not_ready(error: &BackendError) -> RpcError {
    RpcError {
        code: tower_lsp_server::jsonrpc::ErrorCode::ServerError(-32001),
        message: format!("inkling: {error}").into(),
        data: None,
    }
}

fn negotiate_encoding(capabilities: &ClientCapabilities) -> PositionEncoding {
    let offered = capabilities
        .general
        .as_ref()
        .and_then(|g| g.position_encodings.as_ref());
    match offered {
        Some(kinds) if kinds.contains(&PositionEncodingKind::UTF8) => PositionEncoding::Utf8,
        _ => PositionEncoding::Utf16,
    }
}

fn to_position(p: positions::Position) -> Position {
    Position::new(p.line, p.column)
}

fn from_position(p: Position) -> positions::Position {
    positions::Position {
        line: p.line,
        column: p.character,
    }
}

impl LspServer {
    fn encoding(&self) -> PositionEncoding {
        self.session
            .get()
            .map_or_else(Default::default, |s| s.encoding)
    }

    /// The context at `position` of `uri`: the document (a copy), the cursor clamped
    /// into it (a char index, and as a position), and the context there. With
    /// `selected` (the item the editor's completion menu has selected, LSP 3.18), the
    /// copy has that item accepted, as VS Code shows an inline suggestion then only
    /// if it continues the item; an item whose range is not on the cursor's line
    /// around the cursor, or that spans lines, is left out.
    async fn context_at(
        &self,
        uri: &Uri,
        position: Position,
        selected: Option<&SelectedCompletionInfo>,
    ) -> RpcResult<ContextAt> {
        let key = uri.as_str().to_owned();
        let encoding = self.encoding();
        // A copy (ropes share their nodes) so that parsing runs without the lock.
        let document = lock(&self.documents)
            .get(&key)
            .cloned()
            .ok_or_else(|| RpcError::invalid_params(format!("document not open: {key}")))?;
        let sources = self.context_sources();
        let selected = selected.cloned();
        suggest::off_runtime(move || {
            let version = document.version;
            let index =
                |at: Position| positions::char_index(&document.text, from_position(at), encoding);
            let cursor = index(position);
            let selected = selected
                .filter(|item| {
                    let range = item.range;
                    range.start.line == range.end.line
                        && !item.text.contains(['\n', '\r'])
                        && index(range.start) <= cursor
                        && cursor <= index(range.end)
                })
                .map(|item| (item.range, index(item.range.start), item.text));
            let (document, cursor) = match &selected {
                Some((range, start, text)) => (
                    document.with_replacement(*start, index(range.end), text),
                    start + text.chars().count(),
                ),
                None => (document, cursor),
            };
            let context = sources.context(&key, &document, cursor);
            ContextAt {
                position: to_position(positions::position(&document.text, cursor, encoding)),
                document,
                version,
                cursor,
                context,
                selected,
            }
        })
        .await
        .map_err(|_| RpcError::internal_error())
    }

    /// What a context is made from besides the document, for use on any task.
    fn context_sources(&self) -> ContextSources {
        ContextSources {
            workspace: self.workspace.get().cloned().unwrap_or_default(),
            documents: self.documents.clone(),
            extra_tokens: self.settings().engine.budget.extra_tokens,
        }
    }

    /// Prefetches, on a task of its own, the answer at the position that accepting
    /// `text` at char `cursor` of `document` leads to (see [`Suggester::prefetch`]),
    /// then, if `text` ends its line (`line_goes_on` is false: it was not cut where
    /// the model was unsure), the answer at the next line's start.
    fn prefetch_after(
        &self,
        key: &str,
        document: Document,
        cursor: usize,
        text: &str,
        line_goes_on: bool,
    ) {
        let Some(suggester) = self.pipeline() else {
            return;
        };
        // The context is built only if a prefetch could start now (`prefetch` decides
        // again, under its lock).
        if !self.settings().prefetch || !suggester.may_prefetch() {
            return;
        }
        let sources = self.context_sources();
        let (key, text) = (key.to_owned(), text.to_owned());
        tokio::spawn(async move {
            let after = |inserted: String| {
                let (document, sources, key) = (document.clone(), sources.clone(), key.clone());
                suggest::off_runtime(move || {
                    let document = document.with_insertion(cursor, &inserted);
                    sources.context(&key, &document, cursor + inserted.chars().count())
                })
            };
            let Ok(accepted) = after(text.clone()).await else {
                return;
            };
            // A suggestion that ends its line is mostly followed by Enter: the answer
            // at the next line's start (indented as the editor indents) comes next,
            // unless a request stopped the first prefetch.
            let ends_line =
                !line_goes_on && !text.contains('\n') && accepted.line_suffix.trim().is_empty();
            let next_line = ends_line.then(|| {
                let indent = postprocess::next_line_indent(&accepted.prefix, &document.language_id);
                format!("{text}\n{indent}")
            });
            if !suggester.prefetch(accepted, key.clone()).await {
                return;
            }
            if let Some(inserted) = next_line
                && let Ok(context) = after(inserted).await
            {
                suggester.prefetch(context, key).await;
            }
        });
    }

    /// Brings the prompt at the user's cursor in a document into the model's cache in
    /// the background (once the model is loaded), so that the first keystroke there
    /// does not wait for a prompt decoded from scratch. `position` is where the client
    /// said the cursor is ([`DID_FOCUS_METHOD`]); without it (just opened: LSP does not
    /// say where the cursor is) [`context::opening_cursor`] guesses. A request elsewhere
    /// stops it at once, one at that very place waits for it; what it decoded stays
    /// cached, and a newer warm supersedes it (also one asked for later that gets to
    /// run first). At a reported cursor, the answer there is prefetched once the
    /// prompt is warm (stopped and waited for in the same way).
    fn warm_at(&self, key: &str, position: Option<Position>) {
        if self.completions_disabled(key) {
            return;
        }
        let Some(suggester) = self.pipeline() else {
            return;
        };
        let (sources, key) = (self.context_sources(), key.to_owned());
        if lock(&sources.documents).get(&key).is_none() {
            return;
        }
        let settings = self.settings();
        let (prefix_tokens, prefetch) = (settings.engine.budget.prefix_tokens, settings.prefetch);
        let encoding = self.encoding();
        let (warms_asked, warm_contexts) = (self.warms_asked.clone(), self.warm_contexts.clone());
        let ticket = warms_asked.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            // Only the newest warm waits for the model to load: focus changes sent
            // meanwhile leave one waiting task, not one each.
            let superseded = async {
                while warms_asked.load(Ordering::SeqCst) == ticket {
                    tokio::time::sleep(SUPERSEDED_POLL).await;
                }
            };
            tokio::select! {
                ready = suggester.backend().ready_within(WARM_LOAD_WAIT) => if !ready {
                    return;
                },
                () = superseded => return,
            }
            // The document as it is now: it may have changed, or closed, meanwhile.
            let Some(document) = lock(&sources.documents).get(&key).cloned() else {
                return;
            };
            let (asked, for_key) = (warms_asked.clone(), key.clone());
            let warmed = suggest::off_runtime(move || {
                let _building = lock(&warm_contexts);
                if asked.load(Ordering::SeqCst) != ticket {
                    return None;
                }
                let cursor = match position {
                    Some(position) => {
                        positions::char_index(&document.text, from_position(position), encoding)
                    }
                    None => context::opening_cursor(&document.text, prefix_tokens),
                };
                Some(sources.context(&for_key, &document, cursor))
            })
            .await;
            let superseded = warms_asked.load(Ordering::SeqCst) != ticket;
            if let (Ok(Some(context)), false) = (warmed, superseded)
                && suggester.warm(context.clone(), key.clone()).await
                && position.is_some()
                && prefetch
                && warms_asked.load(Ordering::SeqCst) == ticket
            {
                // Where the client says the cursor is, the user is likely to type
                // first: the answer there is computed too, so that the first
                // keystroke types through it.
                suggester.prefetch(context, key).await;
            }
        });
    }

    /// `inkling/didFocus`: the user's cursor is at `position` of a document that became
    /// active or whose view moved; its prompt there is warmed.
    async fn did_focus(&self, params: TextDocumentPositionParams) {
        self.warm_at(params.text_document.uri.as_str(), Some(params.position));
    }

    /// Computes a suggestion at `position` of `uri`, or `None` when there is none to
    /// give; with `selected`, one that continues the completion menu's selected item
    /// (see [`LspServer::context_at`]).
    async fn suggest(
        &self,
        uri: &Uri,
        position: Position,
        trigger: Trigger,
        selected: Option<&SelectedCompletionInfo>,
    ) -> RpcResult<Option<Suggestion>> {
        let key = uri.as_str();
        if self.completions_disabled(key) {
            return Ok(None);
        }
        // In flight from its arrival: requests supersede one another in the order
        // they came, whatever order their contexts are built in.
        let cancel = CancelFlag::default();
        if let Some(older) = lock(&self.in_flight).insert(key.to_owned(), cancel.clone()) {
            older.cancel();
        }
        if trigger == Trigger::Automatic
            && let Some(older) = lock(&self.newest_automatic).replace(cancel.clone())
        {
            older.cancel();
        }
        let _guard = InFlightGuard {
            server: self,
            key,
            cancel: cancel.clone(),
        };
        let Some(suggester) = self.pipeline() else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let building = CancelledBeforeAsking(Some(&suggester));
        let built = self.context_at(uri, position, selected).await;
        if cancel.is_cancelled() {
            return Ok(None);
        }
        building.asked();
        let ContextAt {
            document,
            version,
            cursor: cursor_index,
            position: cursor,
            context,
            selected,
        } = built?;
        let assembly_time = started.elapsed();
        let (partial, forwarding) = if self.settings().stream_partial {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            // The asker may have gone away: a failed send is no error.
            let sink = TextSink::new(move |text| {
                let _ = sender.send(text.to_owned());
            });
            let forwarding = tokio::spawn(Self::forward_partial(
                self.client.clone(),
                receiver,
                PartialCompletion {
                    uri: uri.clone(),
                    version,
                    position: cursor,
                    text: String::new(),
                },
            ));
            (Some(sink), Some(forwarding))
        } else {
            (None, None)
        };
        let line_prefix = context.line_prefix.clone();
        let ask = Ask {
            context,
            trigger,
            cancel,
            document: key.to_owned(),
            partial,
            max_tokens: None,
            assembly_time,
            may_stop_unsure: true,
        };
        let answer = suggester.suggest(ask).await;
        // A prompt this request ran out of time on is decoded on in the background,
        // so the next keystroke finds it cached (a newer request stops it at once).
        let warming = suggester.clone();
        tokio::spawn(async move { warming.warm_unfinished().await });
        // Partial texts are queued for the client before the answer that ends them
        // (the transport may still interleave the two).
        if let Some(forwarding) = forwarding {
            let _ = forwarding.await;
        }
        let answer = match answer {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(SuggestError::Cancelled) => return Ok(None),
            Err(SuggestError::Failed(_)) => return Err(RpcError::internal_error()),
        };
        let current_version = lock(&self.documents).get(key).map(|d| d.version);
        if current_version != Some(version) {
            tracing::debug!(
                uri = key,
                "document changed during generation; answer dropped"
            );
            return Ok(None);
        }
        // An answer from memory continues one the model gave, whose accepted position
        // is this one's too: it was prefetched then, so it is not done again on every
        // keystroke typed through it.
        if let Some(generation) = &answer.generation {
            let cut = generation.stop_reason == StopReason::Unsure;
            self.prefetch_after(key, document, cursor_index, &answer.texts[0], cut);
            self.announce_answer_source(&suggester).await;
        }
        // With a selected item, each text replaces the item's range with the item and more.
        let (texts, cursor_index, replaces) = match selected {
            Some((range, start, item)) => (
                answer
                    .texts
                    .iter()
                    .map(|text| format!("{item}{text}"))
                    .collect(),
                start,
                Some(range),
            ),
            None => (answer.texts, cursor_index, None),
        };
        Ok(Some(Suggestion {
            texts,
            cursor,
            cursor_index,
            line_prefix,
            replaces,
        }))
    }

    /// Tells the client where the last answer came from (in `inkling/status`), when
    /// a remote engine is configured and the source changed since last told.
    async fn announce_answer_source(&self, suggester: &Pipeline) {
        let Some(source) = self.remotes.last_answer_source() else {
            return;
        };
        if lock(&self.announced_source).replace(source) == Some(source) {
            return;
        }
        let status = ModelStatus {
            last_answer_from: Some(source.name().into()),
            ..ModelStatus::of(&suggester.backend().local().subscribe().borrow())
        };
        self.client
            .send_notification::<StatusNotification>(status)
            .await;
    }

    /// Sends [`PartialNotification`]s for the text generated so far, until the
    /// generation ends (its sender is dropped).
    async fn forward_partial(
        client: Client,
        mut texts: tokio::sync::mpsc::UnboundedReceiver<String>,
        mut partial: PartialCompletion,
    ) {
        while let Some(mut text) = texts.recv().await {
            // Only the latest text matters when the client is slower than the model.
            while let Ok(newer) = texts.try_recv() {
                text = newer;
            }
            partial.text = text;
            client
                .send_notification::<PartialNotification>(partial.clone())
                .await;
        }
    }

    /// `textDocument/inlineCompletion` (LSP 3.18).
    async fn inline_completion(
        &self,
        params: InlineCompletionParams,
    ) -> RpcResult<Option<InlineCompletionResponse>> {
        let position = params.text_document_position;
        let trigger = if params.context.trigger_kind == InlineCompletionTriggerKind::INVOKED {
            Trigger::Invoked
        } else {
            Trigger::Automatic
        };
        let selected = params.context.selected_completion_info.as_ref();
        let suggestion = self
            .suggest(
                &position.text_document.uri,
                position.position,
                trigger,
                selected,
            )
            .await?;
        let items = suggestion.map_or_else(Vec::new, |s| {
            let range = s.replaces.unwrap_or(Range::new(s.cursor, s.cursor));
            let commands = self.accept_commands(&position.text_document.uri, trigger, &s);
            s.texts
                .into_iter()
                .zip(commands)
                .map(|(text, command)| InlineCompletionItem {
                    insert_text: text,
                    filter_text: None,
                    range: Some(range),
                    command: Some(command),
                    insert_text_format: None, // Not a field of LSP 3.18's item.
                })
                .collect()
        });
        Ok(Some(InlineCompletionResponse::Array(items)))
    }

    /// The commands that report each of `suggestion`'s texts accepted, its answer
    /// remembered for attributing the reports.
    fn accept_commands(
        &self,
        uri: &Uri,
        trigger: Trigger,
        suggestion: &Suggestion,
    ) -> Vec<Command> {
        let answer = self.acceptance.record(
            trigger,
            uri.as_str(),
            suggestion.cursor_index,
            &suggestion.texts,
        );
        (0..suggestion.texts.len())
            .map(|item| SuggestionId { answer, item }.accept_command())
            .collect()
    }

    /// `inkling/didShow`: the client showed an item.
    async fn did_show(&self, params: SuggestionId) {
        self.acceptance.shown(params.into());
    }

    /// `inkling/didAccept`: the user accepted an item, or its start.
    async fn did_accept(&self, params: DidAccept) {
        self.acceptance
            .accepted(params.item(), params.accepted_length);
    }

    /// `inkling/didDismiss`: the user dismissed an item.
    async fn did_dismiss(&self, params: SuggestionId) {
        self.acceptance.dismissed(params.into());
    }

    /// `inkling/prompt`: the prompt the model would get at a position.
    async fn prompt(&self, params: TextDocumentPositionParams) -> RpcResult<PromptAnswer> {
        let context = self
            .context_at(&params.text_document.uri, params.position, None)
            .await?
            .context;
        let path = context.preamble.path.clone();
        let suggester = self
            .pipeline()
            .ok_or_else(|| model_not_ready(&BackendError::NotReady))?;
        let prompt = suggester
            .backend()
            .local()
            .prompt(context)
            .await
            .map_err(|e| model_not_ready(&e))?;
        Ok(PromptAnswer::new(prompt, path))
    }

    /// `inkling/stats`: the engine's running totals.
    async fn stats(&self) -> RpcResult<Stats> {
        let workspace = self.workspace.get().map(|w| w.stats()).unwrap_or_default();
        Ok(match self.pipeline() {
            None => Stats {
                model_state: "loading".into(),
                counters: wire::Counters::default(),
                latency: wire::Latency::default(),
                prompt_assembly: wire::Latency::default(),
                shown_tokens: wire::ShownTokens::default(),
                prefetch: wire::Prefetch::default(),
                workspace: workspace.into(),
                acceptance: self.acceptance.stats().into(),
                backends: self.remotes.snapshot().into(),
            },
            Some(suggester) => {
                let engine = suggester.backend().local();
                Stats {
                    model_state: ModelStatus::of(&engine.subscribe().borrow()).state,
                    counters: wire::Counters::new(
                        engine.counters(),
                        suggester.typed_through_hits(),
                        suggester.cancelled_before_backend(),
                    ),
                    latency: suggester.latency().into(),
                    prompt_assembly: suggester.assembly_latency().into(),
                    shown_tokens: suggester.answer_tokens().into(),
                    prefetch: wire::Prefetch::new(
                        engine.background_counters(),
                        suggester.prefetch_stats(),
                    ),
                    workspace: workspace.into(),
                    acceptance: self.acceptance.stats().into(),
                    backends: self.remotes.snapshot().into(),
                }
            }
        })
    }

    /// Tells the client about an engine's loading, seen in its `states` (not a
    /// handle, which would keep a replaced engine alive): `$/progress` (under `token`)
    /// when it supports it, and a message when loading fails. Ends its progress when
    /// `superseded` fires (or its sender is dropped): another engine took over.
    async fn report_loading(
        client: Client,
        mut states: tokio::sync::watch::Receiver<EngineState>,
        work_done_progress: bool,
        token: String,
        mut superseded: tokio::sync::oneshot::Receiver<()>,
    ) {
        let token = NumberOrString::String(token);
        let mut progress = if work_done_progress
            && client
                .create_work_done_progress(token.clone())
                .await
                .is_ok()
        {
            Some(
                client
                    .progress(token, "inkling")
                    .with_message("loading the model")
                    .with_percentage(0)
                    .begin()
                    .await,
            )
        } else {
            None
        };
        let mut last_reported = None;
        loop {
            let state = states.borrow_and_update().clone();
            if last_reported.as_ref() == Some(&state) {
                let changed = tokio::select! {
                    changed = states.changed() => changed.is_ok(),
                    _ = &mut superseded => false,
                };
                if changed {
                    continue;
                }
                if let Some(progress) = progress.take() {
                    progress.finish_with_message("model replaced").await;
                }
                return;
            }
            last_reported = Some(state.clone());
            // Progress first, then our own notification: when a client hears "ready"
            // or "failed", the progress has ended already.
            let status = ModelStatus::of(&state);
            let finished = !matches!(state, EngineState::Loading { .. });
            match state {
                EngineState::Loading { message, percent } => {
                    if let Some(progress) = &progress {
                        progress
                            .report_with_message(message, percent.unwrap_or(0).min(100))
                            .await;
                    }
                }
                EngineState::Ready(info) => {
                    let message = info.describe();
                    if let Some(progress) = progress.take() {
                        progress.finish_with_message(message.clone()).await;
                    }
                    client.log_message(MessageType::INFO, message).await;
                    for warning in &info.warnings {
                        client
                            .show_message(MessageType::WARNING, format!("inkling: {warning}"))
                            .await;
                    }
                }
                EngineState::Failed(error) => {
                    if let Some(progress) = progress.take() {
                        progress.finish_with_message("model failed to load").await;
                    }
                    client
                        .show_message(MessageType::ERROR, format!("inkling: {error}"))
                        .await;
                }
            }
            client.send_notification::<StatusNotification>(status).await;
            if finished {
                return;
            }
        }
    }
}

/// Cancels a request's generation when its handler ends or is dropped, and forgets it.
/// Counts a request as cancelled in the pipeline's stats when dropped before
/// [`CancelledBeforeAsking::asked`]: its future was dropped (`$/cancelRequest`), or it
/// was superseded, while its context was built; from there the pipeline counts.
struct CancelledBeforeAsking<'a>(Option<&'a Pipeline>);

impl CancelledBeforeAsking<'_> {
    fn asked(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelledBeforeAsking<'_> {
    fn drop(&mut self) {
        if let Some(pipeline) = self.0 {
            pipeline.record_cancelled();
        }
    }
}

struct InFlightGuard<'a> {
    server: &'a LspServer,
    key: &'a str,
    cancel: CancelFlag,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.cancel.cancel();
        let mut in_flight = lock(&self.server.in_flight);
        if in_flight
            .get(self.key)
            .is_some_and(|flag| flag.same_as(&self.cancel))
        {
            in_flight.remove(self.key);
        }
    }
}

impl LanguageServer for LspServer {
    async fn initialize(&self, params: InitializeParams) -> RpcResult<InitializeResult> {
        if self.initialize_seen.swap(true, Ordering::SeqCst) {
            return self
                .initialize_result
                .get()
                .cloned()
                .ok_or_else(|| RpcError {
                    message: "`initialize` was received already".into(),
                    ..RpcError::invalid_request()
                });
        }
        let encoding = negotiate_encoding(&params.capabilities);
        let inline_client = params
            .capabilities
            .text_document
            .as_ref()
            .is_some_and(|t| t.inline_completion.is_some());
        let (client_overrides, options_error) =
            match Overrides::from_json(params.initialization_options) {
                Ok(overrides) => (overrides, None),
                Err(e) => (
                    Overrides::default(),
                    Some(format!("{e}; using the defaults")),
                ),
            };
        let layers = Layers {
            started_with: self.flag_overrides.clone().overridden_by(client_overrides),
            changed: Overrides::default(),
        };
        let (settings, out_of_range) = layers.resolve();
        let option_problems = options_error.into_iter().chain(out_of_range).collect();
        let workspace_capabilities = params.capabilities.workspace.as_ref();
        let pulls_configuration =
            workspace_capabilities.and_then(|w| w.configuration) == Some(true);
        let dynamic_file_watching = workspace_capabilities
            .and_then(|w| w.did_change_watched_files.as_ref())
            .and_then(|w| w.dynamic_registration)
            == Some(true);
        if let Some(pid) = params.process_id {
            watch_parent(pid);
        }
        let work_done_progress = params
            .capabilities
            .window
            .as_ref()
            .and_then(|w| w.work_done_progress)
            .unwrap_or(false);
        #[allow(deprecated)] // `rootUri`: older clients send only that.
        let root = params
            .workspace_folders
            .as_ref()
            .and_then(|folders| folders.first())
            .map(|folder| folder.uri.as_str().to_owned())
            .or_else(|| params.root_uri.as_ref().map(|uri| uri.as_str().to_owned()))
            .and_then(|uri| workspace::file_path(&uri));
        let watches_files = dynamic_file_watching && root.is_some();
        let workspace = Workspace::new(root);
        workspace.set_disabled(settings.disabled.clone());
        let _ = self.workspace.set(Arc::new(workspace));
        *lock(&self.live) = live::Live::new(layers, settings);
        let _ = self.session.set(SessionSetup {
            encoding,
            work_done_progress,
            pulls_configuration,
            watches_files,
            option_problems,
        });
        let result = InitializeResult {
            capabilities: ServerCapabilities {
                position_encoding: Some(match encoding {
                    PositionEncoding::Utf8 => PositionEncodingKind::UTF8,
                    PositionEncoding::Utf16 => PositionEncodingKind::UTF16,
                }),
                text_document_sync: Some(TextDocumentSyncCapability::Options(
                    TextDocumentSyncOptions {
                        open_close: Some(true),
                        change: Some(TextDocumentSyncKind::INCREMENTAL),
                        ..TextDocumentSyncOptions::default()
                    },
                )),
                // Clients with ghost text get it alone: the same suggestion in the
                // completion list would be noise, and the two requests for one document
                // would supersede each other.
                completion_provider: (!inline_client).then(CompletionOptions::default),
                inline_completion_provider: Some(OneOf::Left(true)),
                // Generic clients run an accepted item's command through the server.
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: vec![wire::ACCEPT_COMMAND.into()],
                    ..ExecuteCommandOptions::default()
                }),
                ..ServerCapabilities::default()
            },
            server_info: Some(ServerInfo {
                name: "inkling".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
            offset_encoding: None,
        };
        let _ = self.initialize_result.set(result.clone());
        Ok(result)
    }

    async fn initialized(&self, _: InitializedParams) {
        let Some(session) = self.session.get() else {
            return;
        };
        if self.initialized_seen.swap(true, Ordering::SeqCst) {
            return;
        }
        for problem in &session.option_problems {
            self.warn(problem.clone()).await;
        }
        let settings = self.settings();
        let suggester = self
            .pipeline
            .get_or_init(|| {
                let engine = Engine::start(settings.engine.clone());
                let backend = Hedged::new(engine, self.remotes.clone());
                CurrentPipeline::new(Arc::new(Suggester::new(backend, (*settings).clone())))
            })
            .get();
        if let Some(workspace) = self.workspace.get()
            && settings.indexes_workspace()
        {
            workspace.index_in_background();
        }
        self.report_loading_of(suggester.backend().local());
        self.configure_remote(&settings);
        self.watch_files();
        self.serve_http(settings.http_port).await;
    }

    async fn shutdown(&self) -> RpcResult<()> {
        self.shutdown_requested.store(true, Ordering::SeqCst);
        for flag in lock(&self.in_flight).values() {
            flag.cancel();
        }
        if let Some(suggester) = self.pipeline() {
            suggester.cancel_prefetch();
        }
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let doc = params.text_document;
        lock(&self.edits_refused).remove(doc.uri.as_str());
        // Reopening replaces the text: whatever was being generated for it is stale.
        if let Some(flag) = lock(&self.in_flight).remove(doc.uri.as_str()) {
            flag.cancel();
        }
        let document = Document::new(&doc.text, doc.version, &doc.language_id);
        if let Some(workspace) = self.workspace.get() {
            workspace.opened(doc.uri.as_str(), &document);
        }
        lock(&self.documents).open(doc.uri.as_str(), document);
        self.warm_at(doc.uri.as_str(), None);
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let changes: Vec<TextChange> = params
            .content_changes
            .into_iter()
            .map(|change| TextChange {
                range: change
                    .range
                    .map(|r| (from_position(r.start), from_position(r.end))),
                text: change.text,
            })
            .collect();
        let uri = params.text_document.uri;
        let encoding = self.encoding();
        let result = lock(&self.documents).change(
            uri.as_str(),
            params.text_document.version,
            &changes,
            |text, change| change.to_edit(text, encoding),
        );
        if let (Ok(()), Some(workspace), Some(line)) = (
            &result,
            self.workspace.get(),
            changes
                .last()
                .and_then(|c| c.range)
                .map(|(start, _)| start.line as usize),
        ) {
            workspace.edited(uri.as_str(), line);
        }
        if let Err(e) = result {
            let message = format!(
                "inkling: edit of {} not applied: {e}; the document as inkling has it may differ from the editor's: close and reopen it",
                uri.as_str()
            );
            tracing::warn!("{message}");
            // Shown once per open document, then logged to the client; edits of
            // documents never opened (a client's mistake, maybe one per URI) only
            // reach stderr, and are remembered nowhere.
            if matches!(e, EditError::NotOpen) {
                return;
            }
            if lock(&self.edits_refused).insert(uri.as_str().to_owned()) {
                self.client
                    .show_message(MessageType::WARNING, message)
                    .await;
            } else {
                self.client.log_message(MessageType::WARNING, message).await;
            }
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        self.configuration_changed(params.settings).await;
    }

    async fn did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        self.watched_files_changed(&params.changes);
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let key = params.text_document.uri.as_str().to_owned();
        lock(&self.documents).close(&key);
        lock(&self.edits_refused).remove(&key);
        if let Some(workspace) = self.workspace.get() {
            workspace.closed(&key);
        }
        if let Some(flag) = lock(&self.in_flight).remove(&key) {
            flag.cancel();
        }
    }

    /// `textDocument/completion`: the same suggestion as one item shaped for clients
    /// without inline completion (Helix, Zed): label = its first line, `filterText` =
    /// the line up to the cursor, a zero-width `textEdit` at the cursor, `detail` = all of it.
    async fn completion(&self, params: CompletionParams) -> RpcResult<Option<CompletionResponse>> {
        let position = params.text_document_position;
        let invoked = params
            .context
            .is_none_or(|c| c.trigger_kind == CompletionTriggerKind::INVOKED);
        let trigger = if invoked {
            Trigger::Invoked
        } else {
            Trigger::Automatic
        };
        let Some(suggestion) = self
            .suggest(
                &position.text_document.uri,
                position.position,
                trigger,
                None,
            )
            .await?
        else {
            return Ok(None);
        };
        let range = Range::new(suggestion.cursor, suggestion.cursor);
        let commands = self.accept_commands(&position.text_document.uri, trigger, &suggestion);
        let items = suggestion
            .texts
            .into_iter()
            .zip(commands)
            .map(|(text, command)| CompletionItem {
                label: text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or_default()
                    .to_owned(),
                kind: Some(CompletionItemKind::TEXT),
                detail: Some(text.clone()),
                filter_text: Some(suggestion.line_prefix.clone()),
                insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
                text_edit: Some(CompletionTextEdit::Edit(TextEdit::new(range, text))),
                command: Some(command),
                ..CompletionItem::default()
            })
            .collect();
        Ok(Some(CompletionResponse::List(CompletionList {
            // Each keystroke changes the answer: ask again rather than filter this one.
            is_incomplete: true,
            items,
        })))
    }

    /// `workspace/executeCommand`: [`wire::ACCEPT_COMMAND`], run by clients after the
    /// user accepted an item, with a [`DidAccept`] as its argument.
    async fn execute_command(&self, params: ExecuteCommandParams) -> RpcResult<Option<LSPAny>> {
        if params.command != wire::ACCEPT_COMMAND {
            return Err(RpcError::invalid_params(format!(
                "unknown command: {}",
                params.command
            )));
        }
        let accepted = params
            .arguments
            .into_iter()
            .next()
            .and_then(|argument| serde_json::from_value::<DidAccept>(argument).ok())
            .ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "{}: the argument is {{answer, item, acceptedLength?}}",
                    wire::ACCEPT_COMMAND
                ))
            })?;
        self.acceptance
            .accepted(accepted.item(), accepted.accepted_length);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_chosen_only_when_offered() {
        let mut caps = ClientCapabilities::default();
        assert_eq!(negotiate_encoding(&caps), PositionEncoding::Utf16);
        caps.general = Some(GeneralClientCapabilities {
            position_encodings: Some(vec![
                PositionEncodingKind::UTF16,
                PositionEncodingKind::UTF8,
            ]),
            ..GeneralClientCapabilities::default()
        });
        assert_eq!(negotiate_encoding(&caps), PositionEncoding::Utf8);
        caps.general = Some(GeneralClientCapabilities {
            position_encodings: Some(vec![PositionEncodingKind::UTF32]),
            ..GeneralClientCapabilities::default()
        });
        assert_eq!(negotiate_encoding(&caps), PositionEncoding::Utf16);
    }
}
