//! Settings and files that change while the editor runs, and the documents whose
//! completions are disabled.
//!
//! - `workspace/didChangeConfiguration`: the client's settings (the options, or
//!   nested under `"inkling"`; `null` means "ask me", answered through
//!   `workspace/configuration` when the client can) become the top layer of the
//!   settings ([`Layers`]). Options the pipeline reads apply from the next request
//!   on; options the engine needs at load start a new engine, which loads in the
//!   background once the old one has ended (its requests in flight are cancelled so
//!   that it ends soon), reported like the first load; a new `httpPort` moves the
//!   endpoint. Invalid settings are named in a message and change nothing. Open
//!   documents are untouched throughout.
//! - `workspace/didChangeWatchedFiles` (registered at `initialized` when the client
//!   can): files created, changed or deleted outside the editor are read into the
//!   workspace index again, or dropped from it, in the background.
//! - `disabledLanguages` / `disabledPaths`: a disabled document gets no suggestion.

use std::sync::Arc;
use std::time::Duration;

use inkling_core::lock;
use inkling_core::syntax;
use inkling_core::workspace;
use inkling_engine::model_check;
use inkling_engine::{Engine, EngineOptions, Speculation};
use inkling_remote::hedge::Hedged;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_lsp_server::ls_types::*;

use super::LspServer;
use crate::config::{Layers, Overrides, SETTINGS_SECTION, Settings};
use crate::suggest::Suggester;
use crate::{CurrentPipeline, Pipeline, http};

/// Longest wait for the client's answer to `workspace/configuration`.
const CONFIGURATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The id of the registration for `workspace/didChangeWatchedFiles`.
const WATCHED_FILES_REGISTRATION: &str = "inkling/watchedFiles";

/// The settings in use, the layers they come from, and the tasks that follow them.
pub(super) struct Live {
    layers: Layers,
    settings: Arc<Settings>,
    /// Engines started so far: each load's progress has a token of its own.
    loads: u32,
    /// Dropped when the engine whose loading is being reported is replaced.
    loading_superseded: Option<oneshot::Sender<()>>,
    /// The HTTP endpoint's accept loop, while it is served.
    http: Option<JoinHandle<()>>,
}

impl Live {
    /// `settings`, resolved from `layers`.
    pub(super) fn new(layers: Layers, settings: Settings) -> Live {
        Live {
            layers,
            settings: Arc::new(settings),
            loads: 0,
            loading_superseded: None,
            http: None,
        }
    }
}

/// Keeps `old`'s model (and draft model) in `new` where `new` names another that
/// fails the quick checks (no such file, a directory or FIFO, no GGUF): ending the
/// working engine for a model that cannot load would leave no suggestions at all.
fn keep_working_models(old: &EngineOptions, new: &mut EngineOptions, problems: &mut Vec<String>) {
    if new.model != old.model
        && let Some(model) = &new.model
        && let Err(e) = model_check::quick_check(model)
    {
        problems.push(format!("`model` not changed: {e}"));
        new.model = old.model.clone();
    }
    if new.speculation != old.speculation
        && let Speculation::DraftModel(draft) = &new.speculation
        && let Err(e) = model_check::quick_check(draft)
    {
        problems.push(format!("`draftModel` not changed: {e}"));
        new.speculation = old.speculation.clone();
    }
}

impl LspServer {
    /// The settings in use.
    pub(super) fn settings(&self) -> Arc<Settings> {
        lock(&self.live).settings.clone()
    }

    /// The pipeline in use, once `initialized` has started one.
    pub(super) fn pipeline(&self) -> Option<Arc<Pipeline>> {
        self.pipeline.get().map(CurrentPipeline::get)
    }

    /// Whether completions are disabled for the open document `uri`, by its language
    /// or its path.
    pub(super) fn completions_disabled(&self, uri: &str) -> bool {
        let Some(workspace) = self.workspace.get() else {
            return false;
        };
        let language = lock(&self.documents)
            .get(uri)
            .map(|d| d.language_id.clone());
        language.is_some_and(|language| workspace.is_disabled(uri, &language))
    }

    /// Names a problem with the settings in a message (and in the log).
    pub(super) async fn warn(&self, problem: String) {
        tracing::warn!("{problem}");
        self.client
            .show_message(MessageType::WARNING, format!("inkling: {problem}"))
            .await;
    }

    /// `workspace/didChangeConfiguration`.
    pub(super) async fn configuration_changed(&self, settings: Value) {
        let settings = match settings {
            Value::Null => match self.pulled_configuration().await {
                Some(settings) => settings,
                None => return,
            },
            settings => settings,
        };
        match Overrides::from_settings(settings) {
            Ok(changed) => self.apply_settings(changed).await,
            Err(e) => {
                self.warn(format!("{e}; the settings in use are kept"))
                    .await
            }
        }
    }

    /// The client's settings of inkling's section, asked for with
    /// `workspace/configuration`; `None` when the client cannot answer.
    async fn pulled_configuration(&self) -> Option<Value> {
        if !self.session.get()?.pulls_configuration {
            tracing::info!("the client sent no settings and cannot be asked for them");
            return None;
        }
        let section = ConfigurationItem {
            scope_uri: None,
            section: Some(SETTINGS_SECTION.into()),
        };
        // A client that never answers must not hold this handler (and one of the
        // server's few concurrent slots) for good.
        match tokio::time::timeout(
            CONFIGURATION_TIMEOUT,
            self.client.configuration(vec![section]),
        )
        .await
        {
            Ok(Ok(values)) => Some(values.into_iter().next().unwrap_or(Value::Null)),
            Ok(Err(e)) => {
                tracing::warn!("cannot ask the client for its settings: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "the client did not send its settings within {} s",
                    CONFIGURATION_TIMEOUT.as_secs()
                );
                None
            }
        }
    }

    /// Makes `changed` the top layer of the settings and follows the result.
    async fn apply_settings(&self, changed: Overrides) {
        // Before any `.await`, so that settings sent one after the other apply in order.
        let (old, new, problems) = {
            let mut live = lock(&self.live);
            live.layers.changed = changed;
            let (mut settings, mut problems) = live.layers.resolve();
            keep_working_models(&live.settings.engine, &mut settings.engine, &mut problems);
            let new = Arc::new(settings);
            (
                std::mem::replace(&mut live.settings, new.clone()),
                new,
                problems,
            )
        };
        if old != new {
            tracing::info!("settings changed");
            self.follow_settings(&old, &new);
            if old.http_port != new.http_port {
                self.serve_http(new.http_port).await;
            }
        }
        for problem in problems {
            self.warn(problem).await;
        }
    }

    /// Brings the workspace and the pipeline from `old` settings to `new` ones.
    fn follow_settings(&self, old: &Settings, new: &Settings) {
        if let Some(workspace) = self.workspace.get() {
            let disabled_changed = workspace.set_disabled(new.disabled.clone());
            if !new.indexes_workspace() {
                if old.indexes_workspace() {
                    workspace.clear_index();
                }
            } else if disabled_changed || !old.indexes_workspace() {
                // Files no longer disabled, or never indexed, are read (again).
                workspace.index_in_background();
            }
        }
        // Before `initialized`, there is no pipeline yet: it starts with these settings.
        let Some(current) = self.pipeline.get() else {
            return;
        };
        if old.remote != new.remote {
            self.configure_remote(new);
        }
        if old.engine == new.engine {
            current.get().set_settings(new.clone());
        } else {
            self.restart_engine(current, new);
        }
    }

    /// Uses the remote engine `settings` name (or none) from the next request on.
    pub(super) fn configure_remote(&self, settings: &Settings) {
        // The settings were checked when resolved: only the HTTP client can fail here.
        if let Err(e) = self.remotes.configure(settings.remote.as_ref()) {
            tracing::warn!("no remote engine: {e}");
        }
    }

    /// Puts a pipeline on a new engine for `settings` in place of `current`'s; the new
    /// engine loads once the old one has ended, so the old one's requests in flight and
    /// its prefetch are cancelled.
    fn restart_engine(&self, current: &CurrentPipeline, settings: &Settings) {
        tracing::info!("the engine's settings changed: loading the model again");
        let old = current.get();
        let engine = Engine::replacing(settings.engine.clone(), old.backend().local().clone());
        self.report_loading_of(&engine);
        let backend = Hedged::new(engine, old.backend().remotes().clone());
        current.replace(Arc::new(Suggester::new(backend, settings.clone())));
        old.cancel_prefetch();
        for flag in lock(&self.in_flight).values() {
            flag.cancel();
        }
    }

    /// Reports `engine`'s loading to the client on a task of its own; the report on
    /// the engine before it, if still going, ends.
    pub(super) fn report_loading_of(&self, engine: &Engine) {
        let Some(session) = self.session.get() else {
            return;
        };
        let (superseded, receiver) = oneshot::channel();
        let token = {
            let mut live = lock(&self.live);
            live.loads += 1;
            live.loading_superseded = Some(superseded);
            match live.loads {
                1 => "inkling/model".to_owned(),
                n => format!("inkling/model/{n}"),
            }
        };
        tokio::spawn(Self::report_loading(
            self.client.clone(),
            engine.subscribe(),
            session.work_done_progress,
            token,
            receiver,
        ));
    }

    /// Serves the HTTP endpoint at `port` (`None`: not at all) in place of the one
    /// served so far (connections open on that one finish their requests); when the
    /// port cannot be bound, the one served so far stays.
    pub(super) async fn serve_http(&self, port: Option<u16>) {
        let Some(pipeline) = self.pipeline.get() else {
            return;
        };
        let Some(port) = port else {
            if let Some(served) = lock(&self.live).http.take() {
                served.abort();
            }
            return;
        };
        match http::bind(port).await {
            Ok(listener) => {
                let address = listener.local_addr();
                let served = tokio::spawn(http::serve(listener, pipeline.clone()));
                if let Some(other) = lock(&self.live).http.replace(served) {
                    other.abort();
                }
                if let Ok(address) = address {
                    let message = format!("inkling: HTTP endpoint on http://{address}");
                    if port == 0 {
                        // Port 0 asks for any free port: where it is, only this says.
                        self.client.show_message(MessageType::INFO, message).await;
                    } else {
                        self.client.log_message(MessageType::INFO, message).await;
                    }
                }
            }
            Err(e) => {
                let kept = if lock(&self.live).http.is_some() {
                    "; the endpoint served so far stays"
                } else {
                    ""
                };
                self.warn(format!("HTTP endpoint not started: {e}{kept}"))
                    .await
            }
        }
    }

    /// Asks the client, if it can, to report changes of the files the workspace index
    /// reads, and every deletion (a folder's may be reported alone).
    pub(super) fn watch_files(&self) {
        if !self.session.get().is_some_and(|s| s.watches_files) {
            return;
        }
        let extensions: Vec<&str> = syntax::source_extensions().collect();
        let watchers = vec![
            FileSystemWatcher {
                glob_pattern: GlobPattern::String(format!("**/*.{{{}}}", extensions.join(","))),
                kind: None,
            },
            FileSystemWatcher {
                glob_pattern: GlobPattern::String("**/*".into()),
                kind: Some(WatchKind::Delete),
            },
        ];
        let registration = Registration {
            id: WATCHED_FILES_REGISTRATION.into(),
            method: "workspace/didChangeWatchedFiles".into(),
            register_options: serde_json::to_value(DidChangeWatchedFilesRegistrationOptions {
                watchers,
            })
            .ok(),
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.register_capability(vec![registration]).await {
                tracing::warn!("the client does not watch the workspace's files: {e}");
            }
        });
    }

    /// `workspace/didChangeWatchedFiles`: each file is read as it is on disk now,
    /// whatever the kind of change says (another may have followed it).
    pub(super) fn watched_files_changed(&self, changes: &[FileEvent]) {
        let Some(workspace) = self.workspace.get() else {
            return;
        };
        if !self.settings().indexes_workspace() {
            return;
        }
        let paths = changes
            .iter()
            .filter_map(|change| workspace::file_path(change.uri.as_str()))
            .collect();
        workspace.refresh_in_background(paths);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_model_change_to_a_file_that_cannot_load_keeps_the_model_in_use() {
        let folder =
            std::env::temp_dir().join(format!("inkling-live-model-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let not_gguf = folder.join("notes.gguf");
        std::fs::write(&not_gguf, "not a model").unwrap();
        let defaults = Settings::resolve(Overrides::default()).0.engine;
        let old = EngineOptions {
            model: Some("/models/working.gguf".into()),
            ..defaults.clone()
        };
        for bad in [folder.clone(), not_gguf, folder.join("missing.gguf")] {
            let mut new = EngineOptions {
                model: Some(bad.clone()),
                speculation: Speculation::DraftModel(bad.clone()),
                ..defaults.clone()
            };
            let mut problems = Vec::new();
            keep_working_models(&old, &mut new, &mut problems);
            assert_eq!(new.model, old.model, "{}", bad.display());
            assert_eq!(new.speculation, Speculation::Off);
            assert_eq!(problems.len(), 2, "{problems:?}");
            assert!(
                problems[0].starts_with("`model` not changed"),
                "{problems:?}"
            );
        }
        // Back to the default model, or unchanged: nothing to check.
        let mut new = defaults;
        let mut problems = Vec::new();
        keep_working_models(&old, &mut new, &mut problems);
        assert_eq!((new.model, problems), (None::<PathBuf>, vec![]));
        let _ = std::fs::remove_dir_all(&folder);
    }
}
